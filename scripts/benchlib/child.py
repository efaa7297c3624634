"""Child processes of the upload benchmark (run as subprocesses so their peak RSS can be measured).

    python scripts/benchlib/child.py dockd-upload CONFIG
        Run dockd's upload workers (the daemon's own loop: ``[storage]
        concurrency`` threads, each ``Uploader.run_once`` until nothing is due)
        on a data dir whose queue already holds staged clips. Every clip is
        uploaded with its SHA-256 sent and proven by HEAD, sidecars and signed
        manifests included. Prints JSON: seconds, clip states, progress bytes.

    python scripts/benchlib/child.py boto3-upload ENDPOINT BUCKET PREFIX DIR
        ``boto3`` ``upload_file`` of every file under DIR (sorted), one after
        the other, default TransferConfig (multipart with threads for files
        over 8 MiB). Credentials from the environment. Prints JSON.

    python scripts/benchlib/child.py dockd-shift CONFIG ROOT
        Run the daemon (in this process, no event sources) and dock the
        camera whose files are under ROOT (a watched-directory camera, serial
        BENCH); the daemon drains (offload, upload, verify, wipe) and stops.
        Prints JSON: the audit times of the dock, of the camera's ``ready``
        and of each phase (last staged, last uploaded, source re-reads,
        wipes), and the clip states.

The timed span starts after imports and set-up (a daemon pays those once).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path


def dockd_upload(config_path: str) -> dict:
    from dockd import config as config_mod
    from dockd.cli import logs
    from dockd.queue.store import Queue
    from dockd.station.status import Meters
    from dockd.station.uploader import Uploader
    from dockd.storage import open_backend

    logs.configure("warning", stream=sys.stderr)
    cfg = config_mod.load(Path(config_path))
    q = Queue(cfg.data_dir / "queue.db")
    backend = open_backend(cfg.storage)
    meters = Meters()
    owner = f"{socket.gethostname()}:{os.getpid()}:bench"
    up = Uploader(cfg, q, backend, owner=owner, on_progress=meters.uploaded, on_error=meters.upload_error)
    errors: list[str] = []

    def worker() -> None:  # the daemon's _upload_loop, minus waiting for new work
        while True:
            try:
                clip = up.run_once()
            except Exception as e:  # noqa: BLE001 - the error is the benchmark's result, reported by the parent
                errors.append(repr(e))
                return
            if clip is None:
                return

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, name=f"upload-{i}") for i in range(cfg.storage.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - t0
    counts = {str(k): v for k, v in q.counts().items() if v}
    q.close()
    return {"seconds": secs, "states": counts, "progress_bytes": sum(meters.up.values()), "errors": errors,
            "upload_errors": dict(meters.errors)}


def boto3_upload(endpoint: str, bucket: str, prefix: str, root: str) -> dict:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    files = sorted(p for p in Path(root).rglob("*") if p.is_file())
    t0 = time.perf_counter()
    for p in files:
        client.upload_file(str(p), bucket, f"{prefix}/{p.relative_to(root).as_posix()}")
    secs = time.perf_counter() - t0
    return {"seconds": secs, "files": len(files)}


def dockd_shift(config_path: str, root: str) -> dict:
    from dockd import config as config_mod
    from dockd.cli import logs
    from dockd.core.events import CameraInfo, Docked
    from dockd.queue.store import Queue
    from dockd.station.daemon import Daemon

    logs.configure("warning", stream=sys.stderr)
    cfg = config_mod.load(Path(config_path))
    d = Daemon(cfg, drain=True, sources=[])
    d.events.put(Docked(CameraInfo(serial="BENCH"), root=Path(root)))
    rc = d.run()
    q = Queue(cfg.data_dir / "queue.db")
    try:
        rows = q.audit_rows(camera="BENCH")
        counts = {str(k): v for k, v in q.counts().items() if v}
    finally:
        q.close()

    from datetime import datetime

    def times(pred) -> list[float]:
        return [datetime.fromisoformat(r["at"]).timestamp() for r in rows if pred(r)]

    docked = times(lambda r: r["event"] == "camera.docked")[0]
    ready = times(lambda r: r["event"] == "camera.state" and r["detail"].get("to") == "ready")
    phases = {}
    for name, ev in (("staged", "clip.staged"), ("uploaded", "clip.uploaded"), ("verified", "source.verified"),
                     ("wiped", "clip.wiped")):
        ts = times(lambda r, ev=ev: r["event"] == ev)
        if ts:
            phases[name] = [round(min(ts) - docked, 3), round(max(ts) - docked, 3), len(ts)]
    return {"rc": rc, "dock_to_ready_s": (ready[-1] - docked) if ready else None, "phases": phases,
            "states": counts}


def main(argv: list[str]) -> int:
    if argv[:1] == ["dockd-upload"] and len(argv) == 2:
        out = dockd_upload(argv[1])
    elif argv[:1] == ["dockd-shift"] and len(argv) == 3:
        out = dockd_shift(argv[1], argv[2])
    elif argv[:1] == ["boto3-upload"] and len(argv) == 5:
        out = boto3_upload(*argv[1:])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
