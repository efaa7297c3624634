"""The first fetch of a large index, spread over worker processes (``[review] fetch_procs``).

Why processes: reading 40 stations' year of segments is 44,000 small GETs, 14,600 signatures and 1.2 million
strictly parsed lines. In one process the download threads (boto3 is Python) and the checking thread share one
GIL and starve each other, so the fetch took about 1.6x what a plain boto3 download of the same objects takes
(``scripts/bench review``). Here each worker process downloads *and* checks a run of consecutive segments of one
station (a job), and sends back only the rows to cache; the parent stores them. CPU spreads over the cores.

What each side checks, so that splitting a station's chain into jobs loses nothing:

* a worker runs :func:`index.check_run` on its job, the same check of a run that the single-process fetch
  runs in its own threads (:func:`indexfmt.check_segment`: strict head, signature by a key enrolled for the
  station at the head's time, bodies' keys, sizes, hashes and lines; each head's ``prev`` against the digest of
  the head before it *in the run*; the first head's own ``prev`` reported as ``first_prev``);
* the parent, which consumes jobs in seq order per station, accepts a job only if ``first_prev`` equals the
  digest of the last segment it stored for that station (or the cache's tip), so the chain is checked link by
  link across jobs as within them (``index._accept``, shared with the single-process fetch). The first
  failure of a station stops it.

Workers are started with ``spawn`` (never ``fork`` of a process that has threads) and rebuild the trust state
from the statements the parent verified, re-verifying them against the root key those statements pin.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dockd.agency.review import index

_W: dict[str, Any] = {}  # the worker's backend, prefix, trust state and thread pool (set by init_worker)


def init_worker(storage_cfg: Any, prefix: str, trust_args: tuple[str, list[bytes]], threads: int) -> None:
    from dockd.storage import open_backend
    from dockd.trust import log as trust

    _W["backend"] = open_backend(storage_cfg)
    _W["prefix"] = prefix
    _W["state"] = trust.from_portable(*trust_args)
    _W["pool"] = ThreadPoolExecutor(max_workers=max(1, threads))


def run_job(station: str, seqs: list[int]) -> index.RunResult:
    """Read and check ``seqs`` (consecutive) of ``station``: :func:`index.check_run` in this worker."""
    return index.check_run(_W["backend"], _W["prefix"], _W["state"], _W["pool"], station, seqs)
