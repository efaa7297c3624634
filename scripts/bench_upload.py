#!/usr/bin/env python3
"""Upload benchmark: dockd's upload workers vs. rclone copy vs. boto3 upload_file, same files, same server, same run.

    scripts/bench upload [--reps N] [--only 1g|200x5m] [--keep-server]

Server: a local SeaweedFS (``weed mini``, tests/support/seaweed.py) on
127.0.0.1, fresh for the run; every measurement writes to its own new bucket,
deleted afterwards (not timed).

Data sets (random bytes, generated once and cached in $DOCKD_BENCH_DIR):
``1g`` one 1 GiB clip; ``200x5m`` 200 clips of 5 MiB.

Tools:

* ``dockd``: the clips are first staged with ``dockd import`` (not timed);
  then the daemon's upload workers run (scripts/benchlib/child.py
  dockd-upload: ``[storage] concurrency`` Uploader threads) until the queue is
  empty: HEAD, PUT or multipart with the SHA-256 sent (the server checks it),
  HEAD with checksum mode to prove it, plus each clip's signed manifest.
* ``rclone``: ``rclone copy SRC bench:BUCKET/PREFIX`` with a config file as a
  user writes it (provider SeaweedFS, endpoint, keys), default options.
* ``boto3``: ``upload_file`` per file with the default TransferConfig.

Throughput counts clip bytes only (dockd also stores a ~1 KB manifest per
clip). dockd and boto3 are timed inside the process (after imports); rclone
by its process wall time. Targets: dockd >= 1.2x rclone and >= 0.9x boto3
on both sets; dockd peak RSS < 150 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import (  # noqa: E402 - found through the sys.path entries above
    BENCH_DIR,
    REPO,
    VENV_BIN,
    GiB,
    MiB,
    Run,
    drop_bucket,
    drop_caches,
    ensure_dataset,
    fmt_row,
    load1,
    machine,
    rm_tree,
    run_child,
    save_results,
    say,
    stored_clips,
    summary,
    wait_quiet,
)

from tests.support.seaweed import SeaweedServer  # noqa: E402 - found through the sys.path entries above

TARGET_RCLONE, TARGET_BOTO3, TARGET_RSS_MIB = 1.2, 0.9, 150
PY = str(VENV_BIN / "python")
CHILD = str(REPO / "scripts" / "benchlib" / "child.py")


def datasets(wd: Path, only: str | None) -> dict[str, tuple[Path, int, int]]:
    specs = {
        "1g": [("DCIM/100CAM/LONG0001.MP4", GiB)],
        "200x5m": [(f"DCIM/100CAM/CLIP{i:04d}.MP4", 5 * MiB) for i in range(1, 201)],
    }
    out = {}
    for name, files in specs.items():
        if only and name != only:
            continue
        root = wd / f"src-upload-{name}"
        out[name] = (root, *ensure_dataset(root, files))
    return out


class Bench:
    def __init__(self, work: Path, s3: SeaweedServer, storage_extra: str = ""):
        self.work, self.s3, self.storage_extra = work, s3, storage_extra
        self.admin = s3.client()
        self.n = 0
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key,
                        AWS_DEFAULT_REGION=s3.region)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            self.env.pop(k, None)
        self.rclone_conf = work / "rclone.conf"
        self.rclone_conf.write_text(
            "[bench]\ntype = s3\nprovider = SeaweedFS\n"
            f"access_key_id = {s3.access_key}\nsecret_access_key = {s3.secret_key}\n"
            f"region = {s3.region}\nendpoint = {s3.endpoint_url}\n")

    def bucket(self, tool: str, name: str) -> str:
        self.n += 1
        b = f"bench-{tool}-{name}-{self.n}".lower()
        self.admin.create_bucket(Bucket=b)
        return b

    def drop_bucket(self, bucket: str) -> None:
        drop_bucket(self.admin, bucket)

    def stored(self, bucket: str) -> tuple[int, int]:
        return stored_clips(self.admin, bucket)

    def prepare(self) -> tuple[float, bool, float]:
        la = wait_quiet()
        cold = drop_caches()
        return la, cold, self.server_cpu()

    def server_cpu(self) -> float:
        """CPU seconds used so far by the SeaweedFS process group (to show where the CPU goes)."""
        pgid, tot = self.s3.pid, 0
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(f[2]) == pgid:
                    tot += int(f[11]) + int(f[12])
        return tot / os.sysconf("SC_CLK_TCK")

    # -- tools

    def dockd(self, name: str, src: Path, n_files: int, nbytes: int) -> Run:
        bucket = self.bucket("dockd", name)
        data = self.work / "dockd-data"
        rm_tree(data)
        cfg = self.work / "dockd.toml"
        cfg.write_text(f'[station]\nid = "bench"\ndata_dir = "{data}"\n\n'
                       f'[storage]\nurl = "s3://{bucket}/bwc"\nendpoint_url = "{self.s3.endpoint_url}"\n'
                       f'region = "{self.s3.region}"\n{self.storage_extra}\n'
                       '[offload]\nreserve_free_mb = 64\n\n[metrics]\nlisten = ""\n')
        c = run_child([str(VENV_BIN / "dockd"), "--config", str(cfg), "import", str(src), "--camera", "BENCH",
                       "--json"], env=self.env, stdout_path=self.work / "import.json")
        if c.rc != 0 or json.loads(c.stdout)["staged"] != n_files:
            raise SystemExit(f"staging for the dockd upload failed (exit {c.rc}): {c.stdout[-1000:]}")
        la, cold, srv0 = self.prepare()
        c = run_child([PY, CHILD, "dockd-upload", str(cfg)], env=self.env, stdout_path=self.work / "dockd-upload.json")
        srv = self.server_cpu() - srv0
        res = json.loads(c.stdout.strip().splitlines()[-1]) if c.rc == 0 and c.stdout.strip() else {}
        if c.rc != 0 or res.get("states") != {"uploaded": n_files} or res.get("errors"):
            raise SystemExit(f"dockd upload did not finish cleanly (exit {c.rc}): {c.stdout[-2000:]}")
        if self.stored(bucket) != (n_files, nbytes):
            raise SystemExit(f"dockd: bucket holds {self.stored(bucket)}, expected {(n_files, nbytes)}")
        self.drop_bucket(bucket)
        rm_tree(data)
        return Run("dockd", res["seconds"], nbytes, c.maxrss_kib, la, cold, c.cpu_s,
                   {"wall_s": c.seconds, "server_cpu_s": srv, "progress_bytes": res["progress_bytes"],
                    "upload_errors": res["upload_errors"]})

    def rclone(self, name: str, src: Path, n_files: int, nbytes: int) -> Run:
        bucket = self.bucket("rclone", name)
        env = dict(self.env)
        env.pop("AWS_CA_BUNDLE", None)  # rclone refuses to start while it is set (and it is plain http here)
        la, cold, srv0 = self.prepare()
        c = run_child(["rclone", "--config", str(self.rclone_conf), "copy", str(src), f"bench:{bucket}/bwc"], env=env)
        srv = self.server_cpu() - srv0
        if c.rc != 0:
            raise SystemExit(f"rclone copy failed (exit {c.rc})")
        if self.stored(bucket) != (n_files, nbytes):
            raise SystemExit(f"rclone: bucket holds {self.stored(bucket)}, expected {(n_files, nbytes)}")
        self.drop_bucket(bucket)
        return Run("rclone", c.seconds, nbytes, c.maxrss_kib, la, cold, c.cpu_s, {"server_cpu_s": srv})

    def boto3(self, name: str, src: Path, n_files: int, nbytes: int) -> Run:
        bucket = self.bucket("boto3", name)
        la, cold, srv0 = self.prepare()
        c = run_child([PY, CHILD, "boto3-upload", self.s3.endpoint_url, bucket, "bwc", str(src)],
                      env=self.env, stdout_path=self.work / "boto3.json")
        srv = self.server_cpu() - srv0
        if c.rc != 0:
            raise SystemExit(f"boto3 upload failed (exit {c.rc})")
        if self.stored(bucket) != (n_files, nbytes):
            raise SystemExit(f"boto3: bucket holds {self.stored(bucket)}, expected {(n_files, nbytes)}")
        self.drop_bucket(bucket)
        return Run("boto3", json.loads(c.stdout)["seconds"], nbytes, c.maxrss_kib, la, cold, c.cpu_s,
                   {"wall_s": c.seconds, "server_cpu_s": srv})


def report(name: str, nbytes: int, n_files: int, runs: dict[str, list[Run]]) -> dict:
    say(f"\n  {name}: {n_files} files, {nbytes / GiB:.2f} GiB (median of {len(runs['dockd'])} runs)")
    w = [8, 10, 8, 10, 12, 12, 22]
    say("  " + fmt_row(["tool", "median s", "MB/s", "peak RSS", "client CPU", "server CPU", "runs s"], w))
    res = {}
    for tool, rs in runs.items():
        sm = summary(rs)
        sm["median_server_cpu_s"] = statistics.median(r.extra.get("server_cpu_s", 0.0) for r in rs)
        res[tool] = sm
        say("  " + fmt_row([tool, f"{sm['median_s']:.2f}", f"{sm['median_mbps']:.0f}", f"{sm['max_rss_mib']:.0f} MiB",
                            f"{sm['median_cpu_s']:.2f} s", f"{sm['median_server_cpu_s']:.2f} s",
                            " ".join(f"{x:.2f}" for x in sm["runs_s"])], w))
    d = res["dockd"]["median_mbps"]
    out = {"files": n_files, "bytes": nbytes, "tools": res, "ratios": {}}
    for peer, target in (("rclone", TARGET_RCLONE), ("boto3", TARGET_BOTO3)):
        r = d / res[peer]["median_mbps"]
        out["ratios"][f"dockd/{peer}"] = r
        say(f"  dockd/{peer:<6} = {r:.2f}x   (target >= {target}x: {'met' if r >= target else 'MISSED'})")
    rss = res["dockd"]["max_rss_mib"]
    say(f"  dockd peak RSS = {rss:.0f} MiB "
        f"(target < {TARGET_RSS_MIB} MiB: {'met' if rss < TARGET_RSS_MIB else 'MISSED'})")
    prog = {r.extra["progress_bytes"] for r in runs["dockd"]}
    say(f"  dockd progress counted {sorted(prog)} bytes for {nbytes} clip bytes "
        f"({'each byte once' if prog == {nbytes} else 'MISCOUNTED'})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench upload", description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions per tool (median reported; default 3)")
    ap.add_argument("--only", choices=["1g", "200x5m"], help="run one data set only")
    ap.add_argument("--tools", default="dockd,rclone,boto3", help="comma-separated subset (dockd is required)")
    ap.add_argument("--concurrency", type=int, help="dockd [storage] concurrency (default: dockd's default)")
    ap.add_argument("--part-size-mb", type=int, help="dockd [storage] part_size_mb (default: dockd's default)")
    ap.add_argument("--part-concurrency", type=int, help="dockd [storage] part_concurrency (default: dockd's default)")
    a = ap.parse_args(argv)
    if not shutil.which("rclone") and "rclone" in a.tools:
        raise SystemExit("rclone not found (scripts/bench installs the Debian package)")
    tools = a.tools.split(",")

    wd = BENCH_DIR
    wd.mkdir(parents=True, exist_ok=True)
    work = wd / "upload-work"
    rm_tree(work)
    work.mkdir(parents=True)
    say(f"==> upload benchmark in {wd}  (machine: {json.dumps(machine())})")
    sets = datasets(wd, a.only)
    results = {"machine": machine(), "reps": a.reps, "sets": {}}
    server = SeaweedServer(work / "seaweed")
    try:
        server.start()
        ver = subprocess.run([server.command()[0], "version"], capture_output=True, text=True).stdout.strip()
        rcv = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout.split("\n")[0]
        results["versions"] = {"seaweedfs": ver, "rclone": rcv}
        say(f"    SeaweedFS at {server.endpoint_url} ({ver}); {rcv}")
        say(f"    page cache dropped before each run: {drop_caches()}; load now {load1():.2f}")
        extra = "".join(f"{k} = {v}\n" for k, v in (("concurrency", a.concurrency), ("part_size_mb", a.part_size_mb),
                                                      ("part_concurrency", a.part_concurrency)) if v)
        results["dockd_storage_overrides"] = extra.strip()
        b = Bench(work, server, extra)
        for name, (src, n_files, nbytes) in sets.items():
            runs: dict[str, list[Run]] = {t: [] for t in tools}
            say(f"\n==> {name}: {', '.join(tools)} x {a.reps}")
            for rep in range(1, a.reps + 1):
                for tool in tools:
                    r = getattr(b, tool)(name, src, n_files, nbytes)
                    runs[tool].append(r)
                    say(f"    rep {rep} {tool:<6} {r.seconds:6.2f} s  {r.mbps:6.0f} MB/s"
                        f"  rss {r.maxrss_kib / 1024:5.0f} MiB"
                        f"  cpu {r.cpu_s:5.2f} s  server cpu {r.extra.get('server_cpu_s', 0):5.2f} s"
                        f"  load {r.load:.2f}  {'cold' if r.cold else 'WARM'}")
            if all(t in runs for t in ("dockd", "rclone", "boto3")):
                results["sets"][name] = report(name, nbytes, n_files, runs)
            results["sets"].setdefault(name, {})["runs"] = {t: [vars(r) for r in rs] for t, rs in runs.items()}
    finally:
        server.stop()
        rm_tree(work)
    say(f"\n    results: {save_results('upload', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
