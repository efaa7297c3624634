"""The first fetch of a large index, spread over worker processes (``[review] fetch_procs``).

Why processes: reading 40 stations' year of segments is 44,000 small GETs, 14,600 signatures and 1.2 million
strictly parsed lines. In one process the download threads (boto3 is Python) and the checking thread share one
GIL and starve each other, so the fetch took about 1.6x what a plain boto3 download of the same objects takes
(``scripts/bench review``). Here each worker process downloads *and* checks a run of consecutive segments of one
station (a job), and sends back only the rows to cache; the parent stores them. CPU spreads over the cores.

What each side checks, so that splitting a station's chain into jobs loses nothing:

* a worker checks every segment of its job exactly as the single-process fetch does
  (:func:`indexfmt.check_segment`: strict head, signature by a key enrolled for the station at the head's time,
  bodies' keys, sizes, hashes and lines), each head's ``prev`` against the digest of the head before it *in the
  job*; the first segment of a job has no predecessor in the job, so the worker takes that head's own ``prev``
  and reports it (``first_prev``);
* the parent, which consumes jobs in seq order per station, accepts a job only if ``first_prev`` equals the
  digest of the last segment it stored for that station (or the cache's tip), so the chain is checked link by
  link across jobs as within them. The first failure of a station stops it, as in the single-process fetch.

Workers are started with ``spawn`` (never ``fork`` of a process that has threads) and rebuild the trust state
from the statements the parent verified, re-verifying them against the root key those statements pin.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dockd.agency.review import index
from dockd.agency.review import indexfmt as fmt

_W: dict[str, Any] = {}  # the worker's backend, prefix, trust state and thread pool (set by _init)


@dataclass
class JobResult:
    station: str
    first_seq: int
    first_prev: str | None  # the first head's own ``prev`` (None if it has none or was not read)
    segments: list[index.SegmentRows]  # verified, in seq order
    problem: tuple[int, str] | None = None  # (seq, why) of the first segment that failed: the job stops there


def init_worker(storage_cfg: Any, prefix: str, trust_args: tuple[str, list[bytes]], threads: int) -> None:
    from dockd.storage import open_backend
    from dockd.trust import log as trust

    _W["backend"] = open_backend(storage_cfg)
    _W["prefix"] = prefix
    _W["state"] = trust.from_portable(*trust_args)
    _W["pool"] = ThreadPoolExecutor(max_workers=max(1, threads))


def run_job(station: str, seqs: list[int]) -> JobResult:
    """Read and check ``seqs`` (consecutive) of ``station``: see the module docstring."""
    backend, prefix, state, pool = _W["backend"], _W["prefix"], _W["state"], _W["pool"]
    return check_run(backend, prefix, state, pool, station, seqs)


def check_run(backend: Any, prefix: str, state: Any, pool: ThreadPoolExecutor, station: str,
              seqs: list[int]) -> JobResult:
    """The job itself, given its resources (also how tests run it in-process)."""
    res = JobResult(station, seqs[0], None, [])
    ahead: deque[Future[index.Got]] = deque()
    todo = iter(seqs)
    prev: str | None = None
    try:
        while True:
            for seq in todo:
                ahead.append(pool.submit(index.get_segment, backend, prefix, station, seq))
                if len(ahead) >= index.WINDOW:
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
            res.segments.append(index.segment_rows(station, got.head, digest, clips, docks))
            prev = digest
    finally:
        for f in ahead:
            f.cancel()
