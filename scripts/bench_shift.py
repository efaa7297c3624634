#!/usr/bin/env python3
"""The shift benchmark: dock -> ``ready`` against its physical bound, measured in the same run.

    scripts/bench shift [--scale S] [--rates 35,250] [--checks hash,stat] [--reps N] [--no-unthrottled]

A realistic shift: 6 x 400 MiB + 10 x 30 MiB clips (2.7 GB; ``--scale`` multiplies every size,
e.g. 0.25 for a quick run), random bytes cached in $DOCKD_BENCH_DIR.

Throttled runs, one per camera rate (MB/s, 10^6 B/s) and ``wipe_check``:

* the camera is an ext4 image on a loop device (the kernel here has no exFAT driver, and the
  FUSE one would read in its own process), mounted and given to the daemon as a watched-directory
  camera; its reads are limited by a cgroup v1 ``blkio.throttle.read_bps_device`` on that loop
  device (this machine has cgroup v1, no ``io.max``), which holds the dockd process and the bound's
  reader, nothing else;
* the uplink is dockd's own ``[upload] bandwidth_limit_mbps = 200`` (25 MB/s) to a local SeaweedFS;
* dockd: a fresh data dir and bucket; the daemon (scripts/benchlib/child.py dockd-shift) docks the
  camera and drains; dock -> ready is read from its audit log (``camera.docked`` to the camera's
  ``ready``), so daemon start-up is not counted;
* the bounds, in the same run: camera read = the time to read every clip once through the same
  throttle (``dd iflag=direct``, cold), upload = clip bytes / 25 MB/s; hash: max(2 x read,
  upload) (the copy, then the verifying re-read), stat: max(read, upload). Target <= 1.1x.
  Also measured once per run (``--no-upload-alone`` skips it): dockd's upload workers alone, the
  same clips already staged, through the same 25 MB/s limit to the same server: what the uplink
  delivers on this machine at that moment (on a loaded 2-core VM, less than 25 MB/s); the ratio
  against the bound with that figure as the upload is printed beside the strict one.

Unthrottled (camera on the local disk, no bandwidth limit, ``wipe_check = "hash"``): dock -> ready
against ``cp -r`` + ``sync`` followed by boto3 ``upload_file`` of each file (its in-process time).

Page cache dropped before every timed run; each run waits for the 1-minute load to settle (the
machine is shared). Method and figures: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import (  # noqa: E402 - found through the sys.path entries above
    BENCH_DIR,
    REPO,
    VENV_BIN,
    MiB,
    drop_bucket,
    drop_caches,
    ensure_dataset,
    load1,
    machine,
    rm_tree,
    run_child,
    save_results,
    say,
    stored_clips,
    wait_quiet,
)

from tests.support.seaweed import SeaweedServer  # noqa: E402 - found through the sys.path entries above

UPLINK_MBPS = 200  # megabits per second: 25 MB/s
TARGET = 1.1
PY = str(VENV_BIN / "python")
CHILD = str(REPO / "scripts" / "benchlib" / "child.py")


def shift_files(scale: float) -> list[tuple[str, int]]:
    big, small = int(400 * MiB * scale) // 4096 * 4096, int(30 * MiB * scale) // 4096 * 4096
    return ([(f"DCIM/100MEDIA/LONG{i:04d}.MP4", big) for i in range(1, 7)]
            + [(f"DCIM/100MEDIA/CLIP{i:04d}.MP4", small) for i in range(1, 11)])


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


class Camera:
    """An ext4 image on a loop device, mounted; a blkio cgroup that throttles reads of that device."""

    def __init__(self, work: Path, size: int):
        self.img, self.mnt = work / "camera.img", work / "camera"
        self.mnt.mkdir(parents=True, exist_ok=True)
        with open(self.img, "wb") as f:
            f.truncate(size)
        sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.img))
        self.loop = sh("losetup", "-f", "--show", str(self.img))
        self.cg: Path | None = None
        try:
            sh("mount", self.loop, str(self.mnt))
            self.majmin = sh("lsblk", "-dno", "MAJ:MIN", self.loop).strip()
            self.cg = Path(f"/sys/fs/cgroup/blkio/dockd-bench-shift-{os.getpid()}")
            self.cg.mkdir()
        except BaseException:
            self.close()
            raise

    def throttle(self, mbs: float | None) -> None:
        assert self.cg is not None
        (self.cg / "blkio.throttle.read_bps_device").write_text(
            f"{self.majmin} {int(mbs * 1e6) if mbs else 0}\n")

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the throttled cgroup."""
        assert self.cg is not None
        return ["sh", "-c", f'echo $$ > {self.cg}/cgroup.procs && exec "$@"', "sh", *argv]

    def load(self, src: Path) -> None:
        for p in list(self.mnt.iterdir()):
            if p.name != "lost+found":
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        subprocess.run(["cp", "-a", f"{src}/.", str(self.mnt)], check=True)
        os.sync()

    def close(self) -> None:
        subprocess.run(["umount", str(self.mnt)], capture_output=True)
        subprocess.run(["losetup", "-d", self.loop], capture_output=True)
        if self.cg is not None and self.cg.exists():
            self.cg.rmdir()
        self.img.unlink(missing_ok=True)


class Shift:
    def __init__(self, work: Path, s3: SeaweedServer, files: list[tuple[str, int]]):
        self.work, self.s3, self.files = work, s3, files
        self.nbytes = sum(s for _, s in files)
        self.admin = s3.client()
        self.n = 0
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key,
                        AWS_DEFAULT_REGION=s3.region)
        for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            self.env.pop(k, None)

    def bucket(self, tool: str) -> str:
        self.n += 1
        b = f"shift-{tool}-{self.n}-{os.getpid()}"
        self.admin.create_bucket(Bucket=b)
        return b

    def drop_bucket(self, bucket: str) -> None:
        drop_bucket(self.admin, bucket)

    def stored(self, bucket: str) -> tuple[int, int]:
        return stored_clips(self.admin, bucket)

    def camera_read_s(self, cam: Camera) -> float:
        """Read every clip once, cold, through the camera's throttle: the camera-read bound."""
        wait_quiet()
        drop_caches()
        loop = " ".join(f"dd if='{cam.mnt / p}' of=/dev/null bs=4M iflag=direct status=none &&" for p, _ in self.files)
        c = run_child(cam.argv(["sh", "-c", loop + " true"]))
        if c.rc != 0:
            raise SystemExit("reading the camera for the bound failed")
        return c.seconds

    def dockd(self, root: Path, check: str, limit: bool, wrap=lambda a: a) -> dict:
        bucket = self.bucket("dockd")
        data = self.work / "dockd-data"
        rm_tree(data)
        cfg = self.work / "dockd.toml"
        cfg.write_text(f'[station]\nid = "bench"\ndata_dir = "{data}"\n\n'
                       f'[storage]\nurl = "s3://{bucket}/bwc"\nendpoint_url = "{self.s3.endpoint_url}"\n'
                       f'region = "{self.s3.region}"\n\n'
                       + (f"[upload]\nbandwidth_limit_mbps = {UPLINK_MBPS}\n\n" if limit else "")
                       + f'[offload]\nreserve_free_mb = 64\nwipe_check = "{check}"\n\n[metrics]\nlisten = ""\n')
        la = wait_quiet()
        cold = drop_caches()
        c = run_child(wrap([PY, CHILD, "dockd-shift", str(cfg), str(root)]), env=self.env,
                      stdout_path=self.work / "dockd-shift.json")
        res = json.loads(c.stdout.strip().splitlines()[-1]) if c.stdout.strip() else {}
        if c.rc != 0 or res.get("rc") != 0 or res.get("states") != {"wiped": len(self.files)}:
            raise SystemExit(f"dockd did not take the shift to ready cleanly (exit {c.rc}): {c.stdout[-2000:]}")
        if self.stored(bucket) != (len(self.files), self.nbytes):
            raise SystemExit(f"dockd: bucket holds {self.stored(bucket)}, expected {(len(self.files), self.nbytes)}")
        left = [p for p, _ in self.files if (root / p).exists()]
        if left:
            raise SystemExit(f"dockd said ready but {len(left)} clips are still on the camera")
        self.drop_bucket(bucket)
        rm_tree(data)
        return {"seconds": res["dock_to_ready_s"], "phases": res["phases"], "rss_mib": c.maxrss_kib / 1024,
                "cpu_s": c.cpu_s, "load": la, "cold": cold}

    def upload_alone(self, src: Path) -> dict:
        """dockd's upload workers alone through the 25 MB/s limit, the clips staged beforehand (not timed)."""
        bucket = self.bucket("alone")
        data = self.work / "alone-data"
        rm_tree(data)
        cfg = self.work / "alone.toml"
        cfg.write_text(f'[station]\nid = "bench"\ndata_dir = "{data}"\n\n'
                       f'[storage]\nurl = "s3://{bucket}/bwc"\nendpoint_url = "{self.s3.endpoint_url}"\n'
                       f'region = "{self.s3.region}"\n\n[upload]\nbandwidth_limit_mbps = {UPLINK_MBPS}\n\n'
                       '[offload]\nreserve_free_mb = 64\n\n[metrics]\nlisten = ""\n')
        c = run_child([str(VENV_BIN / "dockd"), "--config", str(cfg), "import", str(src), "--camera", "BENCH",
                       "--json"], env=self.env, stdout_path=self.work / "import.json")
        if c.rc != 0 or json.loads(c.stdout)["staged"] != len(self.files):
            raise SystemExit(f"staging for the upload-alone run failed (exit {c.rc}): {c.stdout[-1000:]}")
        la = wait_quiet()
        cold = drop_caches()
        c = run_child([PY, CHILD, "dockd-upload", str(cfg)], env=self.env, stdout_path=self.work / "alone.json")
        res = json.loads(c.stdout.strip().splitlines()[-1]) if c.rc == 0 and c.stdout.strip() else {}
        if c.rc != 0 or res.get("states") != {"uploaded": len(self.files)} or res.get("errors"):
            raise SystemExit(f"dockd upload alone did not finish cleanly (exit {c.rc}): {c.stdout[-2000:]}")
        self.drop_bucket(bucket)
        rm_tree(data)
        return {"seconds": res["seconds"], "load": la, "cold": cold}

    def baseline(self, src: Path) -> dict:
        """``cp -r`` + ``sync``, then boto3 ``upload_file`` of each file, one after the other."""
        dst = self.work / "cp-staging"
        rm_tree(dst)
        bucket = self.bucket("boto3")
        la = wait_quiet()
        cold = drop_caches()
        t0 = time.perf_counter()
        subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
        os.sync()
        cp_s = time.perf_counter() - t0
        c = run_child([PY, CHILD, "boto3-upload", self.s3.endpoint_url, bucket, "bwc", str(dst)], env=self.env,
                      stdout_path=self.work / "boto3.json")
        if c.rc != 0 or self.stored(bucket) != (len(self.files), self.nbytes):
            raise SystemExit("the cp + boto3 baseline failed")
        up_s = json.loads(c.stdout)["seconds"]
        self.drop_bucket(bucket)
        rm_tree(dst)
        return {"seconds": cp_s + up_s, "cp_sync_s": cp_s, "boto3_s": up_s, "load": la, "cold": cold}


def fmt_phases(ph: dict) -> str:
    return "  ".join(f"{k} {v[0]:.1f}-{v[1]:.1f}" for k, v in ph.items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench shift", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every clip size (default 1: 2.7 GB)")
    ap.add_argument("--rates", default="35,250", help="camera read rates in MB/s (default 35,250)")
    ap.add_argument("--checks", default="hash,stat", help="wipe_check values to run (default hash,stat)")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of each throttled case (default 1)")
    ap.add_argument("--no-unthrottled", action="store_true", help="skip the unthrottled run and its baseline")
    ap.add_argument("--no-throttled", action="store_true", help="run only the unthrottled comparison")
    ap.add_argument("--no-upload-alone", action="store_true", help="skip measuring the uplink alone")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("scripts/bench shift needs root (loop device, cgroup, dropping the page cache)")
    files = shift_files(a.scale)
    wd = BENCH_DIR
    wd.mkdir(parents=True, exist_ok=True)
    work = wd / "shift-work"
    rm_tree(work)
    work.mkdir(parents=True)
    say(f"==> shift benchmark in {wd}  (machine: {json.dumps(machine())})")
    src = wd / f"src-shift-{a.scale:g}"
    n_files, nbytes = ensure_dataset(src, files)
    say(f"    {n_files} clips, {nbytes / 1e9:.2f} GB (scale {a.scale:g}); uplink {UPLINK_MBPS} Mbit/s "
        f"= {UPLINK_MBPS / 8:g} MB/s (dockd's own limit); load now {load1():.2f}")
    results: dict = {"machine": machine(), "scale": a.scale, "files": n_files, "bytes": nbytes, "throttled": [],
                     "unthrottled": None}
    server = SeaweedServer(work / "seaweed")
    cam = None
    try:
        server.start()
        b = Shift(work, server, files)
        upload_s = nbytes / (UPLINK_MBPS * 1e6 / 8)
        alone_s = None
        if not a.no_throttled and not a.no_upload_alone:
            alone = b.upload_alone(src)
            alone_s = alone["seconds"]
            results["upload_alone"] = alone
            say(f"    dockd's uploads alone through the {UPLINK_MBPS / 8:g} MB/s limit: {alone_s:.1f} s "
                f"({nbytes / 1e6 / alone_s:.1f} MB/s; the limit alone: {upload_s:.1f} s)  load {alone['load']:.2f}")
        if not a.no_throttled:
            cam = Camera(work, int(nbytes * 1.1) + 256 * MiB)
            say(f"    camera: ext4 on {cam.loop} ({cam.majmin}), reads throttled by cgroup v1 blkio {cam.cg}")
            for rate in [float(x) for x in a.rates.split(",")]:
                cam.throttle(rate)
                cam.load(src)
                read_s = b.camera_read_s(cam)
                say(f"\n==> camera {rate:g} MB/s: reading every clip once takes {read_s:.1f} s "
                    f"({nbytes / 1e6 / read_s:.1f} MB/s); uploading at {UPLINK_MBPS / 8:g} MB/s: {upload_s:.1f} s")
                for check in a.checks.split(","):
                    bound = max(2 * read_s if check == "hash" else read_s, upload_s)
                    for rep in range(1, a.reps + 1):
                        cam.load(src)
                        r = b.dockd(cam.mnt, check, True, cam.argv)
                        ratio = r["seconds"] / bound
                        row = {"rate_mbs": rate, "check": check, "rep": rep, "camera_read_s": read_s,
                               "upload_s": upload_s, "bound_s": bound, "ratio": ratio, **r}
                        if alone_s is not None:
                            row["bound_measured_upload_s"] = max(bound, alone_s)
                            row["ratio_measured_upload"] = r["seconds"] / row["bound_measured_upload_s"]
                        results["throttled"].append(row)
                        say(f"    {check:<4} rep {rep}: dock -> ready {r['seconds']:6.1f} s  bound {bound:6.1f} s  "
                            f"= {ratio:.2f}x (target <= {TARGET}x: {'met' if ratio <= TARGET else 'MISSED'})  "
                            f"rss {r['rss_mib']:.0f} MiB  load {r['load']:.2f}  {'cold' if r['cold'] else 'WARM'}")
                        if alone_s is not None:
                            say(f"          against max(that, uploads alone {alone_s:.1f} s): "
                                f"{row['ratio_measured_upload']:.2f}x")
                        say(f"          phases (s after dock, first-last): {fmt_phases(r['phases'])}")
            cam.close()
            cam = None
        if not a.no_unthrottled:
            say("\n==> unthrottled: camera on the local disk, no bandwidth limit, wipe_check = hash")
            camdir = work / "local-camera"
            rm_tree(camdir)
            subprocess.run(["cp", "-a", str(src), str(camdir)], check=True)
            os.sync()
            base = b.baseline(camdir)
            r = b.dockd(camdir, "hash", False)
            ratio = r["seconds"] / base["seconds"]
            results["unthrottled"] = {"dockd": r, "baseline": base, "ratio": ratio}
            say(f"    cp -r + sync {base['cp_sync_s']:.1f} s + boto3 upload_file {base['boto3_s']:.1f} s "
                f"= {base['seconds']:.1f} s")
            say(f"    dockd dock -> ready {r['seconds']:.1f} s = {ratio:.2f}x the baseline "
                f"(target <= 1.0x: {'met' if ratio <= 1.0 else 'MISSED'})  phases: {fmt_phases(r['phases'])}")
    finally:
        if cam is not None:
            cam.close()
        server.stop()
        rm_tree(work)
    say(f"\n    results: {save_results('shift', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
