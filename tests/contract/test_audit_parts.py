"""Audit part segments (issue #16): the current day's new rows leave the station as signed parts in a real
SeaweedFS; each part chains from the previous one, a crash between upload and record re-exports the same
bytes, and the finished day's segment follows after midnight."""

from __future__ import annotations

import json

import pytest

from dockd.config import ConfigError
from dockd.evidence import keys
from dockd.queue.store import Queue
from dockd.station import anchors
from dockd.station.auditlog import check_segment, export_days
from dockd.station.auditparts import export_parts
from dockd.storage import open_backend
from tests.support.uploads import make_config, s3_storage

DAY = 86400.0
T0 = 1_750_032_000.0  # 2025-06-16T00:00:00Z
D1, D2 = "2025-06-16", "2025-06-17"


class Station:
    def __init__(self, tmp, s3env, bucket):
        self.cfg = make_config(tmp, storage=s3_storage(s3env, bucket))
        self.backend = open_backend(self.cfg.storage)
        self.key, _ = keys.load_or_create(self.cfg.data_dir)
        self.q = Queue(self.cfg.data_dir / "queue.db")
        self.pre = self.cfg.storage.prefix
        self.n = 0

    def rows(self, k: int, at: float) -> None:
        for _ in range(k):
            self.n += 1
            self.q.record("test.event", camera="CAM", detail={"n": self.n}, now=at)

    def export(self, now: float) -> list[str]:
        return export_parts(self.q, self.backend, self.key, "st1", self.pre, now)

    def keys(self) -> list[str]:
        return sorted(self.backend.list_keys(f"{self.pre}/st1/_audit/"))

    def get(self, key: str) -> bytes:
        data = self.backend.read_small(key, 1 << 20)
        assert data is not None, key
        return data

    def head(self, body_key: str) -> dict:
        return json.loads(self.get(body_key[: -len(".jsonl")] + ".head.json"))


@pytest.fixture
def st(tmp_path, s3env, bucket):
    s = Station(tmp_path, s3env, bucket)
    yield s
    s.q.close()


def test_first_part_then_the_next_chains_and_nothing_new_uploads_nothing(st):
    st.rows(3, T0 + 60)
    got = st.export(T0 + 120)
    assert got == [f"{st.pre}/st1/_audit/{D1}.part-000000000001.jsonl"]
    h1 = st.head(got[0])
    assert h1["type"] == "dockd.audit-segment/1" and h1["part"] is True and h1["day"] == D1
    assert (h1["first_seq"], h1["last_seq"], h1["rows"]) == (1, 3, 3)
    assert check_segment(st.get(got[0]), h1, st.key.public) == (True, "3 rows intact")
    assert st.q.last_audit_part()["last_seq"] == 3
    before = st.keys()
    assert st.export(T0 + 180) == [] and st.keys() == before  # nothing new: nothing uploaded
    st.rows(2, T0 + 240)
    got2 = st.export(T0 + 300)
    assert got2 == [f"{st.pre}/st1/_audit/{D1}.part-000000000004.jsonl"]
    h2 = st.head(got2[0])
    assert (h2["first_seq"], h2["last_seq"]) == (4, 5) and h2["prev_hash_of_first"] == h1["last_hash"]
    assert check_segment(st.get(got2[0]), h2, st.key.public)[0]
    # a part head is an anchor of the local chain like a day's head
    assert {(a.seq, a.hash) for a in anchors.from_statement(h2, got2[0])} == {(5, h2["last_hash"]),
                                                                             (3, h1["last_hash"])}


def test_crash_between_upload_and_record_reexports_the_same_bytes(st, monkeypatch):
    st.rows(2, T0 + 60)
    st.export(T0 + 70)
    st.rows(3, T0 + 120)  # seq 3..5: the part that crashes before its record
    real = st.q.mark_audit_part

    def crash(*a, **kw):
        raise SystemExit("killed after the uploads")

    monkeypatch.setattr(st.q, "mark_audit_part", crash)
    with pytest.raises(SystemExit):
        st.export(T0 + 130)
    key = f"{st.pre}/st1/_audit/{D1}.part-000000000003.jsonl"
    body, head = st.get(key), st.get(key[: -len(".jsonl")] + ".head.json")
    monkeypatch.setattr(st.q, "mark_audit_part", real)
    st.rows(2, T0 + 180)  # more rows arrived meanwhile: seq 6, 7
    got = st.export(T0 + 190)
    assert got == [key, f"{st.pre}/st1/_audit/{D1}.part-000000000006.jsonl"]
    assert st.get(key) == body and st.get(key[: -len(".jsonl")] + ".head.json") == head  # the same bytes
    assert (st.head(key)["last_seq"], st.head(got[1])["first_seq"], st.head(got[1])["last_seq"]) == (5, 6, 7)
    assert st.head(got[1])["prev_hash_of_first"] == st.head(key)["last_hash"]


def test_crash_between_body_and_head_cuts_the_part_to_the_stored_body(st, monkeypatch):
    st.rows(2, T0 + 60)
    real = st.backend.put_bytes

    def no_head(k, data, sha):
        if k.endswith(".head.json"):
            raise SystemExit("killed before the head")
        return real(k, data, sha)

    monkeypatch.setattr(st.backend, "put_bytes", no_head)
    with pytest.raises(SystemExit):
        st.export(T0 + 70)
    monkeypatch.setattr(st.backend, "put_bytes", real)
    st.rows(1, T0 + 80)
    got = st.export(T0 + 90)
    assert [(st.head(k)["first_seq"], st.head(k)["last_seq"]) for k in got] == [(1, 2), (3, 3)]


def test_day_rollover_yesterdays_parts_then_the_full_day(st):
    st.rows(2, T0 + 60)
    assert len(st.export(T0 + 70)) == 1
    st.rows(2, T0 + DAY - 60)  # late on day 1, not yet in a part
    st.rows(1, T0 + DAY + 60)  # day 2
    assert st.export(T0 + DAY + 70) == []  # day 1 is not out yet: that is the day segment's job
    assert export_days(st.q, st.backend, st.key, "st1", st.pre, now=T0 + DAY + 80) == [D1]
    got = st.export(T0 + DAY + 90)
    assert got == [f"{st.pre}/st1/_audit/{D2}.part-000000000005.jsonl"]
    day = json.loads(st.get(f"{st.pre}/st1/_audit/{D1}.head.json"))
    assert (day["first_seq"], day["last_seq"]) == (1, 4) and "part" not in day
    assert st.head(got[0])["prev_hash_of_first"] == day["last_hash"]
    assert st.q.last_audit_part()["day"] == D2


def test_part_interval_is_validated(tmp_path):
    cfg = make_config(tmp_path, storage=None)
    assert cfg.audit.part_interval_s == 900.0
    assert make_config(tmp_path, storage=None, extra={"audit": {"part_interval_s": 0}}).audit.part_interval_s == 0
    for bad, why in ((-1, "negative"), (5, "0 .no part segments. or at least 10"), (float("nan"), "finite")):
        with pytest.raises(ConfigError, match=f"part_interval_s: .*{why}"):
            make_config(tmp_path, storage=None, extra={"audit": {"part_interval_s": bad}})


def test_readme_segment_recipe_with_openssl_and_jq(st, tmp_path):
    """The README's "Checking an audit segment or part without dockd" commands, run literally on a part."""
    import subprocess
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("### Checking an audit segment or part without dockd", 1)[1].split("```", 2)[1]
    cmds = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    assert len(cmds) == 4 and cmds[2].startswith("openssl pkeyutl -verify")
    st.rows(3, T0 + 60)
    (key,) = st.export(T0 + 120)
    work = tmp_path / "recipe"
    (work / "st1" / "_audit").mkdir(parents=True)
    for k in (key, key[: -len(".jsonl")] + ".head.json"):
        (work / "st1" / "_audit" / k.rsplit("/", 1)[1].replace(D1, "2026-11-30")).write_bytes(st.get(k))
    (work / "station.pub.pem").write_text(keys.public_pem(st.key.public))
    r = subprocess.run(["bash", "-ec", "\n".join(cmds)], cwd=work, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "[true,1,3]"
    (work / "st1" / "_audit" / "2026-11-30.part-000000000001.jsonl").write_bytes(b"{}\n")  # tampered body
    r = subprocess.run(["bash", "-ec", "\n".join(cmds)], cwd=work, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
