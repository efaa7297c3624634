"""The mount helper: the one place that needs mount privileges.

A camera's block device is mounted under ``data_dir/mnt/<serial>``:

1. ``blkid -p`` probes the filesystem type from the device itself (not udev's
   word for it); only the types the camera's profile allows are accepted;
2. ``mount -t TYPE -o ro,nosuid,nodev,noexec,nosymfollow DEV DIR`` (exFAT
   goes through ``exfat-fuse`` when the kernel has no exfat driver);
3. ``mount -o remount,bind,ro,nosuid,nodev,noexec,nosymfollow DIR``, because
   FUSE drops ``noexec`` and ``nosymfollow`` silently;
4. ``/proc/self/mountinfo`` is read back and the mount is refused unless
   every one of those flags is in force.

Read-write is only for the wipe, and for FUSE it takes an unmount and a
fresh ``rw`` mount (a FUSE ``remount,rw`` reports success, then fails every
write). Unmounting syncs first; on undock it is lazy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
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


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise MountError(f"{argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise MountError(f"{' '.join(argv[:2])} timed out after {timeout}s") from None


def mount_flags(path: Path, mountinfo: str = "/proc/self/mountinfo") -> frozenset[str] | None:
    """Per-mount flags of the topmost mount at ``path`` (None if nothing is mounted there)."""
    target = os.path.realpath(path)
    found = None
    with open(mountinfo) as f:
        for line in f:
            a = line.split()
            mp = a[4].encode().decode("unicode_escape")
            if mp == target:
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


class Mounter:
    def __init__(self, base: Path):
        self.base = Path(base)

    def mount(self, serial: str, devnode: str | None, udev_type: str | None, allowed: tuple[str, ...]) -> Mount:
        if not devnode:
            raise MountError("device has no device node")
        fs = probe_type(devnode)
        if allowed and fs not in allowed:
            raise MountError(f"{devnode}: filesystem {fs!r} not allowed by the camera profile ({', '.join(allowed)})")
        if udev_type and udev_type != fs:
            log.warning("udev and blkid disagree on filesystem type", devnode=devnode, udev=udev_type, blkid=fs)
        path = self.base / serial
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if mount_flags(path) is not None:
            self._umount(path, lazy=True)
        m = Mount(serial, devnode, fs, path)
        self._mount(m, rw=False)
        return m

    def _mount(self, m: Mount, *, rw: bool) -> None:
        mode = "rw" if rw else "ro"
        typ = m.fs_type
        if typ == "exfat" and not kernel_has("exfat"):
            typ = "exfat-fuse"
        r = _run(["mount", "-t", typ, "-o", f"{mode},nosuid,nodev,noexec,nosymfollow", m.devnode, str(m.path)])
        if r.returncode != 0:
            raise MountError(f"mount {m.devnode} ({typ}) failed: {r.stderr.strip() or r.returncode}")
        r = _run(["mount", "-o", f"remount,bind,{mode},nosuid,nodev,noexec,nosymfollow", str(m.path)])
        flags = mount_flags(m.path) or frozenset()
        missing = (HARDENED | {mode}) - flags
        if r.returncode != 0 or missing:
            self._umount(m.path, lazy=True)
            raise MountError(f"{m.path}: refusing a mount without {', '.join(sorted(missing)) or 'hardening'} "
                             f"({r.stderr.strip()})")
        m.rw = rw
        log.info("mounted", camera=m.serial, devnode=m.devnode, fs=typ, mode=mode, flags=",".join(sorted(flags)))

    def remount_rw(self, m: Mount) -> None:
        self._umount(m.path)
        self._mount(m, rw=True)

    def remount_ro(self, m: Mount) -> None:
        self._umount(m.path)
        self._mount(m, rw=False)

    def unmount(self, m: Mount, *, lazy: bool = False) -> None:
        try:
            self._umount(m.path, lazy=lazy)
        except MountError as e:
            log.warning("unmount failed", camera=m.serial, error=str(e))

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
        r = _run(["umount", "-l", str(path)] if lazy else ["umount", str(path)])
        if r.returncode != 0 and not lazy:
            r = _run(["umount", "-l", str(path)])
        if r.returncode != 0:
            raise MountError(f"umount {path} failed: {r.stderr.strip()}")

    def cleanup_stale(self) -> list[str]:
        """Unmount and remove mount points a crashed run left behind (cold-start recovery)."""
        done = []
        if not self.base.is_dir():
            return done
        for p in sorted(self.base.iterdir()):
            if mount_flags(p) is not None:
                try:
                    self._umount(p, lazy=True)
                except MountError as e:
                    log.warning("stale mount could not be removed", path=str(p), error=str(e))
                    continue
            try:
                p.rmdir()
                done.append(p.name)
            except OSError:
                pass
        return done


def tools_available() -> list[str]:
    return [t for t in ("mount", "umount", "blkid") if shutil.which(t) is None]
