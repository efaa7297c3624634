#!/usr/bin/env python3
"""Where an offload's time goes, per thread: ``dockd import`` run in this process with timers around its steps.

    [PYTHONPATH=DIR] python scripts/benchlib/offload_profile.py SRC [--probe] [--drop-caches]

A fresh data dir under $TMPDIR, ``verify = "reread"``; prints the wall time of the whole offload and, for
the copy thread (``MainThread``) and the finishing thread (``verify-*``), the seconds spent in each step and
per clip. cProfile cannot do this: it sees one thread, and the copier's reader and writer threads are where
the I/O happens. The timers cost a few microseconds per call. ``wait for clip N-1`` on the copy thread is the
time the copy stage waited for the finishing stage (the finishing stage is then the slower one); the
finishing thread's idle time is the rest of the wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import _base
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if not os.environ.get("PYTHONPATH"):  # PYTHONPATH=DIR profiles the dockd package in DIR (e.g. older code)
    sys.path.insert(0, str(REPO))

_totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
_lock = threading.Lock()


def _group() -> str:
    n = threading.current_thread().name
    return "copy (MainThread)" if n == "MainThread" else n.split("-")[0] if "-" in n else n


def _timed(label: str, f):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            dt = time.perf_counter() - t
            with _lock:
                v = _totals[(_group(), label)]
                v[0] += dt
                v[1] += 1
    return wrapper


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--probe", action="store_true", help="[offload] media_probe on (default off)")
    ap.add_argument("--drop-caches", action="store_true", help="sync and drop the page cache first (root)")
    a = ap.parse_args()

    from dockd import config as config_mod
    from dockd.core.events import CameraInfo
    from dockd.evidence import durable, keys
    from dockd.evidence import manifest as mf
    from dockd.queue.fileformat import queue_path
    from dockd.queue.store import Queue
    from dockd.station import offloader as offmod

    work = Path(tempfile.mkdtemp(prefix="offload-profile-", dir=os.environ.get("DOCKD_BENCH_DIR")))
    try:
        cfgp = work / "dockd.toml"
        cfgp.write_text(f'[station]\nid = "bench"\ndata_dir = "{work / "data"}"\n\n[offload]\nverify = "reread"\n'
                        f'reserve_free_mb = 64\nmedia_probe = {"true" if a.probe else "false"}\n\n'
                        '[metrics]\nlisten = ""\n')
        cfg = config_mod.load(cfgp)
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        q = Queue(queue_path(cfg.data_dir))
        key, _ = keys.load_or_create(cfg.data_dir)
        off = offmod.Offloader(cfg, q, key)
        q.dock_camera("BENCH", source="import", record=False)
        from dockd.cli import logs
        logs.configure("warning")

        os.fsync = _timed("fsync (file and dir)", os.fsync)
        durable.fsync_dir = _timed("  of which dir fsync", durable.fsync_dir)
        offmod.copy_hash = _timed("copy + hash (pipeline)", offmod.copy_hash)
        durable.sha256_file = _timed("re-read + hash (O_DIRECT)", durable.sha256_file)
        durable.publish = _timed("rename", durable.publish)
        durable.write_atomic = _timed("manifest write (+fsync)", durable.write_atomic)
        durable.drop_cache = _timed("drop cache", durable.drop_cache)
        mf.sign = _timed("sign (Ed25519, JCS)", mf.sign)
        offmod.stationclock.read = _timed("station clock", offmod.stationclock.read)
        for name in ("transition", "transition_many", "last_audit", "discover_many"):
            if not hasattr(q, name):
                continue
            setattr(q, name, _timed(f"queue.{name} (commit)" if "transition" in name else f"queue.{name}",
                                    getattr(q, name)))
        for name in ("_media", "wait_for_space", "_start_probe", "_dock_facts"):
            setattr(off, name, _timed(name, getattr(off, name)))
        real_result = _base.Future.result

        def result(self, timeout=None):
            if threading.current_thread().name == "MainThread":
                return _timed("wait for clip N-1 (finishing stage)", real_result)(self, timeout)
            return real_result(self, timeout)
        _base.Future.result = result  # type: ignore[method-assign]

        if a.drop_caches:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        t0 = time.perf_counter()
        s = off.offload(CameraInfo(serial="BENCH", source="import"), Path(a.src))
        wall = time.perf_counter() - t0
        n = s.staged
        print(f"offload: {n} clips, {s.bytes / 1e6:.0f} MB in {wall:.2f} s ({s.bytes / 1e6 / wall:.0f} MB/s); "
              f"cpu {time.process_time():.2f} s; load {os.getloadavg()[0]:.2f}")
        print(f"{'thread':<20} {'step':<40} {'calls':>6} {'total s':>8} {'ms/clip':>8}")
        for (g, label), (tot, calls) in sorted(_totals.items(), key=lambda kv: (kv[0][0], -kv[1][0])):
            print(f"{g:<20} {label:<40} {calls:>6} {tot:8.3f} {tot * 1000 / max(n, 1):8.2f}")
        q.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
