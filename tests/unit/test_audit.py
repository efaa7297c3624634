"""The hash-chained audit log: tamper detection (library and CLI) and offline recomputation."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import rfc8785

from dockd.core import audit as chain
from dockd.core.lifecycle import ClipEvent
from dockd.queue.store import Queue
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

T0 = 1_700_000_000.0


@pytest.fixture
def station(tmp_path):
    """A config file and a queue holding a realistic little history (13 rows)."""
    data = tmp_path / "data"
    data.mkdir()
    cfg = station_config(tmp_path / "dockd.toml", data_dir=data)
    q = Queue(data / "queue.db")
    q.record("daemon.started", detail={"version": "test", "pid": 1}, now=T0)
    q.dock_camera("CAM1", source="udev", vendor="Axon", bay="3", now=T0 + 1)
    for i in range(3):
        c, _ = q.discover("CAM1", f"DCIM/100/V{i}.MP4", 1000 + i, 10**18 + i, now=T0 + 2 + i)
        q.transition(c.id, ClipEvent.COPY_STARTED, now=T0 + 10 + i)
        q.transition(c.id, ClipEvent.STAGED, sha256=f"{i:02x}" * 32, now=T0 + 20 + i,
                     detail={"sha256": f"{i:02x}" * 32, "note": "ünïcödé ✓ \u2028 \"quoted\""})
    q.add_skip("CAM1", "DCIM/evil\\xff.MP4", "name is not valid UTF-8", now=T0 + 30)
    q.set_camera_state("CAM1", "uploading", now=T0 + 31)
    assert q.verify_audit() == (13, None)
    yield cfg, q
    q.close()


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return run_dockd(*args, config=cfg)


def sql(q: Queue, stmt: str, *params) -> None:
    con = sqlite3.connect(q.path)
    with con:
        con.execute(stmt, params)
    con.close()


def assert_cli_broken_at(cfg: Path, seq: int) -> None:
    r = cli(cfg, "audit", "--verify")
    assert r.returncode == 1, r
    assert f"BROKEN at seq {seq}:" in r.stdout, r.stdout
    assert len(r.stdout.splitlines()) == 1 and "Traceback" not in r.stderr


# ------------------------------------------------------------------ intact


def test_intact_chain_library_and_cli(station):
    cfg, q = station
    rows = q.audit_rows()
    assert [r["seq"] for r in rows] == list(range(1, 14))
    assert rows[0]["prev_hash"] == chain.GENESIS == "0" * 64
    for a, b in zip(rows, rows[1:], strict=False):
        assert b["prev_hash"] == a["hash"]
    assert chain.first_bad(rows) is None
    r = cli(cfg, "audit", "--verify")
    assert r.returncode == 0 and r.stdout.startswith("audit chain intact: 13 rows"), r


def test_a_chain_can_be_continued_from_a_checkpoint(station):
    _, q = station
    rows = q.audit_rows()
    assert chain.first_bad(rows[5:], start_prev=rows[4]["hash"], start_seq=6) is None
    assert chain.first_bad(rows[5:]) is not None  # but not from genesis


# ------------------------------------------------------------------ tampering


def test_altered_detail_is_named(station):
    cfg, q = station
    sql(q, "update audit set detail = ? where seq = 7", json.dumps({"from": "copying", "to": "staged",
                                                                     "sha256": "ff" * 32}))
    n, bad = q.verify_audit()
    assert n == 13 and bad[0] == 7 and "altered" in bad[1]
    assert_cli_broken_at(cfg, 7)


@pytest.mark.parametrize("column,value", [("at", "2020-01-01T00:00:00.000Z"), ("event", "clip.wiped"),
                                          ("camera", "CAM2"), ("clip", 3)])
def test_altered_columns_are_named(station, column, value):
    cfg, q = station
    sql(q, f"update audit set {column} = ? where seq = 4", value)
    assert q.verify_audit()[1][0] == 4


def test_rehashed_row_breaks_the_next_link(station):
    """An attacker who also recomputes the altered row's own hash is caught at the following row."""
    cfg, q = station
    rows = q.audit_rows()
    r = rows[5]
    forged = dict(r["detail"], to="wiped")
    h = chain.link(r["prev_hash"], chain.content(r["seq"], r["at"], r["event"], r["camera"], r["clip"], forged))
    sql(q, "update audit set detail = ?, hash = ? where seq = ?", json.dumps(forged), h, r["seq"])
    bad = q.verify_audit()[1]
    assert bad[0] == r["seq"] + 1 and "prev_hash" in bad[1]
    assert_cli_broken_at(cfg, r["seq"] + 1)


def test_deleted_middle_row_is_named(station):
    cfg, q = station
    sql(q, "delete from audit where seq = 6")
    n, bad = q.verify_audit()
    assert n == 12 and bad[0] == 6 and "gap" in bad[1]
    assert_cli_broken_at(cfg, 6)


def test_deleted_row_with_renumbering_is_named(station):
    """Deleting a row and renumbering the rest to hide the gap still breaks the link."""
    cfg, q = station
    sql(q, "delete from audit where seq = 6")
    for s in range(7, 14):
        sql(q, "update audit set seq = ? where seq = ?", s - 1, s)
    bad = q.verify_audit()[1]
    assert bad[0] == 6
    assert_cli_broken_at(cfg, 6)


def test_swapped_rows_are_named(station):
    cfg, q = station
    cols = "at, event, camera, clip, detail, prev_hash, hash"
    con = sqlite3.connect(q.path)
    a = con.execute(f"select {cols} from audit where seq = 8").fetchone()
    b = con.execute(f"select {cols} from audit where seq = 9").fetchone()
    with con:
        sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
        con.execute(f"update audit set {sets} where seq = 8", b)
        con.execute(f"update audit set {sets} where seq = 9", a)
    con.close()
    bad = q.verify_audit()[1]
    assert bad[0] == 8
    assert_cli_broken_at(cfg, 8)


def test_inserted_row_is_named(station):
    cfg, q = station
    for s in range(13, 4, -1):
        sql(q, "update audit set seq = ? where seq = ?", s + 1, s)
    rows = q.audit_rows()
    prev = rows[3]["hash"]
    c = chain.content(5, "2023-11-14T22:13:25.000Z", "clip.wiped", "CAM1", 1, {})
    sql(q, "insert into audit (seq, at, event, camera, clip, detail, prev_hash, hash) values (?,?,?,?,?,?,?,?)",
        5, c["at"], c["event"], c["camera"], c["clip"], "{}", prev, chain.link(prev, c))
    assert q.verify_audit()[1][0] == 6  # the forged row links; the next one no longer does
    assert_cli_broken_at(cfg, 6)


def test_reformatted_detail_json_is_not_a_false_alarm(station):
    """The chain covers the canonical content, not the stored text layout."""
    cfg, q = station
    con = sqlite3.connect(q.path)
    detail = con.execute("select detail from audit where seq = 7").fetchone()[0]
    con.close()
    sql(q, "update audit set detail = ? where seq = 7", json.dumps(json.loads(detail), indent=4,
                                                                    ensure_ascii=True))
    assert q.verify_audit() == (13, None)
    assert cli(cfg, "audit", "--verify").returncode == 0


# ------------------------------------------------------------------ offline recomputation


def mini_jcs(v) -> bytes:
    """An independent RFC 8785 encoder for the value types audit rows use here (no floats)."""
    def enc(x) -> str:
        if x is None or isinstance(x, bool):
            return json.dumps(x)
        if isinstance(x, int):
            assert abs(x) < 2**53
            return str(x)
        if isinstance(x, str):
            return json.dumps(x, ensure_ascii=False)
        if isinstance(x, list):
            return "[" + ",".join(enc(i) for i in x) + "]"
        if isinstance(x, dict):
            keys = sorted(x, key=lambda k: k.encode("utf-16-be"))
            return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + enc(x[k]) for k in keys) + "}"
        raise TypeError(type(x))
    return enc(v).encode("utf-8")


def test_chain_recomputes_offline_from_cli_json(station):
    cfg, _ = station
    r = cli(cfg, "audit", "--json")
    assert r.returncode == 0
    # JSON lines: split on "\n" only (a detail may legally hold U+2028, which str.splitlines splits on)
    lines = r.stdout.rstrip("\n").split("\n")
    assert len(lines) == 13
    prev = "0" * 64
    for i, line in enumerate(lines, 1):
        row = json.loads(line)
        assert row["seq"] == i and row["prev_hash"] == prev
        content = {k: row[k] for k in ("seq", "at", "event", "camera", "clip", "detail")}
        body = rfc8785.dumps(content)
        assert body == mini_jcs(content)
        h = hashlib.sha256(prev.encode("ascii") + body).hexdigest()
        assert h == row["hash"], f"row {i}"
        prev = h


def test_offline_recomputation_detects_tampering_too(station):
    cfg, q = station
    sql(q, "update audit set detail = ? where seq = 10", json.dumps({"path": "DCIM/other.MP4"}))
    rows = [json.loads(x) for x in cli(cfg, "audit", "--json").stdout.rstrip("\n").split("\n")]
    prev, first_bad = "0" * 64, None
    for row in rows:
        content = {k: row[k] for k in ("seq", "at", "event", "camera", "clip", "detail")}
        if hashlib.sha256(prev.encode() + rfc8785.dumps(content)).hexdigest() != row["hash"]:
            first_bad = row["seq"]
            break
        prev = row["hash"]
    assert first_bad == 10


def test_audit_filters(station):
    cfg, q = station
    only_clip = [json.loads(x) for x in cli(cfg, "audit", "--json", "--clip", "2").stdout.rstrip("\n").split("\n")]
    assert [r["event"] for r in only_clip] == ["clip.discovered", "clip.copy_started", "clip.staged"]
    since = q.audit_rows()[-2]["at"]
    assert [r["seq"] for r in q.audit_rows(since=since)] == [12, 13]
    assert all(r["camera"] == "CAM1" for r in q.audit_rows(camera="CAM1"))
    human = cli(cfg, "audit")
    assert human.returncode == 0 and len(human.stdout.rstrip("\n").split("\n")) == 13
    assert "camera.docked" in human.stdout


def test_since_compares_as_time_not_as_text(station):
    """Row 12 is at 22:13:50.000Z: `since=...:50Z` includes it (as text, '.000Z' < 'Z' would drop it)."""
    cfg, q = station
    assert q.audit_rows()[11]["at"] == "2023-11-14T22:13:50.000Z"
    for since in ("2023-11-14T22:13:50Z", "2023-11-14T22:13:50.000Z", "2023-11-14T23:13:50+01:00",
                  "2023-11-14T22:13:50"):
        assert [r["seq"] for r in q.audit_rows(since=since)] == [12, 13], since
    r = cli(cfg, "audit", "--json", "--since", "2023-11-14T22:13:50Z")
    assert [json.loads(x)["seq"] for x in r.stdout.rstrip("\n").split("\n")] == [12, 13]
    bad = cli(cfg, "audit", "--since", "last tuesday")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.count("\n") == 1 and "last tuesday" in bad.stderr and "RFC 3339" in bad.stderr


# ------------------------------------------------------------------ the daemon's bounded start-up check


@pytest.fixture
def headed(station, tmp_path):
    """The station's queue with a signed head at seq 10 of its rows, and the key that signed it."""
    from dockd.evidence import keys
    from dockd.station.auditlog import signed_head

    cfg, q = station
    key, _ = keys.load_or_create(tmp_path / "keydir")
    sql(q, "delete from audit where seq > 10")
    assert signed_head(q, key, "st1", T0 + 40)["seq"] == 10
    for i in range(5):
        q.record("test.after_head", detail={"i": i}, now=T0 + 50 + i)  # seq 11..15
    return q, key


def test_start_check_reads_only_rows_after_the_newest_head(headed):
    from dockd.station.auditlog import check_since_last_head

    q, key = headed
    assert check_since_last_head(q, key.public) == (5, None)
    assert q.verify_audit() == (15, None)


def test_start_check_names_a_bad_row_after_the_head(headed):
    from dockd.station.auditlog import check_since_last_head

    q, key = headed
    sql(q, "update audit set detail = ? where seq = 13", '{"i": 99}')
    n, bad = check_since_last_head(q, key.public)
    assert bad is not None and bad[0] == 13


@pytest.mark.parametrize("stmt,reason", [
    ("update audit set hash = 'ab' || substr(hash, 3) where seq = 10", "chain hash at this seq differs"),
    ("delete from audit where seq >= 10", "the chain ends before a head"),
    ("update audit_heads set hash = 'cd' || substr(hash, 3) where seq = 10", "statement differs from its row"),
])
def test_start_check_names_a_head_that_does_not_match(headed, stmt, reason):
    from dockd.station.auditlog import check_since_last_head

    q, key = headed
    sql(q, stmt)
    n, bad = check_since_last_head(q, key.public)
    assert bad is not None and bad[0] == 10 and reason in bad[1], bad


def test_start_check_refuses_a_head_signed_by_another_key(headed, tmp_path):
    from dockd.evidence import keys
    from dockd.station.auditlog import check_since_last_head

    q, _ = headed
    other, _ = keys.load_or_create(tmp_path / "other")
    n, bad = check_since_last_head(q, other.public)
    assert bad is not None and bad[0] == 10 and "not one of this station's keys" in bad[1]


def test_rows_a_head_covers_are_left_to_the_full_check(headed):
    """The documented bound: a row the newest head covers is rechecked by `audit --verify`, not at start."""
    from dockd.station.auditlog import check_since_last_head

    q, key = headed
    sql(q, "update audit set detail = ? where seq = 4", '{"forged": true}')
    assert check_since_last_head(q, key.public) == (5, None)
    assert q.verify_audit()[1][0] == 4


def test_start_check_without_a_head_checks_the_whole_chain(station):
    from dockd.station.auditlog import check_since_last_head

    _, q = station
    sql(q, "update audit set detail = ? where seq = 4", '{"forged": true}')
    n, bad = check_since_last_head(q, None)
    assert bad is not None and bad[0] == 4


# ------------------------------------------------------------------ verifying the stored text as it is

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
                     max_leaves=12)


@given(seq=st.integers(1, 2**53 - 1), at=st.text(), event=st.text(), camera=st.none() | st.text(),
       clip=st.none() | st.integers(0, 2**53 - 1), detail=st.dictionaries(st.text(), _json, max_size=5))
def test_stored_text_link_equals_the_canonical_link(seq, at, event, camera, clip, detail):
    """Hashing the stored (canonical) detail text as it is gives exactly the chain's link, whatever the
    text: keys out of the BMP, controls, quotes, line separators -- or None when it cannot say."""
    prev = "ab" * 32
    try:
        want = chain.link(prev, chain.content(seq, at, event, camera, clip, detail))
    except (TypeError, ValueError):  # e.g. a lone surrogate: no canonical form
        return
    got = chain.link_stored(prev, seq, at, event, camera, clip, chain.detail_text(detail))
    assert got in (want, None)
    if all(s.isascii() for s in (at, event, camera or "")):
        assert got == want


def test_new_rows_store_canonical_detail_text(station):
    _, q = station
    con = sqlite3.connect(q.path)
    rows = con.execute("select detail from audit").fetchall()
    con.close()
    assert all(r[0] == rfc8785.dumps(json.loads(r[0])).decode() for r in rows)


def test_stored_and_parsed_verification_agree_on_every_tampering(station):
    """first_bad_stored (the fast path) and first_bad (parse every row) give the same verdict."""
    _, q = station
    tamper = [
        None,
        "update audit set detail = '{\"sha256\": \"00\"}' where seq = 7",                       # content
        "update audit set detail = replace(detail, ':', ': ') where seq = 7",                  # layout only
        "update audit set at = '2020-01-01T00:00:00Z' where seq = 4",
        "update audit set camera = 'CAM2' where seq = 5",
        "update audit set clip = '1' where seq = 5",                                             # text, not int
        "delete from audit where seq = 9",
        "update audit set detail = 'not json' where seq = 3",
        "update audit set event = 'dock\u2028ünï' where seq = 2",                             # non-ASCII
    ]
    from dockd.queue.reads import detail_of_fast
    for stmt in tamper:
        con = sqlite3.connect(q.path)
        con.execute("begin")
        if stmt:
            con.execute(stmt)
        stored = con.execute("select seq, at, event, camera, clip, detail, prev_hash, hash from audit "
                             "order by seq").fetchall()
        con.rollback()
        con.close()
        parsed = [{"seq": r[0], "at": r[1], "event": r[2], "camera": r[3], "clip": r[4],
                   "detail": detail_of_fast(r[5]), "prev_hash": r[6], "hash": r[7]} for r in stored]
        assert chain.first_bad_stored(stored, detail_of_fast) == chain.first_bad(parsed), stmt
