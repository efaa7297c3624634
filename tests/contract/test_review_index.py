"""The review's index fetch against a real SeaweedFS: verified segments cached, incremental re-fetch, and a
bad signature, a key enrolled for another station, a gap, a broken chain or a body that does not match its head
reported with station and seq and left out (with everything after it for that station). Each runs in one
process (threads) and spread over worker processes with jobs of one and of two segments, so the link between
two jobs is checked as the link within one."""

from __future__ import annotations

import hashlib
import json

import pytest

from dockd.agency.review import index
from dockd.agency.review import indexfmt as fmt
from dockd.config import StorageConfig
from dockd.storage import open_backend
from tests.support.review import indexgen, make_agency

PREFIX = "pfx"


def day(n: int) -> str:
    return f"2026-03-{n:02d}"


def station_segments(gen, key, station: str, n: int, start: int = 1, prev=None, clips_per=3):
    out = []
    for seq in range(start, start + n):
        d = day(seq)
        clips = [gen.clip_line(station, f"{station}-CAM{c}", f"{d}T10:0{c}:00Z", 60.0, seq * 10 + c)
                 for c in range(clips_per)]
        docks = [gen.dock_line(station, f"{station}-CAM0", f"{d}T18:00:00Z")]
        head, objs = gen.segment(PREFIX, key, station, seq, d, clips, docks, prev, f"{d}T23:00:00Z")
        out.append((head, objs))
        prev = head
    return out


def put_all(backend, segs, skip=()):
    for _, objs in segs:
        for k, v in objs.items():
            if k not in skip:
                backend.put_bytes(k, v, hashlib.sha256(v).hexdigest())


@pytest.fixture
def world(tmp_path, s3env, bucket):
    a = make_agency(tmp_path, ["st-1", "st-2", "st-3", "st-4", "st-5"])
    world.cfg = StorageConfig(url=f"s3://{bucket}/{PREFIX}", endpoint_url=s3env.endpoint_url)
    return a, open_backend(world.cfg), indexgen()


MODES = {"threads": {}, "procs-job1": {"procs": 2, "job_segments": 1}, "procs-job2": {"procs": 2, "job_segments": 2}}


@pytest.fixture(params=sorted(MODES))
def fetch(request):
    """index.fetch in one of the MODES."""
    kw = MODES[request.param]

    def run(backend, prefix, state, cache, concurrency=16):
        return index.fetch(backend, prefix, state, cache, concurrency,
                           **({**kw, "storage": world.cfg} if kw else {}))
    return run


def test_fetch_verifies_caches_and_is_incremental(tmp_path, world, fetch):
    a, backend, gen = world
    segs = station_segments(gen, a.stations["st-1"], "st-1", 3)
    put_all(backend, segs)
    put_all(backend, station_segments(gen, a.stations["st-2"], "st-2", 2, clips_per=0))  # empty clip bodies
    cache = index.Cache(tmp_path / "cache")
    r = fetch(backend, PREFIX, a.state(), cache, concurrency=4)
    assert (r.new_segments, r.new_clips, r.problems) == (5, 9, [])
    assert [s[:2] for s in cache.segments()] == [("st-1", 1), ("st-1", 2), ("st-1", 3), ("st-2", 1), ("st-2", 2)]
    assert cache.segments()[0][2] == fmt.head_digest(segs[0][0])
    r = fetch(backend, PREFIX, a.state(), cache)
    assert (r.new_segments, r.problems) == (0, [])
    put_all(backend, station_segments(gen, a.stations["st-1"], "st-1", 1, start=4, prev=segs[-1][0]))
    r = fetch(backend, PREFIX, a.state(), cache)
    assert (r.new_segments, r.new_clips) == (1, 3)
    clips = cache.clips_between(0, 2**62)
    placed = clips["st-1-CAM0"].placed
    assert len(placed) == 4 and placed[0][1] - placed[0][0] == 60 * 10**9
    assert [d.camera for d in cache.docks_by_camera()["st-1-CAM0"]] == ["st-1-CAM0"] * 4


def test_bad_segments_are_reported_and_left_out(tmp_path, world, fetch):
    a, backend, gen = world
    # st-1: seq 2's head signed by st-2's key (enrolled, but for another station)
    s1 = station_segments(gen, a.stations["st-1"], "st-1", 3)
    forged, objs = gen.segment(PREFIX, a.stations["st-2"], "st-1", 2, day(2), [], [], s1[0][0], f"{day(2)}T23:00:00Z")
    s1[1] = (forged, objs)
    put_all(backend, s1)
    # st-2: seq 2's clip body altered after signing
    s2 = station_segments(gen, a.stations["st-2"], "st-2", 3)
    ck = s2[1][0]["clips"]["key"]
    s2[1][1][ck] = s2[1][1][ck].replace(b"60.0", b"61.0")
    put_all(backend, s2)
    # st-3: seq 2 missing (a gap), seq 3 present
    s3 = station_segments(gen, a.stations["st-3"], "st-3", 3)
    put_all(backend, s3, skip=set(s3[1][1]))
    # st-4: seq 2 chains to the wrong head (broken prev)
    s4 = station_segments(gen, a.stations["st-4"], "st-4", 1)
    s4 += station_segments(gen, a.stations["st-4"], "st-4", 1, start=2, prev=s1[0][0])
    put_all(backend, s4)
    # st-5: seq 1 head with its signature altered
    s5 = station_segments(gen, a.stations["st-5"], "st-5", 1)
    h = dict(s5[0][0])
    h["audit_to"] += 1
    s5[0][1][fmt.head_key(PREFIX, "st-5", 1)] = json.dumps(h).encode()
    put_all(backend, s5)
    cache = index.Cache(tmp_path / "cache")
    r = fetch(backend, PREFIX, a.state(), cache)
    probs = "\n".join(r.problems)
    # the stations' own verifier's words (dockd.evidence.clipindex.verify_chain)
    assert "station st-1 seq 2: head signature: key" in probs and "is enrolled for another station (st-2)" in probs
    assert "station st-2 seq 2: clips body does not match the head" in probs
    assert "station st-3 seq 2: missing from storage" in probs
    assert "station st-4 seq 2: prev does not match the previous head" in probs
    assert "station st-5 seq 1: head signature: signature does not verify" in probs
    assert len(r.problems) == 5
    assert {(s, q) for s, q, _ in cache.segments()} == {("st-1", 1), ("st-2", 1), ("st-3", 1), ("st-4", 1)}
