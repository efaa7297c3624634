#!/usr/bin/env python3
"""Disclosure benchmark: ``dockd disclose create`` vs. a plain parallel boto3 download of the same objects.

    scripts/bench disclose [--clips N] [--size-mb M] [--reps R]     (default 200 clips x 25 MiB = 5 GiB)

Set-up (not timed): a fresh local SeaweedFS (127.0.0.1); an agency trust log (``dockd trust init``), the
station key requested and enrolled, a discloser key (``dockd keys new``, ``dockd trust enrol``), the log
published; the clips imported (``dockd import``) and uploaded by the station's own upload workers.

Timed, interleaved, each from a cold page cache when root (scripts/benchlib):

* ``dockd``: ``dockd disclose create`` of every clip into a new bag directory -- each clip streamed from
  storage, SHA-256 and SHA-512 computed while writing, compared with its signed manifest, fsynced; the
  manifests, the trust log, transfer.json, case.jsonld, VERIFY.txt, tag manifests and signatures; the
  case ledger entry. Timed as the process's wall time (Python start-up included).
* ``boto3``: ``download_file`` of the same object keys by a pool of 4 threads, no hashing, no fsync.

Throughput = clip bytes / seconds (MB/s). Targets (issue #16): dockd >= 0.8x boto3, peak RSS < 200 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import (  # noqa: E402 - found through the sys.path entries above
    BENCH_DIR,
    VENV_BIN,
    MiB,
    Run,
    drop_caches,
    ensure_dataset,
    load1,
    machine,
    rm_tree,
    run_child,
    save_results,
    say,
    summary,
    wait_quiet,
)

from tests.support.seaweed import SeaweedServer  # noqa: E402 - found through the sys.path entries above

TARGET_RATIO, TARGET_RSS_MIB = 0.8, 200
DOCKD = str(VENV_BIN / "dockd")
PY = str(VENV_BIN / "python")


def boto3_child(endpoint: str, bucket: str, keys_file: str, dest: str) -> int:
    """Child: download every key in ``keys_file`` with 4 threads; print {"seconds", "bytes"}."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    c = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    keys = json.loads(Path(keys_file).read_text())
    t0 = time.perf_counter()

    def one(k: str) -> int:
        p = Path(dest) / k
        p.parent.mkdir(parents=True, exist_ok=True)
        c.download_file(bucket, k, str(p))
        return p.stat().st_size

    with ThreadPoolExecutor(4) as pool:
        n = sum(pool.map(one, keys))
    print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": n}))
    return 0


def dockd(*args, env, config=None, out: Path | None = None):
    argv = [DOCKD] + (["--config", str(config)] if config else []) + [str(a) for a in args]
    c = run_child(argv, env=env, stdout_path=out)
    if c.rc != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed with exit {c.rc}")
    return c


def setup(work: Path, s3: SeaweedServer, env: dict, src: Path, n: int) -> tuple[Path, Path, Path, list[str]]:
    bucket = "bench-disclose"
    s3.client().create_bucket(Bucket=bucket)
    tdir, root = work / "trust", work / "root.ed25519"
    rm_tree(tdir)
    for p in (root, work / "discloser.ed25519", work / "discloser.pub.pem", work / "station.req.json"):
        p.unlink(missing_ok=True)
    data = work / "data"
    rm_tree(data)
    cfg = work / "dockd.toml"
    cfg.write_text(f'[station]\nid = "bench"\ndata_dir = "{data}"\n\n'
                   f'[storage]\nurl = "s3://{bucket}/bwc"\nendpoint_url = "{s3.endpoint_url}"\n'
                   f'region = "{s3.region}"\nconcurrency = 4\n\n[trust]\nroot_pubkey = "{tdir}/root.pub.pem"\n\n'
                   '[offload]\nreserve_free_mb = 64\n\n[metrics]\nlisten = ""\n')
    dockd("trust", "init", "--agency", "Bench PD", "--root-key", root, "--dir", tdir, env=env)
    dockd("keys", "request", "--out", work / "station.req.json", env=env, config=cfg)
    for req, role in ((work / "station.req.json", "station"), (work / "discloser.req.json", "discloser")):
        if role == "discloser":
            (work / "discloser.req.json").unlink(missing_ok=True)
            dockd("keys", "new", "--name", "Bench Discloser", "--key", work / "discloser.ed25519", "--out", req,
                  env=env)
        dockd("trust", "enrol", req, "--root-key", root, "--dir", tdir, "--role", role, "--until", "2099-01-01",
              env=env)
    dockd("trust", "publish", tdir, env=env, config=cfg)
    say(f"    importing and uploading {n} clips with the station code (not timed)")
    dockd("import", src, "--camera", "BENCH", "--json", env=env, config=cfg, out=work / "import.json")
    c = run_child([PY, str(Path(__file__).parent / "benchlib" / "child.py"), "dockd-upload", str(cfg)], env=env,
                  stdout_path=work / "upload.json")
    if c.rc != 0:
        raise SystemExit("upload failed")
    keys = sorted(k["Key"] for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
                  for k in page.get("Contents", []) if k["Key"].endswith(".mp4"))
    if len(keys) != n:
        raise SystemExit(f"storage holds {len(keys)} clips, expected {n}")
    return cfg, work / "discloser.ed25519", tdir, keys


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--size-mb", type=int, default=25)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--child-boto3", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_boto3:
        return boto3_child(*a.child_boto3)
    work = BENCH_DIR / "disclose"
    work.mkdir(parents=True, exist_ok=True)
    src = BENCH_DIR / f"src-disclose-{a.clips}x{a.size_mb}m"
    n, nbytes = ensure_dataset(src, [(f"DCIM/100CAM/CLIP{i:04d}.MP4", a.size_mb * MiB) for i in range(1, a.clips + 1)])
    rm_tree(work / "weed")  # a fresh server and bucket every run
    s3 = SeaweedServer(work / "weed")
    s3.start()
    try:
        env = dict(os.environ, AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key,
                   AWS_DEFAULT_REGION=s3.region)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            env.pop(k, None)
        cfg, key, _, keys = setup(work, s3, env, src, n)
        (work / "keys.json").write_text(json.dumps(keys))
        runs: dict[str, list[Run]] = {"dockd": [], "boto3": []}
        for rep in range(a.reps):
            out = work / f"bag-{rep}"
            rm_tree(out)
            la = wait_quiet()
            cold = drop_caches()
            c = run_child([DOCKD, "--config", str(cfg), "disclose", "create", "--case", f"BENCH-{rep}-{os.getpid()}",
                           "--recipient", "Bench Prosecutor", "--authority", "bench", "--key", str(key), "--out",
                           str(out), *[x for k in keys for x in ("--clip", k)]], env=env)
            if c.rc != 0:
                raise SystemExit(f"dockd disclose create failed (exit {c.rc})")
            runs["dockd"].append(Run("dockd", c.seconds, nbytes, c.maxrss_kib, la, cold, c.cpu_s, {}))
            rm_tree(out)
            dl = work / "boto3-dl"
            rm_tree(dl)
            la = wait_quiet()
            cold = drop_caches()
            c = run_child([PY, __file__, "--child-boto3", s3.endpoint_url, "bench-disclose", str(work / "keys.json"),
                           str(dl)], env=env, stdout_path=work / "boto3.json")
            if c.rc != 0:
                raise SystemExit("boto3 download failed")
            res = json.loads(c.stdout)
            runs["boto3"].append(Run("boto3", res["seconds"], nbytes, c.maxrss_kib, la, cold, c.cpu_s,
                                     {"wall_s": c.seconds}))
            rm_tree(dl)
        sd, sb = summary(runs["dockd"]), summary(runs["boto3"])
        ratio = sd["median_mbps"] / sb["median_mbps"]
        say(f"disclose {n} clips, {nbytes / 1e9:.2f} GB, {a.reps} rep(s), load now {load1():.2f}")
        say(f"  dockd disclose create  {sd['median_mbps']:8.1f} MB/s  {sd['median_s']:7.2f} s  "
            f"peak RSS {sd['max_rss_mib']:6.1f} MiB  cpu {sd['median_cpu_s']:.1f} s  cold={sd['cold']}")
        say(f"  boto3 4-thread download {sb['median_mbps']:7.1f} MB/s  {sb['median_s']:7.2f} s  "
            f"peak RSS {sb['max_rss_mib']:6.1f} MiB  cpu {sb['median_cpu_s']:.1f} s  cold={sb['cold']}")
        ok_ratio, ok_rss = ratio >= TARGET_RATIO, sd["max_rss_mib"] < TARGET_RSS_MIB
        ok = ok_ratio and ok_rss
        # ru_maxrss of a forked child starts at its parent's RSS (this script, boto3 imported): both figures are
        # at least that floor, so the tools' own peaks are at most what is shown.
        met = {True: "MET", False: "NOT MET"}
        say(f"  ratio dockd/boto3 {ratio:.2f} (target >= {TARGET_RATIO}: {met[ok_ratio]}); "
            f"dockd peak RSS <= {sd['max_rss_mib']:.1f} MiB (target < {TARGET_RSS_MIB}: {met[ok_rss]})")
        p = save_results("disclose", {"machine": machine(), "clips": n, "bytes": nbytes, "dockd": sd, "boto3": sb,
                                      "ratio": ratio, "loads": statistics.mean(r.load for v in runs.values()
                                                                               for r in v)})
        say(f"  results: {p}")
        return 0 if ok else 1
    finally:
        s3.stop()


if __name__ == "__main__":
    sys.exit(main())
