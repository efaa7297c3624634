"""Audit retention: exported days older than [audit] keep_days are compacted behind a signed checkpoint."""

from __future__ import annotations

import json
import sqlite3

import pytest

from dockd.config import ConfigError, StorageConfig, load
from dockd.evidence import keys
from dockd.queue.store import Queue
from dockd.station.auditlog import check_heads, export_days, signed_head
from dockd.station.retention import compact_one_day
from dockd.storage.localfs import FileBackend

DAY = 86400.0
T0 = 1_700_006_400.0  # 2023-11-15T00:00:00Z


@pytest.fixture
def station(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    backend = FileBackend(StorageConfig(url=f"file://{share}"))
    key, _ = keys.load_or_create(tmp_path / "data")
    q = Queue(tmp_path / "queue.db")
    for d in range(3):  # three days of events, a signed head each day
        for i in range(4):
            q.record("test.event", camera="CAM", detail={"day": d, "i": i}, now=T0 + d * DAY + 60 * i)
        signed_head(q, key, "st", T0 + d * DAY + 3600)
    assert export_days(q, backend, key, "st", "bwc", now=T0 + 3 * DAY + 10) == ["2023-11-15", "2023-11-16",
                                                                                "2023-11-17"]
    yield q, backend, key, share
    q.close()


def test_compacts_the_oldest_day_behind_a_signed_checkpoint(station):
    q, backend, key, _ = station
    before = q.audit_rows()
    day1 = [r for r in before if r["at"].startswith("2023-11-15")]
    got = compact_one_day(q, backend, key, "st", 2, T0 + 3 * DAY + 20)
    assert got == {"day": "2023-11-15", "seq": day1[-1]["seq"], "rows": len(day1)}
    rows = q.audit_rows()
    assert rows[0]["seq"] == day1[-1]["seq"] + 1  # the day's rows are gone, the rest is untouched
    assert rows[:-1] == before[len(day1):]
    assert rows[-1]["event"] == "audit.compacted" and rows[-1]["detail"]["hash"] == day1[-1]["hash"]
    cp = q.audit_checkpoint()
    st = json.loads(cp["statement"])
    assert (cp["seq"], cp["hash"]) == (st["seq"], st["hash"]) == (day1[-1]["seq"], day1[-1]["hash"])
    assert st["type"] == "dockd.audit-checkpoint/1" and st["segment"].endswith("_audit/2023-11-15.jsonl")
    n, bad = q.verify_audit()  # chains from the checkpoint
    assert bad is None and n == len(rows)
    assert check_heads(q, key.public) is None  # the day-1 head verifies by signature, later ones by row
    q.record("after", now=T0 + 3 * DAY + 30)  # the log goes on from the kept rows
    assert q.verify_audit()[1] is None
    # 2023-11-16 is within 2 days: it stays; with keep_days 1 the next pass takes it, and only it
    assert compact_one_day(q, backend, key, "st", 2, T0 + 3 * DAY + 40) is None
    assert compact_one_day(q, backend, key, "st", 1, T0 + 3 * DAY + 40)["day"] == "2023-11-16"
    assert compact_one_day(q, backend, key, "st", 1, T0 + 3 * DAY + 50) is None
    assert q.verify_audit()[1] is None and check_heads(q, key.public) is None


def test_nothing_is_compacted_unless_storage_holds_the_exact_segment(station):
    q, backend, key, share = station
    seg = next(share.rglob("2023-11-15.jsonl"))
    seg.chmod(0o644)
    seg.write_bytes(seg.read_bytes().replace(b'"i": 3', b'"i": 4'))
    for side in share.rglob("2023-11-15.jsonl.sha256"):  # the share's own checksum follows the bytes
        side.unlink()
    n0 = len(q.audit_rows())
    got = compact_one_day(q, backend, key, "st", 2, T0 + 3 * DAY + 20)
    assert got["day"] == "2023-11-15" and "storage" in got["refused"]
    assert len(q.audit_rows()) == n0 and q.audit_checkpoint() is None
    seg.unlink()
    assert "storage" in compact_one_day(q, backend, key, "st", 2, T0 + 3 * DAY + 20)["refused"]
    assert len(q.audit_rows()) == n0


def test_nothing_is_compacted_when_the_local_chain_is_broken(station):
    q, backend, key, _ = station
    con = sqlite3.connect(q.path)
    con.execute("UPDATE audit SET detail = ? WHERE seq = 2", (json.dumps({"day": 0, "i": 9}),))
    con.commit()
    con.close()
    got = compact_one_day(q, backend, key, "st", 2, T0 + 3 * DAY + 20)
    assert "chain broken at seq 2" in got["refused"] and q.audit_checkpoint() is None


def test_keep_days_zero_keeps_everything(station):
    q, backend, key, _ = station
    assert compact_one_day(q, backend, key, "st", 0, T0 + 300 * DAY) is None
    assert q.audit_checkpoint() is None


def test_tampering_after_compaction_is_still_caught(station):
    q, backend, key, _ = station
    compact_one_day(q, backend, key, "st", 2, T0 + 3 * DAY + 20)
    cp = q.audit_checkpoint()
    con = sqlite3.connect(q.path)
    con.execute("UPDATE audit SET detail = ? WHERE seq = ?", (json.dumps({"day": 1, "i": 7}), cp["seq"] + 1))
    con.commit()
    assert q.verify_audit()[1][0] == cp["seq"] + 1
    con.execute("UPDATE audit SET detail = ? WHERE seq = ?", (json.dumps({"day": 1, "i": 0}), cp["seq"] + 1))
    con.commit()
    assert q.verify_audit()[1] is None
    # a forged checkpoint (rows deleted and a checkpoint made up without the key) does not verify
    con.execute("UPDATE audit_checkpoints SET statement = ?", (cp["statement"].replace('"day"', '"dau"'),))
    con.commit()
    con.close()
    assert "checkpoint" in check_heads(q, key.public)[1]


def test_config_keep_days(tmp_path):
    p = tmp_path / "d.toml"
    p.write_text(f'[station]\nid = "s"\ndata_dir = "{tmp_path}"\n[audit]\nkeep_days = 30\n')
    assert load(p).audit.keep_days == 30.0
    p.write_text(f'[station]\nid = "s"\ndata_dir = "{tmp_path}"\n')
    assert load(p).audit.keep_days == 0.0
    p.write_text(f'[station]\nid = "s"\ndata_dir = "{tmp_path}"\n[audit]\nkeep_days = -1\n')
    with pytest.raises(ConfigError, match=r"\[audit\] keep_days"):
        load(p)
