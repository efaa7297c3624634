"""Real exFAT media for tests: ffmpeg clips, exFAT images, loop devices, FUSE mounts.

Everything here shells out to the real tools (no mocks):

* ``ffmpeg`` (lavfi ``testsrc``) makes tiny MP4 clips,
* ``mkfs.exfat`` / ``tune.exfat`` (exfatprogs) format an image with a label and
  volume serial (blkid reports the serial as ``ID_FS_UUID`` ``"1234-ABCD"``),
* ``losetup`` attaches the image as ``/dev/loopN``,
* ``mount.exfat-fuse`` (exfat-fuse, via ``mount -t exfat-fuse``) mounts it; the
  kernel here has no exfat/vfat driver, only FUSE.

Mount flags, as seen in ``/proc/self/mountinfo`` (field 6 = per-mount flags):

* ``mount -t exfat-fuse -o ro,nosuid,nodev,noexec,nosymfollow DEV MNT`` yields
  only ``ro,nosuid,nodev,relatime``: exfat-fuse/libfuse2 silently DROP
  ``noexec`` and ``nosymfollow``.
* a following ``mount -o remount,bind,ro,nosuid,nodev,noexec,nosymfollow MNT``
  (in place, no second mount point needed) yields
  ``ro,nosuid,nodev,noexec,relatime,nosymfollow``.
* ``mount -o remount,rw MNT`` on a FUSE mount that exfat-fuse opened read-only
  *succeeds* and mountinfo says ``rw`` but every write fails with EIO: going
  read-write needs ``umount`` + a fresh ``-o rw`` exfat-fuse mount (+ the bind
  remount for noexec/nosymfollow), which yields
  ``rw,nosuid,nodev,noexec,relatime,nosymfollow``.
* unmounting a ``fuseblk`` mount is synchronous: once ``umount`` returns,
  exfat-fuse has flushed and closed the device.

Only stdlib; importable from the venv python.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "HARDENED_FLAGS",
    "ExfatImage",
    "MountEntry",
    "attach_loop",
    "build_camera_image",
    "build_image",
    "can_use_exfat",
    "detach_loop",
    "find_mount",
    "harden_mount",
    "loop_device",
    "make_clip",
    "mount_exfat",
    "mounted",
    "partition_node",
    "populate",
    "unmount",
]

HARDENED_FLAGS = frozenset({"nosuid", "nodev", "noexec", "nosymfollow"})

_TOOLS = ("ffmpeg", "mkfs.exfat", "tune.exfat", "mount.exfat-fuse", "losetup", "partx", "mount", "umount")
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _SBIN:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def _run(argv: list[str], *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    exe = _which(argv[0]) or argv[0]
    proc = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc


def can_use_exfat() -> tuple[bool, str]:
    """(True, "") when this process can build, attach and FUSE-mount exFAT images."""
    if os.geteuid() != 0:
        return False, "needs root (losetup/mount)"
    if not os.path.exists("/dev/fuse"):
        return False, "no /dev/fuse"
    if not os.path.exists("/dev/loop-control"):
        return False, "no /dev/loop-control (loop driver)"
    missing = [t for t in _TOOLS if _which(t) is None]
    if missing:
        return False, "missing tools: " + ", ".join(missing) + " (apt-get install ffmpeg exfatprogs exfat-fuse)"
    try:
        with open("/proc/filesystems") as f:
            if "fuseblk" not in f.read():
                return False, "kernel lacks fuseblk"
    except OSError as e:  # pragma: no cover
        return False, f"cannot read /proc/filesystems: {e}"
    return True, ""


# --------------------------------------------------------------------------- clips

def make_clip(
    path: str | os.PathLike,
    seconds: float = 2,
    *,
    video_size: str = "160x120",
    rate: int = 10,
    bitrate: str | None = None,
    min_bytes: int | None = None,
) -> Path:
    """Make a small MP4 (MPEG-4 part 2, lavfi testsrc) at ``path``; returns the path.

    Size hints: ``bitrate`` (e.g. "400k") is passed to the encoder; ``min_bytes``
    pads the file with a trailing top-level ISO-BMFF ``free`` box (still a valid
    MP4) so it is at least that large. Default clip: ~12 KB, well under 1 s to make.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={video_size}:rate={rate}",
        "-c:v", "mpeg4",
    ]
    argv += ["-b:v", bitrate] if bitrate else ["-q:v", "10"]
    argv += ["-movflags", "+faststart", "-f", "mp4", str(path)]
    _run(argv, timeout=120)
    if min_bytes is not None:
        short = min_bytes - path.stat().st_size
        if short > 0:
            box = max(short, 8)
            with open(path, "ab") as f:
                f.write(struct.pack(">I4s", box, b"free"))
                f.write(b"\0" * (box - 8))
    return path


# --------------------------------------------------------------------------- images

@dataclass
class ExfatImage:
    path: Path
    label: str
    volume_serial: int
    partitioned: bool = False
    files: dict[str, int] = field(default_factory=dict)  # relative path -> size

    @property
    def uuid(self) -> str:
        """The ID_FS_UUID blkid/udev report for this volume, e.g. "1234-ABCD"."""
        return f"{self.volume_serial >> 16:04X}-{self.volume_serial & 0xFFFF:04X}"


_PART_START = 2048  # sectors (1 MiB), like fdisk


def _write_mbr(path: Path, size: int) -> None:
    """One primary partition, type 0x07 (exFAT/NTFS), from 1 MiB to the end."""
    nsect = size // 512 - _PART_START
    entry = struct.pack("<B3sB3sII", 0x00, b"\xfe\xff\xff", 0x07, b"\xfe\xff\xff", _PART_START, nsect)
    with open(path, "r+b") as f:
        f.seek(440)
        f.write(struct.pack("<IH", 0x2B0C4A5E, 0))  # disk signature
        f.write(entry + b"\0" * 48 + b"\x55\xaa")


def build_image(
    path: str | os.PathLike,
    *,
    size: int = 32 * 1024 * 1024,
    label: str = "CAM001",
    volume_serial: int = 0x1234ABCD,
    files: Mapping[str, bytes | str | os.PathLike] | None = None,
    partitioned: bool = False,
) -> ExfatImage:
    """Create a sparse image file holding a fresh exFAT volume and copy ``files`` in.

    ``files`` maps a relative destination path (e.g. "DCIM/100CAMERA/A.MP4") to
    bytes or a source file path. ``partitioned=True`` writes a DOS label with one
    partition (attach with ``partscan=True`` and use ``partition_node(dev, 1)``);
    otherwise the whole image is the filesystem (superfloppy, like most cams).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    img = ExfatImage(path=path, label=label, volume_serial=volume_serial, partitioned=partitioned)
    if partitioned:
        _write_mbr(path, size)
        with loop_device(path, partscan=True) as dev:
            part = partition_node(dev, 1)
            _run(["mkfs.exfat", "-L", label, part])
            _run(["tune.exfat", "-I", hex(volume_serial), part])
    else:
        _run(["mkfs.exfat", "-L", label, str(path)])
        _run(["tune.exfat", "-I", hex(volume_serial), str(path)])
    if files:
        populate(img, files)
    return img


def build_camera_image(
    path: str | os.PathLike,
    *,
    clips: int | Iterable[str] = 2,
    clip_seconds: float = 1,
    clip_dir: str = "DCIM/100CAMERA",
    extra_files: Mapping[str, bytes | str | os.PathLike] | None = None,
    workdir: str | os.PathLike | None = None,
    **image_kwargs,
) -> ExfatImage:
    """``build_image`` with ffmpeg clips at ``clip_dir``/<name> (default VID_0001.MP4, ...).

    Clip sources are made under ``workdir`` (default: next to the image).
    ``image_kwargs`` go to ``build_image`` (size, label, volume_serial, partitioned).
    """
    path = Path(path)
    names = [f"VID_{i + 1:04d}.MP4" for i in range(clips)] if isinstance(clips, int) else list(clips)
    work = Path(workdir) if workdir else path.parent / (path.name + ".src")
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes | str | os.PathLike] = {}
    first: Path | None = None
    for n in names:
        src = work / n
        if first is None:
            first = make_clip(src, clip_seconds)
        else:  # identical content is fine for ingest tests; ffmpeg once is faster
            shutil.copyfile(first, src)
        files[f"{clip_dir}/{n}"] = src
    files.update(extra_files or {})
    return build_image(path, files=files, **image_kwargs)


def populate(image: ExfatImage, files: Mapping[str, bytes | str | os.PathLike], *,
             mountpoint: str | os.PathLike | None = None) -> None:
    """Mount ``image`` rw (loop + exfat-fuse), copy ``files`` in, unmount, detach."""
    mnt = Path(mountpoint) if mountpoint else image.path.parent / (image.path.name + ".mnt")
    mnt.mkdir(parents=True, exist_ok=True)
    with loop_device(image.path, partscan=image.partitioned) as dev:
        node = partition_node(dev, 1) if image.partitioned else dev
        with mounted(node, mnt, read_only=False, harden=False):
            for rel, src in files.items():
                dst = mnt / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(src, bytes):
                    dst.write_bytes(src)
                else:
                    shutil.copyfile(src, dst)
                image.files[rel] = dst.stat().st_size
    with contextlib.suppress(OSError):
        mnt.rmdir()


# --------------------------------------------------------------------------- loop

def attach_loop(image: str | os.PathLike, *, read_only: bool = False, partscan: bool = False) -> str:
    """``losetup --find --show`` -> "/dev/loopN". Detach with ``detach_loop``."""
    argv = ["losetup", "--find", "--show"]
    if read_only:
        argv.append("--read-only")
    if partscan:
        argv.append("--partscan")
    argv.append(str(image))
    return _run(argv).stdout.strip()


def detach_loop(dev: str) -> None:
    """``losetup -d`` (after dropping BLKPG partitions); idempotent.

    A still-busy device gets autoclear and is freed on its last close.
    """
    if not dev:
        return
    name = os.path.basename(dev)
    if any(p.startswith(name + "p") for p in _listdir(f"/sys/block/{name}")):
        _run(["partx", "-d", dev], check=False)
    _run(["losetup", "-d", dev], check=False)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


@contextlib.contextmanager
def loop_device(image: str | os.PathLike, *, read_only: bool = False, partscan: bool = False) -> Iterator[str]:
    dev = attach_loop(image, read_only=read_only, partscan=partscan)
    try:
        yield dev
    finally:
        detach_loop(dev)


def partition_node(dev: str, n: int = 1, timeout: float = 5.0) -> str:
    """"/dev/loopNpK" of a loop device attached with ``partscan=True``.

    Gotcha: this kernel has CONFIG_MSDOS_PARTITION unset, so the partscan finds
    nothing; ``partx -a`` (BLKPG ioctl, userspace parsing) adds the partitions.
    """
    node = f"{dev}p{n}"
    deadline = time.monotonic() + timeout
    tried_partx = False
    while not os.path.exists(node):
        if not tried_partx and time.monotonic() > deadline - timeout + 0.2:
            _run(["partx", "-a", dev], check=False)
            tried_partx = True
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node} did not appear")
        time.sleep(0.02)
    return node


# --------------------------------------------------------------------------- mounts

@dataclass(frozen=True)
class MountEntry:
    """One /proc/self/mountinfo line."""
    mount_point: str
    mount_flags: frozenset[str]   # per-mount (field 6): ro/rw,nosuid,nodev,noexec,nosymfollow,...
    fs_type: str                  # "fuseblk" for exfat-fuse
    source: str                   # "/dev/loopN"
    super_options: frozenset[str]  # superblock options (last field): ro/rw,user_id=0,...

    @property
    def read_only(self) -> bool:
        return "ro" in self.mount_flags


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def find_mount(mountpoint: str | os.PathLike, mountinfo: str = "/proc/self/mountinfo") -> MountEntry | None:
    """The topmost mount at ``mountpoint`` (None if nothing is mounted there)."""
    target = os.path.realpath(mountpoint)
    found = None
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            a, b = left.split(" "), right.split(" ")
            if _unescape(a[4]) == target:
                found = MountEntry(
                    mount_point=target,
                    mount_flags=frozenset(a[5].split(",")),
                    fs_type=b[0],
                    source=_unescape(b[1]),
                    super_options=frozenset(b[2].split(",")) if len(b) > 2 else frozenset(),
                )
    return found


def harden_mount(mountpoint: str | os.PathLike, *, read_only: bool = True) -> MountEntry:
    """In-place bind remount adding nosuid,nodev,noexec,nosymfollow (+ ro/rw per-mount)."""
    mode = "ro" if read_only else "rw"
    _run(["mount", "-o", f"remount,bind,{mode},nosuid,nodev,noexec,nosymfollow", str(mountpoint)])
    entry = find_mount(mountpoint)
    assert entry is not None
    return entry


def mount_exfat(
    dev: str,
    mountpoint: str | os.PathLike,
    *,
    read_only: bool = True,
    harden: bool = True,
    extra_options: Iterable[str] = (),
) -> MountEntry:
    """Mount ``dev`` with exfat-fuse at ``mountpoint``; returns the mountinfo entry.

    Step 1: ``mount -t exfat-fuse -o ro|rw,nosuid,nodev,noexec,nosymfollow DEV MNT``
            (mountinfo: ``ro|rw,nosuid,nodev,relatime`` -- noexec/nosymfollow dropped)
    Step 2 (harden): ``mount -o remount,bind,ro|rw,nosuid,nodev,noexec,nosymfollow MNT``
            (mountinfo: ``ro|rw,nosuid,nodev,noexec,relatime,nosymfollow``)
    If step 2 fails the mount is undone before raising.
    """
    mode = "ro" if read_only else "rw"
    opts = ",".join([mode, "nosuid", "nodev", "noexec", "nosymfollow", *extra_options])
    os.makedirs(mountpoint, exist_ok=True)
    _run(["mount", "-t", "exfat-fuse", "-o", opts, dev, str(mountpoint)])
    try:
        entry = harden_mount(mountpoint, read_only=read_only) if harden else find_mount(mountpoint)
    except BaseException:
        unmount(mountpoint)
        raise
    assert entry is not None, f"{mountpoint} not in mountinfo after mount"
    return entry


def unmount(mountpoint: str | os.PathLike, *, lazy_fallback: bool = True) -> None:
    """Unmount every mount stacked at ``mountpoint`` (idempotent)."""
    for _ in range(8):
        if find_mount(mountpoint) is None:
            return
        proc = _run(["umount", str(mountpoint)], check=False)
        if proc.returncode != 0:
            if not lazy_fallback:
                raise RuntimeError(f"umount {mountpoint}: {proc.stderr.strip()}")
            time.sleep(0.1)
            _run(["umount", "-l", str(mountpoint)], check=False)
    if find_mount(mountpoint) is not None:
        raise RuntimeError(f"could not unmount {mountpoint}")


@contextlib.contextmanager
def mounted(dev: str, mountpoint: str | os.PathLike, *, read_only: bool = True,
            harden: bool = True) -> Iterator[MountEntry]:
    entry = mount_exfat(dev, mountpoint, read_only=read_only, harden=harden)
    try:
        yield entry
    finally:
        unmount(mountpoint)
