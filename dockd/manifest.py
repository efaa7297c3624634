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
import stat
from typing import Any

import rfc8785

from . import keys
from .durable import sha256_fd
from .errors import ManifestInvalid, UsageError

FORMAT = "dockd.manifest/1"


def canonical_body(manifest: dict[str, Any]) -> bytes:
    """The exact bytes the signature covers: JCS of the manifest minus ``signature``."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return rfc8785.dumps(body)


def sign(body: dict[str, Any], key: keys.StationKey) -> dict[str, Any]:
    m = {k: v for k, v in body.items() if k != "signature"}
    m["signature"] = {"alg": "Ed25519", "key_id": key.key_id, "value": key.sign(canonical_body(m))}
    return m


def build(*, sha256: str, size: int, path: str, mtime: str, camera: dict[str, Any], station_id: str,
          offloaded_at: str, verify: str, sidecars: list[dict[str, Any]], dockd_version: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "clip": {"sha256": sha256, "size": size, "path": path, "mtime": mtime},
        "sidecars": sidecars,
        "camera": camera,
        "station": station_id,
        "offloaded_at": offloaded_at,
        "verify": verify,
        "software": f"dockd {dockd_version}",
    }


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


def check_file_hash(manifest: dict[str, Any], data_path: str) -> None:
    # Regular files only, checked on the open descriptor: a FIFO would block, /dev/zero never ends.
    fd = os.open(data_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{data_path}: not a regular file")
        got, n = sha256_fd(fd)
    finally:
        os.close(fd)
    clip = manifest["clip"]
    if n != clip["size"]:
        raise ManifestInvalid(f"clip size {n} does not match manifest size {clip['size']}")
    if got != clip["sha256"]:
        raise ManifestInvalid(f"clip sha256 {got} does not match manifest sha256 {clip['sha256']}")
