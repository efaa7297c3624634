#!/usr/bin/env python3
"""Scale benchmark: a station with years of history against a new one, same commands, same run.

    scripts/bench scale [--clips N] [--reps R] [--idle-s S] [--regen]

Two data dirs in $DOCKD_BENCH_DIR (default /var/tmp/dockd-bench): ``scale-0`` (an empty queue: the
same 40 cameras docked, no clips) and ``scale-N`` (default N = 1,000,000 clips over 40 cameras: all but
30 ``wiped`` through the whole path with their 7 audit rows each, days exported and heads signed as
the daemon does, then a few clips in every other state; generated once by scripts/benchlib/scalegen.py
through dockd's queue code and cached; ``--regen`` makes it again). On each, as child processes:

* ``dockd status``, ``dockd queue --limit 50``, ``dockd show ID`` (a clip from the middle):
  wall time, median of R (warm; ``status`` also once cold when the page cache can be dropped);
* ``dockd run`` (no storage, no sources, metrics on 127.0.0.1): time from exec until ``/metrics``
  answers; then ``GET /metrics`` (median of 20); then, 10 s later, S seconds idle: CPU seconds used (from
  /proc/PID/stat) and RSS (VmRSS and peak VmHWM);
* ``dockd audit --verify``: wall time, rows/s, peak RSS.

Targets (issue #12) at 1,000,000 clips: status < 0.3 s, queue/show < 0.2 s, /metrics < 0.1 s,
daemon start < 3 s, idle CPU < 1% and RSS < 150 MiB, audit --verify >= 100,000 rows/s in < 200 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import BENCH_DIR, REPO, VENV_BIN, drop_caches, load1, machine, run_child, save_results, say, wait_quiet  # noqa: E402

DOCKD = str(VENV_BIN / "dockd")
PY = str(VENV_BIN / "python")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(data_dir: Path, port: int) -> Path:
    p = data_dir.parent / f"{data_dir.name}.toml"
    p.write_text(f"""[station]
id = "bench"
data_dir = "{data_dir}"

[sources]
udev = false
watch_dirs = []
drop_privileges = false

[offload]
keep_staged_hours = 24.0

[metrics]
listen = "127.0.0.1:{port}"
""")
    return p


def dataset(n: int, regen: bool) -> tuple[Path, dict]:
    d = BENCH_DIR / f"scale-{n}"
    done = d / "generated.json"
    if done.exists() and not regen:
        return d, json.loads(done.read_text())
    subprocess.run(["rm", "-rf", str(d)], check=True)
    if True:
        say(f"generating {n:,} clips in {d} (once; cached)")
        out = subprocess.run([PY, str(REPO / "scripts/benchlib/scalegen.py"), str(d), str(n)], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        info = json.loads(out)
        say(f"  generated in {info['seconds']} s")
    done.write_text(json.dumps(info))
    return d, info


def timed(argv: list[str], reps: int) -> dict:
    runs = []
    for _ in range(reps):
        c = run_child(argv, stdout_path=BENCH_DIR / "scale-last.out")
        if c.rc != 0:
            raise SystemExit(f"failed ({c.rc}): {' '.join(argv)}\n{c.stdout[-2000:]}")
        runs.append(c)
    return {"seconds": statistics.median(r.seconds for r in runs), "all": [round(r.seconds, 3) for r in runs],
            "maxrss_kib": max(r.maxrss_kib for r in runs), "stdout": runs[-1].stdout}


def proc_cpu(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICKS


def proc_mem(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


def get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        r.read()
    return time.perf_counter() - t0


def daemon(cfg: Path, port: int, idle_s: float) -> dict:
    url = f"http://127.0.0.1:{port}/metrics"
    t0 = time.perf_counter()
    p = subprocess.Popen([DOCKD, "--config", str(cfg), "run"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if p.poll() is not None:
                raise SystemExit(f"dockd run exited with {p.returncode}")
            try:
                get(url)
                break
            except OSError:
                time.sleep(0.02)
            if time.perf_counter() - t0 > 900:
                raise SystemExit("dockd run: /metrics did not answer in 900 s")
        start_s = time.perf_counter() - t0
        scrapes = sorted(get(url) for _ in range(20))
        time.sleep(10)  # settled: the first ticks' one-time work (lazy imports, first head) is not idling
        cpu0, w0 = proc_cpu(p.pid), time.monotonic()
        time.sleep(idle_s)
        cpu1, w1 = proc_cpu(p.pid), time.monotonic()
        mem = proc_mem(p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return {"start_s": start_s, "metrics_s": statistics.median(scrapes),
            "idle_cpu_pct": 100 * (cpu1 - cpu0) / (w1 - w0), "idle_cpu_s": cpu1 - cpu0, "idle_s": w1 - w0,
            "rss_kib": mem.get("VmRSS", 0), "hwm_kib": mem.get("VmHWM", 0)}


def measure(name: str, d: Path, info: dict, reps: int, idle_s: float) -> dict:
    port = free_port()
    cfg = config(d, port)
    base = [DOCKD, "--config", str(cfg)]
    clip_id = max(1, info["clips"] // 2)
    res: dict = {"load_before": load1()}
    say(f"[{name}] status / queue / show (median of {reps})")
    wait_quiet()
    res["status"] = timed([*base, "status"], reps)
    cold = drop_caches()
    res["status_cold"] = timed([*base, "status"], 1) if cold else None
    res["queue"] = timed([*base, "queue", "--limit", "50"], reps)
    res["show"] = timed([*base, "show", str(clip_id)], reps) if info["clips"] else None
    say(f"[{name}] daemon start, /metrics, {idle_s:.0f} s idle")
    wait_quiet()
    res["daemon"] = daemon(cfg, port, idle_s)
    say(f"[{name}] audit --verify")
    wait_quiet()
    v = timed([*base, "audit", "--verify"], 1)
    words = v["stdout"].split()
    rows = int(words[words.index("intact:") + 1]) if "intact:" in words else None
    if rows is None:
        raise SystemExit(f"audit --verify did not say intact: {v['stdout']}")
    v["rows"] = rows
    v["rows_per_s"] = rows / v["seconds"]
    res["verify"] = v
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--idle-s", type=float, default=30.0)
    ap.add_argument("--regen", action="store_true")
    a = ap.parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    empty_dir, empty_info = dataset(0, True)
    big_dir, big_info = dataset(a.clips, a.regen)
    r0 = measure("empty", empty_dir, empty_info, a.reps, a.idle_s)
    r1 = measure(f"{a.clips:,} clips", big_dir, big_info, a.reps, a.idle_s)

    def row(label, v0, v1, unit, target, ok):
        ratio = f"{v1 / v0:.2f}x" if v0 else "-"
        fmt = (lambda v: f"{v:.3f} {unit}") if unit == "s" else (lambda v: f"{v:,.0f} {unit}")
        verdict = "met" if ok else "NOT met"
        say(f"| {label:<34} | {fmt(v0):>14} | {fmt(v1):>14} | {ratio:>7} | {target:<12} | {verdict:<7} |")

    say()
    say(f"machine: {machine()}")
    n_clips = f"{a.clips:,} clips"
    say(f"| {'measure':<34} | {'empty queue':>14} | {n_clips:>14} | {'ratio':>7} | {'target':<12} | {'':<7} |")
    say(f"|{'-' * 36}|{'-' * 16}:|{'-' * 16}:|{'-' * 8}:|{'-' * 14}|{'-' * 9}|")
    s0, s1 = r0["status"]["seconds"], r1["status"]["seconds"]
    row("dockd status", s0, s1, "s", "< 0.3 s", s1 < 0.3)
    if r0["status_cold"] and r1["status_cold"]:
        row("dockd status (cold cache)", r0["status_cold"]["seconds"], r1["status_cold"]["seconds"], "s", "-", True)
    row("dockd queue --limit 50", r0["queue"]["seconds"], r1["queue"]["seconds"], "s", "< 0.2 s",
        r1["queue"]["seconds"] < 0.2)
    row("dockd show ID", r0["queue"]["seconds"], r1["show"]["seconds"], "s", "< 0.2 s", r1["show"]["seconds"] < 0.2)
    d0, d1 = r0["daemon"], r1["daemon"]
    row("GET /metrics", d0["metrics_s"], d1["metrics_s"], "s", "< 0.1 s", d1["metrics_s"] < 0.1)
    row("daemon start until /metrics answers", d0["start_s"], d1["start_s"], "s", "< 3 s", d1["start_s"] < 3)
    row("daemon idle CPU (%)", d0["idle_cpu_pct"], d1["idle_cpu_pct"], "%", "< 1%", d1["idle_cpu_pct"] < 1)
    row("daemon idle RSS", d0["rss_kib"] / 1024, d1["rss_kib"] / 1024, "MiB", "< 150 MiB", d1["rss_kib"] < 150 * 1024)
    row("daemon peak RSS", d0["hwm_kib"] / 1024, d1["hwm_kib"] / 1024, "MiB", "-", True)
    v0, v1 = r0["verify"], r1["verify"]
    row("audit --verify wall", v0["seconds"], v1["seconds"], "s", "-", True)
    row("audit --verify rows/s", v0["rows_per_s"], v1["rows_per_s"], "rows/s", ">= 100,000", v1["rows_per_s"] >= 1e5)
    row("audit --verify peak RSS", v0["maxrss_kib"] / 1024, v1["maxrss_kib"] / 1024, "MiB", "< 200 MiB",
        v1["maxrss_kib"] < 200 * 1024)
    say(f"audit rows: empty {v0['rows']:,}, history {v1['rows']:,}; "
        "(show on the empty queue: the queue --limit time stands in, no clip to show)")
    out = save_results("scale", {"machine": machine(), "clips": a.clips, "empty": r0, "history": r1,
                                 "generated": big_info | {"in_flight": None}})
    say(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
