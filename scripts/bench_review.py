#!/usr/bin/env python3
"""Completeness-review benchmark: a synthetic agency year in a real SeaweedFS, then `dockd review`.

    scripts/bench review [--stations 40] [--days 365] [--officers 2100] [--rows 300000] [--clips 800000]
                         [--concurrency 16] [--reps 1]

Generated (not timed): an agency trust dir (root, one key per station, a reviewer), the clip index as the
stations publish it (one signed segment per station-day: head + clips + docks, docs/clip-index.md) put into
a fresh SeaweedFS bucket, a roster (one camera per officer, 5% handed over mid-year) and a CAD export of
``--rows`` (incident, officer) rows. About 80% of incident rows get a clip over their window (a fifth of
those only part of it), the rest of the clips are other recordings; docks every 1-3 days per camera.

Measured, each as its own `dockd` process (wall time and peak RSS from wait4):
first fetch (list, read and verify every segment, parallel requests, into an empty cache), a second fetch
(nothing new), and the year's report from the cache (`--no-fetch`). Targets: report < 30 s, RSS < 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import BENCH_DIR, VENV_BIN, load1, machine, rm_tree, run_child, save_results, say  # noqa: E402

from tests.support.review import indexgen, make_agency  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402
from tests.support.uploads import write_config  # noqa: E402

TARGET_S, TARGET_RSS_MIB = 30.0, 1024
PEER = """
import os, sys, boto3
from concurrent.futures import ThreadPoolExecutor
bucket, prefix, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s3 = boto3.client("s3", endpoint_url=os.environ["DOCKD_TEST_S3_ENDPOINT"])
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])]
with ThreadPoolExecutor(n) as pool:
    total = sum(pool.map(lambda k: len(s3.get_object(Bucket=bucket, Key=k)["Body"].read()), keys))
print(f"{len(keys)} objects, {total} bytes")
"""
Y0 = datetime(2026, 1, 1, tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(work: Path, a, s3: SeaweedServer, bucket: str, args) -> dict:
    gen = indexgen()
    rnd = random.Random(15)
    n_st, days = args.stations, args.days
    cams = [f"CAM{i:05d}" for i in range(args.officers)]
    station_of = {c: f"st-{i % n_st:02d}" for i, c in enumerate(cams)}
    end = Y0 + timedelta(days=days)
    # roster: officer i carries camera i; 5% hand their camera to a spare officer mid-year
    roster = ["camera,officer,from,to,unit"]
    owner: dict[str, list[tuple[datetime, datetime | None, str]]] = {}
    for i, c in enumerate(cams):
        unit = f"U{i % 60:02d}"
        if i % 20 == 0:
            mid = Y0 + timedelta(days=rnd.randrange(days // 10 + 1, days - days // 10))
            roster += [f"{c},P{i:05d},{iso(Y0)},{iso(mid)},{unit}", f"{c},S{i:05d},{iso(mid)},,{unit}"]
            owner[c] = [(Y0, mid, f"P{i:05d}"), (mid, None, f"S{i:05d}")]
        else:
            roster.append(f"{c},P{i:05d},{iso(Y0)},,{unit}")
            owner[c] = [(Y0, None, f"P{i:05d}")]
    (work / "roster.csv").write_text("\n".join(roster) + "\n")
    clips: dict[tuple[str, str], list] = {}  # (station, date) -> clip lines
    n_clip = 0

    def add_clip(cam: str, start: datetime, dur: float) -> None:
        nonlocal n_clip
        n_clip += 1
        st = station_of[cam]
        # compact until its segment is written (a year of full lines would take GiBs here)
        clips.setdefault((st, start.strftime("%Y-%m-%d")), []).append((cam, iso(start), dur, n_clip))

    cad = ["incident,call_type,dispatched,arrived,cleared,officer,unit"]
    types = ["ALARM", "DISTURBANCE", "LARCENY", "ASSAULT", "TRAFFIC", "ADMIN"]
    for r in range(args.rows):
        cam = cams[rnd.randrange(len(cams))]
        t = Y0 + timedelta(seconds=rnd.randrange(86400, days * 86400 - 86400))
        officer = next(o for f, to, o in owner[cam] if f <= t and (to is None or t < to))
        arrive = t + timedelta(seconds=rnd.randrange(120, 900))
        clear = arrive + timedelta(seconds=rnd.randrange(300, 3600))
        cad.append(f"I{r:07d},{types[r % len(types)]},{iso(t)},{iso(arrive)},{iso(clear)},{officer},"
                   f"U{int(cam[3:]) % 60:02d}")
        u = rnd.random()
        if u < 0.64:
            add_clip(cam, t - timedelta(seconds=150), (clear - t).total_seconds() + 300)
        elif u < 0.80:
            add_clip(cam, arrive, (clear - arrive).total_seconds() / 2)
    while n_clip < args.clips:
        cam = cams[rnd.randrange(len(cams))]
        add_clip(cam, Y0 + timedelta(seconds=rnd.randrange(0, days * 86400)), rnd.uniform(30, 900))
    (work / "cad.csv").write_text("\n".join(cad) + "\n")
    docks: dict[tuple[str, str], list] = {}
    n_dock = 0
    for c in cams:
        t = Y0 + timedelta(hours=rnd.randrange(6, 30))
        while t < end:
            st = station_of[c]
            an = [{"kind": "seq_gap", "from": 1, "to": 3, "missing": 1}] if rnd.random() < 0.01 else []
            docks.setdefault((st, t.strftime("%Y-%m-%d")), []).append(gen.dock_line(st, c, iso(t), an))
            n_dock += 1
            t += timedelta(hours=rnd.randrange(20, 72))
    objects, nbytes = upload(gen, a, s3, bucket, n_st, days, clips, docks)
    return {"clips": n_clip, "docks": n_dock, "rows": args.rows, "officers": args.officers, "stations": n_st,
            "segments": n_st * days, "objects": objects, "bytes": nbytes}


def upload(gen, a, s3: SeaweedServer, bucket: str, n_st: int, days: int, clips: dict, docks: dict) -> tuple[int, int]:
    """One signed segment per station-day, in seq order, put in parallel."""
    client = s3.client()
    objects = 0
    nbytes = 0
    with ThreadPoolExecutor(max_workers=16) as pool:
        futs = []
        for si in range(n_st):
            st = f"st-{si:02d}"
            key = a.stations[st]
            prev = None
            for d in range(days):
                date = (Y0 + timedelta(days=d)).strftime("%Y-%m-%d")
                lines = [gen.clip_line(st, c, t, dur, n, offset_s=0.0) for c, t, dur, n in clips.pop((st, date), [])]
                prev, objs = gen.segment("ev", key, st, d + 1, date, lines,
                                         docks.pop((st, date), []), prev, f"{date}T23:59:59Z")
                for k, v in objs.items():
                    futs.append(pool.submit(client.put_object, Bucket=bucket, Key=k, Body=v))
                    objects += 1
                    nbytes += len(v)
            if len(futs) > 4000:
                for f in futs:
                    f.result()
                futs = []
        for f in futs:
            f.result()
    return objects, nbytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=40)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--officers", type=int, default=2100)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--clips", type=int, default=800_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args(argv)
    work = BENCH_DIR / "review"
    rm_tree(work)
    work.mkdir(parents=True)
    s3 = SeaweedServer(work / "weed")
    s3.start()
    try:
        bucket = s3.create_bucket("review")
        a = make_agency(work, [f"st-{i:02d}" for i in range(args.stations)], ["reviewer"])
        say(f"generating a year: {args.stations} stations x {args.days} days, {args.officers} officers ...")
        t0 = time.perf_counter()
        info = generate(work, a, s3, bucket, args)
        info["generate_s"] = round(time.perf_counter() - t0, 1)
        say(f"  {json.dumps(info)}")
        cfg = write_config(work / "agency.toml", {
            "station": {"id": "agency", "data_dir": str(work / "unused")},
            "storage": {"url": f"s3://{bucket}/ev", "endpoint_url": s3.endpoint_url, "timeout_s": 60.0},
            "trust": {"root_pubkey": str(a.root_pub_file)},
            "review": {"reviewer_key": str(a.people["reviewer"][1]), "cache_dir": str(work / "cache"),
                       "excluded_call_types": ["ADMIN"], "fetch_concurrency": args.concurrency}})
        env = {**__import__("os").environ, **s3.env()}
        dockd = [str(VENV_BIN / "dockd"), "--config", str(cfg), "review"]
        trust = ["--trust", str(a.dir)]
        res: dict = {"machine": machine(), "load1_before": load1(), "data": info}
        say("first fetch (empty cache) ...")
        c = run_child([*dockd, "fetch", *trust, "--json"], env=env, stdout_path=work / "fetch.out")
        res["first_fetch"] = {"s": round(c.seconds, 2), "rss_mib": c.maxrss_kib // 1024, "rc": c.rc,
                              "out": json.loads(c.stdout) if c.rc in (0, 1) else c.stdout[-500:]}
        say(f"  {res['first_fetch']['s']} s, {res['first_fetch']['rss_mib']} MiB")
        # The peer: the same objects read by plain boto3 with as many threads, nothing checked or stored:
        # what storage and the client library cost alone ("bounded by storage throughput").
        say("peer: every index object downloaded by plain boto3, same concurrency ...")
        c = run_child([sys.executable, "-c", PEER, bucket, "ev/_index/", str(args.concurrency)], env=env,
                      stdout_path=work / "peer.out")
        res["peer_download"] = {"s": round(c.seconds, 2), "rc": c.rc, "out": c.stdout.strip()[-200:]}
        res["first_fetch_vs_peer"] = round(res["first_fetch"]["s"] / max(c.seconds, 1e-9), 2)
        say(f"  {res['peer_download']['s']} s ({c.stdout.strip()}); first fetch / peer = "
            f"{res['first_fetch_vs_peer']}x")
        c = run_child([*dockd, "fetch", *trust], env=env, stdout_path=work / "fetch2.out")
        res["second_fetch"] = {"s": round(c.seconds, 2), "rss_mib": c.maxrss_kib // 1024, "rc": c.rc}
        say(f"second fetch (nothing new): {res['second_fetch']['s']} s")
        reps = []
        for i in range(args.reps):
            say(f"report from the cache, a full year (run {i + 1}) ...")
            c = run_child([*dockd, "report", "--from", "2026-01-01", "--to", "2027-01-01", "--roster",
                           str(work / "roster.csv"), "--cad", str(work / "cad.csv"), "--out", str(work / "out"),
                           "--now", "2027-01-10T00:00:00Z", "--no-fetch", *trust], env=env,
                          stdout_path=work / "report.out")
            if c.rc != 0:
                raise SystemExit(f"report failed ({c.rc}): {c.stdout[-2000:]}")
            reps.append({"s": round(c.seconds, 2), "rss_mib": c.maxrss_kib // 1024, "cpu_s": round(c.cpu_s, 1)})
            say(f"  {reps[-1]}")
        res["report"] = reps
        res["report_head"] = c.stdout.splitlines()[:4]
        res["report_json_mib"] = round((work / "out" / "report.json").stat().st_size / 2**20, 1)
        res["load1_after"] = load1()
        best = min(reps, key=lambda r: r["s"])
        say(f"report: {best['s']} s (target < {TARGET_S}), peak RSS {best['rss_mib']} MiB (target < "
            f"{TARGET_RSS_MIB}); first fetch {res['first_fetch']['s']} s; load {res['load1_before']} -> "
            f"{res['load1_after']}")
        p = save_results("review", res)
        say(f"results: {p}")
    finally:
        s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
