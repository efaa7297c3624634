"""Agency trust (issue #13): the pure verifier, the trust log's integrity, rotation, revocation by time,
the CLI (root on an "offline" directory, station enrolment, `manifest verify --trust`), status/doctor of a
station that is not enrolled, storage (real SeaweedFS) and the README's openssl/jq recipe."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockd.core.errors import TrustInvalid
from dockd.evidence import keys
from dockd.evidence import manifest as mf
from dockd.queue.store import Queue
from dockd.station.auditlog import check_heads, signed_head
from dockd.trust import log as trust
from dockd.trust import store as trustlog
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

T0 = "2026-01-01T00:00:00Z"


def raws(states: list[dict]) -> list[bytes]:
    return [trustlog.dumps(s) for s in states]


class Agency:
    """A root and its log in memory, statements appended as the offline machine would."""

    def __init__(self, name: str = "Metro Police"):
        self.root = Ed25519PrivateKey.generate()
        self.log = [trust.root_statement(name, self.root, T0)]

    @property
    def state(self) -> trust.TrustState:
        return trust.load(self.root.public_key(), raws(self.log))

    def enrol(self, req: dict, roles=("station",), until="2027-01-01T00:00:00Z", from_=None,
              at="2026-01-02T00:00:00Z") -> dict:
        st = trust.enrol_statement(self.state, req, list(roles), from_, until, at, self.root)
        self.log.append(st)
        return st

    def revoke(self, kid: str, from_: str, reason="key stolen", at="2026-06-01T00:00:00Z") -> dict:
        st = trust.revoke_statement(self.state, kid, from_, reason, at, self.root)
        self.log.append(st)
        return st


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def kid(k: Ed25519PrivateKey) -> str:
    return keys.key_id_of(k.public_key())


def request(k, name="st-01", kind="station", at="2026-01-01T12:00:00Z", previous=None) -> dict:
    return trustlog.make_request(k, kind, name, at, previous=previous)


def manifest_by(k: Ed25519PrivateKey, offloaded_at: str) -> dict:
    body = mf.build(sha256="ab" * 32, size=3, path="DCIM/1.MP4", mtime="2026-01-05T00:00:00Z",
                    camera={"serial": "BWC-1"}, station_id="st-01", offloaded_at=offloaded_at, verify="reread",
                    sidecars=[], dockd_version="0.1.0")
    return mf.sign(body, keys.StationKey(k, Path("/nonexistent")))


# ------------------------------------------------------------------ the verifier (pure)


def test_enrolled_key_is_valid_inside_its_window_only():
    a, k = Agency(), new_key()
    a.enrol(request(k), from_="2026-02-01T00:00:00Z", until="2027-01-01T00:00:00Z")
    s = a.state
    ok = s.check(kid(k), "station", "2026-03-01T08:00:00.123Z")
    assert ok.ok and "enrolled as station 'st-01'" in ok.reason
    early = s.check(kid(k), "station", "2026-01-15T00:00:00Z")
    assert not early.ok and "not yet enrolled" in early.reason
    expired = s.check(kid(k), "station", "2027-01-01T00:00:00Z")  # valid_until is exclusive
    assert not expired.ok and "expired at 2027-01-01T00:00:00Z" in expired.reason
    assert not s.check(kid(k), "station", "yesterday").ok


def test_default_valid_from_is_the_request_time():
    """A key signs from its creation; enrolment that follows later covers what it signed meanwhile."""
    a, k = Agency(), new_key()
    st = a.enrol(request(k, at="2026-01-01T12:00:00Z"), at="2026-01-20T00:00:00Z")
    assert st["valid_from"] == "2026-01-01T12:00:00Z"
    assert a.state.check(kid(k), "station", "2026-01-10T00:00:00Z").ok


def test_wrong_role_is_invalid_with_that_reason():
    a, station, office = Agency(), new_key(), new_key()
    a.enrol(request(station))
    a.enrol(request(office, "Evidence Office", "office"), roles=("discloser", "reviewer"))
    s = a.state
    v = s.check(kid(station), "discloser", "2026-03-01T00:00:00Z")
    assert not v.ok and "enrolled for station, not for role discloser" in v.reason
    assert s.check(kid(office), "discloser", "2026-03-01T00:00:00Z").ok
    v = s.check(kid(office), "station", "2026-03-01T00:00:00Z")
    assert not v.ok and "not for role station" in v.reason


def test_never_enrolled_key_is_unknown():
    a, k = Agency(), new_key()
    a.enrol(request(k))
    v = a.state.check(kid(new_key()), "station", "2026-03-01T00:00:00Z")
    assert not v.ok and "not enrolled by Metro Police (unknown key)" in v.reason


def test_revocation_by_time_like_a_crl():
    a, k = Agency(), new_key()
    a.enrol(request(k))
    a.revoke(kid(k), "2026-05-01T00:00:00Z", reason="laptop stolen")
    s = a.state
    assert s.check(kid(k), "station", "2026-04-30T23:59:59.999Z").ok  # before: stays valid
    at = s.check(kid(k), "station", "2026-05-01T00:00:00Z")
    after = s.check(kid(k), "station", "2026-05-02T00:00:00Z")
    assert not at.ok and not after.ok and "revoked from 2026-05-01T00:00:00Z (laptop stolen)" in after.reason
    with pytest.raises(TrustInvalid, match="revoked"):  # a revoked key is never enrolled again
        a.enrol(request(k, at="2026-06-02T00:00:00Z"))


def test_verify_signed_manifest_uses_the_enrolled_key_and_the_manifest_time():
    a, k = Agency(), new_key()
    a.enrol(request(k))
    a.revoke(kid(k), "2026-05-01T00:00:00Z")
    s = a.state
    assert s.verify_signed(manifest_by(k, "2026-04-01T10:00:00.000Z"), "station", "offloaded_at").ok
    late = s.verify_signed(manifest_by(k, "2026-05-01T10:00:00.000Z"), "station", "offloaded_at")
    assert not late.ok and "revoked" in late.reason
    # moving the signed time back before the revocation breaks the signature
    m = manifest_by(k, "2026-05-01T10:00:00.000Z")
    m["offloaded_at"] = "2026-04-01T10:00:00.000Z"
    v = s.verify_signed(m, "station", "offloaded_at")
    assert not v.ok and "does not verify" in v.reason
    # a key that is not in the log, whatever it signed
    v = s.verify_signed(manifest_by(new_key(), "2026-04-01T10:00:00.000Z"), "station", "offloaded_at")
    assert not v.ok and "unknown key" in v.reason


def test_rotation_signed_by_the_old_key_hands_over_validity():
    a, old, new = Agency(), new_key(), new_key()
    a.enrol(request(old), until="2028-01-01T00:00:00Z")
    rot = request(new, at="2026-07-01T00:00:00Z", previous=old)
    st = a.enrol(rot, until="2028-01-01T00:00:00Z")
    assert st["supersedes"] == kid(old) and st["valid_from"] == "2026-07-01T00:00:00Z"
    s = a.state
    assert s.check(kid(old), "station", "2026-06-30T00:00:00Z").ok  # old key's manifests stay valid
    v = s.check(kid(old), "station", "2026-07-02T00:00:00Z")
    assert not v.ok and "rotated out from 2026-07-01T00:00:00Z" in v.reason
    assert s.check(kid(new), "station", "2026-07-02T00:00:00Z").ok


def test_rotation_without_valid_continuity_is_refused():
    a, old, new, stranger = Agency(), new_key(), new_key(), new_key()
    a.enrol(request(old))
    # continuity signed by a key that is not the enrolled one it names
    forged = request(new, previous=stranger)
    forged_body = {k: v for k, v in forged.items() if k not in ("signature",)}
    forged_body["previous_key_id"] = kid(old)
    forged_body["continuity"] = dict(forged["continuity"], key_id=kid(old))
    forged_body["signature"] = {"alg": "Ed25519", "key_id": kid(new), "value": base64.b64encode(
        new.sign(trust.signed_body(forged_body))).decode()}
    with pytest.raises(TrustInvalid, match="continuity signature by previous key .* does not verify"):
        a.enrol(forged_body)
    with pytest.raises(TrustInvalid, match="previous key .* is not enrolled"):
        a.enrol(request(new, previous=stranger))
    # proof of possession: a request altered after signing
    req = request(new)
    req["subject"]["name"] = "st-02"
    with pytest.raises(TrustInvalid, match="no proof of possession"):
        a.enrol(req)
    # a rotation whose old key was revoked before the request proves nothing
    a.revoke(kid(old), "2026-01-01T06:00:00Z")
    with pytest.raises(TrustInvalid, match="was revoked"):
        a.enrol(request(new, at="2026-01-01T12:00:00Z", previous=old))


# ------------------------------------------------------------------ integrity of the log


def agency_with_three() -> tuple[Agency, list[Ed25519PrivateKey]]:
    a, ks = Agency(), [new_key() for _ in range(2)]
    a.enrol(request(ks[0], "st-01"))
    a.enrol(request(ks[1], "st-02"))
    a.revoke(kid(ks[0]), "2026-05-01T00:00:00Z")
    return a, ks


def test_tampered_statement_is_detected():
    a, ks = agency_with_three()
    log = [dict(s) for s in a.log]
    log[1] = dict(log[1], valid_until="2099-01-01T00:00:00Z")
    with pytest.raises(TrustInvalid, match="seq 1: root signature does not verify"):
        trust.load(a.root.public_key(), raws(log))
    # the same change, re-signed by another "root", is not the pinned root's
    other = Ed25519PrivateKey.generate()
    resigned = trust.sign_statement({k: v for k, v in log[1].items() if k not in ("type", "seq", "prev", "signature")},
                                    other, a.log[0])
    with pytest.raises(TrustInvalid, match="seq 1: not signed by the pinned root"):
        trust.load(a.root.public_key(), raws([a.log[0], resigned]))


def test_reordered_or_removed_statements_are_detected(tmp_path):
    a, ks = agency_with_three()
    root = a.root.public_key()
    with pytest.raises(TrustInvalid, match="seq 1: has seq 2 where 1 was expected"):
        trust.load(root, raws([a.log[0], a.log[2], a.log[1], a.log[3]]))
    with pytest.raises(TrustInvalid, match="seq 2: has seq 3"):  # the middle one removed
        trust.load(root, raws([a.log[0], a.log[1], a.log[3]]))
    # renumbering the files' seq members breaks the signature, and a forged prev breaks the chain
    swapped = [a.log[0], dict(a.log[2], seq=1), dict(a.log[1], seq=2)]
    with pytest.raises(TrustInvalid, match="seq 1: (prev|root signature)"):
        trust.load(root, raws(swapped))
    # in a directory, a missing file is named
    d = tmp_path / "agency"
    for s in a.log:
        trustlog.append_dir(d, s)
    assert trust.load(root, trustlog.read_dir(d)).head_seq == 3
    (d / "log" / "00000002.json").unlink()
    with pytest.raises(TrustInvalid, match="00000002.json is missing"):
        trustlog.read_dir(d)


def test_a_log_pinned_to_another_root_is_refused():
    a, _ = agency_with_three()
    with pytest.raises(TrustInvalid, match="seq 0: not signed by the pinned root"):
        trust.load(Ed25519PrivateKey.generate().public_key(), raws(a.log))
    with pytest.raises(TrustInvalid, match="empty"):
        trust.load(a.root.public_key(), [])


def test_statements_are_parsed_strictly():
    a, _ = agency_with_three()
    good = trustlog.dumps(a.log[1])
    dup = good.replace(b'"kind": "enrol"', b'"kind": "enrol", "kind": "revoke"')
    assert dup != good
    with pytest.raises(TrustInvalid, match="duplicate member 'kind'"):
        trust.load(a.root.public_key(), [trustlog.dumps(a.log[0]), dup])
    with pytest.raises(TrustInvalid, match="more than"):
        trust.loads(b" " * (trust.MAX_STATEMENT + 1))
    with pytest.raises(TrustInvalid, match="not valid JSON"):
        trust.loads(b'{"a": NaN}')


def test_installed_copy_only_grows(tmp_path):
    """A station never accepts a log shorter than (or different from) what it installed: a revocation that
    vanished from storage does not roll it back."""
    a, _ = agency_with_three()
    root = a.root.public_key()
    trustlog.install(tmp_path, root, raws(a.log))
    with pytest.raises(TrustInvalid, match="statements were removed"):
        trustlog.install(tmp_path, root, raws(a.log[:3]))
    b = Agency()
    b.root, b.log = a.root, a.log[:3]
    b.enrol(request(new_key(), "st-09"))  # a fork at seq 3
    with pytest.raises(TrustInvalid, match="differs from the installed copy at seq 3"):
        trustlog.install(tmp_path, root, raws(b.log))
    assert len(trustlog.read_dir(tmp_path / "trust")) == 4


# ------------------------------------------------------------------ audit heads through the same verifier


def test_audit_heads_checked_by_the_trust_log_across_a_rotation(tmp_path):
    d = tmp_path / "data"
    key, _ = keys.load_or_create(d)
    q = Queue(tmp_path / "q.db")
    q.record("test.event", detail={"i": 1})
    signed_head(q, key, "st", now=1_780_000_000.0)  # 2026-05-28
    old_id, new_id, req = trustlog.rotate(d, "st", "2026-06-01T00:00:00Z")
    new = keys.load(d)
    assert new.key_id == new_id != old_id
    q.record("test.event", detail={"i": 2})
    signed_head(q, new, "st", now=1_782_000_000.0)  # 2026-06-21
    known = trustlog.known_public_keys(d)
    assert set(known) == {old_id, new_id}
    assert check_heads(q, known) is None  # each head checks with the key that signed it
    bad = check_heads(q, {new_id: known[new_id]})  # the old key unknown: named, not a crash
    assert bad is not None and f"names key '{old_id}', not one of this station's keys" in bad[1]
    a = Agency()
    a.enrol(trustlog.make_request(keys.load(d).private, "station", "st", "2026-06-01T00:00:00Z"), roles=("station",))
    bad = check_heads(q, known, a.state)  # the old key was never enrolled
    assert bad is not None and "not enrolled" in bad[1]
    a2 = Agency()
    retired = trustlog.load_private(d / "keys" / f"station.{old_id.split(':')[1]}.retired.ed25519")
    a2.enrol(trustlog.make_request(retired, "station", "st", "2026-05-01T00:00:00Z"))
    a2.enrol(req)  # the rotation request, continuity by the old key
    assert check_heads(q, known, a2.state) is None
    a2.revoke(new_id, "2026-06-10T00:00:00Z")
    bad = check_heads(q, known, a2.state)
    assert bad is not None and "revoked" in bad[1]
    q.close()


# ------------------------------------------------------------------ the command line


def dockd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_dockd(*args, cwd=cwd, timeout=120)


def one_line_error(r: subprocess.CompletedProcess, needle: str, code: int = 1) -> None:
    assert r.returncode == code, r
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dockd: error: ") and needle in lines[0], r.stderr


def prepared_station(tmp_path: Path, name: str = "st-01", storage: dict | None = None,
                     root: Path | None = None) -> Path:
    """Station ``name``'s config, with its data dir, key and queue made as ``dockd run`` leaves them."""
    d = tmp_path / name
    d.mkdir(mode=0o700)
    keys.load_or_create(d / "data")
    Queue(d / "data" / "queue.db").close()
    return station_config(d / "dockd.toml", data_dir=d / "data", station_id=name, metrics={"listen": ""},
                          offload={"reserve_free_mb": 1}, storage=storage,
                          trust={"root_pubkey": str(root)} if root else None)


@pytest.fixture
def agency_dir(tmp_path):
    r = dockd("trust", "init", "--agency", "Metro Police", "--root-key", str(tmp_path / "offline" / "root.ed25519"),
              "--dir", str(tmp_path / "agency"))
    assert r.returncode == 0, r
    assert (tmp_path / "offline" / "root.ed25519").stat().st_mode & 0o777 == 0o600
    assert "BEGIN PUBLIC KEY" in r.stdout and "agency root ed25519:" in r.stdout
    assert "PRIVATE" not in r.stdout + r.stderr
    return tmp_path / "agency", tmp_path / "offline" / "root.ed25519"


def test_cli_station_not_enrolled_then_enrolled(tmp_path, agency_dir):
    tdir, root_key = agency_dir
    cfg = prepared_station(tmp_path, root=tdir / "root.pub.pem")
    data = tmp_path / "st-01" / "data"
    st = json.loads(dockd("--config", str(cfg), "status", "--json").stdout)
    assert st["key"]["enrolled"] is False and "not enrolled" in st["key"]["detail"]
    assert "station key: key ed25519:" in dockd("--config", str(cfg), "status").stdout
    doc = {r["check"]: r for r in json.loads(dockd("--config", str(cfg), "doctor", "--json").stdout)}
    assert doc["enrolment"]["ok"] is False and "not enrolled" in doc["enrolment"]["detail"]

    r = dockd("--config", str(cfg), "keys", "request", "--out", str(tmp_path / "req.json"))
    assert r.returncode == 0, r
    req = json.loads((tmp_path / "req.json").read_text())
    assert req["key_id"] == keys.load(data).key_id and "PRIVATE" not in r.stdout
    r = dockd("trust", "enrol", str(tmp_path / "req.json"), "--root-key", str(root_key), "--dir", str(tdir),
              "--role", "station", "--until", "2099-01-01")
    assert r.returncode == 0 and "enrolled " + req["key_id"] in r.stdout, r
    r = dockd("--config", str(cfg), "keys", "install", str(tdir))
    assert r.returncode == 0 and "installed" in r.stdout, r
    st = json.loads(dockd("--config", str(cfg), "status", "--json").stdout)
    assert st["key"]["enrolled"] is True
    doc = {r["check"]: r for r in json.loads(dockd("--config", str(cfg), "doctor", "--json").stdout)}
    assert doc["enrolment"]["ok"] is True
    # nothing private was written to the trust dir
    for p in tdir.rglob("*"):
        assert p.is_dir() or b"PRIVATE" not in p.read_bytes()


def test_cli_manifest_verify_with_trust_dir(tmp_path, agency_dir):
    tdir, root_key = agency_dir
    pin = tdir / "root.pub.pem"
    cfg = prepared_station(tmp_path)
    k = keys.load(tmp_path / "st-01" / "data")
    assert dockd("--config", str(cfg), "keys", "request", "--out", str(tmp_path / "req.json")).returncode == 0
    man = tmp_path / "m.json"
    man.write_bytes(mf.dumps(mf.sign(manifest_by(k.private, "2026-03-01T00:00:00.000Z"), k)))

    def verify(*extra):
        return dockd("manifest", "verify", str(man), "--trust", str(tdir), "--root", str(pin), *extra)

    one_line_error(verify(), "not enrolled by Metro Police (unknown key)")  # never enrolled
    assert dockd("trust", "enrol", str(tmp_path / "req.json"), "--root-key", str(root_key), "--dir", str(tdir),
                 "--role", "station", "--from", "2026-01-01", "--until", "2027-01-01").returncode == 0
    r = verify()
    assert r.returncode == 0 and r.stdout.startswith("valid: signed by " + k.key_id) and "Metro Police" in r.stdout, r
    late = tmp_path / "late.json"
    late.write_bytes(mf.dumps(mf.sign(manifest_by(k.private, "2026-09-01T00:00:00.000Z"), k)))
    r = dockd("trust", "revoke", k.key_id, "--from", "2026-06-01T00:00:00Z", "--reason", "station stolen",
              "--root-key", str(root_key), "--dir", str(tdir))
    assert r.returncode == 0, r
    assert verify().returncode == 0  # signed before the revocation: still valid
    one_line_error(dockd("manifest", "verify", str(late), "--trust", str(tdir), "--root", str(pin)),
                   "revoked from 2026-06-01T00:00:00Z (station stolen)")
    r = dockd("trust", "check", k.key_id, "--role", "discloser", "--at", "2026-03-01T00:00:00Z", "--trust", str(tdir),
              "--root", str(pin))
    assert r.returncode == 1 and "not for role discloser" in r.stdout
    # the pinned root must be given; the log's directory is not trusted to name it
    one_line_error(dockd("--config", "/nonexistent.toml", "manifest", "verify", str(man), "--trust", str(tdir)),
                   "nonexistent.toml", code=2)
    one_line_error(dockd("manifest", "verify", str(man), "--trust", str(tdir), "--root", str(pin), "--pubkey",
                         str(pin)), "exclude each other", code=2)
    # a reordered log on disk
    log = tdir / "log"
    os.rename(log / "00000001.json", log / "tmp")
    os.rename(log / "00000002.json", log / "00000001.json")
    os.rename(log / "tmp", log / "00000002.json")
    one_line_error(verify(), "trust log seq 1")
    r = dockd("trust", "show", "--trust", str(tdir), "--root", str(pin))
    assert r.returncode == 1 and "trust log seq 1" in r.stderr


def test_cli_rotation_needs_enrolment_and_keeps_old_manifests_valid(tmp_path, agency_dir):
    tdir, root_key = agency_dir
    pin = tdir / "root.pub.pem"
    cfg = prepared_station(tmp_path, root=pin)
    data = tmp_path / "st-01" / "data"
    old = keys.load(data)
    assert dockd("--config", str(cfg), "keys", "request", "--out", str(tmp_path / "r1.json")).returncode == 0
    assert dockd("trust", "enrol", str(tmp_path / "r1.json"), "--root-key", str(root_key), "--dir", str(tdir),
                 "--role", "station", "--until", "2099-01-01").returncode == 0
    assert dockd("--config", str(cfg), "keys", "install", str(tdir)).returncode == 0
    import time as _t

    from dockd.queue.store import rfc3339

    before = tmp_path / "before.json"
    before.write_bytes(mf.dumps(mf.sign(manifest_by(old.private, rfc3339(_t.time())), old)))
    q = Queue(data / "queue.db")
    q.record("test.event", detail={"before": "rotation"})
    assert signed_head(q, old, "st-01", now=_t.time()) is not None
    q.close()
    r = dockd("--config", str(cfg), "keys", "rotate")
    assert r.returncode == 0 and old.key_id in r.stdout, r
    new = keys.load(data)
    assert new.key_id != old.key_id
    retired = data / "keys" / f"station.{old.key_id.split(':')[1]}.retired.ed25519"
    assert retired.stat().st_mode & 0o777 == 0o600
    # not enrolled yet: says so
    doc = {r["check"]: r for r in json.loads(dockd("--config", str(cfg), "doctor", "--json").stdout)}
    assert doc["enrolment"]["ok"] is False and new.key_id in doc["enrolment"]["detail"]
    r = dockd("--config", str(cfg), "keys", "request", "--out", str(tmp_path / "r2.json"))
    req = json.loads((tmp_path / "r2.json").read_text())
    assert req["previous_key_id"] == old.key_id and req["continuity"]["key_id"] == old.key_id
    r = dockd("trust", "enrol", str(tmp_path / "r2.json"), "--root-key", str(root_key), "--dir", str(tdir),
              "--role", "station", "--until", "2099-01-01")
    assert r.returncode == 0 and "rotation of " + old.key_id in r.stdout, r
    assert dockd("--config", str(cfg), "keys", "install", str(tdir)).returncode == 0
    doc = {r["check"]: r for r in json.loads(dockd("--config", str(cfg), "doctor", "--json").stdout)}
    assert doc["enrolment"]["ok"] is True
    r = dockd("manifest", "verify", str(before), "--trust", str(tdir), "--root", str(pin))
    assert r.returncode == 0, r  # signed by the old key while it was valid
    q = Queue(data / "queue.db")
    assert signed_head(q, new, "st-01", now=_t.time()) is not None
    q.close()
    # heads signed by the old and the new key: each checks with its own key and its own enrolment
    r = dockd("--config", str(cfg), "audit", "--verify", "--trust", str(tdir))
    assert r.returncode == 0 and "2 signed heads verified" in r.stdout, r
    r = dockd("trust", "revoke", new.key_id, "--from", "2000-01-01", "--reason", "test", "--root-key", str(root_key),
              "--dir", str(tdir))
    assert r.returncode == 0, r
    r = dockd("--config", str(cfg), "audit", "--verify", "--trust", str(tdir))
    assert r.returncode == 1 and "revoked" in r.stdout, r
    q = Queue(data / "queue.db")
    assert [x["detail"] for x in q.audit_rows() if x["event"] == "key.rotated"] == [
        {"from": old.key_id, "to": new.key_id}]
    q.close()


# ------------------------------------------------------------------ storage (real SeaweedFS)


def test_publish_and_verify_through_storage(tmp_path, s3env, bucket, agency_dir):
    tdir, root_key = agency_dir
    pin = tdir / "root.pub.pem"
    storage = {"url": f"s3://{bucket}/ev", "endpoint_url": s3env.endpoint_url}
    cfg = prepared_station(tmp_path, storage=storage, root=pin)
    k = keys.load(tmp_path / "st-01" / "data")
    assert dockd("--config", str(cfg), "keys", "request", "--out", str(tmp_path / "req.json")).returncode == 0
    assert dockd("trust", "enrol", str(tmp_path / "req.json"), "--root-key", str(root_key), "--dir", str(tdir),
                 "--role", "station", "--from", "2026-01-01", "--until", "2099-01-01").returncode == 0
    r = dockd("--config", str(cfg), "trust", "publish", str(tdir))
    assert r.returncode == 0 and "2 new, 0 already there" in r.stdout, r
    r = dockd("--config", str(cfg), "trust", "publish", str(tdir))
    assert r.returncode == 0 and "0 new, 2 already there" in r.stdout, r  # idempotent
    client = s3env.client()
    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == ["ev/_trust/log/00000000.json", "ev/_trust/log/00000001.json"]
    for key in listed:
        assert b"PRIVATE" not in client.get_object(Bucket=bucket, Key=key)["Body"].read()

    man = tmp_path / "m.json"
    man.write_bytes(mf.dumps(mf.sign(manifest_by(k.private, "2026-03-01T00:00:00.000Z"), k)))
    r = dockd("--config", str(cfg), "manifest", "verify", str(man), "--trust", "storage")
    assert r.returncode == 0 and "valid: signed by " + k.key_id in r.stdout, r
    r = dockd("--config", str(cfg), "keys", "install", "storage")
    assert r.returncode == 0, r

    # a forked log (another seq 1) is refused, never overwritten
    other = tmp_path / "other"
    shutil.copytree(tdir, other)
    (other / "log" / "00000001.json").unlink()
    cfg2 = prepared_station(tmp_path, "st-02")
    assert dockd("--config", str(cfg2), "keys", "request", "--out", str(tmp_path / "req2.json")).returncode == 0
    assert dockd("trust", "enrol", str(tmp_path / "req2.json"), "--root-key", str(root_key), "--dir", str(other),
                 "--role", "station", "--until", "2099-01-01").returncode == 0
    one_line_error(dockd("--config", str(cfg), "trust", "publish", str(other)), "forked")

    # storage tampered behind dockd's back: an edited statement, then a removed one
    good = client.get_object(Bucket=bucket, Key=listed[1])["Body"].read()
    client.put_object(Bucket=bucket, Key=listed[1], Body=good.replace(b"2099-01-01", b"2199-01-01"))
    one_line_error(dockd("--config", str(cfg), "manifest", "verify", str(man), "--trust", "storage"),
                   "trust log seq 1: root signature does not verify")
    client.put_object(Bucket=bucket, Key=listed[1], Body=good)
    assert dockd("--config", str(cfg), "trust", "publish", str(tmp_path / "agency")).returncode == 0
    r = dockd("trust", "revoke", k.key_id, "--from", "2026-02-01", "--reason", "test", "--root-key", str(root_key),
              "--dir", str(tdir))
    assert r.returncode == 0, r
    r = dockd("--config", str(cfg), "trust", "publish", str(tdir))
    assert r.returncode == 0 and "1 new" in r.stdout, r
    one_line_error(dockd("--config", str(cfg), "manifest", "verify", str(man), "--trust", "storage"), "revoked")
    client.delete_object(Bucket=bucket, Key=listed[1])
    one_line_error(dockd("--config", str(cfg), "manifest", "verify", str(man), "--trust", "storage"),
                   "statement 1 is missing")
    client.delete_object(Bucket=bucket, Key="ev/_trust/log/00000002.json")  # the revocation, removed at the tail
    r = dockd("--config", str(cfg), "keys", "install", "storage")
    one_line_error(r, "statements were removed")  # the station's copy does not roll back


# ------------------------------------------------------------------ README recipe: openssl and jq only


def readme_trust_recipe() -> str:
    """The commands of the README's "Checking a trust statement without dockd" block, verbatim."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Checking a trust statement without dockd", 1)[1]
    block = section.split("```", 2)[1]
    cmds = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    assert len(cmds) >= 7
    return "set -e\n" + "\n".join(cmds) + "\n"


def test_readme_trust_recipe_with_openssl_and_jq(tmp_path, agency_dir):
    """The README's trust-statement recipe, run literally; also on the root statement; and it fails on a
    one-character change."""
    if not (shutil.which("jq") and shutil.which("openssl")):
        pytest.skip("jq or openssl missing")
    recipe = readme_trust_recipe()
    tdir, root_key = agency_dir
    cfg = prepared_station(tmp_path)
    k = keys.load(tmp_path / "st-01" / "data")
    assert dockd("--config", str(cfg), "keys", "request", "--out", str(tmp_path / "req.json")).returncode == 0
    assert dockd("trust", "enrol", str(tmp_path / "req.json"), "--root-key", str(root_key), "--dir", str(tdir),
                 "--role", "station", "--until", "2099-01-01").returncode == 0
    shutil.copy(tdir / "root.pub.pem", tdir / "agency-root.pub.pem")
    r = subprocess.run(["bash", "-c", recipe], cwd=tdir, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout, r.stdout + r.stderr
    assert "enrol\nst-01\nstation\n" in r.stdout and (tdir / "station.pub.pem").read_text() == keys.public_pem(k.public)
    # the root statement verifies the same way (its body is JCS too)
    st0 = json.loads((tdir / "log" / "00000000.json").read_text())
    st1 = json.loads((tdir / "log" / "00000001.json").read_text())
    assert (tdir / "body.jcs").read_bytes() == trust.signed_body(st1)
    assert rfc8785.dumps({k: v for k, v in st0.items() if k != "signature"}) == subprocess.run(
        ["jq", "-cjS", "del(.signature)", "log/00000000.json"], cwd=tdir, capture_output=True).stdout
    r = subprocess.run(["bash", "-c", "jq -j .public_key log/00000000.json | diff - agency-root.pub.pem"], cwd=tdir,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "", r
    # tampering: a later end of validity
    p = tdir / "log" / "00000001.json"
    p.write_text(p.read_text().replace("2099-01-01", "2199-01-01"))
    r = subprocess.run(["bash", "-c", recipe], cwd=tdir, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Signature Verified Successfully" not in r.stdout


def test_config_trust_root_pubkey(tmp_path):
    from dockd import config
    from dockd.core.errors import ConfigError

    p = tmp_path / "c.toml"
    p.write_text('[station]\nid = "s"\n[trust]\nroot_pubkey = "/etc/dockd/agency-root.pub.pem"\n')
    assert config.load(p).trust.root_pubkey == Path("/etc/dockd/agency-root.pub.pem")
    p.write_text('[station]\nid = "s"\n[trust]\nroot_pubkey = "agency-root.pub.pem"\n')
    with pytest.raises(ConfigError, match=r"\[trust\] root_pubkey: must be an absolute path"):
        config.load(p)
    p.write_text('[station]\nid = "s"\n[trust]\nroot = "/x"\n')
    with pytest.raises(ConfigError, match=r"\[trust\] root: unknown key"):
        config.load(p)
    p.write_text('[station]\nid = "s"\n')
    assert config.load(p).trust.root_pubkey is None


def test_read_small_is_bounded_and_follows_no_symlink(tmp_path, s3env, bucket):
    """The backends' small-object read used for the trust log: missing -> None, bigger than the limit ->
    refused, a symlink on a file share is not followed."""
    from dockd import config
    from dockd.storage import open_backend
    from dockd.storage.base import StoreFailure

    share = tmp_path / "share"
    share.mkdir()
    p = tmp_path / "c.toml"
    for url, extra in ((f"file://{share}", ""), (f"s3://{bucket}/ev", f'endpoint_url = "{s3env.endpoint_url}"\n')):
        p.write_text(f'[station]\nid = "s"\n[storage]\nurl = "{url}"\n{extra}')
        cfg = config.load(p)
        b = open_backend(cfg.storage)
        key = "/".join(x for x in (cfg.storage.prefix, "_trust", "log", "00000000.json") if x)
        assert b.read_small(key, 100) is None
        b.put_bytes(key, b"x" * 100, hashlib.sha256(b"x" * 100).hexdigest())
        assert b.read_small(key, 100) == b"x" * 100
        with pytest.raises(StoreFailure, match="more than 99"):
            b.read_small(key, 99)
    (share / "_trust" / "log" / "00000001.json").symlink_to(share / "_trust" / "log" / "00000000.json")
    fb = open_backend(config.parse({"station": {"id": "s"}, "storage": {"url": f"file://{share}"}}, p).storage)
    with pytest.raises(StoreFailure):
        fb.read_small("_trust/log/00000001.json", 100)


def test_cli_trust_root_prints_the_pinned_key_id(tmp_path, agency_dir):
    tdir, _ = agency_dir
    r = dockd("trust", "root", "--root", str(tdir / "root.pub.pem"), "--pem")
    st0 = json.loads((tdir / "log" / "00000000.json").read_text())
    assert r.returncode == 0 and r.stdout.splitlines()[0] == st0["root_key_id"], r
    assert r.stdout.splitlines()[1] == "-----BEGIN PUBLIC KEY-----"
    cfg = prepared_station(tmp_path)
    one_line_error(dockd("--config", str(cfg), "trust", "root"), "no pinned agency root", code=2)


def test_cli_bad_inputs_are_one_line_errors(tmp_path, agency_dir):
    tdir, root_key = agency_dir
    enrol = ["trust", "enrol", None, "--root-key", str(root_key), "--dir", str(tdir), "--role", "station",
             "--until", "2099-01-01"]

    def run(req: Path, *args):
        return dockd(*[str(req) if a is None else a for a in enrol], *args)

    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    one_line_error(run(bad), "not valid JSON")
    bad.write_text('{"type": "dockd.enrol-request/1", "type": "x"}')
    one_line_error(run(bad), "duplicate member 'type'")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    one_line_error(run(fifo), "not a regular file", code=2)  # a file named on the command line: usage
    cfg = prepared_station(tmp_path)
    assert dockd("--config", str(cfg), "keys", "request", "--out", str(tmp_path / "req.json")).returncode == 0
    one_line_error(run(tmp_path / "req.json", "--from", "2099-06-01"), "valid_from is not before valid_until")
    one_line_error(dockd(*[str(tmp_path / "req.json") if a is None else a for a in enrol[:-1]], "soon"),
                   "--until: 'soon' is not a date", code=2)
    other = tmp_path / "other.ed25519"
    trustlog.create_private(other)
    one_line_error(dockd(*[str(tmp_path / "req.json") if a is None else a for a in enrol[:3]], "--root-key",
                         str(other), *enrol[5:]), "seq 0: not signed by the pinned root")
    os.chmod(root_key, 0o644)
    one_line_error(run(tmp_path / "req.json"), "must be 0600")
    os.chmod(root_key, 0o600)
    assert run(tmp_path / "req.json").returncode == 0
    one_line_error(dockd("trust", "revoke", "ed25519:0000000000000000", "--from", "2026-01-01", "--reason", "x",
                         "--root-key", str(root_key), "--dir", str(tdir)), "not enrolled", code=2)


def test_rotation_interrupted_before_the_swap_resumes_with_the_same_new_key(tmp_path):
    d = tmp_path / "data"
    old, _ = keys.load_or_create(d)

    def crash(o, n):
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        trustlog.rotate(d, "st", "2026-06-01T00:00:00Z", before_swap=crash)
    assert keys.load(d).key_id == old.key_id  # nothing swapped yet: the old key still signs
    seen = []
    old_id, new_id, req = trustlog.rotate(d, "st", "2026-06-01T00:05:00Z", before_swap=lambda o, n: seen.append(n))
    assert old_id == old.key_id and keys.load(d).key_id == new_id == seen[0]
    assert req["requested_at"] == "2026-06-01T00:00:00Z"  # the request made the first time
    assert not (d / "keys" / "station.next.ed25519").exists()
    assert set(trustlog.known_public_keys(d)) == {old_id, new_id}


def test_keys_request_on_a_station_being_installed_makes_its_key_first(tmp_path):
    """The install flow: request and enrol before the first run, so the first manifests are already covered."""
    d = tmp_path / "new"
    d.mkdir(mode=0o700)
    cfg = d / "dockd.toml"
    cfg.write_text(f'[station]\nid = "st-new"\ndata_dir = "{d / "data"}"\n[metrics]\nlisten = ""\n')
    r = dockd("--config", str(cfg), "keys", "request", "--out", str(tmp_path / "req.json"))
    assert r.returncode == 0, r
    req = json.loads((tmp_path / "req.json").read_text())
    made = keys.load(d / "data")
    assert req["key_id"] == made.key_id and req["subject"] == {"kind": "station", "name": "st-new"}
    assert (d / "data" / "keys").stat().st_mode & 0o077 == 0
    again = dockd("--config", str(cfg), "keys", "request")
    assert again.returncode == 0 and json.loads(again.stdout)["key_id"] == made.key_id  # the same key, not a new one
