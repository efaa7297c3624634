"""The clip index of every station, fetched from central storage, verified, and cached locally (SQLite).

Fetching is incremental: the cache remembers, per station, the last verified segment and its head digest;
a fetch lists the heads, reads the new ones (parallel requests), checks each in seq order against the trust
root (:func:`indexfmt.check_segment`), and stores the verified segments' lines. The first segment of a
station that fails (bad signature, key not enrolled for that station, broken chain, a gap in seq, a body
that does not match its head) is reported with station and seq and it and everything after it for that
station are left out; nothing unverified is ever stored, so the next fetch tries again from there.

Why SQLite and not DuckDB, measured (``scripts/bench review``, ``scripts/benchlib/review_engines.py``, README
"Completeness review"): a year's report reads its clips and docks in about 4 s from SQLite and 2 s from DuckDB,
of a 20 s report whose rest is the matching; SQLite is in the standard library and adds no dependency. The
layout in storage stays hive-partitioned JSON lines that DuckDB, Trino, Athena or Spark read directly.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockd.agency.review import indexfmt as fmt
from dockd.agency.review import match
from dockd.core.textsafe import printable
from dockd.storage.base import Backend, StoreFailure
from dockd.trust.log import TrustState

CACHE_FILE = "index.sqlite"
WINDOW = 256  # segments read ahead of the check: bounds memory whatever the history
BATCH = 256  # verified segments per cache transaction
JOB_SEGMENTS = 128  # consecutive segments of one station per worker-process job (and the least worth processes)

SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (station TEXT NOT NULL, seq INTEGER NOT NULL, date TEXT NOT NULL,
    head_sha256 TEXT NOT NULL, clips INTEGER NOT NULL, docks INTEGER NOT NULL, PRIMARY KEY (station, seq));
CREATE TABLE IF NOT EXISTS clips (station TEXT NOT NULL, seq INTEGER NOT NULL, camera TEXT NOT NULL,
    device_id TEXT, start_ns INTEGER, duration_ns INTEGER, offset_ns INTEGER, object_key TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docks (station TEXT NOT NULL, seq INTEGER NOT NULL, camera TEXT NOT NULL,
    at_ns INTEGER NOT NULL, anomalies TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS clips_camera ON clips (camera, start_ns);
CREATE INDEX IF NOT EXISTS docks_camera ON docks (camera, at_ns);
"""


@dataclass
class FetchResult:
    new_segments: int = 0
    new_clips: int = 0
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    tips: dict[str, str | None] = field(default_factory=dict, repr=False)  # the cache's tips before the fetch


@dataclass
class SegmentRows:
    """A verified segment as the cache stores it (small, picklable: what a worker process sends back)."""

    segment: tuple[str, int, str, str, int, int]  # station, seq, date, head digest, clips, docks
    clips: list[tuple[Any, ...]]
    docks: list[tuple[Any, ...]]


def segment_rows(station: str, head: dict[str, Any], digest: str, clips: list[dict[str, Any]],
                 docks: list[dict[str, Any]]) -> SegmentRows:
    """The cache rows of a verified segment: clip and dock lines reduced to the facts matching uses."""
    seq = head["seq"]
    cl = []
    for o in clips:
        c = match.clip_from_line(o)
        dev = o.get("device_id")
        cl.append((station, seq, c.camera, dev if isinstance(dev, str) else None, c.start_ns, c.duration_ns,
                   c.offset_ns, c.key))
    dk = []
    for o in docks:
        d = match.dock_from_line(o)
        if d is not None:
            dk.append((station, seq, d.camera, d.at_ns, json.dumps(list(d.anomalies))))
    return SegmentRows((station, seq, head["date"], digest, len(cl), len(dk)), cl, dk)


class Cache:
    """The local cache: only verified segments, each stored with its lines in one transaction."""

    def __init__(self, cache_dir: Path):
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        p = cache_dir / CACHE_FILE
        if p.is_symlink() or (p.exists() and not p.is_file()):
            from dockd.core.errors import UsageError

            raise UsageError(f"review cache {printable(p)} is not a regular file")
        # transactions are explicit (BEGIN in add, COMMIT in commit), so a batch of segments is one of them
        self.db = sqlite3.connect(p, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # A cache of what storage holds: a transaction must be atomic (a segment with all its lines or not at
        # all), not durable the moment it commits; NORMAL in WAL mode gives that without an fsync per commit.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.commit()
        self.db.close()

    def tips(self) -> dict[str, tuple[int, str]]:
        """station -> (last verified seq, its head digest)."""
        rows = self.db.execute("SELECT s.station, s.seq, s.head_sha256 FROM segments s JOIN (SELECT station, "
                               "MAX(seq) m FROM segments GROUP BY station) t ON s.station = t.station AND s.seq = t.m")
        return {st: (seq, h) for st, seq, h in rows}

    def commit(self) -> None:
        """Commit the segments added since the last commit (a no-op if there are none)."""
        if self.db.in_transaction:
            self.db.execute("COMMIT")

    def add(self, station: str, head: dict[str, Any], clips: list[dict[str, Any]], docks: list[dict[str, Any]],
            digest: str | None = None) -> None:
        """Add a verified segment (``digest``: its head's, as :func:`indexfmt.head_digest`; computed if not
        given) to the open transaction; see :meth:`add_rows`."""
        self.add_rows(segment_rows(station, head, digest or fmt.head_digest(head), clips, docks))

    def add_rows(self, rows: SegmentRows) -> None:
        """Add a verified segment's rows to the open transaction, opening one if needed; :meth:`commit` makes
        them durable. A segment goes in whole or not at all."""
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute("SAVEPOINT seg")
        try:
            self.db.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?)", rows.segment)
            self.db.executemany("INSERT INTO clips VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows.clips)
            self.db.executemany("INSERT INTO docks VALUES (?, ?, ?, ?, ?)", rows.docks)
        except BaseException:
            self.db.execute("ROLLBACK TO seg")
            self.db.execute("RELEASE seg")
            raise
        self.db.execute("RELEASE seg")

    def segments(self) -> list[tuple[str, int, str]]:
        """(station, seq, head sha256) of every cached segment: what a report names as its input."""
        return list(self.db.execute("SELECT station, seq, head_sha256 FROM segments ORDER BY station, seq"))

    def clips_between(self, from_ns: int, to_ns: int) -> dict[str, match.CameraClips]:
        """Per camera, the placed clips (station time: start minus the camera's clock offset, as
        :meth:`match.Clip.station_interval`) starting within the range widened by a day each side, sorted.
        Clips with no start or duration cannot be placed and are not read."""
        out: dict[str, match.CameraClips] = {}
        q = ("SELECT camera, start_ns - coalesce(offset_ns, 0) AS s, duration_ns, object_key FROM clips "
             "WHERE start_ns IS NOT NULL AND duration_ns IS NOT NULL AND duration_ns >= 0 "
             "AND start_ns - coalesce(offset_ns, 0) BETWEEN ? AND ? ORDER BY camera, s")
        cam_now: str | None = None
        placed: list[tuple[int, int, str]] = []
        for cam, s, d, key in self.db.execute(q, (from_ns - match.DAY_NS, to_ns + match.DAY_NS)):
            if cam != cam_now:
                if cam_now is not None:
                    out[cam_now] = match.CameraClips(placed=placed)
                cam_now, placed = cam, []
            placed.append((s, s + d, key))
        if cam_now is not None:
            out[cam_now] = match.CameraClips(placed=placed)
        return out

    def docks_by_camera(self) -> dict[str, list[match.Dock]]:
        out: dict[str, list[match.Dock]] = defaultdict(list)
        for cam, at, an in self.db.execute("SELECT camera, at_ns, anomalies FROM docks ORDER BY camera, at_ns"):
            out[cam].append(match.Dock(cam, at, tuple(json.loads(an)) if an != "[]" else ()))
        return out

    def device_ids(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for dev, cam in self.db.execute("SELECT DISTINCT device_id, camera FROM clips WHERE device_id IS NOT NULL"):
            out[dev].add(cam)
        return out


def _read(backend: Backend, key: str, limit: int) -> bytes | None:
    try:
        return backend.read_small(key, limit)
    except StoreFailure as e:
        raise fmt.SegmentInvalid(f"cannot read {key}: {e}") from None


@dataclass
class Got:
    """One segment as read from storage (by a worker thread); ``error`` if a read failed or the head is not
    strict JSON. Nothing here is trusted until :func:`indexfmt.check_segment` says so."""

    seq: int
    head_raw: bytes | None = None
    head: Any = None
    clips: bytes | None = None
    docks: bytes | None = None
    error: fmt.SegmentInvalid | None = None


def get_segment(backend: Backend, prefix: str, station: str, seq: int) -> Got:
    g = Got(seq)
    try:
        g.head_raw = _read(backend, fmt.head_key(prefix, station, seq), fmt.MAX_HEAD)
        if g.head_raw is None:
            raise fmt.SegmentInvalid("head vanished while fetching")
        g.head = fmt.parse_head(g.head_raw)
        # only objects in the layout are read (a forged head naming some other, huge object gets nothing)
        date = g.head.get("date") if isinstance(g.head, dict) else None
        if isinstance(date, str) and fmt.DATE.match(date) and type(g.head.get("seq")) is int:
            g.clips = _read(backend, fmt.body_key(prefix, "clips", station, date, g.head["seq"]), fmt.MAX_BODY)
            g.docks = _read(backend, fmt.body_key(prefix, "docks", station, date, g.head["seq"]), fmt.MAX_BODY)
    except fmt.SegmentInvalid as e:
        g.error = e
    return g


def fetch(backend: Backend, prefix: str, state: TrustState, cache: Cache, concurrency: int = 16, *,
          procs: int = 1, storage: Any = None, job_segments: int = JOB_SEGMENTS) -> FetchResult:
    """Bring ``cache`` up to date with the index in storage; see the module docstring.

    With ``procs`` > 1 and ``storage`` (the :class:`dockd.config.StorageConfig` the workers reopen), a fetch of
    at least ``job_segments`` segments is spread over worker processes (:mod:`fetchproc`); otherwise it runs
    here: worker threads read segments up to ``WINDOW`` ahead while this thread checks and stores them in seq
    order. Either way verified segments are committed in batches (a crash loses only the uncommitted batch of a
    cache, fetched again next time; nothing unverified is ever stored)."""
    res = FetchResult()
    plan = _plan(backend, prefix, cache, res)
    n = sum(len(s) for _, s in plan)
    try:
        if procs > 1 and storage is not None and n >= job_segments:
            _fetch_procs(prefix, state, cache, plan, res, concurrency, procs, storage, job_segments)
        else:
            _fetch_threads(backend, prefix, state, cache, plan, res, concurrency, job_segments)
    finally:
        cache.commit()
    return res


def _plan(backend: Backend, prefix: str, cache: Cache, res: FetchResult) -> list[tuple[str, list[int]]]:
    """Per station (sorted), the seqs to read: after the cache's tip, consecutive (a gap ends the run, reported).
    The cache's tip digests are in ``res.tips`` afterwards."""
    wanted: dict[str, list[int]] = defaultdict(list)
    try:
        for key in backend.list_keys(fmt.heads_prefix(prefix)):
            parsed = fmt.parse_head_key(prefix, key)
            if parsed is not None:
                wanted[parsed[0]].append(parsed[1])
    except StoreFailure as e:
        from dockd.core.errors import StorageError

        raise StorageError(f"listing {fmt.heads_prefix(prefix)}: {e}") from None
    tips = cache.tips()
    plan = []
    for station in sorted(wanted):
        last = tips.get(station, (0, None))[0]
        seqs = sorted(s for s in wanted[station] if s > last)
        for n, seq in enumerate(seqs):
            if seq != last + 1 + n:
                seqs = seqs[:n]
                res.problems.append(f"station {printable(station)} seq {last + 1 + n}: missing from storage "
                                    f"(gap before seq {seq}); it and later segments left out")
                break
        if seqs:
            plan.append((station, seqs))
    res.tips = {st: h for st, (_, h) in tips.items()}
    return plan


def _left_out(res: FetchResult, station: str, seq: int, why: str) -> None:
    res.problems.append(f"station {printable(station)} seq {seq}: {printable(why)}; it and later segments left out")


@dataclass
class RunResult:
    """A run of consecutive segments of one station, read and checked by :func:`check_run`."""

    station: str
    first_seq: int
    first_prev: str | None  # the first head's own ``prev`` (None if it has none or was not read)
    segments: list[SegmentRows]  # verified, in seq order
    problem: tuple[int, str] | None = None  # (seq, why) of the first segment that failed: the run stops there


def check_run(backend: Backend, prefix: str, state: TrustState, pool: ThreadPoolExecutor, station: str,
              seqs: list[int]) -> RunResult:
    """Read ``seqs`` (consecutive) of ``station`` with ``pool``, up to ``WINDOW`` ahead, and check each exactly as
    :func:`indexfmt.check_segment` does, each head's ``prev`` against the digest of the head before it in the
    run. The first head has no predecessor in the run: its own ``prev`` is taken and reported (``first_prev``)
    for :func:`_accept` to check against the last head stored. Stops at the first failure."""
    res = RunResult(station, seqs[0], None, [])
    ahead: deque[Future[Got]] = deque()
    todo = iter(seqs)
    prev: str | None = None
    try:
        while True:
            for seq in todo:
                ahead.append(pool.submit(get_segment, backend, prefix, station, seq))
                if len(ahead) >= WINDOW:
                    break
            if not ahead:
                return res
            got = ahead.popleft().result()
            if got.seq == res.first_seq:
                p = got.head.get("prev") if isinstance(got.head, dict) else None
                res.first_prev = p if isinstance(p, str) else None
                # seq 1 has no predecessor: check_segment requires its prev to be null
                prev = res.first_prev if got.seq > 1 else None
            try:
                if got.error is not None or got.head_raw is None:
                    raise got.error or fmt.SegmentInvalid("head not read")
                clips, docks, digest = fmt.check_segment(state, prefix, station, got.seq, got.head_raw, prev,
                                                         got.clips, got.docks)
            except fmt.SegmentInvalid as e:
                res.problem = (got.seq, str(e))
                return res
            res.segments.append(segment_rows(station, got.head, digest, clips, docks))
            prev = digest
    finally:
        for f in ahead:
            f.cancel()


def _accept(cache: Cache, res: FetchResult, prev: dict[str, str | None], broken: set[str], run: RunResult) -> None:
    """Store a checked run if it links to what is stored for its station (see :func:`check_run`); the first
    failure of a station is reported and ends it (``broken``)."""
    st = run.station
    if st in broken:
        return
    res.requests += 3 * len(run.segments) + (1 if run.problem else 0)
    # the link between runs: this run's first head must name the last head stored before it
    if run.first_seq > 1 and run.first_prev != prev.get(st):
        _left_out(res, st, run.first_seq, "prev does not match the previous head (chain reordered or a head "
                  "replaced)")
        broken.add(st)
        return
    for rows in run.segments:
        cache.add_rows(rows)
        prev[st] = rows.segment[3]
        res.new_segments += 1
        res.new_clips += rows.segment[4]
        if res.new_segments % BATCH == 0:
            cache.commit()
    if run.problem is not None:
        _left_out(res, st, *run.problem)
        broken.add(st)


def _runs(plan: list[tuple[str, list[int]]], size: int) -> list[tuple[str, list[int]]]:
    return [(st, seqs[i:i + size]) for st, seqs in plan for i in range(0, len(seqs), size)]


def _fetch_threads(backend: Backend, prefix: str, state: TrustState, cache: Cache,
                   plan: list[tuple[str, list[int]]], res: FetchResult, concurrency: int, job_segments: int) -> None:
    prev: dict[str, str | None] = dict(res.tips)
    broken: set[str] = set()
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for st, seqs in _runs(plan, job_segments):
            if st not in broken:
                _accept(cache, res, prev, broken, check_run(backend, prefix, state, pool, st, seqs))


def _fetch_procs(prefix: str, state: TrustState, cache: Cache, plan: list[tuple[str, list[int]]],
                 res: FetchResult, concurrency: int, procs: int, storage: Any, job_segments: int) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from dockd.agency.review import fetchproc
    from dockd.core.errors import StorageError
    from dockd.trust import log as trust

    jobs = _runs(plan, job_segments)
    prev: dict[str, str | None] = dict(res.tips)
    broken: set[str] = set()
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold threads
    args = (storage, prefix, trust.to_portable(state), max(1, concurrency // procs))
    try:
        with ProcessPoolExecutor(max_workers=procs, mp_context=ctx, initializer=fetchproc.init_worker,
                                 initargs=args) as pool:
            ahead: deque[Future[RunResult]] = deque()
            todo = iter(jobs)
            try:
                while True:
                    for station, seqs in todo:
                        if station not in broken:
                            ahead.append(pool.submit(fetchproc.run_job, station, seqs))
                        if len(ahead) >= 2 * procs:
                            break
                    if not ahead:
                        break
                    _accept(cache, res, prev, broken, ahead.popleft().result())
            finally:
                for f in ahead:
                    f.cancel()
    except BrokenProcessPool as e:
        raise StorageError(f"review fetch: a worker process died ({e}); the segments verified before it are "
                           "kept, run the fetch again") from None
