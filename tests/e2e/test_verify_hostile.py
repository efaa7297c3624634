"""Verification that cannot be fooled or crashed: strict I-JSON for signed JSON, regular files only,
tolerance of altered audit rows (CLI and daemon), and the audit chain anchored outside the station."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from dockd.core import audit as chain
from dockd.core import ijson
from dockd.evidence import keys
from dockd.evidence import manifest as mf
from dockd.queue.store import Queue
from dockd.station import anchors
from dockd.storage.base import StoreFailure
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8


def body(clip: bytes = CLIP, **kw) -> dict:
    return mf.build(sha256=hashlib.sha256(clip).hexdigest(), size=len(clip), path="DCIM/100/V1.MP4",
                    mtime="2026-03-01T08:15:00.123456789Z", camera={"serial": "X1"}, station_id="st1",
                    offloaded_at="2026-03-01T09:00:00.000Z", verify="reread", sidecars=[], dockd_version="0.1.0",
                    **kw)


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    return keys.load_or_create(tmp_path_factory.mktemp("station"))[0]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return run_dockd(*args, timeout=timeout)


def one_error(r: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert r.returncode == code, r
    assert "Traceback" not in r.stderr + r.stdout and "internal error" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dockd: error: ") and needle in lines[0], r.stderr


# ------------------------------------------------------------------ the strict loader


@pytest.mark.parametrize("text,reason", [
    ('{"a": 1, "a": 2}', "duplicate member name"),
    ('{"x": {"b": [], "b": []}}', "duplicate member name"),
    ("[NaN]", "NaN is not a JSON number"),
    ("[Infinity]", "Infinity is not a JSON number"),
    ('{"n": -Infinity}', "-Infinity is not a JSON number"),
    ("[1e400]", "overflows a double"),
    ("[9007199254740992]", "outside +-(2**53-1)"),
    ("[-9007199254740992]", "outside +-(2**53-1)"),
    ("[" + "9" * 100_000 + "]", "outside +-(2**53-1)"),
    ('["\\ud800"]', "lone surrogate"),
    ('{"\\udfff": 1}', "lone surrogate"),
    ("[" * 100_000 + "]" * 100_000, "nested 100000 deep"),
    ("[" * 33 + "]" * 33, "nested 33 deep"),
    ('{"a": [1, 2', "not JSON"),
    ("", "not JSON"),
])
def test_loader_rejects_what_is_not_i_json(text, reason):
    with pytest.raises(ijson.Invalid) as e:
        ijson.loads(text.encode())
    assert reason in str(e.value)
    assert len(str(e.value)) < 200  # a reason, not the input echoed back


def test_loader_rejects_bad_bytes_and_size():
    for raw, reason in [(b"\xef\xbb\xbf{}", "byte order mark"), (b'["\xff"]', "not valid UTF-8"),
                        (b'["\xed\xa0\x80"]', "not valid UTF-8"), (b" " * (ijson.MAX_BYTES + 1), "larger than")]:
        with pytest.raises(ijson.Invalid, match=reason):
            ijson.loads(raw)
    with pytest.raises(ijson.Invalid, match="lone surrogate"):
        ijson.loads('["\ud800"]')  # a str holding a raw lone surrogate


def test_loader_accepts_i_json_unchanged():
    text = ('{"a": [1, -9007199254740991, 9007199254740991, 1.5, "x[{\\"]}", {"b": null, "c": true}], '
            '"\\u00e9": "\\ud83d\\ude00 ✓", "d": ' + "[" * 31 + "]" * 31 + "}")
    assert ijson.loads(text) == json.loads(text)
    assert ijson.depth(text) == 32 and ijson.loads(text.encode()) == json.loads(text)


# ------------------------------------------------------------------ `dockd manifest verify` on hostile input


@pytest.fixture
def files(key, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(CLIP)
    man = tmp_path / "m.json"
    man.write_bytes(mf.dumps(mf.sign(body(), key)))
    pub = tmp_path / "pub.pem"
    pub.write_text(keys.public_pem(key.public))
    return man, clip, pub


def test_forged_duplicate_clip_member_is_invalid(files, key):
    """A forged first `clip` before the genuine one: a first-wins parser reads the forgery, Python the
    genuine one (which verifies). Strict parsing refuses the file outright."""
    man, clip, pub = files
    forged = CLIP + b"edited"
    text = man.read_text()
    assert text.startswith("{\n")
    fake = json.dumps({"sha256": hashlib.sha256(forged).hexdigest(), "size": len(forged)})
    man.write_text('{\n  "clip": ' + fake + ",\n" + text[2:])
    assert json.loads(man.read_text())["clip"]["size"] == len(CLIP)  # the lenient parser sees the genuine one
    clip.write_bytes(forged)
    one_error(run("manifest", "verify", str(man), "--pubkey", str(pub)), 1, "duplicate member name \"clip\"")
    one_error(run("manifest", "verify", str(man), "--clip", str(clip), "--pubkey", str(pub)), 1, "duplicate member")


@pytest.mark.parametrize("payload,reason", [
    ("NaN", "NaN is not a JSON number"),
    ("1e999", "overflows a double"),
    ("123456789012345678901234567890", "outside +-(2**53-1)"),
    ('"\\ud800"', "lone surrogate"),
    ("[" * 100_000 + "]" * 100_000, "nested 100001 deep"),
])
def test_hostile_values_are_invalid_not_internal_errors(files, payload, reason):
    man, _, pub = files
    text = man.read_text()
    man.write_text('{"note": ' + payload + "," + text[1:])
    r = run("manifest", "verify", str(man), "--pubkey", str(pub))
    one_error(r, 1, "manifest invalid: ")
    assert reason in r.stderr


def test_unterminated_string_full_of_escaped_quotes_does_not_hang(files):
    """Each escaped quote could start a string literal: a scanner that retries from each one is quadratic
    (hours for this file); the depth check is one linear pass."""
    man, _, pub = files
    man.write_text('{"note": "' + '\\"' * 400_000)
    assert man.stat().st_size < ijson.MAX_BYTES
    one_error(run("manifest", "verify", str(man), "--pubkey", str(pub), timeout=60), 1, "not JSON (Unterminated")


def test_fifo_device_symlink_and_oversize_are_refused_without_hanging(files, tmp_path):
    man, clip, pub = files
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_error(run("manifest", "verify", str(fifo), "--pubkey", str(pub), timeout=30), 2, "is a FIFO")
    one_error(run("manifest", "verify", "/dev/zero", "--pubkey", str(pub), timeout=30), 2, "is a device")
    one_error(run("manifest", "verify", str(man), "--clip", str(fifo), "--pubkey", str(pub), timeout=30), 2,
              "is a FIFO")
    one_error(run("manifest", "verify", str(man), "--clip", "/dev/zero", "--pubkey", str(pub), timeout=30), 2,
              "/dev/zero: is a device, not a regular file")
    one_error(run("manifest", "verify", str(man), "--pubkey", str(fifo), timeout=30), 2, "is a FIFO")
    link = tmp_path / "link.json"
    link.symlink_to(man)
    one_error(run("manifest", "verify", str(link), "--pubkey", str(pub)), 2, "symbolic link")
    big = tmp_path / "big.json"
    big.write_bytes(man.read_bytes()[:-2] + b" " * (1 << 20) + b"}\n")
    one_error(run("manifest", "verify", str(big), "--pubkey", str(pub)), 1, "larger than 1048576 bytes")
    # and the genuine files still verify
    r = run("manifest", "verify", str(man), "--clip", str(clip), "--pubkey", str(pub))
    assert r.returncode == 0 and r.stdout.startswith("valid: "), r


# ------------------------------------------------------------------ altered audit rows


def _station(tmp_path: Path, **sections: dict) -> tuple[Path, Path]:
    data = tmp_path / "data"
    data.mkdir()
    return station_config(tmp_path / "dockd.toml", data_dir=data, metrics={"listen": ""}, **sections), data


def sql(db: Path, stmt: str, *params) -> None:
    con = sqlite3.connect(db)
    with con:
        con.execute(stmt, params)
    con.close()


@pytest.mark.parametrize("bad", ["{not json", "[" * 100_000 + "]" * 100_000, '{"a": NaN}', '"a string"'])
def test_bad_detail_row_is_broken_not_a_crash(tmp_path, bad):
    cfg, data = _station(tmp_path)
    q = Queue(data / "queue.db")
    for i in range(5):
        q.record("test.event", clip=1, detail={"i": i}, now=1_700_000_000 + i)
    q.close()
    sql(data / "queue.db", "update audit set detail = ? where seq = 3", bad)
    r = run("--config", str(cfg), "audit", "--verify")
    assert r.returncode == 1 and r.stdout.startswith("audit chain BROKEN at seq 3: detail is not a JSON object"), r
    assert "Traceback" not in r.stderr and not r.stderr, r.stderr
    for args in (["audit"], ["audit", "--json"], ["audit", "--clip", "1"]):
        r = run("--config", str(cfg), *args)
        assert r.returncode == 0 and len(r.stdout.splitlines()) == 5 and not r.stderr, (args, r)


def test_unhashable_row_values_are_broken_not_a_crash():
    rows = [dict(seq=1, at="t", event="e", camera=None, clip=None, detail={"x": 2**60}, prev_hash=chain.GENESIS,
                 hash="0" * 64)]
    assert chain.first_bad(rows) == (1, "content cannot be canonicalised (row altered)")
    rows = [dict(rows[0], detail={}, at=None, hash=12)]
    assert chain.first_bad(rows)[0] == 1


def test_daemon_starts_with_a_broken_chain_raises_an_alarm_and_offloads(tmp_path):
    watch = tmp_path / "dock"
    cam = watch / "CAM1" / "DCIM" / "100"
    cam.mkdir(parents=True)
    (cam / "V1.MP4").write_bytes(CLIP)
    cfg, data = _station(tmp_path, sources={"watch_dirs": [str(watch)], "drop_privileges": False})
    q = Queue(data / "queue.db")
    q.record("daemon.started", detail={"version": "old"}, now=1_700_000_000)
    q.record("test.event", detail={}, now=1_700_000_001)
    q.close()
    sql(data / "queue.db", "update audit set detail = ? where seq = 1", "{garbage")  # the row _record_start reads
    r = run("--config", str(cfg), "run", "--drain", timeout=120)
    assert r.returncode == 0, r
    assert "Traceback" not in r.stdout + r.stderr
    st = json.loads(run("--config", str(cfg), "status", "--json").stdout)
    alarms = {a["kind"]: a["message"] for a in st["alarms"]}
    assert alarms.get("audit-chain", "").startswith("audit chain BROKEN at seq 1: detail is not a JSON object"), st
    q = Queue(data / "queue.db")
    try:
        assert [c.state for c in q.clips()] == ["staged"]  # evidence still came off the camera
    finally:
        q.close()
    # `show` of a clip whose audit row was altered: the row is shown as altered, nothing crashes
    sql(data / "queue.db", "update audit set detail = ? where event = 'clip.discovered'", "[bold]{x")
    for args in (["show", "1"], ["show", "1", "--json"]):
        r = run("--config", str(cfg), *args)
        assert r.returncode == 0 and not r.stderr and "[bold]{x" in r.stdout, (args, r)
    r = run("--config", str(cfg), "audit", "--verify")
    assert r.returncode == 1 and r.stdout.startswith("audit chain BROKEN at seq 1: detail is not a JSON object"), r


# ------------------------------------------------------------------ anchors in storage


def test_manifest_carries_the_audit_anchor_and_jq_canonicalisation_still_matches(key, tmp_path):
    import shutil

    m = mf.sign(body(audit={"seq": 42, "hash": "ab" * 32}), key)
    assert m["audit"] == {"seq": 42, "hash": "ab" * 32} and mf.audit_anchor(m) == (42, "ab" * 32)
    mf.check(json.loads(mf.dumps(m)), key.public)
    if shutil.which("jq"):
        (tmp_path / "m.json").write_bytes(mf.dumps(m))
        jcs = subprocess.run(["jq", "-cjS", "del(.signature)", str(tmp_path / "m.json")], capture_output=True,
                             check=True).stdout
        assert jcs == mf.canonical_body(m)


def test_compare_names_truncation_and_disagreement():
    a = [anchors.Anchor(3, "c" * 64, "k3"), anchors.Anchor(9, "9" * 64, "k9")]
    assert anchors.compare(9, {3: "c" * 64, 9: "9" * 64}, a) is None
    kind, seq, why = anchors.compare(5, {3: "c" * 64}, a)
    assert (kind, seq) == ("TRUNCATED", 6) and "ends at seq 5" in why and "seq 9 in k9" in why
    assert anchors.compare(9, {3: "d" * 64, 9: "9" * 64}, a)[:2] == ("BROKEN", 3)


def test_file_backend_lists_objects_only(tmp_path):
    from dockd.storage.localfs import FileBackend

    class Cfg:
        root = tmp_path

    b = FileBackend(Cfg())
    for k in ("p/st1/CAM/2026/01/01/a.mp4", "p/st1/CAM/2026/01/01/a.mp4.manifest.json", "p/st1/_audit/d.head.json"):
        b.put_bytes(k, b"{}", hashlib.sha256(b"{}").hexdigest())
    (tmp_path / "p/st1/_audit/link.head.json").symlink_to(tmp_path / "p/st1/_audit/d.head.json")
    assert sorted(b.list_keys("p/st1/")) == ["p/st1/CAM/2026/01/01/a.mp4", "p/st1/CAM/2026/01/01/a.mp4.manifest.json",
                                             "p/st1/_audit/d.head.json"]
    assert b.read_small("p/st1/_audit/d.head.json", 10) == b"{}"
    with pytest.raises(StoreFailure):  # more than the limit: refused, never read past it
        b.read_small("p/st1/_audit/d.head.json", 1)


def _backup(src: Path, dst: Path) -> None:
    """A consistent copy of a WAL-mode queue (sqlite3 backup API), either way round."""
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    with b:
        a.backup(b)
    a.close()
    b.close()


def _rechain_from(db: Path, seq: int, detail: dict) -> None:
    """A forger with write access to the database: alter row ``seq`` and recompute every later link,
    and delete the signed heads, so that the local check passes."""
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("select * from audit where seq >= ? order by seq", (seq,))]
    prev = rows[0]["prev_hash"]
    with con:
        for r in rows:
            d = detail if r["seq"] == seq else json.loads(r["detail"])
            h = chain.link(prev, chain.content(r["seq"], r["at"], r["event"], r["camera"], r["clip"], d))
            con.execute("update audit set detail = ?, prev_hash = ?, hash = ? where seq = ?",
                        (json.dumps(d, sort_keys=True), prev, h, r["seq"]))
            prev = h
        con.execute("delete from audit_heads")
    con.close()


def test_remote_check_detects_a_cut_tail_and_a_rewritten_history(tmp_path, seaweed, bucket, key):
    """Manifests in storage carry the chain head at staging time: deleting the tail of the local chain
    (and its signed heads) passes the local check, but not `audit --verify --remote`."""
    watch = tmp_path / "dock"
    cam = watch / "CAM1" / "DCIM" / "100"
    cam.mkdir(parents=True)
    for i in range(3):
        (cam / f"V{i}.MP4").write_bytes(CLIP + bytes([i]) * 1000)
    storage = {"url": f"s3://{bucket}/pre", "endpoint_url": seaweed.endpoint_url, "region": seaweed.region}
    # the manifests' anchors only: no audit part at the daemon's stop (it would anchor the tail too)
    cfg, data = _station(tmp_path, sources={"watch_dirs": [str(watch)], "drop_privileges": False}, storage=storage,
                         audit={"part_interval_s": 0})
    env = dict(seaweed.env(), AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull)

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_dockd(*args, config=cfg, env=env, timeout=timeout)

    assert cli("run", "--drain").returncode == 0
    db = data / "queue.db"
    q = Queue(db)
    try:
        clips = q.clips()
        assert [c.state for c in clips] == ["wiped"] * 3
        anchored = sorted(mf.audit_anchor(json.loads(c.manifest))[0] for c in clips)
        hashes = q.audit_hashes_at(anchored)
        for c in clips:  # each anchor is the chain head just before the clip's `staged` row
            seq, h = mf.audit_anchor(json.loads(c.manifest))
            assert hashes[seq] == h
        last_seq = q.last_audit()[0]
    finally:
        q.close()
    assert anchored[0] > 5 and anchored[-1] < last_seq, anchored

    # Objects in storage not signed by this station are not anchors (and are counted, not trusted).
    s3 = seaweed.client()
    other = keys.load_or_create(tmp_path / "other")[0]
    fake = mf.sign(body(audit={"seq": 10**6, "hash": "f" * 64}), other)
    s3.put_object(Bucket=bucket, Key="pre/st1/CAM1/2026/01/01/x.mp4.manifest.json", Body=mf.dumps(fake))
    s3.put_object(Bucket=bucket, Key="pre/st1/CAM1/2026/01/01/y.mp4.manifest.json", Body=b'{"a":1,"a":2}')
    r = cli("audit", "--verify", "--remote")
    assert r.returncode == 0, r
    assert r.stdout.startswith(f"audit chain intact: {last_seq} rows") and "3 anchors in storage agree" in r.stdout
    assert f"newest seq {anchored[-1]}" in r.stdout and "2 objects ignored" in r.stdout, r.stdout

    # 1. The tail cut after seq 5, heads deleted: the local check cannot tell; storage can.
    _backup(db, tmp_path / "orig.db")
    sql(db, "delete from audit where seq > 5")
    sql(db, "delete from audit_heads")
    r = cli("audit", "--verify")
    assert r.returncode == 0 and r.stdout.startswith("audit chain intact: 5 rows"), r  # the documented limit
    r = cli("audit", "--verify", "--remote")
    assert r.returncode == 1, r
    assert r.stdout.startswith("audit chain TRUNCATED at seq 6: the local chain ends at seq 5"), r.stdout
    assert f"anchor for seq {anchored[-1]} in pre/st1/CAM1/" in r.stdout and len(r.stdout.splitlines()) == 1

    # 2. History rewritten at an anchored row and re-chained to the end: locally intact, remotely BROKEN.
    _backup(tmp_path / "orig.db", db)
    _rechain_from(db, anchored[1], {"forged": True})
    assert cli("audit", "--verify").returncode == 0
    r = cli("audit", "--verify", "--remote")
    assert r.returncode == 1, r
    assert r.stdout.startswith(f"audit chain BROKEN at seq {anchored[1]}: local hash differs from the station's "
                               "signed anchor in pre/st1/CAM1/"), r.stdout

    # --remote needs --verify and a [storage]
    r = cli("audit", "--remote")
    assert r.returncode == 2 and "--remote goes with --verify" in r.stderr


def test_segment_heads_are_anchors_too(key):
    head = mf.sign({"type": "dockd.audit-segment/1", "station": "st1", "day": "2026-01-01", "first_seq": 7,
                    "last_seq": 20, "prev_hash_of_first": "a" * 64, "last_hash": "b" * 64, "sha256": "c" * 64,
                    "rows": 14}, key)
    st = mf.parse(mf.dumps(head))
    mf.check_signature(st, key.public)
    got = anchors.from_statement(st, "pre/st1/_audit/2026-01-01.head.json")
    assert sorted((a.seq, a.hash) for a in got) == [(6, "a" * 64), (20, "b" * 64)]
    assert anchors.from_statement({"type": "dockd.audit-segment/1", "last_seq": True, "last_hash": "b" * 64}, "k") == []


@pytest.mark.parametrize("statement", ["{", '{"seq": 3, "seq": 3}', "[]", '{"signature": {"value": 5}}'])
def test_a_bad_signed_head_row_is_broken_not_a_crash(tmp_path, statement):
    from dockd.station.auditlog import signed_head

    cfg, data = _station(tmp_path)
    k = keys.load_or_create(data)[0]
    q = Queue(data / "queue.db")
    for i in range(3):
        q.record("test.event", detail={"i": i}, now=1_700_000_000 + i)
    assert signed_head(q, k, "st1", 1_700_000_010)["seq"] == 3
    q.close()
    assert run("--config", str(cfg), "audit", "--verify").stdout.startswith("audit chain intact: 3 rows, 1 signed")
    sql(data / "queue.db", "update audit_heads set statement = ?", statement)
    r = run("--config", str(cfg), "audit", "--verify")
    assert r.returncode == 1 and r.stdout.startswith("audit chain BROKEN at seq 3: signed head "), r
    assert not r.stderr


def test_check_segment_never_raises_on_hostile_segments(tmp_path, key):
    from dockd.station.auditlog import check_segment

    q = Queue(tmp_path / "q.db")
    for i in range(3):
        q.record("test.event", detail={"i": i}, now=1_700_000_000 + i)
    rows = q.audit_rows()
    q.close()
    good = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()

    def head(lines: bytes, **kw) -> dict:
        h = {"type": "dockd.audit-segment/1", "first_seq": 1, "last_seq": 3, "prev_hash_of_first": chain.GENESIS,
             "last_hash": rows[-1]["hash"], "sha256": hashlib.sha256(lines).hexdigest(), "rows": 3}
        h.update(kw)
        return mf.sign(h, key)

    assert check_segment(good, head(good), key.public) == (True, "3 rows intact")
    for lines, why in [(b'{"seq": 1, "seq": 1}\n', "not strict JSON"), (b"[" * 50_000 + b"\n", "not strict JSON"),
                       (b"\xff\n", "not strict JSON"), (b"[1]\n", "not audit rows"), (b'{"seq": 1}\n', "not audit")]:
        ok, reason = check_segment(lines, head(lines), key.public)
        assert not ok and why in reason, (lines[:20], reason)
    ok, reason = check_segment(good, {k: v for k, v in head(good).items() if k != "signature"}, key.public)
    assert not ok and "signature" in reason
    assert check_segment(good, {"signature": {"value": 7}}, key.public) == (False, "head signature does not verify")


@pytest.mark.parametrize("text", [
    '["\\\\ud800"]',                      # an escaped backslash, then the letters ud800: no surrogate
    '["\\ud83d\\ude00"]',                 # a surrogate pair: one valid character
    '{"a": "' + "[" * 40 + '"}',          # brackets inside a string do not nest
])
def test_fast_paths_accept_what_is_valid(text):
    """The loader skips its depth and surrogate walks only when they cannot fail; these must still pass."""
    assert ijson.loads(text) == json.loads(text)
