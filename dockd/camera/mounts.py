"""The mount helper: the one place that needs mount privileges.

A camera's block device is mounted under ``data_dir/mnt/<serial>``:

1. the device node must be a block device under ``/dev`` (udev's ``DEVNAME``);
2. ``blkid -p`` probes the filesystem type from the device itself (not udev's
   word for it); only the types the camera's profile allows are accepted;
3. ``mount -t TYPE -o ro,nosuid,nodev,noexec,nosymfollow DEV DIR`` (exFAT
   goes through ``exfat-fuse`` when the kernel has no exfat driver);
4. ``mount -o remount,bind,ro,nosuid,nodev,noexec,nosymfollow DIR``, because
   FUSE drops ``noexec`` and ``nosymfollow`` silently;
5. ``/proc/self/mountinfo`` is read back and the mount is refused (and undone)
   unless every one of those flags is in force.

Read-write is only for the wipe, and for FUSE it takes an unmount and a
fresh ``rw`` mount (a FUSE ``remount,rw`` reports success, then fails every
write). Unmounting syncs first; on undock it is lazy (the device is gone:
open files keep working until closed, nothing new can reach the volume).

A :class:`Mount` is closed by its first unmount: a later ``remount_*`` on it
raises :class:`MountError` and a later ``unmount`` is a no-op, so a worker that
is still winding down can never remount a camera that was undocked, nor
unmount the fresh mount of a camera docked again at the same path. Operations
on one mount are serialised by its lock (the undock runs on the daemon's
thread while the camera's worker may be remounting for the wipe).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("dockd.mount")

HARDENED = frozenset({"nosuid", "nodev", "noexec", "nosymfollow"})


class MountError(Exception):
    """A camera volume could not be mounted safely; the camera is left alone."""


@dataclass
class Mount:
    serial: str
    devnode: str
    fs_type: str
    path: Path
    rw: bool = False
    closed: bool = False
    rdev: int | None = None  # the device checked by the mount helper: ``devnode`` must still be it at each mount
    options: str = ""  # filesystem options for every mount of it (the owner of the files, for the daemon's uid)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise MountError(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise MountError(f"{' '.join(argv[:2])} timed out after {timeout}s") from None


_OCTAL = re.compile(rb"\\([0-7]{3})")


def _unescape(field_: str) -> str:
    """Undo mountinfo's octal escapes (space, tab, newline, backslash) on the raw bytes."""
    raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), os.fsencode(field_))
    return os.fsdecode(raw)


def mount_flags(path: Path, mountinfo: str = "/proc/self/mountinfo") -> frozenset[str] | None:
    """Per-mount flags of the topmost mount at ``path`` (None if nothing is mounted there).

    Only the parent is resolved: a stat of the mount point itself would ask
    the (FUSE) filesystem, which hangs if the device behind it did.
    """
    p = os.fspath(path)
    target = os.path.join(os.path.realpath(os.path.dirname(p) or "."), os.path.basename(p))
    found = None
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            a = line.split(" ")
            if len(a) > 5 and _unescape(a[4]) == target:
                found = frozenset(a[5].split(","))
    return found


def kernel_has(fs: str) -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == fs for line in f if line.strip())
    except OSError:
        return False


def probe_type(devnode: str) -> str:
    r = _run(["blkid", "-p", "-o", "value", "-s", "TYPE", devnode], timeout=30)
    t = r.stdout.strip()
    if r.returncode != 0 or not t:
        raise MountError(f"{devnode}: no recognisable filesystem (blkid -p: {r.stderr.strip() or 'nothing found'})")
    return t


def check_devnode(devnode: str | None) -> str:
    """``devnode`` if it is a block device under /dev, else MountError."""
    if not devnode:
        raise MountError("device has no device node")
    if not devnode.startswith("/dev/") or "/../" in devnode:
        raise MountError(f"{devnode!r} is not a device node under /dev")
    try:
        st = os.stat(devnode)
    except OSError as e:
        raise MountError(f"{devnode}: {e.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise MountError(f"{devnode}: not a block device")
    return devnode


def same_device(devnode: str, rdev: int) -> None:
    """MountError unless ``devnode`` (not followed) is still the block device ``rdev``.

    Called right before every program that opens the device by name (blkid,
    mount), so a node swapped after the checks is never probed or mounted.
    """
    try:
        st = os.lstat(devnode)
    except OSError as e:
        raise MountError(f"{devnode}: {e.strerror}") from None
    if not stat.S_ISBLK(st.st_mode) or st.st_rdev != rdev:
        raise MountError(f"{devnode} is no longer the device that was checked; refusing to use it")


def owner_options(fs: str, uid: int, gid: int) -> str:
    """Mount options presenting every file as ``uid:gid``'s (owner-only access), for a camera filesystem type."""
    if fs == "udf":
        return f"uid={uid},gid={gid}"
    return f"uid={uid},gid={gid},fmask=0177,dmask=0077"


class Mounter:
    def __init__(self, base: Path):
        self.base = Path(base)

    def mount(self, serial: str, devnode: str | None, udev_type: str | None, allowed: tuple[str, ...], *,
              rdev: int | None = None, owner: tuple[int, int] | None = None) -> Mount:
        """Mount ``devnode`` read-only under ``base/serial``.

        ``rdev``: the device number the caller checked ``devnode`` against; it is
        compared again right before blkid and before every mount. ``owner``:
        (uid, gid) that the volume's files are presented as (vfat/exFAT have no
        owners), so an unprivileged daemon can read them and, for the wipe,
        delete them; nobody else can.
        """
        devnode = check_devnode(devnode)
        if rdev is not None:
            same_device(devnode, rdev)
        fs = probe_type(devnode)
        if allowed and fs not in allowed:
            raise MountError(f"{devnode}: filesystem {fs!r} not allowed by the camera profile ({', '.join(allowed)})")
        if udev_type and udev_type != fs:
            log.warning("udev and blkid disagree on filesystem type", devnode=devnode, udev=udev_type, blkid=fs)
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.base / serial
        path.mkdir(exist_ok=True, mode=0o700)
        self._umount_all(path)  # whatever a previous dock left there
        m = Mount(serial, devnode, fs, path, rdev=rdev, options=owner_options(fs, *owner) if owner else "")
        with m.lock:
            self._mount(m, rw=False)
        return m

    def _mount(self, m: Mount, *, rw: bool) -> None:
        if m.closed:
            raise MountError(f"{m.path}: camera {m.serial} was undocked")
        mode = "rw" if rw else "ro"
        typ = m.fs_type
        if typ == "exfat" and not kernel_has("exfat"):
            typ = "exfat-fuse"
        if m.rdev is not None:
            same_device(m.devnode, m.rdev)
        opts = f"{mode},nosuid,nodev,noexec,nosymfollow" + (f",{m.options}" if m.options else "")
        r = _run(["mount", "-t", typ, "-o", opts, "--", m.devnode, str(m.path)])
        if r.returncode != 0:
            raise MountError(f"mount {m.devnode} ({typ}) failed: {r.stderr.strip() or r.returncode}")
        r = _run(["mount", "-o", f"remount,bind,{mode},nosuid,nodev,noexec,nosymfollow", "--", str(m.path)])
        flags = mount_flags(m.path) or frozenset()
        missing = (HARDENED | {mode}) - flags
        if r.returncode != 0 or missing:
            self._umount_all(m.path)
            raise MountError(f"{m.path}: refusing a mount without {', '.join(sorted(missing)) or 'hardening'} "
                             f"({r.stderr.strip() or 'remount refused'})")
        m.rw = rw
        log.info("mounted", camera=m.serial, devnode=m.devnode, fs=typ, mode=mode, path=str(m.path),
                 flags=",".join(sorted(flags)))

    def remount_rw(self, m: Mount) -> None:
        with m.lock:
            if m.closed:
                raise MountError(f"{m.path}: camera {m.serial} was undocked")
            self._umount(m.path)
            self._mount(m, rw=True)

    def remount_ro(self, m: Mount) -> None:
        with m.lock:
            if m.closed:
                raise MountError(f"{m.path}: camera {m.serial} was undocked")
            self._umount(m.path)
            self._mount(m, rw=False)

    def unmount(self, m: Mount, *, lazy: bool = False) -> None:
        """Unmount (sync first unless ``lazy``) and close ``m``; never raises; no-op if already closed."""
        with m.lock:
            if m.closed:
                return
            m.closed = True
            try:
                self._umount_all(m.path, lazy=lazy)
            except MountError as e:
                log.warning("unmount failed", camera=m.serial, error=str(e))
                return
            log.info("unmounted", camera=m.serial, path=str(m.path), lazy=lazy)
            try:
                m.path.rmdir()
            except OSError:
                pass

    def _umount(self, path: Path, *, lazy: bool = False) -> None:
        if mount_flags(path) is None:
            return
        if not lazy:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.syncfs(fd) if hasattr(os, "syncfs") else os.sync()
                finally:
                    os.close(fd)
            except OSError:
                pass
        r = _run(["umount", "-l", "--", str(path)] if lazy else ["umount", "--", str(path)])
        if r.returncode != 0 and not lazy:
            r = _run(["umount", "-l", "--", str(path)])
        if r.returncode != 0:
            raise MountError(f"umount {path} failed: {r.stderr.strip()}")

    def _umount_all(self, path: Path, *, lazy: bool = True) -> None:
        """Unmount every mount stacked at ``path``."""
        for _ in range(16):
            if mount_flags(path) is None:
                return
            self._umount(path, lazy=lazy)
        if mount_flags(path) is not None:
            raise MountError(f"{path}: still mounted after repeated unmounts")

    def cleanup_stale(self) -> list[str]:
        """Unmount and remove mount points a crashed run left behind (cold-start recovery)."""
        done: list[str] = []
        if not self.base.is_dir():
            return done
        for p in sorted(self.base.iterdir()):
            if mount_flags(p) is not None:
                try:
                    self._umount_all(p, lazy=True)
                except MountError as e:
                    log.warning("stale mount could not be removed", path=str(p), error=str(e))
                    continue
                log.info("stale mount removed", path=str(p))
            try:
                p.rmdir()
                done.append(p.name)
            except OSError:
                pass
        return done
