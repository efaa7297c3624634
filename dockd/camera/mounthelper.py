"""Privilege separation for mounting: a small root helper process, and the daemon's client for it.

The daemon starts ``python -I -m dockd.camera.mounthelper --base DATA_DIR/mnt --config FILE`` once,
before it drops every capability of its own (:mod:`dockd.camera.privileges`). The
helper keeps CAP_SYS_ADMIN only and runs :class:`dockd.camera.mounts.Mounter` (blkid
-p type check, hardened flags verified in mountinfo, ...) for requests sent
as JSON lines on its stdin; every response is one JSON line on its stdout::

    {"id": 1, "op": "mount", "serial": "BC1", "devnode": "/dev/sdb1", "udev_type": "exfat", "allowed": ["exfat"]}
    {"id": 1, "ok": true, "result": {"handle": 1, "fs_type": "exfat", "path": "/var/lib/dockd/mnt/BC1"}, "log": [...]}
    {"id": 2, "op": "remount_rw", "handle": 1}      -> {"id": 2, "ok": false, "error": "one-line reason"}

Ops: ``mount``, ``remount_rw``, ``remount_ro``, ``unmount`` (``handle``,
``lazy``), ``cleanup_stale``, ``shutdown``. The helper trusts the daemon no
more than it must: it checks every request (op whitelist, exact argument
types, a safe serial, a camera filesystem type, a mount point that is a real
directory directly under its base) and only remounts or unmounts what it
mounted itself (by handle). For a mount it resolves the device path itself
(every directory on the way root's and writable by root only, so nobody else
can swap the node), opens it once with ``O_PATH|O_NOFOLLOW`` for its device
number, refuses it if it is mounted outside the base, and asks udev's
database, by that device number, whether it is a docked camera: its udev
properties must match a ``[[camera]]`` profile of the config given at start
(:func:`dockd.camera.sources.udev.translate`, the daemon's own test), with the
requested serial, and the filesystem must be one that profile allows. blkid
and every mount then use the resolved path, re-checked against the device
number right before each run (:func:`dockd.camera.mounts.same_device`).

``--owner UID:GID`` (when the daemon runs as an unprivileged user) makes
every camera volume show its files as that user's, owner-only
(``uid=,gid=,fmask=0177,dmask=0077``), so the daemon can read them and
delete them for the wipe.

Log lines of a request travel back in its response and are logged by the
daemon. On ``shutdown`` it lazily unmounts whatever is still mounted and
exits; if stdin closes without one (the daemon crashed) it exits and leaves
the mounts to the next start's stale-mount cleanup, as a crash always did.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import structlog
from structlog.typing import EventDict, WrappedLogger

from dockd import config as config_mod
from dockd.camera import mounts, privileges
from dockd.camera.mounts import Mount, MountError
from dockd.core.events import Docked, valid_serial

CAMERA_FS = frozenset({"exfat", "vfat", "ntfs", "udf"})  # never a host filesystem (ext4, xfs, btrfs, ...)
MAX_LINE = 64 * 1024
# op -> its arguments and their types (isinstance specs)
ARGS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "mount": {"serial": str, "devnode": str, "udev_type": (str, type(None)), "allowed": list},
    "remount_rw": {"handle": int}, "remount_ro": {"handle": int}, "unmount": {"handle": int, "lazy": bool},
    "cleanup_stale": {}, "shutdown": {}}
LEVELS = ("debug", "info", "warning", "error", "critical")


def _one_line(s: object) -> str:
    return " ".join(str(s).split())


class Helper:
    def __init__(self, base: Path, cfg: config_mod.Config, owner: tuple[int, int] | None = None):
        self.base, self.real = base, os.path.realpath(base)  # symlinks resolved once, at the start
        self.cfg, self.owner = cfg, owner  # both fixed at the start, before the daemon saw any camera
        self.mounter = mounts.Mounter(self.base)
        self.mounts: dict[int, Mount] = {}
        self.next_handle = 1

    def request(self, req: object) -> object:
        if not isinstance(req, dict) or type(req.get("id")) is not int:
            raise ValueError("a request is a JSON object with an integer id")
        if not isinstance(req.get("op"), str) or req["op"] not in ARGS:
            raise ValueError(f"unknown op {req.get('op')!r}")
        spec = ARGS[req["op"]]
        args = {k: v for k, v in req.items() if k not in ("id", "op")}
        if set(args) != set(spec) or any(not isinstance(v, spec[k]) or isinstance(v, bool) != (spec[k] is bool)
                                         for k, v in args.items()):
            raise ValueError(f"{req['op']}: arguments must be exactly {', '.join(spec) or 'none'}")
        return getattr(self, "op_" + req["op"])(**args)

    def op_mount(self, serial: str, devnode: str, udev_type: str | None, allowed: list) -> dict:
        if not valid_serial(serial):
            raise ValueError(f"unsafe serial {serial!r}")
        if not allowed or not all(isinstance(a, str) and a in CAMERA_FS for a in allowed):
            raise ValueError(f"allowed filesystems must be some of {', '.join(sorted(CAMERA_FS))}")
        if any(m.serial == serial for m in self.mounts.values()):
            raise ValueError(f"camera {serial} is already mounted")
        self._check_target(self.base / serial)
        real, rdev = self._resolve_device(mounts.check_devnode(devnode))
        self._check_device(real, os.path.join(self.real, serial))
        fs = self._announced(real, rdev, serial, allowed)
        m = self.mounter.mount(serial, real, udev_type, fs, rdev=rdev, owner=self.owner)
        handle, self.next_handle = self.next_handle, self.next_handle + 1
        self.mounts[handle] = m
        return {"handle": handle, "fs_type": m.fs_type, "path": str(m.path)}

    def op_remount_rw(self, handle: int) -> None:
        self._check_target(self._mount(handle).path)
        self.mounter.remount_rw(self._mount(handle))

    def op_remount_ro(self, handle: int) -> None:
        self._check_target(self._mount(handle).path)
        self.mounter.remount_ro(self._mount(handle))

    def op_unmount(self, handle: int, lazy: bool) -> None:
        self.mounter.unmount(self._mount(handle), lazy=lazy)
        del self.mounts[handle]

    def op_cleanup_stale(self) -> list[str]:
        self._check_target(self.base)
        return self.mounter.cleanup_stale()

    def op_shutdown(self) -> None:
        for handle in list(self.mounts):
            self.op_unmount(handle, lazy=True)

    def _mount(self, handle: int) -> Mount:
        try:
            return self.mounts[handle]
        except KeyError:
            raise ValueError(f"no mount with handle {handle}") from None

    @staticmethod
    def _resolve_device(devnode: str) -> tuple[str, int]:
        """(path without symlinks, device number) of the block device ``devnode`` names now.

        Every directory of the resolved path must be root's and writable by
        root only (devtmpfs /dev is; /dev/shm is not): then only root can
        replace the node, and the path keeps naming the device checked here.
        """
        real = os.path.realpath(devnode)
        if not real.startswith("/dev/"):
            raise ValueError(f"{devnode} does not resolve to a node under /dev")
        d = os.path.dirname(real)
        while True:
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
                raise ValueError(f"{devnode}: {d} is not a root-only directory")
            if d == "/":
                break
            d = os.path.dirname(d)
        fd = os.open(real, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISBLK(st.st_mode) or os.readlink(f"/proc/self/fd/{fd}") != real:
                raise ValueError(f"{devnode} changed while it was checked")
        finally:
            os.close(fd)
        return real, st.st_rdev

    def _announced(self, real: str, rdev: int, serial: str, allowed: list) -> tuple[str, ...]:
        """The filesystems allowed for ``real`` if udev's database shows it as camera ``serial``, else ValueError.

        The helper asks udev itself (by device number, not by a name the daemon
        gave) and applies the daemon's own test (:func:`translate`) with the
        ``[[camera]]`` profiles of the config it was started with.
        """
        import pyudev

        from dockd.camera.sources.udev import translate

        try:
            dev = pyudev.Devices.from_device_number(pyudev.Context(), "block", rdev)
            props = dict(dev.properties)
        except (pyudev.DeviceNotFoundError, OSError, ValueError):
            props = {}
        if props.get("DEVNAME") != real:
            raise ValueError(f"{real} is not a docked camera (udev knows no such block device)")
        ev = translate(self.cfg, "add", props)
        if not isinstance(ev, Docked):
            raise ValueError(f"{real} is not a docked camera (no [[camera]] profile matches its udev properties)")
        if ev.camera.serial != serial:
            raise ValueError(f"{real} is camera {ev.camera.serial}, not {serial}")
        fs = tuple(f for f in allowed if f in ev.camera.filesystems)
        if not fs:
            raise ValueError(f"{real}: profile {ev.camera.profile} allows none of {', '.join(allowed)}")
        return fs

    def _check_device(self, devnode: str, target: str) -> None:
        """Block device ``devnode`` (resolved) is mounted nowhere but (stale) at ``target``."""
        rdev = os.stat(devnode).st_rdev
        dev = f"{os.major(rdev)}:{os.minor(rdev)}"
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                a = line.split(" ")
                where = mounts._unescape(a[4]) if len(a) > 4 else ""
                if a[2:3] == [dev] and where != target:
                    raise ValueError(f"{devnode} is in use (mounted at {where})")

    def _check_target(self, path: Path) -> None:
        """``path`` is the base or a real directory directly in it (no symlink swapped in since the start)."""
        if os.path.realpath(self.base) != self.real:
            raise ValueError(f"mount base {self.base} was moved or replaced")
        if path != self.base and (path.parent != self.base or not valid_serial(path.name)):
            raise ValueError(f"{path} is not a mount point under {self.base}")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{path} is not a directory")


def serve(helper: Helper, inp, out, logs: list) -> None:
    def send(msg: dict) -> None:
        out.write(json.dumps(msg, default=str).encode() + b"\n")
        out.flush()

    send({"id": 0, "ok": True, "result": {"pid": os.getpid(), "caps": privileges.status()["CapEff"]}})
    while True:
        line = inp.readline(MAX_LINE + 1)
        if not line:
            logs.append({"level": "warning", "event": "mount helper: the daemon is gone; mounts stay for the next "
                                                      "start's stale-mount cleanup", "mounted": len(helper.mounts)})
            return
        if not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = inp.readline(MAX_LINE + 1)
            send({"id": None, "ok": False, "error": f"request longer than {MAX_LINE} bytes"})
            continue
        req, rid = None, None
        try:
            req = json.loads(line)
            rid = req.get("id") if isinstance(req, dict) and type(req.get("id")) is int else None
            msg = {"id": rid, "ok": True, "result": helper.request(req)}
        except (ValueError, TypeError, OSError, MountError) as e:
            msg = {"id": rid, "ok": False, "error": _one_line(e) or type(e).__name__}
        except Exception as e:  # noqa: BLE001 - one bad request never takes the helper down
            msg = {"id": rid, "ok": False, "error": _one_line(f"{type(e).__name__}: {e}")}
        msg["log"], logs[:] = list(logs), []
        send(msg)
        if msg["ok"] and isinstance(req, dict) and req.get("op") == "shutdown":  # ok: req parsed as a request
            return


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dockd.camera.mounthelper",
                                 description="dockd's privileged mount helper")
    ap.add_argument("--base", required=True, type=Path, help="the only directory mounts may go under")
    ap.add_argument("--config", required=True, type=Path, help="dockd.toml: its [[camera]] profiles say what "
                                                               "a docked camera is")
    ap.add_argument("--owner", default=None, help="UID:GID to present camera files as (the daemon's user)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the daemon, which then unmounts through us
    logs: list[EventDict] = []

    def collect(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        logs.append(event)
        raise structlog.DropEvent

    structlog.configure(processors=[structlog.processors.add_log_level, collect], cache_logger_on_first_use=False)
    out = os.fdopen(os.dup(1), "wb")  # the protocol channel; anything else printed goes to stderr
    os.dup2(2, 1)
    if not args.base.is_absolute():
        print("mount helper: --base must be an absolute path", file=sys.stderr)
        return 2
    owner = None
    if args.owner is not None:
        try:
            uid, gid = (int(x) for x in args.owner.split(":"))
            owner = (uid, gid)
        except ValueError:
            print(f"mount helper: --owner must be UID:GID, got {args.owner!r}", file=sys.stderr)
            return 2
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"mount helper: {e}", file=sys.stderr)
        return 2
    try:
        privileges.limit_to(frozenset({privileges.CAP_SYS_ADMIN}))
        serve(Helper(args.base, cfg, owner), sys.stdin.buffer, out, logs)
    except privileges.PrivilegeError as e:
        print(f"mount helper: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the daemon went away while we answered
        print(f"mount helper: lost the daemon: {e}", file=sys.stderr)
        return 1
    finally:
        for event in logs:
            print(json.dumps(event, default=str), file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- the daemon's side

class RemoteMount(Mount):
    """A :class:`~dockd.camera.mounts.Mount` held by the helper; ``handle`` names it there."""

    def __init__(self, handle: int, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.handle = handle


def _handle(m: Mount) -> int:
    """The helper's name for ``m``: every mount a MountClient hands out is a RemoteMount."""
    assert isinstance(m, RemoteMount), m
    return m.handle


class MountClient:
    """:class:`dockd.camera.mounts.Mounter`'s interface, run by the mount helper: one request at a time."""

    def __init__(self, base: Path, *, config: Path, owner: tuple[int, int] | None = None, timeout: float = 300.0):
        """Start the helper (root, before the daemon gives up its identity).

        ``owner``: the daemon's (uid, gid) after it switches user; the helper
        then also joins that group, to reach the mount base in the daemon's
        data dir (it has no CAP_DAC_*), and presents camera files as theirs.
        """
        self.base, self.timeout = Path(base).absolute(), timeout
        self.lock = threading.Lock()
        self.ids = 0
        self.dead: str | None = None
        self.buf = b""
        self.log = structlog.get_logger("dockd.mount")
        argv = [sys.executable, "-I", "-m", "dockd.camera.mounthelper", "--base", str(self.base),
                "--config", str(Path(config).absolute())]
        if owner:
            argv += ["--owner", f"{owner[0]}:{owner[1]}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                                     extra_groups=[owner[1]] if owner else None)
        try:
            with self.lock:
                hello = self._receive(0, time.monotonic() + 60)
        except MountError:
            raise MountError(f"it exited at start (exit code {self.proc.returncode}; "
                             "its reason is on stderr)") from None
        self.pid, self.caps = self.proc.pid, int(hello["caps"])
        if not self.caps >> privileges.CAP_SYS_ADMIN & 1:
            self.close()
            raise MountError(f"mount helper started without CAP_SYS_ADMIN (CapEff {self.caps:016x})")

    def mount(self, serial: str, devnode: str | None, udev_type: str | None, allowed: tuple[str, ...]) -> Mount:
        r = self._call("mount", serial=serial, devnode=devnode or "", udev_type=udev_type, allowed=list(allowed))
        return RemoteMount(r["handle"], serial, devnode or "", r["fs_type"], Path(r["path"]))

    def remount_rw(self, m: Mount) -> None:
        self._remount(m, "remount_rw", True)

    def remount_ro(self, m: Mount) -> None:
        self._remount(m, "remount_ro", False)

    def _remount(self, m: Mount, op: str, rw: bool) -> None:
        with m.lock:
            if m.closed:
                raise MountError(f"{m.path}: camera {m.serial} was undocked")
            self._call(op, handle=_handle(m))
            m.rw = rw

    def unmount(self, m: Mount, *, lazy: bool = False) -> None:
        """Like Mounter.unmount: closes ``m``, never raises (failures are logged)."""
        with m.lock:
            if m.closed:
                return
            m.closed = True
            try:
                self._call("unmount", handle=_handle(m), lazy=lazy)
            except MountError as e:
                self.log.warning("unmount failed", camera=m.serial, error=str(e))

    def cleanup_stale(self) -> list[str]:
        return self._call("cleanup_stale")

    def close(self) -> None:
        """Ask the helper to unmount what is left and exit; kill it if it does not."""
        try:
            self._call("shutdown", timeout=60)
        except MountError:
            pass
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None  # started with stdin=PIPE, stdout=PIPE
        for step in (stdin.close, lambda: self.proc.wait(10)):
            try:
                step()
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        stdout.close()
        self.dead = "the mount helper was shut down"

    def _call(self, op: str, *, timeout: float | None = None, **args):
        with self.lock:
            if self.dead:
                raise MountError(self.dead)
            self.ids += 1
            stdin = self.proc.stdin
            assert stdin is not None  # started with stdin=PIPE
            try:
                stdin.write(json.dumps({"id": self.ids, "op": op, **args}).encode() + b"\n")
                stdin.flush()
            except OSError:
                self._gone("mount helper is gone")
            return self._receive(self.ids, time.monotonic() + (timeout or self.timeout))

    def _receive(self, rid: int, deadline: float):
        stdout = self.proc.stdout
        assert stdout is not None  # started with stdout=PIPE
        fd = stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.proc.kill()
                self._gone("mount helper did not answer in time; killed")
            chunk = os.read(fd, 65536)
            if not chunk:
                self._gone("mount helper is gone")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            self.proc.kill()
            self._gone("mount helper sent garbage; killed")
        for event in msg.get("log") or ():
            if not isinstance(event, dict):
                continue
            level = event.pop("level", "info")
            getattr(self.log, level if level in LEVELS else "info")(event.pop("event", "?"), **event)
        if msg.get("id") != rid:
            self.proc.kill()
            self._gone(f"mount helper answered request {msg.get('id')!r} instead of {rid}; killed")
        if not msg.get("ok"):
            raise MountError(msg.get("error") or "mount helper refused")
        return msg.get("result")

    def _gone(self, why: str) -> NoReturn:
        try:
            rc = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            rc = None
        self.dead = f"{why} (exit code {rc}); restart dockd to mount cameras again"
        self.log.error("mount helper failed", reason=self.dead)
        raise MountError(self.dead)


if __name__ == "__main__":
    sys.exit(main())
