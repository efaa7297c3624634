"""Adapter around :mod:`dockd.trust.log`: trust logs in directories and in storage, key files, requests, rotation.

Layout (the same files in both places):

* storage: ``{prefix}/_trust/log/{seq:08d}.json``, written with conditional
  PUTs (never overwritten; an identical re-publish is a no-op);
* a trust directory (the administrator's, or a copy handed to a defence
  expert): ``DIR/log/{seq:08d}.json`` (``DIR`` itself is accepted too) and
  ``DIR/root.pub.pem``;
* on a station: ``data_dir/trust/log/`` is the verified copy ``dockd keys
  install`` keeps; it only ever grows (a shorter or different log is refused,
  so a removed revocation cannot roll the station back).

Only public keys and signed statements are ever written to storage or a trust
directory. Private keys (the root's, a station's) are PKCS#8 PEM files of mode
0600, created without ever overwriting one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dockd.core.errors import KeyError_, TrustInvalid, UsageError
from dockd.evidence import keys
from dockd.evidence.durable import create_new, fsync_dir, write_atomic
from dockd.evidence.localfile import read_regular
from dockd.storage.base import Backend, ErrorClass, StoreFailure
from dockd.trust import log as trust

_NAME = re.compile(r"^(\d{8})\.json$")
MAX_STATEMENTS = 100_000  # far beyond any agency's enrolments; bounds a hostile directory or bucket


def dumps(st: dict[str, Any]) -> bytes:
    """File form of a statement or request: indented for people; signatures do not depend on layout."""
    return (json.dumps(st, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------- files


def _read_regular(p: Path, limit: int) -> bytes:
    """A small regular file's bytes (no symlink followed, no FIFO opened: UsageError), at most ``limit``."""
    data = read_regular(p, limit)
    if data is None:
        raise TrustInvalid(f"{p} is bigger than {limit} bytes")
    return data


def read_limited(p: Path, limit: int) -> bytes:
    """A regular file's bytes (no symlink, no FIFO), at most ``limit``; OSError-free (UsageError/TrustInvalid)."""
    return _read_regular(Path(p), limit)


def read_json_file(p: Path, what: str) -> Any:
    return trust.loads(_read_regular(Path(p), trust.MAX_STATEMENT), f"{what} {p}")


def write_new(p: Path, data: bytes, mode: int = 0o644) -> bool:
    """Durably create ``p`` holding ``data``; never replace it. Returns False if ``p`` already holds exactly
    ``data``; raises TrustInvalid if it holds anything else."""
    if create_new(p, data, mode):
        return True
    if _read_regular(p, len(data) + 1) != data:
        raise TrustInvalid(f"{p} already exists with different content; not overwritten")
    return False


def log_dir(d: Path) -> Path:
    d = Path(d)
    return d / "log" if (d / "log").is_dir() else d


def read_dir(d: Path) -> list[bytes]:
    """The statements of a trust directory in seq order; a missing seq (a removed file) is an error."""
    ld = log_dir(d)
    try:
        names = os.listdir(ld)
    except OSError as e:
        raise UsageError(f"trust directory {ld}: {e.strerror or e}") from None
    seqs = sorted(int(m.group(1)) for n in names if (m := _NAME.match(n)))
    if len(seqs) > MAX_STATEMENTS:
        raise TrustInvalid(f"{ld} holds more than {MAX_STATEMENTS} statements")
    for i, s in enumerate(seqs):
        if s != i:
            raise TrustInvalid(f"trust log {ld}: statement {i:08d}.json is missing (removed?)")
    return [_read_regular(ld / f"{s:08d}.json", trust.MAX_STATEMENT) for s in seqs]


def append_dir(d: Path, st: dict[str, Any]) -> Path:
    ld = Path(d) / "log"
    ld.mkdir(parents=True, exist_ok=True)
    p = ld / f"{st['seq']:08d}.json"
    if not write_new(p, dumps(st)):
        raise TrustInvalid(f"{p} already exists")
    return p


# ---------------------------------------------------------------- storage


def storage_key(prefix: str, seq: int) -> str:
    return "/".join(p for p in (prefix, "_trust", "log", f"{seq:08d}.json") if p)


def read_storage(backend: Backend, prefix: str) -> list[bytes]:
    """Every statement in storage, read in seq order until the first missing one (then one more probe: a
    statement after a gap means one was removed)."""
    out: list[bytes] = []
    try:
        while len(out) <= MAX_STATEMENTS:
            data = backend.read_small(storage_key(prefix, len(out)), trust.MAX_STATEMENT)
            if data is None:
                break
            out.append(data)
        if backend.read_small(storage_key(prefix, len(out) + 1), trust.MAX_STATEMENT) is not None:
            raise TrustInvalid(f"trust log in storage: statement {len(out)} is missing (removed?)")
    except StoreFailure as e:
        raise TrustInvalid(f"reading the trust log from storage: {e}") from None
    return out


def publish(backend: Backend, prefix: str, raws: list[bytes]) -> tuple[int, int]:
    """Upload statements with conditional writes. Returns (written, already present). A different statement
    already at a seq (a forked log) is refused, never overwritten."""
    written = present = 0
    for seq, data in enumerate(raws):
        key = storage_key(prefix, seq)
        try:
            obj = backend.put_bytes(key, data, hashlib.sha256(data).hexdigest())
        except StoreFailure as e:
            if e.cls is ErrorClass.CONFLICT:
                raise TrustInvalid(f"storage already holds a different statement at seq {seq} ({key}); "
                                   "the logs have forked: nothing overwritten") from None
            raise TrustInvalid(f"publishing {key}: {e}") from None
        if obj.already_present:
            present += 1
        else:
            written += 1
    return written, present


# ---------------------------------------------------------------- keys


def create_private(p: Path) -> Ed25519PrivateKey:
    """Make a new Ed25519 key at ``p`` (PKCS#8 PEM, mode 0600) and its ``.pub.pem`` beside it; never overwrite."""
    p = Path(p)
    if p.exists() or p.is_symlink():
        raise UsageError(f"{p} already exists; a key is never overwritten")
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    k = Ed25519PrivateKey.generate()
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    write_new(p, pem, 0o600)
    return k


def load_private(p: Path) -> Ed25519PrivateKey:
    """A private key file named on the command line (the root's): see :func:`dockd.evidence.keys.load_private`;
    a name that does not exist is a usage error."""
    try:
        os.stat(p, follow_symlinks=False)
    except OSError as e:
        raise UsageError(f"{p}: {e.strerror or e}") from None
    return keys.load_private(p)


def load_public(p: Path) -> Ed25519PublicKey:
    return keys.load_public_pem(_read_regular(Path(p), 16 << 10))


def known_public_keys(data_dir: Path) -> dict[str, Ed25519PublicKey]:
    """This station's keys, current and retired by rotation, by key id (to check what each one signed)."""
    out = {}
    kd = Path(data_dir) / "keys"
    for p in sorted(kd.glob("station*.pub.pem")):
        try:
            pub = load_public(p)
        except (UsageError, KeyError_, TrustInvalid):
            continue
        out[keys.key_id_of(pub)] = pub
    try:
        cur = keys.load(data_dir).public
        out[keys.key_id_of(cur)] = cur
    except KeyError_:
        pass
    return out


def make_request(private: Ed25519PrivateKey, kind: str, name: str, requested_at: str,
                 previous: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    """An enrolment request signed by the key it names (proof of possession); for a rotation also signed
    by the previous key (continuity)."""
    import base64

    pub = private.public_key()
    req: dict[str, Any] = {"type": trust.REQUEST_TYPE, "key_id": keys.key_id_of(pub),
                           "public_key": keys.public_pem(pub), "subject": {"kind": kind, "name": name},
                           "requested_at": requested_at}
    if previous is not None:
        old = keys.key_id_of(previous.public_key())
        req["previous_key_id"] = old
        req["continuity"] = {"alg": "Ed25519", "key_id": old,
                             "value": base64.b64encode(previous.sign(trust.continuity_body(req))).decode("ascii")}
    req["signature"] = {"alg": "Ed25519", "key_id": req["key_id"],
                        "value": base64.b64encode(private.sign(trust.signed_body(req))).decode("ascii")}
    trust.check_request(req)
    return req


def _hex(kid: str) -> str:
    return kid.split(":", 1)[1]


def request_path(data_dir: Path, key_id: str) -> Path:
    return Path(data_dir) / "keys" / f"request-{_hex(key_id)}.json"


def station_request(data_dir: Path, station_id: str, now: str) -> tuple[dict[str, Any], Path]:
    """The current key's request: the one ``keys rotate`` left (with continuity), else a new plain one.

    A station being installed has no key yet: it is made here (as the first ``dockd run`` would), so the
    request can be enrolled before the first clip is signed."""
    k, _ = keys.load_or_create(data_dir)
    p = request_path(data_dir, k.key_id)
    if p.exists():
        return trust.check_request(read_json_file(p, "request"))[1], p
    req = make_request(k.private, "station", station_id, now)
    write_new(p, dumps(req))
    return req, p


def person_request(key_file: Path, kind: str, name: str, now: str) -> dict[str, Any]:
    """A new key for a person or an office (a reviewer, discloser or recipient) at ``key_file`` (PKCS#8 PEM,
    mode 0600, never overwritten; its public half beside it as ``.pub.pem``) and its enrolment request.

    The key never leaves ``key_file``; the request (public key, subject, proof of possession) is what goes
    to the root holder for ``dockd trust enrol --role ...``."""
    if kind not in trust.SUBJECT_KINDS or kind == "station":
        raise UsageError("--kind must be person or office (station keys: `dockd keys request` on the station)")
    if not trust._name(name):
        raise UsageError("--name must be printable text (no control characters), 1 to 200 characters")
    private = create_private(Path(key_file))
    write_new(Path(key_file).with_suffix(".pub.pem"), keys.public_pem(private.public_key()).encode())
    return make_request(private, kind, name, now)


def load_signing_key(p: Path) -> keys.StationKey:
    """A person's or office's signing key named on the command line (regular file, never a symlink)."""
    return keys.StationKey(load_private(Path(p)), Path(p))


def rotate(data_dir: Path, station_id: str, now: str, before_swap=None) -> tuple[str, str, dict[str, Any]]:
    """Replace the station key by a new one whose request the old key signs. Crash-safe: the new key is
    made under ``station.next.ed25519`` (reused if a previous run died), the old key is kept as
    ``station.<id>.retired.ed25519`` (hard link, mode 0600), then the new one is renamed into place.
    ``before_swap(old_id, new_id)`` runs just before the new key takes over (the caller commits its audit
    event there, before the side effect). Returns (old key id, new key id, request)."""
    kd = Path(data_dir) / "keys"
    cur = keys.load(data_dir)
    nxt = kd / "station.next.ed25519"
    new = load_private(nxt) if nxt.exists() else create_private(nxt)
    new_id = keys.key_id_of(new.public_key())
    rp = request_path(data_dir, new_id)
    if rp.exists():  # a rotation that died half-way: finish it with the request it already made
        req = trust.check_request(read_json_file(rp, "request"))[1]
    else:
        req = make_request(new, "station", station_id, now, previous=cur.private)
        write_new(rp, dumps(req))
    old_hex = _hex(cur.key_id)
    retired = kd / f"station.{old_hex}.retired.ed25519"
    try:
        os.link(cur.path, retired)
    except FileExistsError:
        pass
    write_new(kd / f"station.{old_hex}.pub.pem", keys.public_pem(cur.public).encode())
    fsync_dir(kd)
    if before_swap is not None:
        before_swap(cur.key_id, new_id)
    os.replace(nxt, cur.path)
    write_atomic(cur.path.with_suffix(".pub.pem"), keys.public_pem(new.public_key()).encode(), mode=0o644)
    fsync_dir(kd)
    return cur.key_id, new_id, req


# ---------------------------------------------------------------- the verifier, from wherever the log is


def open_state(root_pub: Ed25519PublicKey, source: str | Path, backend: Backend | None = None,
               prefix: str = "") -> trust.TrustState:
    """The verified trust state from ``source``: ``"storage"`` (needs ``backend``) or a directory."""
    if str(source) == "storage":
        if backend is None:
            raise UsageError("--trust storage needs a [storage] section in the config")
        raws = read_storage(backend, prefix)
    else:
        raws = read_dir(Path(source))
    return trust.load(root_pub, raws)


def installed_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "trust"


def install(data_dir: Path, root_pub: Ed25519PublicKey, raws: list[bytes]) -> trust.TrustState:
    """Verify ``raws`` and add what is new to the station's copy. The copy only grows: a log that is shorter
    or differs at any seq is refused (a removed revocation must not roll the station back)."""
    state = trust.load(root_pub, raws)
    ld = installed_dir(data_dir) / "log"
    ld.mkdir(parents=True, exist_ok=True)
    have = read_dir(ld)
    if len(raws) < len(have):
        raise TrustInvalid(f"this trust log has {len(raws)} statements, the installed copy {len(have)}: "
                           "statements were removed; not installed")
    for i, old in enumerate(have):
        if trust.canonical(trust.loads(old)) != trust.canonical(trust.loads(raws[i])):
            raise TrustInvalid(f"this trust log differs from the installed copy at seq {i}; not installed")
    for i in range(len(have), len(raws)):
        write_new(ld / f"{i:08d}.json", raws[i])
    return state


_CACHE: dict[str, tuple[tuple, trust.TrustState]] = {}


def _installed_state(root_pubkey: Path, ld: Path) -> trust.TrustState:
    """The installed copy, verified once per change (``status --watch`` asks every second)."""
    try:
        stamp = (str(root_pubkey), os.stat(root_pubkey).st_mtime_ns,
                 tuple(sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns, e.stat(follow_symlinks=False).st_size)
                              for e in os.scandir(ld))))
    except OSError as e:
        raise UsageError(f"{ld}: {e.strerror or e}") from None
    hit = _CACHE.get(str(ld))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    state = trust.load(load_public(root_pubkey), read_dir(ld))
    _CACHE[str(ld)] = (stamp, state)
    return state


def station_trust(data_dir: Path, root_pubkey: Path | None, key_id: str, now: str) -> dict[str, Any]:
    """Is this station's key enrolled now (by the installed trust log)? For ``status`` and ``doctor``."""
    out: dict[str, Any] = {"key_id": key_id, "enrolled": False, "detail": ""}
    if root_pubkey is None:
        out["detail"] = f"key {key_id} not enrolled: no [trust] root_pubkey configured"
        return out
    ld = installed_dir(data_dir) / "log"
    if not ld.is_dir():
        out["detail"] = f"key {key_id} not enrolled: no trust log installed (dockd keys install)"
        return out
    try:
        state = _installed_state(root_pubkey, ld)
    except (TrustInvalid, UsageError, KeyError_) as e:
        out["detail"] = f"key {key_id} not enrolled: installed trust log unusable: {e}"
        return out
    v = state.check(key_id, "station", now)
    out["enrolled"] = v.ok
    out["detail"] = v.reason if v.ok else f"key not enrolled: {v.reason}"
    return out


def station_status(cfg) -> dict[str, Any]:
    """``station_trust`` for a config's station key now (``key_id`` None when there is no key yet)."""
    import time as _time

    from dockd.core.timefmt import rfc3339

    try:
        kid = keys.load(cfg.data_dir).key_id
    except KeyError_:
        return {"key_id": None, "enrolled": False, "detail": "no station key yet (created by the first run)"}
    now = rfc3339(_time.time())
    assert now is not None  # rfc3339 gives None only for a None time
    return station_trust(cfg.data_dir, cfg.trust.root_pubkey, kid, now)
