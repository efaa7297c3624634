#!/usr/bin/env python3
"""Fleet benchmark: a week of heartbeats from a fleet into a real SeaweedFS, then `dockd fleet`.

    scripts/bench fleet [--stations 50] [--cameras 2000] [--days 7] [--interval-s 300] [--procs 2]

Generates S enrolled stations (an agency trust log in $DOCKD_BENCH_DIR/fleet-work/agency) sharing C
cameras, each station writing a signed heartbeat every I seconds for D days (S x D x 86400 / I objects;
100,800 with the defaults), in parallel (P processes x 16 upload threads), into a fresh local SeaweedFS.
Two stations stopped an hour ago (stale) and one holds a week-old clip (unhealthy). Then, as child
processes (wall time, peak RSS):

* ``fleet stations --json`` with no cache (first run: lists today's folder of each station),
* ``fleet cameras --json`` with the cache, ``fleet stations --json`` again (nothing new),
* one new heartbeat per station, then ``fleet stations --json`` (reads only those),
* and, in process, the reader's object reads for a cold and a warm pass.

Target (issue #17): ``fleet stations`` and ``fleet cameras`` under 5 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import BENCH_DIR, VENV_BIN, load1, machine, rm_tree, run_child, save_results, say  # noqa: E402

from dockd.core import heartbeat as hb  # noqa: E402
from dockd.core import jcs  # noqa: E402
from dockd.core.timefmt import rfc3339_ns  # noqa: E402
from dockd.evidence import keys  # noqa: E402
from dockd.trust.store import load_public, load_signing_key  # noqa: E402
from tests.support import fleet as sf  # noqa: E402
from tests.support.seaweed import SeaweedServer  # noqa: E402

DOCKD = str(VENV_BIN / "dockd")
BUCKET = "fleet"
TARGET_S = 5.0


def _body(station: str, i: int, cams: list[str], at: float, seq: int, start: float, unhealthy: bool) -> dict:
    rnd = random.Random(seq * 7919 + i)
    pending = max(0, int(20 + 15 * math.sin((at - start) / 86400 * 2 * math.pi + i)))
    cameras = []
    for c, serial in enumerate(cams):
        docked = rnd.random() < 0.3
        last = at - (0 if docked else (c * 3607 + i * 911) % (5 * 86400))
        cameras.append({"serial": serial, "bay": str(c % 12 + 1), "state": "ready" if docked else "undocked",
                        "docked": docked, "last_dock": rfc3339_ns(int(last * 1e9))[:23] + "Z",
                        "anomalies": ["clock offset 95 s"] if (c + i) % 97 == 0 else [], "clock_offset_s": None})
    b = sf.body(station, at, seq, cameras=cameras, pending=pending, oldest_s=(8 * 86400 if unhealthy else 1800),
                export_at=rfc3339_ns(int((at - at % 86400 + 600) * 1e9)))
    return b


def _sign(body: dict, key) -> bytes:
    """The station's signing (manifest scheme) with the fast JCS encoder (byte-equal to rfc8785)."""
    doc = dict(body)
    doc["signature"] = {"alg": "Ed25519", "key_id": key.key_id, "value": key.sign(jcs.dumps(body))}
    return jcs.dumps(doc)


def generate(job: dict) -> int:
    """One process: the heartbeats of some stations, put with 16 threads."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3", endpoint_url=job["endpoint"], aws_access_key_id=job["ak"], aws_secret_access_key=job["sk"],
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}, max_pool_connections=32,
                                               retries={"max_attempts": 5, "mode": "standard"}))

    def one(item: tuple[str, str, list[str], int, float, float, bool, int]) -> None:
        station, keyfile, cams, i, at, start, unhealthy, seq = item
        key = keys[keyfile]
        data = _sign(_body(station, i, cams, at, seq, start, unhealthy), key)
        client.put_object(Bucket=BUCKET, Key=hb.key("", station, int(at * 1e9), seq), Body=data)

    keys = {s["key"]: load_signing_key(Path(s["key"])) for s in job["stations"]}
    items = []
    for s in job["stations"]:
        t, seq = s["first"], 1
        while t <= s["last"]:
            items.append((s["name"], s["key"], s["cams"], s["i"], t, job["start"], s["unhealthy"], seq))
            t += job["interval"]
            seq += 1
        client.put_object(Bucket=BUCKET, Key=hb.marker_key("", s["name"]), Body=f"{s['name']}\n".encode())
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, items))
    return len(items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=50)
    ap.add_argument("--cameras", type=int, default=2000)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--interval-s", type=float, default=300)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="Time again on the fleet the last run generated.")
    a = ap.parse_args()
    work = BENCH_DIR / "fleet-work"
    saved = work / "generated.json"
    reuse = a.reuse and saved.exists()
    if not reuse:
        rm_tree(work)
        work.mkdir(parents=True)
    say(f"==> fleet benchmark in {work}  (machine: {json.dumps(machine())})")
    names = [f"precinct-{i:02d}" for i in range(a.stations)]
    if reuse:
        agency = _reload_agency(work)
        now = json.loads(saved.read_text())["now"]
    else:
        agency = sf.agency(work / "agency")
        for n in names:
            agency.station_key(n)
        now = time.time()
    start = now - a.days * 86400
    per = a.cameras // a.stations
    server = SeaweedServer(work / "seaweed")
    results: dict = {"machine": machine(), "args": vars(a)}
    try:
        server.start()
        env = dict(os.environ, **server.env())
        stations = [{"name": n, "key": str(agency.stations[n].path), "i": i,
                     "cams": [f"BWC{(i * per + c):05d}" for c in range(per)],
                     "first": start + (i * 37) % a.interval_s,
                     "last": now - (3600 if i in (3, 17) else 0), "unhealthy": i == 5} for i, n in enumerate(names)]
        jobs = [{"endpoint": server.endpoint_url, "ak": server.access_key, "sk": server.secret_key, "start": start,
                 "interval": a.interval_s, "stations": stations[p::a.procs]} for p in range(a.procs)]
        if reuse:
            results["generated"] = json.loads(saved.read_text())
            say(f"    reusing {results['generated']['objects']} heartbeats generated before")
        else:
            server.create_bucket(BUCKET)
            t0 = time.perf_counter()
            with ProcessPoolExecutor(a.procs) as pool:
                n_objects = sum(pool.map(generate, jobs))
            gen_s = time.perf_counter() - t0
            results["generated"] = {"objects": n_objects, "seconds": round(gen_s, 1), "now": now}
            saved.write_text(json.dumps(results["generated"]))
            say(f"    {n_objects} heartbeats ({a.stations} stations, {per * a.stations} cameras, {a.days} days) "
                f"written in {gen_s:.1f} s ({n_objects / gen_s:.0f}/s)")
        (work / "fleet-cache.json").unlink(missing_ok=True)
        cfg = work / "agency.toml"
        cfg.write_text(f'[station]\nid = "agency"\ndata_dir = "{work / "agency-data"}"\n\n[storage]\n'
                       f'url = "s3://{BUCKET}"\nendpoint_url = "{server.endpoint_url}"\n\n'
                       f'[trust]\nroot_pubkey = "{agency.root_pem}"\n')
        cache = work / "fleet-cache.json"
        base = [DOCKD, "--config", str(cfg), "fleet"]
        opts = ["--json", "--trust", str(agency.trust_dir), "--cache", str(cache)]

        def timed(label: str, *argv: str) -> dict:
            out = work / f"{label}.json"
            c = run_child([*base, *argv, *opts], env=env, stdout_path=out)
            rows = json.loads(c.stdout)
            r = {"seconds": round(c.seconds, 3), "rss_mib": round(c.maxrss_kib / 1024, 1), "rows": len(rows),
                 "rc": c.rc, "load": round(load1(), 2)}
            say(f"    {label:<28} {c.seconds:6.2f} s  rss {r['rss_mib']:5.0f} MiB  {len(rows)} rows  "
                f"exit {c.rc}  {'OK' if c.seconds < TARGET_S else 'OVER TARGET'}")
            return r

        results["stations_cold"] = timed("stations (no cache)", "stations")
        results["cameras_cached"] = timed("cameras (cache)", "cameras")
        results["stations_warm"] = timed("stations (cache, nothing new)", "stations")
        # one new heartbeat per station, then the incremental read
        new = [{**s, "first": time.time(), "last": time.time()} for s in stations if s["i"] not in (3, 17)]
        jobs2 = [{**j, "stations": new[p::a.procs]} for p, j in enumerate(jobs)]
        with ProcessPoolExecutor(a.procs) as pool:
            list(pool.map(_generate_next, jobs2))
        results["stations_incremental"] = timed("stations (cache, 1 new each)", "stations")
        results["cameras_cold"] = timed("cameras (no cache)", "cameras", "--no-cache")
        results["status_counts"] = _counts(work / "stations (cache, 1 new each).json")
        say(f"    statuses: {results['status_counts']}")
        results["reads"] = _reads(server, agency, now)
        say(f"    objects read by the reader: cold {results['reads']['cold']}, warm {results['reads']['warm']}")
    finally:
        server.stop()
    out = save_results("fleet", results)
    say(f"    results in {out}")


def _generate_next(job: dict) -> int:
    """One new heartbeat per station, its seq above the week's."""
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3", endpoint_url=job["endpoint"], aws_access_key_id=job["ak"], aws_secret_access_key=job["sk"],
        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
    for s in job["stations"]:
        key = load_signing_key(Path(s["key"]))
        at = s["first"]
        seq = int(at * 1000)  # as a station numbers them: above every seq of the week (and of earlier runs)
        data = _sign(_body(s["name"], s["i"], s["cams"], at, seq, job["start"], s["unhealthy"]), key)
        client.put_object(Bucket=BUCKET, Key=hb.key("", s["name"], int(at * 1e9), seq), Body=data)
    return len(job["stations"])


def _reload_agency(work: Path) -> sf.Agency:
    """The agency of the last run: its root is not needed again, only the trust log and station keys."""
    from dockd.trust import log as trust

    root_pem = work / "agency" / "root.pub.pem"
    statements = [json.loads(p.read_bytes()) for p in sorted((work / "agency" / "trust" / "log").glob("*.json"))]
    a = sf.Agency(work / "agency", None, root_pem, work / "agency" / "trust", statements)  # type: ignore[arg-type]
    pub = load_public(root_pem)
    a.state = lambda: trust.load(pub, [trust.canonical(s) for s in statements])  # type: ignore[method-assign]
    for d in sorted((work / "agency" / "stations").iterdir(), key=lambda p: int(p.name.split("-")[0])):
        k = load_signing_key(keys.key_path(d))
        name = next(s["subject"]["name"] for s in statements if s.get("key_id") == k.key_id)
        a.stations[name] = k
    return a


def _counts(path: Path) -> dict:
    rows = json.loads(path.read_text())
    out: dict[str, int] = {}
    for r in rows:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def _reads(server, agency, now: float) -> dict:
    from dockd.agency.fleet.reader import Reader
    from dockd.config import StorageConfig
    from dockd.storage.s3 import S3Backend

    os.environ.update(server.env())
    backend = S3Backend(StorageConfig(url=f"s3://{BUCKET}", endpoint_url=server.endpoint_url))
    cache = BENCH_DIR / "fleet-work" / "reads-cache.json"
    cache.unlink(missing_ok=True)
    cold = Reader(backend, "", agency.state(), cache=cache, now=now).read()
    warm = Reader(backend, "", agency.state(), cache=cache, now=now).read()
    return {"cold": sum(s.reads for s in cold), "warm": sum(s.reads for s in warm),
            "digest": hashlib.sha256(json.dumps(sorted(s.seq for s in warm)).encode()).hexdigest()[:12]}


if __name__ == "__main__":
    main()
