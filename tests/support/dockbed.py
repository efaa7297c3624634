"""A docking station on the bench: real exFAT cameras on loop devices, a umockdev udev, and ``dockd run``.

:class:`DockBed` puts the pieces of ``tests/support`` together so a test (or
the demo) can dock cameras through the daemon's real udev path:

* each :class:`DockCam` is an exFAT image with ffmpeg clips (distinct bytes per
  clip), attached as a real ``/dev/loopN``;
* a :class:`~tests.support.udevbed.UdevBed` testbed plays udev: :meth:`DockBed.dock`
  adds the USB mass-storage chain whose ``DEVNAME`` is that loop device (the
  'add' uevents reach the daemon's pyudev monitor), :meth:`DockBed.undock`
  sends the 'remove' uevents, children first;
* ``dockd --config CFG run`` runs as the testbed child (LD_PRELOAD +
  UMOCKDEV_DIR), so it sees only testbed devices in /sys and mounts the real
  loop device with exfat-fuse under ``data_dir/mnt/<serial>``;
* its JSON log lines (stdout) are collected: :meth:`DockBed.wait_log` waits for
  a line matching a predicate, :meth:`DockBed.wait_state` for a camera state;
* optional camera read throttling (``throttle=True``): the daemon runs in its
  own cgroup-v1 ``blkio`` group, and :meth:`DockBed.throttle` caps the read rate
  of one camera's loop device, as a slow USB link would. The exfat-fuse
  process the daemon starts inherits the group, and it is the one reading the
  device, so a large clip's copy takes seconds: long enough to pull the
  camera mid-copy deterministically.

Everything is cleaned up by :meth:`DockBed.close` (context manager), even after
a failure: the daemon and the testbed driver are stopped, every mount under
the data dir is unmounted, loop devices are detached, the cgroup removed.

Command line (needs root, /dev/fuse, umockdev; storage optional)::

    python -m tests.support.seaweed start --dir D/weed
    python -m tests.support.dockbed demo --dir D --s3-env D/weed/s3.env --bucket evidence --cameras 2

writes its own config, docks the cameras through udev into ``dockd run``,
waits until each is ``ready`` (``holding`` without storage), prints ``dockd
status``, undocks, stops the daemon and lists what is left on each camera
image (exit 0 if all went well). To drive your own config instead::

    python -m tests.support.dockbed run --dir D/udev --camera BWC-0001=path/to/camera_dir \
        --report D/udev.json -- dockd --config D/dockd.toml run --drain

puts each directory on an exFAT image, docks it (cold plug, bay usb-0:1.2,
1.3, ...; USB 2b2e:0c01, so the config needs ``[sources] udev = true`` and a
matching ``[[camera]]``), runs the command inside the testbed (stdio
inherited, its exit code returned) and writes the files on each camera
before and after to the report.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:  # for ``python -m tests.support.dockbed`` from elsewhere
    sys.path.insert(0, str(_REPO_ROOT))

from tests.support import exfat, udevbed  # noqa: E402
from tests.support.cli import dockd_argv  # noqa: E402 - a module attribute: tests may replace it
from tests.support.uploads import station_config  # noqa: E402

__all__ = ["ACME", "DockBed", "DockCam", "available", "throttle_available"]

VENDOR_ID = "2b2e"
MODEL_ID = "0c01"
CLIP_DIR = "DCIM/100CAMERA"
ACME = {"name": "acme", "match": {"ID_VENDOR_ID": VENDOR_ID, "ID_MODEL_ID": [MODEL_ID, "0c02"]},
        "filesystems": ["exfat"]}
BLKIO = Path("/sys/fs/cgroup/blkio")


def available() -> tuple[bool, str]:
    """(True, "") if a DockBed can run here, else (False, reason to skip)."""
    ok, why = exfat.can_use_exfat()
    if not ok:
        return ok, why
    try:
        import pyudev  # noqa: F401
    except ImportError:
        return False, "pyudev not importable"
    return udevbed.udevbed_available()


def throttle_available() -> tuple[bool, str]:
    if not (BLKIO / "blkio.throttle.read_bps_device").exists():
        return False, f"no cgroup-v1 blkio throttling at {BLKIO} (needed to slow a camera down)"
    return True, ""


# --------------------------------------------------------------------------- cameras

@dataclass
class DockCam:
    """One camera: an image on a loop device, and (while docked) its testbed devices."""
    serial: str
    image: Path
    port: str
    fs_uuid: str
    label: str
    clips: list[str]                    # relative paths on the volume
    hashes: dict[str, str] = field(default_factory=dict)  # relative path -> SHA-256 of the clip
    vendor_id: str = VENDOR_ID
    model_id: str = MODEL_ID
    partitioned: bool = False
    loop: str = ""                      # /dev/loopN (the disk)
    node: str = ""                      # node with the filesystem (disk or partition)
    udev: udevbed.Camera | None = None  # set while docked

    @property
    def bay(self) -> str:
        return f"usb-0:{self.port}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def _pad_variant(src: Path, dst: Path, extra: int, chunk: bytes = b"") -> None:
    """Copy an MP4 and append a top-level ``free`` box of ``extra`` bytes (still valid; distinct bytes)."""
    shutil.copyfile(src, dst)
    box = max(extra, 8)
    with open(dst, "ab") as f:
        f.write(struct.pack(">I4s", box, b"free"))
        left = box - 8
        chunk = chunk or b"\0"
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n


# --------------------------------------------------------------------------- the bed

class DockBed:
    """Cameras + umockdev + ``dockd run`` (see the module docstring). Use as a context manager."""

    def __init__(self, workdir: str | os.PathLike, *, storage: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None, profiles: Iterable[Mapping[str, Any]] = (ACME,),
                 hooks: Mapping[str, Any] | None = None, offload: Mapping[str, Any] | None = None,
                 upload: Mapping[str, Any] | None = None, throttle: bool = False, station: str = "bench-1"):
        """``storage``: ``{"url": "s3://bucket/prefix", "endpoint_url": ...}`` (None: no storage, cameras hold).

        ``env``: extra environment for the daemon and CLI (AWS_* credentials).
        """
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.dir / "data"
        self.config = self.dir / "dockd.toml"
        self.env = dict(os.environ, **(env or {}))
        self.env.pop("DOCKD_CONFIG", None)
        self.storage, self.profiles = storage, list(profiles)
        self.hooks, self.offload, self.upload = dict(hooks or {}), dict(offload or {}), dict(upload or {})
        self.station = station
        self.cams: list[DockCam] = []
        self.bed: udevbed.UdevBed | None = None
        self.proc: subprocess.Popen | None = None
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        self._eof = False
        self._stderr_path = self.dir / "dockd.stderr"
        self._cgroup: Path | None = None
        self._want_throttle = throttle
        self._clip_src: Path | None = None

    # ---------------------------------------------------------------- config

    def write_config(self) -> Path:
        return station_config(self.config, data_dir=self.data_dir, station_id=self.station,
                              sources={"udev": True}, metrics={"listen": ""}, storage=self.storage or None,
                              offload={"reserve_free_mb": 16, **self.offload},
                              upload={"backoff_initial_s": 0.5, "backoff_max_s": 2.0, **self.upload},
                              hooks=self.hooks or None, camera=list(self.profiles))

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> DockBed:
        return self.start_bed()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_bed(self) -> DockBed:
        if self.bed is None:
            self.bed = udevbed.UdevBed().start()
        return self

    def close(self) -> None:
        errors = []
        for step in (self.stop_daemon, self._close_bed, self._unmount_all, self._detach_all, self._drop_cgroup):
            try:
                step()
            except Exception as e:  # noqa: BLE001 - clean up as much as possible, report at the end
                errors.append(f"{step.__name__}: {e}")
        if errors:
            raise RuntimeError("DockBed cleanup: " + "; ".join(errors))

    def _close_bed(self) -> None:
        if self.bed is not None:
            self.bed.close()
            self.bed = None

    def _ours(self) -> list[str]:
        """Mount points under the work dir, or of one of our cameras' devices (wherever the daemon put them)."""
        base = str(self.dir) + "/"
        devs = {d for c in self.cams for d in (c.loop, c.node) if d}
        return [mp for mp, src in _mounts() if mp.startswith(base) or src in devs]

    def _unmount_all(self) -> None:
        for _ in range(3):
            mps = self._ours()
            if not mps:
                return
            for mp in sorted(set(mps), key=len, reverse=True):
                subprocess.run(["umount", "-l", "--", mp], capture_output=True)
        left = self._ours()
        if left:
            raise RuntimeError(f"still mounted: {left}")

    def _detach_all(self) -> None:
        for cam in self.cams:
            if cam.loop:
                exfat.detach_loop(cam.loop)
                cam.loop = cam.node = ""

    # ---------------------------------------------------------------- cameras

    def _base_clip(self) -> Path:
        if self._clip_src is None:
            self._clip_src = exfat.make_clip(self.dir / "src" / "base.mp4", 1)
        return self._clip_src

    def camera(self, serial: str, *, clips: int = 2, port: str = "1.2", big_mib: int = 0,
               garbage: bool = False, model_id: str = MODEL_ID, partitioned: bool = False,
               volume_serial: int | None = None, attach: bool = True,
               from_dir: str | os.PathLike | None = None) -> DockCam:
        """Build a camera image (``clips`` small distinct MP4s, plus a ``big_mib`` MiB clip if set) and attach it.

        ``from_dir``: copy that directory's files instead (relative paths kept; ``clips`` ignored).
        ``garbage=True``: random bytes instead of a filesystem (udev will still claim exFAT).
        """
        n = len(self.cams)
        vs = volume_serial if volume_serial is not None else \
            (0xCA000000 | (zlib.crc32(serial.encode()) & 0xFFFF) << 8 | (n & 0xFF))
        img_path = self.dir / "images" / f"{serial}.img"
        src = self.dir / "src" / serial
        src.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        if from_dir is not None:
            base = Path(from_dir)
            files = {p.relative_to(base).as_posix(): p for p in sorted(base.rglob("*"))
                     if p.is_file() and not p.is_symlink()}
            clips = 0
        for i in range(clips):
            p = src / f"VID_{i + 1:04d}.MP4"
            _pad_variant(self._base_clip(), p, 64 + 997 * (i + 1) + 31 * n)
            files[f"{CLIP_DIR}/VID_{i + 1:04d}.MP4"] = p
        if big_mib:
            p = src / "BIG_0001.MP4"
            _pad_variant(self._base_clip(), p, big_mib << 20, os.urandom(1 << 20))
            files[f"{CLIP_DIR}/BIG_0001.MP4"] = p
        hashes = {rel: _sha256(p) for rel, p in files.items()}
        size = max(32 << 20, (big_mib + 24) << 20, sum(p.stat().st_size for p in files.values()) + (24 << 20))
        img_path.parent.mkdir(parents=True, exist_ok=True)
        if garbage:
            with open(img_path, "wb") as f:
                f.write(os.urandom(min(size, 8 << 20)))
                f.truncate(size)
            label = ""
        else:
            img = exfat.build_image(img_path, size=size, label=serial[:11].upper(), volume_serial=vs,
                                    files=files, partitioned=partitioned)
            label = img.label
        shutil.rmtree(src, ignore_errors=True)
        cam = DockCam(serial=serial, image=img_path, port=port,
                      fs_uuid=f"{vs >> 16:04X}-{vs & 0xFFFF:04X}", label=label,
                      clips=sorted(files), hashes=hashes, model_id=model_id, partitioned=partitioned)
        self.cams.append(cam)
        if attach:
            self.attach(cam)
        return cam

    def attach(self, cam: DockCam) -> str:
        if not cam.loop:
            cam.loop = exfat.attach_loop(cam.image, partscan=cam.partitioned)
            cam.node = exfat.partition_node(cam.loop, 1) if cam.partitioned else cam.loop
        return cam.loop

    def detach(self, cam: DockCam) -> None:
        if cam.loop:
            exfat.detach_loop(cam.loop)
            cam.loop = cam.node = ""

    def dock(self, cam: DockCam) -> udevbed.Camera:
        """Hot-plug (or, before :meth:`start_daemon`, cold-plug) the camera into the testbed."""
        assert self.bed is not None, "start_bed() first"
        if cam.udev is not None:
            raise RuntimeError(f"{cam.serial} is already docked")
        self.attach(cam)
        cam.udev = self.bed.add_usb_camera(
            cam.loop, serial=cam.serial, fs_uuid=cam.fs_uuid, fs_label=cam.label,
            fs_devname=cam.node if cam.partitioned else None, vendor_id=cam.vendor_id,
            model_id=cam.model_id, port=cam.port)
        return cam.udev

    def undock(self, cam: DockCam) -> None:
        """'remove' uevents for the camera chain (children first), then drop it from the testbed."""
        assert self.bed is not None
        if cam.udev is not None:
            self.bed.unplug(cam.udev)
            cam.udev = None

    def list_image(self, cam: DockCam) -> list[str]:
        """Files on the camera image now, read back through a fresh loop device and a read-only mount."""
        was = bool(cam.loop)
        self.detach(cam)
        mnt = self.dir / "inspect" / cam.serial
        try:
            with exfat.loop_device(cam.image, read_only=True, partscan=cam.partitioned) as dev:
                node = exfat.partition_node(dev, 1) if cam.partitioned else dev
                with exfat.mounted(node, mnt, read_only=True):
                    out = []
                    for root, _dirs, names in os.walk(mnt):
                        out += [os.path.relpath(os.path.join(root, n), mnt) for n in names]
                    return sorted(out)
        finally:
            with contextlib.suppress(OSError):
                mnt.rmdir()
            if was:
                self.attach(cam)

    # ---------------------------------------------------------------- throttling

    def _ensure_cgroup(self) -> Path:
        if self._cgroup is None:
            ok, why = throttle_available()
            if not ok:
                raise RuntimeError(why)
            cg = BLKIO / f"dockbed-{os.getpid()}-{id(self) & 0xFFFFFF:x}"
            cg.mkdir(exist_ok=True)
            self._cgroup = cg
        return self._cgroup

    def throttle(self, cam: DockCam, bytes_per_s: int) -> None:
        """Cap reads of the camera's device by the daemon and its children (0 lifts the cap)."""
        cg = self._ensure_cgroup()
        st = os.stat(cam.node or cam.loop)
        (cg / "blkio.throttle.read_bps_device").write_text(
            f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)} {int(bytes_per_s)}\n")

    def _drop_cgroup(self) -> None:
        cg = self._cgroup
        if cg is None or not cg.exists():
            return
        with contextlib.suppress(OSError):  # stragglers (a lingering exfat-fuse) go back to the root group
            for pid in (cg / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (BLKIO / "cgroup.procs").write_text(pid)
        for _ in range(50):
            try:
                cg.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        self._cgroup = None

    # ---------------------------------------------------------------- the daemon

    def start_daemon(self, *, timeout: float = 30, extra_args: Iterable[str] = ()) -> subprocess.Popen:
        """Spawn ``dockd run`` inside the testbed; returns once it logged 'dockd running' (udev monitor armed)."""
        assert self.bed is not None, "start_bed() first"
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("daemon already running")
        self.write_config()
        argv = [*dockd_argv(), "--config", str(self.config), "run", *extra_args]
        start = len(self.lines)
        self._eof = False
        stderr = open(self._stderr_path, "ab")
        try:
            self.proc = self.bed.spawn(argv, env=self.env, stdout=subprocess.PIPE, stderr=stderr, cwd=str(self.dir))
        finally:
            stderr.close()
        if self._want_throttle:
            # From here: the child's /sys is the testbed's. It mounts nothing before it logs 'dockd running',
            # and the exfat-fuse processes it starts later inherit the group.
            (self._ensure_cgroup() / "cgroup.procs").write_text(str(self.proc.pid))
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True, name="dockbed-log").start()
        self.wait_log(lambda e: e.get("event") == "dockd running", timeout, start=start)
        return self.proc

    def run_command(self, argv: Iterable[str], *, timeout: float | None = None, **popen_kwargs: Any) -> int:
        """Run any command (e.g. ``dockd --config C run --drain``) inside the testbed; returns its exit code.

        stdio is inherited unless given; the command is terminated if this process is interrupted.
        """
        assert self.bed is not None, "start_bed() first"
        p = self.bed.spawn(list(argv), env=self.env, **popen_kwargs)
        try:
            return p.wait(timeout)
        except BaseException:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
            raise

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _pump(self, stream) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    obj = {"raw": line}
            except ValueError:
                obj = {"raw": line}
            with self._cond:
                self.lines.append(obj)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def stop_daemon(self, timeout: float = 30) -> int | None:
        """SIGTERM the daemon and wait; returns its exit code (None if it was not running)."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        with self._cond:  # let the log pump see EOF
            self._cond.wait_for(lambda: self._eof, timeout=5)
        if p.stdout:
            p.stdout.close()
        return p.returncode

    def kill_daemon(self) -> int | None:
        """SIGKILL the daemon (a crash: its mounts and exfat-fuse processes stay behind); returns its exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.kill()
            p.wait(10)
        with self._cond:
            self._cond.wait_for(lambda: self._eof, timeout=5)
        if p.stdout:
            p.stdout.close()
        return p.returncode

    def stderr_text(self) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    # ---------------------------------------------------------------- observing

    def wait_log(self, pred: Callable[[dict], bool], timeout: float = 30, *, start: int = 0) -> dict:
        """First log line at index >= ``start`` matching ``pred`` (waits for it)."""
        deadline = time.monotonic() + timeout
        i = start
        with self._cond:
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "daemon exited" if self._eof else f"nothing within {timeout}s"
                    tail = [json.dumps(x)[:300] for x in self.lines[-15:]]
                    raise TimeoutError(f"{why}; last log lines:\n" + "\n".join(tail)
                                       + f"\nstderr: {self.stderr_text()[-2000:]}")
                self._cond.wait(min(left, 1.0))

    def wait_state(self, serial: str, states: str | Iterable[str], timeout: float = 60, *, start: int = 0) -> dict:
        """Wait for the daemon's ``camera state`` log line putting ``serial`` in one of ``states``."""
        want = {states} if isinstance(states, str) else set(states)
        return self.wait_log(lambda e: e.get("event") == "camera state" and e.get("camera") == serial
                             and e.get("state") in want, timeout, start=start)

    def logs(self, event: str | None = None, **match: Any) -> list[dict]:
        with self._cond:
            return [x for x in self.lines if (event is None or x.get("event") == event)
                    and all(x.get(k) == v for k, v in match.items())]

    def mark(self) -> int:
        """Index of the next log line (pass as ``start=`` to wait only for later lines)."""
        with self._cond:
            return len(self.lines)

    def daemon_mount(self, cam: DockCam) -> exfat.MountEntry | None:
        """The mount at ``data_dir/mnt/<serial>`` as the daemon's /proc/<pid>/mountinfo shows it."""
        assert self.proc is not None
        return exfat.find_mount(self.mnt(cam), mountinfo=f"/proc/{self.proc.pid}/mountinfo")

    def mnt(self, cam: DockCam | str) -> Path:
        return self.data_dir / "mnt" / (cam.serial if isinstance(cam, DockCam) else cam)

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``dockd --config CFG ARGS`` (outside the testbed)."""
        r = subprocess.run([*dockd_argv(), "--config", str(self.config), *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"dockd {' '.join(args)} -> {r.returncode}: {r.stderr.strip()}")
        return r

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def camera_status(self, serial: str) -> dict | None:
        return next((c for c in self.status()["cameras"] if c["serial"] == serial), None)

    def clips(self, serial: str) -> list[dict]:
        return json.loads(self.cli("queue", "--camera", serial, "--json").stdout)

    def audit(self, serial: str | None = None) -> list[dict]:
        args = ["audit", "--json"] + (["--camera", serial] if serial else [])
        return [json.loads(x) for x in self.cli(*args).stdout.splitlines() if x.strip()]


def _mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """(mount point, source) of every mount."""
    def unesc(x: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), x)

    out = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            b = right.split(" ")
            out.append((unesc(left.split(" ")[4]), unesc(b[1]) if len(b) > 1 else ""))
    return out


# --------------------------------------------------------------------------- demo CLI

def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = (shlex.split(v) or [""])[0]
    return env


def _demo(args: argparse.Namespace) -> int:
    ok, why = available()
    if not ok:
        print(f"dockbed demo: cannot run here: {why}", file=sys.stderr)
        return 2
    env: dict[str, str] = {}
    storage = None
    if args.s3_env:
        env = _read_env_file(Path(args.s3_env))
        endpoint = env.get("DOCKD_TEST_S3_ENDPOINT")
        if not endpoint:
            print(f"dockbed demo: {args.s3_env} has no DOCKD_TEST_S3_ENDPOINT", file=sys.stderr)
            return 2
        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"))
        with contextlib.suppress(Exception):
            s3.create_bucket(Bucket=args.bucket)
        storage = {"url": f"s3://{args.bucket}/bwc", "endpoint_url": endpoint}
    workdir = Path(args.dir).resolve()
    if (workdir / "data").exists() and not args.keep_data:
        shutil.rmtree(workdir / "data")
    rc = 0
    with DockBed(workdir, storage=storage, env=env) as db:
        cams = [db.camera(f"BWC{i + 1:04d}", clips=args.clips, port=f"1.{i + 2}") for i in range(args.cameras)]
        db.start_daemon()
        print(f"dockd running (pid {db.pid}); docking {len(cams)} camera(s) through udev")
        want = ("ready", "attention", "error") if storage else ("holding", "attention", "error")
        mark = db.mark()
        for cam in cams:
            db.dock(cam)
            print(f"  docked {cam.serial} in bay {cam.bay} ({cam.loop}, {len(cam.clips)} clips)")
        for cam in cams:
            ev = db.wait_state(cam.serial, want, args.timeout, start=mark)
            print(f"  {cam.serial}: {ev['state']}" + (f" ({ev.get('reason')})" if ev.get("reason") else ""))
            rc |= ev["state"] != want[0]
        print(db.cli("status").stdout)
        if args.linger:
            print(f"lingering {args.linger}s (try: dockd --config {db.config} status --watch)")
            time.sleep(args.linger)
        for cam in cams:
            db.undock(cam)
        code = db.stop_daemon()
        print(f"daemon stopped (exit {code})")
        for cam in cams:
            left = db.list_image(cam)
            print(f"  {cam.serial} now holds {len(left)} file(s)" + (f": {', '.join(left)}" if left else ""))
        print(f"config: {db.config}  data: {db.data_dir}")
    return rc


def _run(args: argparse.Namespace) -> int:
    ok, why = available()
    if not ok:
        print(f"dockbed run: cannot run here: {why}", file=sys.stderr)
        return 2
    cmd = list(args.command)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        print("dockbed run: give the command after --", file=sys.stderr)
        return 2
    specs = []
    for i, spec in enumerate(args.camera):
        serial, sep, directory = spec.partition("=")
        if not sep or not serial or not Path(directory).is_dir():
            print(f"dockbed run: --camera {spec!r}: want SERIAL=DIR with an existing DIR", file=sys.stderr)
            return 2
        specs.append((serial, directory, f"1.{i + 2}"))
    report: dict[str, Any] = {}
    with DockBed(args.dir) as db:
        cams = [db.camera(serial, from_dir=d, port=port, partitioned=args.partitioned) for serial, d, port in specs]
        for cam in cams:  # cold plug: present when the command starts (what `run --drain` processes)
            db.dock(cam)
            report[cam.serial] = {"bay": cam.bay, "device": cam.node, "image": str(cam.image),
                                  "files_before": cam.clips}
        rc = db.run_command(cmd, timeout=args.timeout)
        for cam in cams:
            db.undock(cam)
            report[cam.serial]["files_after"] = db.list_image(cam)
    report = {"exit_code": rc, "cameras": report}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.support.dockbed", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="put directories on exFAT cameras, dock them (cold plug), run a command "
                                   "inside the udev testbed",
                       description="Each --camera SERIAL=DIR becomes an exFAT image on a loop device, docked "
                                   "in bay usb-0:1.2, 1.3, ... (USB 2b2e:0c01) before COMMAND starts; COMMAND "
                                   "(e.g. dockd --config C run --drain) runs with the testbed preloaded. Exit "
                                   "code: COMMAND's. --report gets the files on each camera before and after.")
    r.add_argument("--dir", required=True, help="work dir for images and the testbed")
    r.add_argument("--camera", action="append", default=[], metavar="SERIAL=DIR", required=True)
    r.add_argument("--partitioned", action="store_true", help="DOS label, filesystem on partition 1")
    r.add_argument("--report", help="write a JSON report here")
    r.add_argument("--timeout", type=float, default=None, help="seconds before COMMAND is stopped")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    d = sub.add_parser("demo", help="dock cameras through udev into a real dockd run, end to end")
    d.add_argument("--dir", required=True, help="work dir (images, config, data dir)")
    d.add_argument("--s3-env", help="s3.env written by `python -m tests.support.seaweed start` (else no storage)")
    d.add_argument("--bucket", default="evidence")
    d.add_argument("--cameras", type=int, default=2)
    d.add_argument("--clips", type=int, default=3)
    d.add_argument("--timeout", type=float, default=120)
    d.add_argument("--linger", type=float, default=0, help="seconds to stay docked after the run settles")
    d.add_argument("--keep-data", action="store_true", help="keep an existing data dir (queue, key)")
    args = ap.parse_args(argv)
    return _run(args) if args.cmd == "run" else _demo(args)


if __name__ == "__main__":
    sys.exit(main())
