"""The signed clip index (docs/clip-index.md) against a REAL SeaweedFS: export across midnight, two
segments in a day, resume after an outage (through a real faulty network), never overwrite, and the
verifier's verdict on a changed body byte, a removed head, a reordered chain, a forged signature and a
key not enrolled as this station."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockd.core import clipindex as ci
from dockd.evidence import keys
from dockd.evidence import manifest as mf
from dockd.evidence.clipindex import verify_chain
from dockd.queue.store import Queue, queue_path
from dockd.station import clipindex
from dockd.storage import open_backend
from dockd.storage.base import ErrorClass, StoreFailure
from dockd.storage.indexstore import read_station
from dockd.trust import log as trust
from dockd.trust import store as trustlog
from tests.conftest import unique_name
from tests.support.cli import run_dockd
from tests.support.clipindex import DAY, T0, dock, uploaded_clip
from tests.support.faultproxy import FaultProxy
from tests.support.uploads import make_config, s3_storage

H = 3600.0
ST = "st-01"


@pytest.fixture(scope="module")
def shared_bucket(seaweed):
    """One bucket for the module (creating one costs SeaweedFS seconds): each test has its own prefix."""
    return seaweed.create_bucket(unique_name("ix"))


def _station(tmp_path, s3env, bucket, prefix):
    cfg = make_config(tmp_path, storage=dict(s3_storage(s3env, bucket), url=f"s3://{bucket}/{prefix}"),
                      extra={"station": {"id": ST, "data_dir": str(tmp_path / "d")}})
    key, _ = keys.load_or_create(cfg.data_dir)
    q = Queue(queue_path(cfg.data_dir))  # the station's own queue: `dockd index` reads it too
    return SimpleNamespace(cfg=cfg, backend=open_backend(cfg.storage), key=key, q=q, prefix=cfg.storage.prefix,
                           s3=s3env.client(), bucket=bucket)


@pytest.fixture
def st(tmp_path, s3env, shared_bucket):
    s = _station(tmp_path, s3env, shared_bucket, unique_name("ev"))
    yield s
    s.q.close()


@pytest.fixture
def st_ev(tmp_path, s3env, bucket):
    """A station with the README's prefix ``ev`` in a bucket of its own."""
    s = _station(tmp_path, s3env, bucket, "ev")
    yield s
    s.q.close()


def export(st, now, **kw):
    return clipindex.export(st.q, st.backend, st.key, ST, st.prefix, now, **kw)


def verified(st, resolver=None):
    check = verify_chain(ST, read_station(st.backend, st.prefix, ST), resolver or st.key.public, prefix=st.prefix)
    return list(check), check


def history(st) -> None:
    """Day 1: a dock with facts and a clip with facts at 10:00, a plain clip at 10:05, one at 23:59:50;
    day 2 begins."""
    dock(st.q, "CAM1", T0 + 10 * H, facts=True)
    uploaded_clip(st.q, st.key, "CAM1", "DCIM/100MEDIA/FILE0001.MP4", T0 + 10 * H + 60, n=1, facts=True)
    assert export(st, T0 + 10 * H + 120) == []  # the current day: rows wait up to [index] interval_s
    assert export(st, T0 + 10 * H + 900) == [1]
    uploaded_clip(st.q, st.key, "CAM2", "DCIM/100MEDIA/FILE0002.MP4", T0 + 10 * H + 1000, n=2)
    assert export(st, T0 + 10 * H + 1200) == []  # within [index] interval_s of the last one
    assert export(st, T0 + 11 * H) == [2]
    uploaded_clip(st.q, st.key, "CAM2", "DCIM/100MEDIA/FILE0003.MP4", T0 + DAY - 10, n=3)
    st.q.record("test.tick", now=T0 + DAY + 10)  # the next day has begun
    assert export(st, T0 + DAY + 60) == [3]  # the finished day's last segment; nothing to say of today yet


def test_export_across_midnight_two_segments_a_day_and_every_line(st):
    history(st)
    segs, check = verified(st)
    assert check.ok and [s.seq for s in segs] == [1, 2, 3]
    assert [s.date for s in segs] == ["2026-01-05"] * 3
    assert [s.head["prev"] for s in segs] == [None, segs[0].head_hash, segs[1].head_hash]
    assert [s.head["audit_from"] for s in segs[1:]] == [s.head["audit_to"] for s in segs[:-1]]
    # a segment never spans midnight: seg 3 ends before the first row of the next day
    first_next = next(r for r in st.q.audit_rows() if r["at"].startswith("2026-01-06"))
    assert segs[2].head["audit_to"] < first_next["seq"]
    # hive layout
    p = st.prefix
    keys_ = sorted(o["Key"] for o in st.s3.list_objects_v2(Bucket=st.bucket, Prefix=f"{p}/_index/")["Contents"])
    assert f"{p}/_index/clips/station=st-01/date=2026-01-05/00000001.jsonl" in keys_
    assert f"{p}/_index/docks/station=st-01/date=2026-01-05/00000003.jsonl" in keys_  # empty bodies exist too
    assert f"{p}/_index/heads/station=st-01/00000003.json" in keys_
    (c1,), (c2,), (c3,) = (s.clip_lines() for s in segs)
    # with the facts of tasks A/B in the manifest
    assert c1["seq_no"] == 1 and c1["started_at"] == "2026-01-04T23:00:00Z" and c1["started_at_source"] == "name"
    assert c1["duration_s"] == 12.5 and c1["ended_at"] == "2026-01-04T23:00:12.500000Z"
    assert c1["device_id"] == "dev-CAM1" and c1["camera_offset_s"] == 2.5 and c1["profile"] == "generic"
    assert c1["media"] == {"ok": True, "duration_s": 12.5, "created_at": "2026-01-04T23:00:01Z",
                           "codecs": ["h264", "aac"], "width": 1280, "height": 720, "streams": 2}
    assert c1["station_clock"] == {"synchronised": True, "est_error_us": 120, "max_error_us": 4000}
    assert c1["anomalies"] == ["clock_ahead"]
    assert c1["manifest_key"] == c1["object_key"] + ".manifest.json" and c1["uploaded_at"] == "2026-01-05T10:01:00.000Z"
    assert c2["uploaded_at"] == "2026-01-05T10:16:40.000Z"
    # without them: nulls, never guesses
    assert c2["camera"] == "CAM2" and c2["seq_no"] is None and c2["started_at"] is None and c2["media"] is None
    assert c2["station_clock"] is None and c2["device_id"] is None and c2["anomalies"] == []
    assert c3["path"] == "DCIM/100MEDIA/FILE0003.MP4"
    (d1,) = segs[0].dock_lines()
    assert d1["docked_at"] == "2026-01-05T10:00:00.000Z" and d1["clips_on_card"] == 3 and d1["seq_max"] == 4
    assert {a["kind"] for a in d1["anomalies"]} == {"seq_gap", "clock_ahead"}
    assert {"kind": "seq_gap", "from": 2, "to": 4, "missing": 1} in d1["anomalies"]
    (d2,) = segs[1].dock_lines()  # CAM2's plain dock (no facts): nulls
    assert d2["camera"] == "CAM2" and d2["clips_on_card"] is None and d2["anomalies"] == []
    # the next day: a forced export sends today's rows at once, even with nothing to index
    assert export(st, T0 + DAY + 120, force=True) == [4]
    segs, check = verified(st)
    assert check.ok and segs[-1].date == "2026-01-06" and segs[-1].clips == b"" and segs[-1].docks == b""


def test_resume_after_outage_in_order_and_never_resigned(st, s3env, tmp_path):
    with FaultProxy(s3env.s3_port, lifetime_s=120) as proxy:
        down = SimpleNamespace(**vars(st))
        down.backend = open_backend(make_config(tmp_path, name="proxy.toml", storage=s3_storage(
            s3env, st.bucket, endpoint_url=proxy.endpoint_url, timeout_s=2.0)).storage)
        dock(st.q, "CAM1", T0 + 10 * H)
        uploaded_clip(st.q, st.key, "CAM1", "DCIM/A.MP4", T0 + 10 * H + 10, n=1)
        proxy.add("slowdown", count=10_000)  # storage answers 503 to everything
        with pytest.raises(StoreFailure):
            export(down, T0 + 11 * H)
        planned = list(clipindex.iter_planned(st.q))
        assert [p.seq for p in planned] == [1]  # planned (committed) before anything left the station
        for d in (1, 2, 3):  # three days offline, a clip each day
            uploaded_clip(st.q, st.key, "CAM1", f"DCIM/D{d}.MP4", T0 + d * DAY + 10 * H, n=10 + d)
        with pytest.raises(StoreFailure):
            export(down, T0 + 3 * DAY + 11 * H)
        assert [p.seq for p in clipindex.iter_planned(st.q)] == [1]  # one pending: nothing planned past it
        assert proxy.fired("slowdown") > 0
        proxy.clear()
        done = export(down, T0 + 4 * DAY + 60)
    assert done == [1, 2, 3, 4]  # the planned one, then each missed day in order
    segs, check = verified(st)
    assert check.ok and [s.date for s in segs] == ["2026-01-05", "2026-01-06", "2026-01-07", "2026-01-08"]
    assert segs[0].head == json.loads(planned[0].head)  # the head signed before the outage, not a new one
    assert [x["path"] for s in segs for x in s.clip_lines()] == ["DCIM/A.MP4", "DCIM/D1.MP4", "DCIM/D2.MP4",
                                                                  "DCIM/D3.MP4"]
    assert [r["detail"]["seq"] for r in st.q.audit_rows() if r["event"] == "index.exported"] == [1, 2, 3, 4]


def test_refuses_to_overwrite_a_segment_key(st):
    dock(st.q, "CAM1", T0 + 10 * H)
    hk = ci.head_key(st.prefix, ST, 1)
    st.s3.put_object(Bucket=st.bucket, Key=hk, Body=b"someone else's head")
    with pytest.raises(StoreFailure) as e:
        export(st, T0 + 10 * H + 60, force=True)
    assert e.value.cls is ErrorClass.CONFLICT
    assert st.s3.get_object(Bucket=st.bucket, Key=hk)["Body"].read() == b"someone else's head"
    assert [a["kind"] for a in st.q.alarms()] == ["clip-index"]
    with pytest.raises(StoreFailure):  # stays refused; never a second head 1
        export(st, T0 + 10 * H + 2000, force=True)
    assert [p.seq for p in clipindex.iter_planned(st.q)] == [1]


def _get(st, key: str) -> bytes:
    return st.s3.get_object(Bucket=st.bucket, Key=key)["Body"].read()


def _put(st, key: str, data: bytes) -> None:
    st.s3.put_object(Bucket=st.bucket, Key=key, Body=data)


def test_verify_detects_a_changed_body_byte_and_leaves_only_that_segment_out(st):
    history(st)
    k = ci.clips_key(st.prefix, ST, "2026-01-05", 2)
    body = bytearray(_get(st, k))
    body[body.index(b"FILE0002")] ^= 0x01
    _put(st, k, bytes(body))
    segs, check = verified(st)
    assert [s.seq for s in segs] == [1, 3] and check.broken is None
    (p,) = check.problems
    assert p.seq == 2 and not p.chain and "does not match the head" in p.reason


def test_verify_detects_a_removed_head(st):
    history(st)
    st.s3.delete_object(Bucket=st.bucket, Key=ci.head_key(st.prefix, ST, 2))
    segs, check = verified(st)
    assert [s.seq for s in segs] == [1]
    assert check.broken.seq == 3 and "gap: segment 2 missing" in check.broken.reason


def test_verify_detects_a_reordered_chain(st):
    history(st)
    h2, h3 = (_get(st, ci.head_key(st.prefix, ST, n)) for n in (2, 3))
    _put(st, ci.head_key(st.prefix, ST, 2), h3)
    _put(st, ci.head_key(st.prefix, ST, 3), h2)
    segs, check = verified(st)
    assert [s.seq for s in segs] == [1]
    assert check.broken.seq == 2 and "stored as seq 2" in check.broken.reason


def test_verify_detects_a_forged_signature(st):
    history(st)
    forger = keys.StationKey(Ed25519PrivateKey.generate(), st.key.path)
    k = ci.head_key(st.prefix, ST, 2)
    head = json.loads(_get(st, k))
    head["clips"]["lines"] = 0  # a claim the station never made, signed by someone else
    _put(st, k, mf.dumps(mf.sign(head, forger)))
    segs, check = verified(st)
    assert [s.seq for s in segs] == [1] and check.broken.seq == 2
    assert "not one of this station's keys" in check.broken.reason
    # the same bytes re-signed "by the station's key id" but with another key's signature
    head = json.loads(_get(st, k))
    head["signature"]["key_id"] = st.key.key_id
    _put(st, k, mf.dumps(head))
    segs, check = verified(st)
    assert check.broken.seq == 2 and "does not verify" in check.broken.reason


def test_verify_with_the_trust_log_needs_the_key_enrolled_as_this_station(st):
    history(st)
    root = Ed25519PrivateKey.generate()
    t = "2026-01-01T00:00:00Z"

    def state(roles, name=ST):
        log = [trust.root_statement("Metro", root, t)]
        req = trustlog.make_request(st.key.private, "station", name, t)
        log.append(trust.enrol_statement(trust.load(root.public_key(), [trustlog.dumps(x) for x in log]), req,
                                         roles, None, "2027-01-01T00:00:00Z", t, root))
        return trust.load(root.public_key(), [trustlog.dumps(x) for x in log])

    segs, check = verified(st, state(["station"]))
    assert check.ok and len(segs) == 3
    segs, check = verified(st, state(["reviewer"]))
    assert segs == [] and check.broken.seq == 1 and "not for role station" in check.broken.reason
    segs, check = verified(st, state(["station"], name="st-99"))
    assert segs == [] and "enrolled for another station" in check.broken.reason


# ------------------------------------------------------------------ README recipe and DuckDB on a copy


def bucket_copy(st, dest) -> None:
    """The bucket's objects as files under ``dest`` (``aws s3 sync`` in the README)."""
    for o in st.s3.list_objects_v2(Bucket=st.bucket)["Contents"]:
        p = dest / o["Key"]
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(_get(st, o["Key"]))


def readme_index_recipe() -> tuple[str, list[str]]:
    """The commands of the README's "Checking an index segment without dockd" block, verbatim, and the
    output lines it shows."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("### Checking an index segment without dockd", 1)[1].split("```", 2)[1]
    lines = block.strip("\n").splitlines()
    cmds = [x[2:] for x in lines if x.startswith("$ ")]
    assert len(cmds) >= 9
    return "set -e\n" + "\n".join(cmds) + "\n", [x for x in lines if not x.startswith("$ ")]


def test_readme_recipe_verifies_a_segment_offline_and_fails_after_a_one_byte_change(st_ev, tmp_path):
    st = st_ev
    if not (shutil.which("jq") and shutil.which("openssl")):
        pytest.skip("jq or openssl missing")
    history(st)
    d = tmp_path / "copy"
    bucket_copy(st, d)
    (d / "station.pub.pem").write_text(keys.public_pem(st.key.public))
    recipe, shown = readme_index_recipe()
    r = subprocess.run(["bash", "-c", recipe], cwd=d, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == shown  # exactly what the README shows
    clips = d / ci.clips_key("ev", ST, "2026-01-05", 2)
    good = clips.read_bytes()
    for target, pos in ((clips, good.index(b"FILE0002")), (d / ci.head_key("ev", ST, 1), 5)):
        orig = target.read_bytes()
        target.write_bytes(orig[:pos] + bytes([orig[pos] ^ 0x01]) + orig[pos + 1:])
        r = subprocess.run(["bash", "-c", recipe], cwd=d, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, target
        target.write_bytes(orig)


def test_duckdb_reads_the_hive_layout_with_its_partition_columns(st_ev, tmp_path):
    st = st_ev
    duckdb = pytest.importorskip("duckdb")  # the `agency` extra (pulled by `test`)
    history(st)
    d = tmp_path / "copy"
    bucket_copy(st, d)
    con = duckdb.connect()
    rows = con.execute(
        "SELECT station, CAST(date AS VARCHAR), camera, path, seq_no, duration_s, anomalies "
        f"FROM read_json_auto('{d}/ev/_index/clips/*/*/*.jsonl', hive_partitioning = 1) ORDER BY clip_id").fetchall()
    assert rows == [(ST, "2026-01-05", "CAM1", "DCIM/100MEDIA/FILE0001.MP4", 1, 12.5, ["clock_ahead"]),
                    (ST, "2026-01-05", "CAM2", "DCIM/100MEDIA/FILE0002.MP4", None, None, []),
                    (ST, "2026-01-05", "CAM2", "DCIM/100MEDIA/FILE0003.MP4", None, None, [])]
    docks = con.execute(
        "SELECT station, date, camera, clips_on_card FROM "
        f"read_json_auto('{d}/ev/_index/docks/*/*/*.jsonl', hive_partitioning = 1) ORDER BY docked_at").fetchall()
    assert [(s, str(dt), c, n) for s, dt, c, n in docks] == [(ST, "2026-01-05", "CAM1", 3),
                                                             (ST, "2026-01-05", "CAM2", None)]


def test_dockd_index_export_and_verify(st, s3env):
    history(st)
    cfg = str(st.cfg.path)
    env = s3env.env()
    r = run_dockd("index", "verify", "--json", config=cfg, env=env)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["ok"] and got["segments_verified"] == 3 and got["clips"] == 3 and got["problems"] == []
    r = run_dockd("index", "export", config=cfg, env=env)  # forced: today's rows go now
    assert r.returncode == 0 and r.stdout.startswith("1 index segments exported"), r.stdout + r.stderr
    k = ci.clips_key(st.prefix, ST, "2026-01-05", 1)
    _put(st, k, _get(st, k).replace(b"FILE0001", b"FILE0009"))
    r = run_dockd("index", "verify", config=cfg, env=env)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "station st-01 segment 1: segment left out: clips body does not match the head (sha256/size: altered or "
        "replaced)", "clip index of station st-01 NOT intact: 3 segments verified (2 clips, 1 docks)"]
    r = run_dockd("index", "verify", "--station", "st-02", config=cfg, env=env)
    assert r.returncode == 2 and "give --pubkey or --trust" in r.stderr and "Traceback" not in r.stderr
    pem = st.cfg.path.parent / "station.pub.pem"
    pem.write_text(keys.public_pem(st.key.public))
    r = run_dockd("index", "verify", "--station", "st-02", "--pubkey", pem, config=cfg, env=env)
    assert (r.returncode, r.stdout) == (1, "no clip index segments of station st-02 in storage\n")
