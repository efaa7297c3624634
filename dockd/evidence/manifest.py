"""Signed clip manifests.

A manifest is a JSON object describing one clip (and its sidecars) as it was
taken off the camera. Its ``signature`` member is
``{"alg": "Ed25519", "key_id": ..., "value": base64}`` over the RFC 8785
(JCS) canonical UTF-8 bytes of the manifest *without* ``signature``. A third
party checks it with only the manifest, the public key PEM and standard
tools::

    jq -c 'del(.signature)' m.json | ...   # or any JCS implementation
    openssl pkeyutl -verify -rawin -pubin -inkey station.pub.pem -in body.jcs -sigfile sig.bin

(``dockd manifest verify`` does the same in one command.)
"""

from __future__ import annotations

import json
import os
from typing import Any

import rfc8785

from dockd.core import ijson
from dockd.core.errors import ManifestInvalid
from dockd.evidence import keys
from dockd.evidence.durable import sha256_fd
from dockd.evidence.localfile import open_regular, read_regular

FORMAT = "dockd.manifest/1"
MAX_BYTES = ijson.MAX_BYTES  # a manifest is a few KiB; anything past 1 MiB is not one of ours


def parse(raw: bytes | str, what: str = "manifest") -> Any:
    """Strict I-JSON parse of signed JSON (see :mod:`dockd.core.ijson`); ManifestInvalid naming the reason."""
    try:
        return ijson.loads(raw, max_bytes=MAX_BYTES)
    except ijson.Invalid as e:
        raise ManifestInvalid(f"{what}: {e}") from None


def read(path: str, what: str | None = None) -> Any:
    """Parse the manifest file ``path``: regular files only (no FIFO, device or symlink), at most 1 MiB.

    UsageError (exit 2) if it cannot be opened or is not a regular file;
    ManifestInvalid (exit 1) if it is too big or not strict I-JSON."""
    raw = read_regular(path, MAX_BYTES)
    if raw is None:
        raise ManifestInvalid(f"{what or path}: larger than {MAX_BYTES} bytes")
    return parse(raw, what or str(path))


def canonical_body(manifest: dict[str, Any]) -> bytes:
    """The exact bytes the signature covers: JCS of the manifest minus ``signature``."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return rfc8785.dumps(body)


def sign(body: dict[str, Any], key: keys.StationKey) -> dict[str, Any]:
    m = {k: v for k, v in body.items() if k != "signature"}
    m["signature"] = {"alg": "Ed25519", "key_id": key.key_id, "value": key.sign(canonical_body(m))}
    return m


def build(*, sha256: str, size: int, path: str, mtime: str, camera: dict[str, Any], station_id: str,
          offloaded_at: str, verify: str, sidecars: list[dict[str, Any]], dockd_version: str,
          audit: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest body. ``audit`` = ``{"seq", "hash"}``: the station's audit chain head when the clip
    was staged. Signed into the manifest, it anchors the chain outside the station's database: storage
    holding this manifest proves the local chain once reached ``seq`` with that hash."""
    m = {
        "format": FORMAT,
        "clip": {"sha256": sha256, "size": size, "path": path, "mtime": mtime},
        "sidecars": sidecars,
        "camera": camera,
        "station": station_id,
        "offloaded_at": offloaded_at,
        "verify": verify,
        "software": f"dockd {dockd_version}",
    }
    if audit is not None:
        m["audit"] = {"seq": int(audit["seq"]), "hash": str(audit["hash"])}
    return m


def audit_anchor(manifest: Any) -> tuple[int, str] | None:
    """The ``(seq, hash)`` audit anchor of a (checked) manifest, or None if it carries none or a malformed one."""
    a = manifest.get("audit") if isinstance(manifest, dict) else None
    if not isinstance(a, dict):
        return None
    seq, h = a.get("seq"), a.get("hash")
    if type(seq) is not int or seq < 1 or not isinstance(h, str) or len(h) != 64:
        return None
    return seq, h


def dumps(manifest: dict[str, Any]) -> bytes:
    """File form: indented for people; the signature does not depend on layout."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def check(manifest: Any, pub: keys.Ed25519PublicKey | None = None) -> None:
    """Raise ManifestInvalid unless ``manifest`` is well formed and (with ``pub``) its signature verifies."""
    if not isinstance(manifest, dict):
        raise ManifestInvalid("not a JSON object")
    sig = manifest.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        raise ManifestInvalid("missing or malformed signature member")
    clip = manifest.get("clip")
    if not isinstance(clip, dict) or not isinstance(clip.get("sha256"), str) or not isinstance(clip.get("size"), int):
        raise ManifestInvalid("missing clip.sha256 or clip.size")
    if pub is not None:
        if sig.get("key_id") != keys.key_id_of(pub):
            raise ManifestInvalid(f"signed by key {sig.get('key_id')}, not by {keys.key_id_of(pub)}")
        if not keys.verify(pub, canonical_body(manifest), sig["value"]):
            raise ManifestInvalid("signature does not verify (manifest altered or wrong key)")


def check_signature(statement: Any, pub: keys.Ed25519PublicKey) -> None:
    """Raise ManifestInvalid unless ``statement`` (a manifest, audit head, ...) is signed by ``pub``."""
    if not isinstance(statement, dict):
        raise ManifestInvalid("not a JSON object")
    sig = statement.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        raise ManifestInvalid("missing or malformed signature member")
    if sig.get("key_id") != keys.key_id_of(pub) or not keys.verify(pub, canonical_body(statement), sig["value"]):
        raise ManifestInvalid("signature does not verify with the station key")


def check_file_hash(manifest: dict[str, Any], data_path: str) -> None:
    """Size and SHA-256 of the regular file ``data_path`` against the manifest (UsageError: not a regular file)."""
    fd = open_regular(data_path)
    try:
        got, n = sha256_fd(fd)
    finally:
        os.close(fd)
    clip = manifest["clip"]
    if n != clip["size"]:
        raise ManifestInvalid(f"clip size {n} does not match manifest size {clip['size']}")
    if got != clip["sha256"]:
        raise ManifestInvalid(f"clip sha256 {got} does not match manifest sha256 {clip['sha256']}")
