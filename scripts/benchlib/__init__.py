"""Shared helpers for the performance benchmarks (scripts/bench offload|upload).

Method, in one place:

* Every figure compares dockd with its peers **in the same run, on the same
  files**; only ratios are meant to travel between machines.
* Before each timed measurement: wait until the 1-minute load average is
  below ``LOAD_MAX`` (the machine is shared), ``sync``, then drop the page
  cache (``echo 3 > /proc/sys/vm/drop_caches``, needs root) so every
  measurement starts cold. Whether the drop worked is printed.
* Each tool runs ``reps`` times, interleaved (dockd, peer 1, peer 2, dockd,
  ...), so drift in the machine's load hits all tools alike; the median is
  reported.
* Throughput is payload bytes / seconds in MB/s (10^6 bytes).
* Peak RSS of a tool is the ``ru_maxrss`` of its process as reported by
  ``os.wait4`` (kernel accounting, includes its reaped children).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
BENCH_DIR = Path(os.environ.get("DOCKD_BENCH_DIR", "/var/tmp/dockd-bench"))
MiB = 1 << 20
GiB = 1 << 30
LOAD_MAX = float(os.environ.get("DOCKD_BENCH_LOAD_MAX", "0.7"))
LOAD_WAIT_S = float(os.environ.get("DOCKD_BENCH_LOAD_WAIT_S", "600"))


def say(msg: str = "") -> None:
    print(msg, flush=True)


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_quiet(max_wait_s: float = LOAD_WAIT_S, threshold: float = LOAD_MAX) -> float:
    """Wait until the 1-minute load average is below ``threshold`` (at most ``max_wait_s``); return it."""
    t0 = time.monotonic()
    la = load1()
    while la >= threshold and time.monotonic() - t0 < max_wait_s:
        time.sleep(2)
        la = load1()
    return la


_drop_warned = False


def drop_caches() -> bool:
    """sync, then drop clean page cache, dentries and inodes. False if not permitted."""
    global _drop_warned
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        if not _drop_warned:
            say(f"    (cannot drop the page cache: {e.strerror}; runs are NOT cold)")
            _drop_warned = True
        return False


@dataclass
class Run:
    tool: str
    seconds: float
    nbytes: int
    maxrss_kib: int
    load: float
    cold: bool
    cpu_s: float = 0.0  # client CPU seconds (user + system)
    extra: dict = field(default_factory=dict)

    @property
    def mbps(self) -> float:
        return self.nbytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Child:
    seconds: float  # wall time
    rc: int
    maxrss_kib: int  # peak RSS of the child (or of its largest reaped descendant)
    cpu_s: float  # user + system CPU of the child and its reaped descendants
    stdout: str


def run_child(argv: list[str], *, env: dict | None = None, cwd: str | os.PathLike | None = None,
              stdout_path: Path | None = None) -> Child:
    """Run ``argv`` and wait for it with wait4 (its own resource usage, not this process's)."""
    out = open(stdout_path, "w+") if stdout_path else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        text = ""
        if stdout_path:
            out.seek(0)
            text = out.read()
        return Child(dt, p.returncode, ru.ru_maxrss, ru.ru_utime + ru.ru_stime, text)
    finally:
        if stdout_path:
            out.close()


def median_run(runs: list[Run]) -> Run:
    """The run with the median time (for odd counts, the middle one)."""
    s = sorted(runs, key=lambda r: r.seconds)
    return s[(len(s) - 1) // 2] if len(s) % 2 else min(s[len(s) // 2 - 1:len(s) // 2 + 1], key=lambda r: r.seconds)


def summary(runs: list[Run]) -> dict:
    secs = [r.seconds for r in runs]
    return {
        "median_s": statistics.median(secs),
        "median_mbps": statistics.median(r.mbps for r in runs),
        "runs_s": [round(x, 3) for x in secs],
        "max_rss_mib": max(r.maxrss_kib for r in runs) / 1024,
        "median_cpu_s": statistics.median(r.cpu_s for r in runs),
        "loads": [r.load for r in runs],
        "cold": all(r.cold for r in runs),
    }


def fmt_row(cols: list, widths: list[int]) -> str:
    # one width per column: a row with a missing or extra column is a bug in the caller
    cells = zip(cols, widths, strict=True)
    return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(cells))


def write_random(path: Path, size: int, chunk: int = 8 * MiB) -> None:
    """A file of ``size`` random bytes, written durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_dataset(root: Path, files: list[tuple[str, int]]) -> tuple[int, int]:
    """Create (once) the files ``[(relative path, size)]`` under ``root``; reuse them when the spec matches.

    Returns (file count, total bytes).
    """
    spec = [[p, s] for p, s in files]
    marker = root.with_name(root.name + ".dataset.json")  # beside the tree, not in it
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == spec and all((root / p).stat().st_size == s for p, s in files):
                return len(files), sum(s for _, s in files)
        except (OSError, ValueError):
            pass
    if root.exists():
        shutil.rmtree(root)
    t0 = time.monotonic()
    total = sum(s for _, s in files)
    say(f"    generating {len(files)} files, {total / GiB:.2f} GiB of random bytes in {root} (cached for later runs)")
    for p, s in files:
        write_random(root / p, s)
    # Fixed mtimes so object keys (dated by mtime) are stable across runs.
    for p, _ in files:
        os.utime(root / p, ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    marker.write_text(json.dumps(spec))
    os.sync()
    say(f"    generated in {time.monotonic() - t0:.1f} s")
    return len(files), total


def rm_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def save_results(name: str, data: dict) -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    out = BENCH_DIR / f"results-{name}.json"
    out.write_text(json.dumps(data, indent=2,
                              default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))
    return out


def machine() -> dict:
    info = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        info["mem_gib"] = round(int(mem) / (1 << 20), 1)
    except OSError:
        pass
    try:
        src = subprocess.run(["findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", str(BENCH_DIR)], capture_output=True,
                             text=True).stdout.strip()
        info["bench_fs"] = src
    except OSError:
        pass
    return info


# ---------------------------------------------------------------- S3 buckets of a bench run (boto3 client)


def drop_bucket(client, bucket: str) -> None:
    """Empty ``bucket`` (objects and open multipart uploads) and delete it."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    client.delete_bucket(Bucket=bucket)


def stored_clips(client, bucket: str) -> tuple[int, int]:
    """(objects, bytes) in ``bucket`` not counting manifests: what a run stored of the clips."""
    n = total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            if not o["Key"].endswith(".manifest.json"):
                n += 1
                total += o["Size"]
    return n, total
