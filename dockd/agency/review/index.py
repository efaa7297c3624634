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
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockd.agency.review import indexfmt as fmt
from dockd.agency.review import match
from dockd.core.textsafe import printable
from dockd.storage.base import Backend, StoreFailure
from dockd.trust.log import TrustState

CACHE_FILE = "index.sqlite"
BATCH = 256  # segments read and checked per round: bounds memory whatever the history

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


class Cache:
    """The local cache: only verified segments, each stored with its lines in one transaction."""

    def __init__(self, cache_dir: Path):
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        p = cache_dir / CACHE_FILE
        if p.is_symlink() or (p.exists() and not p.is_file()):
            from dockd.core.errors import UsageError

            raise UsageError(f"review cache {printable(p)} is not a regular file")
        self.db = sqlite3.connect(p, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def tips(self) -> dict[str, tuple[int, str]]:
        """station -> (last verified seq, its head digest)."""
        rows = self.db.execute("SELECT s.station, s.seq, s.head_sha256 FROM segments s JOIN (SELECT station, "
                               "MAX(seq) m FROM segments GROUP BY station) t ON s.station = t.station AND s.seq = t.m")
        return {st: (seq, h) for st, seq, h in rows}

    def add(self, station: str, head: dict[str, Any], clips: list[dict[str, Any]], docks: list[dict[str, Any]]) -> None:
        cl = []
        for o in clips:
            c = match.clip_from_line(o)
            dev = o.get("device_id")
            cl.append((station, head["seq"], c.camera, dev if isinstance(dev, str) else None, c.start_ns,
                       c.duration_ns, c.offset_ns, c.key))
        dk = []
        for o in docks:
            d = match.dock_from_line(o)
            if d is not None:
                dk.append((station, head["seq"], d.camera, d.at_ns, json.dumps(list(d.anomalies))))
        with self.db:
            self.db.execute("INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                            (station, head["seq"], head["date"], fmt.head_digest(head), len(cl), len(dk)))
            self.db.executemany("INSERT INTO clips VALUES (?, ?, ?, ?, ?, ?, ?, ?)", cl)
            self.db.executemany("INSERT INTO docks VALUES (?, ?, ?, ?, ?)", dk)

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


def fetch(backend: Backend, prefix: str, state: TrustState, cache: Cache, concurrency: int = 16) -> FetchResult:
    """Bring ``cache`` up to date with the index in storage; see the module docstring."""
    res = FetchResult()
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
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for station in sorted(wanted):
            last, prev = tips.get(station, (0, None))
            seqs = sorted(s for s in wanted[station] if s > last)
            for n, seq in enumerate(seqs):
                if seq != last + 1 + n:
                    seqs = seqs[:n]
                    res.problems.append(f"station {printable(station)} seq {last + 1 + n}: missing from storage "
                                        f"(gap before seq {seq}); it and later segments left out")
                    break
            for i in range(0, len(seqs), BATCH):
                prev, ok = _batch(backend, prefix, state, cache, pool, station, seqs[i:i + BATCH], prev, res)
                if not ok:
                    break
    return res


def _batch(backend, prefix, state, cache, pool, station, seqs, prev, res) -> tuple[str | None, bool]:
    heads = list(pool.map(lambda s: _try(lambda: _read(backend, fmt.head_key(prefix, station, s), fmt.MAX_HEAD)),
                          seqs))
    res.requests += len(seqs)
    parsed: list[Any] = []
    for raw in heads:
        try:
            parsed.append(fmt.parse_head(raw) if isinstance(raw, bytes) else raw)
        except fmt.SegmentInvalid as e:
            parsed.append(e)

    def bodies(h: Any) -> Any:
        # only objects in the layout are read (a forged head naming some other, huge object gets nothing)
        date = h.get("date") if isinstance(h, dict) else None
        if not isinstance(date, str) or not fmt.DATE.match(date):
            return None, None
        seq = h.get("seq")
        if type(seq) is not int:
            return None, None
        return tuple(_try(lambda w=w: _read(backend, fmt.body_key(prefix, w, station, date, seq), fmt.MAX_BODY))
                     for w in ("clips", "docks"))

    for seq, raw_head, h, (craw, draw) in zip(seqs, heads, parsed, pool.map(bodies, parsed), strict=True):
        res.requests += 2
        try:
            if isinstance(h, Exception):
                raise h if isinstance(h, fmt.SegmentInvalid) else fmt.SegmentInvalid(str(h))
            if h is None:
                raise fmt.SegmentInvalid("head vanished while fetching")
            for raw in (craw, draw):
                if isinstance(raw, Exception):
                    raise raw
            clips, docks = fmt.check_segment(state, prefix, station, seq, raw_head, prev, craw, draw)
        except fmt.SegmentInvalid as e:
            res.problems.append(f"station {printable(station)} seq {seq}: {printable(e)}; it and later segments "
                                "left out")
            return prev, False
        cache.add(station, h, clips, docks)
        prev = fmt.head_digest(h)
        res.new_segments += 1
        res.new_clips += len(clips)
    return prev, True


def _try(fn) -> Any:
    try:
        return fn()
    except fmt.SegmentInvalid as e:
        return e
