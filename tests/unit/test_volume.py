"""A camera volume is hostile input: links, special files, bad names, huge trees, files that change under us.

The hostile volume is built in tmp_path; a directory *outside* it holds a
secret file and a directory that symlinks on the volume point at, and an
inotify watch on it proves nothing there is ever opened or read.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import resource
import socket
import stat
import struct
import subprocess
from pathlib import Path

import pytest

from dockd import config
from dockd.camera.volume import Entry, Limits, SourceChanged, Volume, escape, glob_regex, matches, valid_name
from dockd.core.events import CameraInfo
from dockd.core.lifecycle import ClipState
from dockd.core.outcomes import SkipKind
from dockd.evidence import keys
from dockd.queue.store import Queue
from dockd.station.offloader import Offloader
from tests.support import scratch

IS_ROOT = os.geteuid() == 0


def _can_mknod() -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        try:
            os.mknod(os.path.join(d, "n"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
            return True
        except OSError:
            return False


CAN_MKNOD = _can_mknod()  # root, and allowed to create device nodes here
T0 = 1_700_000_000.0
SECRET = b"SECRET-OUTSIDE-THE-VOLUME" * 100
GLOBS = ("DCIM/**/*.MP4",)

# ------------------------------------------------------------------ helpers


class Inotify:
    """Minimal inotify (via libc) reporting opens and reads under the watched directories."""

    IN_ACCESS, IN_OPEN, IN_NONBLOCK, IN_CLOEXEC = 0x1, 0x20, os.O_NONBLOCK, os.O_CLOEXEC

    def __init__(self, *dirs: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        for d in dirs:
            wd = self.libc.inotify_add_watch(self.fd, os.fsencode(d), self.IN_ACCESS | self.IN_OPEN)
            assert wd >= 0, os.strerror(ctypes.get_errno())

    def events(self) -> list[tuple[int, str]]:
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            i = 0
            while i < len(data):
                _wd, mask, _cookie, n = struct.unpack_from("iIII", data, i)
                name = data[i + 16:i + 16 + n].rstrip(b"\0").decode(errors="replace")
                out.append((mask, name))
                i += 16 + n

    def close(self) -> None:
        os.close(self.fd)


def make_cfg(tmp_path: Path, **offload) -> config.Config:
    raw = {"station": {"id": "st1", "data_dir": str(tmp_path / "data")},
           "offload": {"clip_globs": list(GLOBS), "reserve_free_mb": 0, "buffer_kb": 64, **offload}}
    return config.parse(raw, tmp_path / "dockd.toml")


def make_offloader(tmp_path: Path, on_progress=None, **offload) -> tuple[Offloader, Queue]:
    cfg = make_cfg(tmp_path, **offload)
    cfg.data_dir.mkdir(exist_ok=True)
    q = Queue(cfg.data_dir / "queue.db")
    q.dock_camera("CAM1", source="import", now=T0)
    key, _ = keys.load_or_create(cfg.data_dir)
    return Offloader(cfg, q, key, clock=lambda: T0, on_progress=on_progress), q


def run_guarded(fn, timeout: float = 60.0):
    """Run fn; fail (instead of hanging the suite) if it does not finish."""
    return scratch.run_bounded(fn, timeout, "scan/offload hung (a FIFO or device was opened?)")


def bind_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    cwd = os.getcwd()
    os.chdir(path.parent)  # unix socket paths are limited to ~108 bytes: bind by relative name
    try:
        s.bind(path.name)
    finally:
        os.chdir(cwd)
    return s


@pytest.fixture
def hostile(tmp_path):
    """A camera volume full of traps, and the outside world it must never touch."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.MP4").write_bytes(SECRET)
    (outside / "dir" / "X.MP4").write_bytes(SECRET)

    vol = tmp_path / "vol"
    d100 = vol / "DCIM" / "100"
    d100.mkdir(parents=True)
    (d100 / "GOOD.MP4").write_bytes(os.urandom(300_000))
    (d100 / "EMPTY.MP4").write_bytes(b"")
    (d100 / "NEW\nLINE.MP4").write_bytes(b"control characters in a valid name")
    (d100 / "notes.txt").write_text("not a clip: ignored, not skipped")
    os.symlink(outside / "secret.MP4", d100 / "LINK.MP4")
    os.symlink("../../../outside/secret.MP4", d100 / "RELLINK.MP4")
    os.symlink(outside / "dir", vol / "DCIM" / "LINKDIR")
    os.mkfifo(d100 / "PIPE.MP4")
    sock = bind_socket(d100 / "SOCK.MP4")
    if CAN_MKNOD:
        os.mknod(d100 / "DEV.MP4", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    fd = os.open(os.fsencode(d100) + b"/BAD\xff\xfe.MP4", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"name is not UTF-8")
    os.close(fd)
    # depth: DCIM=1, a=2, b=3, c=4 (allowed with max_depth=4), d=5 (too deep)
    deep = vol / "DCIM" / "a" / "b" / "c"
    (deep / "d" / "e").mkdir(parents=True)
    (deep / "OKDEEP.MP4").write_bytes(b"deep but allowed")
    (deep / "d" / "e" / "TOODEEP.MP4").write_bytes(b"never reached")
    with open(d100 / "HUGE.MP4", "wb") as f:
        f.truncate(16 << 20)  # sparse; over the 1 MiB test limit
    try:
        yield vol, outside
    finally:
        sock.close()


def test_inotify_probe_sees_reads_outside(hostile):
    """The watch used below is not blind: reading the outside file shows up."""
    _, outside = hostile
    ino = Inotify(outside, outside / "dir")
    try:
        assert (outside / "dir" / "X.MP4").read_bytes() == SECRET
        masks = [m for m, _ in ino.events()]
        assert any(m & Inotify.IN_OPEN for m in masks) and any(m & Inotify.IN_ACCESS for m in masks)
    finally:
        ino.close()


SKIP_LIMITS = Limits(max_file_size=1 << 20, max_depth=4, max_entries=1000)
EXPECTED_SKIPS = {
    "DCIM/100/LINK.MP4": "symbolic link (never followed)",
    "DCIM/100/RELLINK.MP4": "symbolic link (never followed)",
    "DCIM/LINKDIR": "symbolic link (never followed)",
    "DCIM/100/PIPE.MP4": "FIFO (not a regular file; never opened)",
    "DCIM/100/SOCK.MP4": "socket (not a regular file; never opened)",
    "DCIM/100/BAD\\xff\\xfe.MP4": "name is not valid UTF-8",
    "DCIM/a/b/c/d": "directory nested deeper than 4 levels",
    "DCIM/100/HUGE.MP4": f"larger than the limit ({16 << 20} > {1 << 20} bytes)",
}
if CAN_MKNOD:
    EXPECTED_SKIPS["DCIM/100/DEV.MP4"] = "device node (not a regular file; never opened)"
EXPECTED_CLIPS = ["DCIM/100/EMPTY.MP4", "DCIM/100/GOOD.MP4", "DCIM/100/NEW\nLINE.MP4", "DCIM/a/b/c/OKDEEP.MP4"]


# ------------------------------------------------------------------ scanning


def test_scan_hostile_volume(hostile):
    vol, outside = hostile
    ino = Inotify(outside, outside / "dir")
    try:
        with Volume(vol) as v:
            scan = run_guarded(lambda: v.scan(GLOBS, (), SKIP_LIMITS))
        assert [c.path for c in scan.clips] == EXPECTED_CLIPS
        assert {s.path: s.reason for s in scan.skipped} == EXPECTED_SKIPS
        assert ino.events() == []
    finally:
        ino.close()


def test_huge_sparse_file_over_default_limit_is_only_stat(tmp_path):
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    with open(vol / "DCIM" / "BIG.MP4", "wb") as f:
        f.truncate((64 << 30) + 1)  # one byte over the default 64 GiB; sparse, costs nothing
    with Volume(vol) as v:
        scan = run_guarded(lambda: v.scan(GLOBS))
    assert scan.clips == []
    assert [(s.path, s.reason.split(" (")[0]) for s in scan.skipped] == [("DCIM/BIG.MP4", "larger than the limit")]
    assert [s.kind for s in scan.skipped] == [SkipKind.ENTRY] and scan.complete  # one file skipped, scan whole


def test_wide_directory(tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    for i in range(30):
        (vol / f"V{i:03d}.MP4").write_bytes(b"x")
    with Volume(vol) as v:
        scan = v.scan(("*.MP4",), (), Limits(max_entries=10))
    assert len(scan.clips) == 10
    assert [(s.path, s.reason) for s in scan.skipped] == [
        (".", "directory too wide (more than 10 entries); rest not scanned")]
    assert [s.kind for s in scan.skipped] == [SkipKind.INCOMPLETE] and not scan.complete


def test_wide_subdirectory_stops_the_scan_once(tmp_path):
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    (vol / "OTHER").mkdir()
    for i in range(30):
        (vol / "DCIM" / f"V{i:03d}.MP4").write_bytes(b"x")
    with Volume(vol) as v:
        scan = v.scan(GLOBS, (), Limits(max_entries=10))
    assert len(scan.clips) < 10
    assert len(scan.skipped) == 1 and scan.skipped[0].reason.endswith("(more than 10 entries); rest not scanned")


def test_volume_with_too_many_entries_in_total(tmp_path):
    vol = tmp_path / "vol"
    for d in ("a", "b", "c"):
        (vol / "DCIM" / d).mkdir(parents=True)
        for i in range(4):
            (vol / "DCIM" / d / f"V{i}.MP4").write_bytes(b"x")
    with Volume(vol) as v:
        scan = v.scan(GLOBS, (), Limits(max_entries=10))  # no directory has more than 4 entries
    assert len(scan.clips) < 12
    assert [s.reason for s in scan.skipped] == ["volume too large (more than 10 entries); rest not scanned"]
    assert [s.kind for s in scan.skipped] == [SkipKind.INCOMPLETE] and not scan.complete


def test_many_directories_do_not_exhaust_file_descriptors(tmp_path):
    """A camera with hundreds of sibling directories must not hold one fd open per directory."""
    vol = tmp_path / "vol"
    for i in range(300):
        d = vol / "DCIM" / f"{i:03d}"
        d.mkdir(parents=True)
        (d / "V.MP4").write_bytes(b"x")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    v = Volume(vol)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 48, hard))
        try:
            scan = v.scan(GLOBS)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    finally:
        v.close()
    assert scan.skipped == []
    assert len(scan.clips) == 300


def test_directory_on_another_filesystem_is_not_entered(tmp_path):
    """A mount point inside the volume (st_dev differs) is never entered."""
    if not IS_ROOT:
        pytest.skip("needs root to mount a tmpfs")
    vol = tmp_path / "vol"
    (vol / "DCIM" / "mnt").mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(vol / "DCIM" / "mnt")]).returncode:
        pytest.skip("cannot mount tmpfs")
    try:
        (vol / "DCIM" / "mnt" / "X.MP4").write_bytes(b"x")
        with Volume(vol) as v:
            scan = v.scan(GLOBS)
        assert scan.clips == []
        assert [(s.path, s.reason) for s in scan.skipped] == [("DCIM/mnt", "directory on another filesystem")]
    finally:
        subprocess.run(["umount", str(vol / "DCIM" / "mnt")], check=True)


def test_sidecars_pair_by_stem_and_orphans_are_skipped(tmp_path):
    vol = tmp_path / "vol"
    (vol / "DCIM" / "100").mkdir(parents=True)
    for n in ("A.MP4", "A.xml", "A.GPS", "B.MP4", "C.XML"):
        (vol / "DCIM" / "100" / n).write_bytes(n.encode())
    with Volume(vol) as v:
        scan = v.scan(GLOBS, ("DCIM/**/*.XML", "DCIM/**/*.xml", "DCIM/**/*.GPS"))
    assert [c.path for c in scan.clips] == ["DCIM/100/A.MP4", "DCIM/100/B.MP4"]
    assert sorted(e.path for e in scan.sidecars["DCIM/100/A.MP4"]) == ["DCIM/100/A.GPS", "DCIM/100/A.xml"]
    assert "DCIM/100/B.MP4" not in scan.sidecars
    assert [(s.path, s.reason.split(";")[0]) for s in scan.skipped] == [
        ("DCIM/100/C.XML", "sidecar without a clip of the same name")]


def test_root_must_be_a_real_directory(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(OSError) as ei:
        Volume(tmp_path / "link")
    assert ei.value.errno in (errno.ELOOP, errno.ENOTDIR)


# ------------------------------------------------------------------ per-file access races


def _scan_one(vol: Path) -> tuple[Volume, Entry]:
    v = Volume(vol)
    scan = v.scan(GLOBS)
    assert len(scan.clips) == 1
    return v, scan.clips[0]


def test_file_replaced_by_fifo_after_scan_does_not_hang(tmp_path):
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    f = vol / "DCIM" / "A.MP4"
    f.write_bytes(b"abc")
    v, e = _scan_one(vol)
    with v:
        f.unlink()
        os.mkfifo(f)
        with pytest.raises(SourceChanged, match="no longer a regular file"):
            run_guarded(lambda: v.open(e), timeout=30)


def test_file_replaced_by_symlink_after_scan_is_refused(hostile, tmp_path):
    vol = tmp_path / "vol2"
    (vol / "DCIM").mkdir(parents=True)
    f = vol / "DCIM" / "A.MP4"
    f.write_bytes(b"abc")
    v, e = _scan_one(vol)
    with v:
        f.unlink()
        os.symlink(hostile[1] / "secret.MP4", f)
        with pytest.raises(SourceChanged, match="cannot open"):
            v.open(e)


def test_parent_directory_swapped_for_symlink_is_refused(tmp_path):
    outside = tmp_path / "outside" / "100"
    outside.mkdir(parents=True)
    (outside / "A.MP4").write_bytes(b"abc")
    vol = tmp_path / "vol"
    (vol / "DCIM" / "100").mkdir(parents=True)
    (vol / "DCIM" / "100" / "A.MP4").write_bytes(b"abc")
    v, e = _scan_one(vol)
    with v:
        (vol / "DCIM" / "100" / "A.MP4").unlink()
        (vol / "DCIM" / "100").rmdir()
        os.symlink(outside, vol / "DCIM" / "100")
        with pytest.raises(SourceChanged, match="parent directory"):
            v.open(e)


def test_file_replaced_by_another_file_is_refused(tmp_path):
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    f = vol / "DCIM" / "A.MP4"
    f.write_bytes(b"abc")
    v, e = _scan_one(vol)
    with v:
        other = vol / "DCIM" / "B.tmp"
        other.write_bytes(b"xyz")
        os.utime(other, ns=(e.mtime_ns, e.mtime_ns))
        os.replace(other, f)
        with pytest.raises(SourceChanged, match="replaced by another file"):
            v.open(e)
        fd = os.open(f, os.O_RDONLY)
        try:
            with pytest.raises(SourceChanged):
                v.check_same(e, os.fstat(fd))
        finally:
            os.close(fd)


def test_unlink_checks_identity(tmp_path):
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    f = vol / "DCIM" / "A.MP4"
    f.write_bytes(b"abc")
    v, e = _scan_one(vol)
    with v:
        f.write_bytes(b"abcd")  # changed since the scan: the wipe must refuse
        with pytest.raises(SourceChanged):
            v.unlink(e)
        assert f.exists()
        os.utime(f, ns=(e.mtime_ns, e.mtime_ns))
        os.truncate(f, 3)
        os.utime(f, ns=(e.mtime_ns, e.mtime_ns))
        v.unlink(e)
        assert not f.exists()


# ------------------------------------------------------------------ names and globs


def test_escape_and_valid_name():
    assert escape("DCIM/A.MP4") == "DCIM/A.MP4"
    assert escape("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert escape(os.fsdecode(b"\xff\xfe.MP4")) == "\\xff\\xfe.MP4"
    assert valid_name("A.MP4") and not valid_name(os.fsdecode(b"\xff"))
    assert not any(valid_name(n) for n in ("", ".", "..", "a/b"))


@pytest.mark.parametrize("pattern,path,expected", [
    ("DCIM/**/*.MP4", "DCIM/A.MP4", True),
    ("DCIM/**/*.MP4", "DCIM/100/200/A.MP4", True),
    ("DCIM/**/*.MP4", "DCIM/A.mp4", False),
    ("DCIM/**/*.MP4", "OTHER/DCIM/A.MP4", False),
    ("DCIM/*/*.MP4", "DCIM/A.MP4", False),
    ("DCIM/*/*.MP4", "DCIM/100/A.MP4", True),
    ("DCIM/*.MP4", "DCIM/sub/A.MP4", False),
    ("DCIM/V??.MP4", "DCIM/V01.MP4", True),
    ("DCIM/V??.MP4", "DCIM/V1/.MP4", False),
    ("DCIM/[AB]*.MP4", "DCIM/B1.MP4", True),
    ("DCIM/[!AB]*.MP4", "DCIM/B1.MP4", False),
    ("DCIM/[!AB]*.MP4", "DCIM/C1.MP4", True),
    ("DCIM[!x]100/*.MP4", "DCIM/100/A.MP4", False),  # a class never matches the separator
    ("DCIM[/]100/*.MP4", "DCIM/100/A.MP4", False),
    ("DCIM/a.b", "DCIM/aXb", False),  # dots are literal
    ("DCIM/**", "DCIM/x/y", True),
    ("DCIM/[]x].MP4", "DCIM/].MP4", True),
    ("DCIM/[].MP4", "DCIM/[].MP4", True),  # unterminated class: literal
    ("DCIM/[x.MP4", "DCIM/[x.MP4", True),
])
def test_glob(pattern, path, expected):
    assert bool(glob_regex(pattern).match(path)) is expected
    assert matches(path, (pattern,)) is expected


def test_entry_ext_is_sanitised():
    assert Entry("DCIM/A.MP4", 1, 1, 1, 1).ext == ".mp4"
    assert Entry("DCIM/A", 1, 1, 1, 1).ext == ""
    assert Entry("DCIM/A.M P4", 1, 1, 1, 1).ext == ""
    assert Entry("DCIM/A.$(rm -rf)", 1, 1, 1, 1).ext == ""
    assert Entry("DCIM/A.verylongextension", 1, 1, 1, 1).ext == ""


# ------------------------------------------------------------------ offloading a hostile volume


def test_offload_hostile_volume(hostile, tmp_path):
    vol, outside = hostile
    off, q = make_offloader(tmp_path, max_depth=4, max_file_size_gb=1 / 1024)
    ino = Inotify(outside, outside / "dir")
    try:
        s = run_guarded(lambda: off.offload(CameraInfo("CAM1", source="import"), vol))
        assert ino.events() == [], "something outside the volume was opened or read"
    finally:
        ino.close()
        q.close()
    assert (s.staged, s.already, s.aborted, s.quarantined) == (len(EXPECTED_CLIPS), 0, 0, 0), s
    q = Queue(off.cfg.data_dir / "queue.db")
    try:
        clips = {c.path: c for c in q.clips()}
        assert sorted(clips) == EXPECTED_CLIPS
        assert all(c.state is ClipState.STAGED for c in clips.values())
        # the 0-byte clip is evidence like any other
        empty = clips["DCIM/100/EMPTY.MP4"]
        assert empty.size == 0 and empty.sha256 == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        assert Path(empty.staged_path).stat().st_size == 0
        # staged files are named by clip id, never by camera names
        names = sorted(p.name for p in off.staging.iterdir())
        assert names and all(re.fullmatch(r"\d{10}\.(clip|manifest\.json|side\d+)", n) for n in names), names
        assert not any(SECRET in p.read_bytes() for p in off.staging.iterdir())
        for c in clips.values():
            assert Path(c.staged_path).name == f"{c.id:010d}.clip"
        # skipped entries recorded in queue.skips with reasons, and audited as entry.skipped
        assert {(s["path"], s["reason"]) for s in q.skips("CAM1")} == set(EXPECTED_SKIPS.items())
        audited = {(r["detail"]["path"], r["detail"]["reason"]) for r in q.audit_rows(camera="CAM1")
                   if r["event"] == "entry.skipped"}
        assert audited == set(EXPECTED_SKIPS.items())
        assert {(d["path"], d["reason"]) for d in s.skipped} == set(EXPECTED_SKIPS.items())
        assert q.verify_audit()[1] is None
    finally:
        q.close()
    # a second dock of the same volume: nothing copied again, skips not re-audited
    off2, q2 = make_offloader(tmp_path, max_depth=4, max_file_size_gb=1 / 1024)
    try:
        n_audit = len(q2.audit_rows())
        s2 = run_guarded(lambda: off2.offload(CameraInfo("CAM1"), vol))
        assert (s2.staged, s2.already) == (0, len(EXPECTED_CLIPS))
        assert [r["event"] for r in q2.audit_rows()[n_audit:]] == []
    finally:
        q2.close()


def test_clip_that_grows_during_copy_is_aborted(tmp_path):
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    src = vol / "DCIM" / "GROW.MP4"
    src.write_bytes(os.urandom(512 * 1024))
    calls = []

    def meddle(serial, n):
        if not calls:
            with open(src, "ab") as f:
                f.write(b"appended while dockd was copying")
        calls.append(n)

    off, q = make_offloader(tmp_path, on_progress=meddle, buffer_kb=16)
    try:
        s = run_guarded(lambda: off.offload(CameraInfo("CAM1"), vol))
        assert calls, "the progress hook never ran"
        assert (s.staged, s.aborted) == (0, 1)
        c = q.clips()[0]
        assert c.state is ClipState.DISCOVERED and c.size == 512 * 1024
        assert "copy aborted" in c.last_error
        assert list(off.staging.iterdir()) == []  # temp file removed
        assert [r["event"] for r in q.audit_rows(clip=c.id)] == ["clip.discovered", "clip.copy_started",
                                                                  "clip.copy_aborted"]
    finally:
        q.close()


def test_clip_rewritten_in_place_during_copy_is_aborted(tmp_path):
    """Same size, new content and mtime: caught by the post-copy identity check."""
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    src = vol / "DCIM" / "EDIT.MP4"
    src.write_bytes(b"a" * 200_000)
    os.utime(src, ns=(10**18, 10**18))
    calls = []

    def meddle(serial, n):
        if not calls:
            with open(src, "r+b") as f:
                f.write(b"b" * 200_000)
        calls.append(n)

    off, q = make_offloader(tmp_path, on_progress=meddle, buffer_kb=16)
    try:
        s = run_guarded(lambda: off.offload(CameraInfo("CAM1"), vol))
        assert calls and (s.staged, s.aborted) == (0, 1)
        assert "size or mtime changed" in q.clips()[0].last_error
        assert list(off.staging.iterdir()) == []
    finally:
        q.close()


def test_clip_that_vanishes_mid_copy_is_aborted(tmp_path):
    """The file is truncated away and unlinked while being read: short read -> aborted, temp removed."""
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    src = vol / "DCIM" / "GONE.MP4"
    src.write_bytes(os.urandom(2 << 20))
    calls = []

    def meddle(serial, n):
        if not calls:
            os.truncate(src, 0)
            src.unlink()
        calls.append(n)

    off, q = make_offloader(tmp_path, on_progress=meddle, buffer_kb=16)
    try:
        s = run_guarded(lambda: off.offload(CameraInfo("CAM1"), vol))
        assert calls and (s.staged, s.aborted) == (0, 1)
        c = q.clips()[0]
        assert c.state is ClipState.DISCOVERED
        assert list(off.staging.iterdir()) == []
        assert len(s.errors) == 1 and s.errors[0].startswith("DCIM/GONE.MP4: copy aborted")
    finally:
        q.close()


def test_clip_unlinked_mid_copy_keeps_the_complete_copy(tmp_path):
    """Unlinked but still readable through the open descriptor: the bytes read are exactly the scanned
    file (same inode, size, mtime), so the verified copy is kept rather than thrown away (nothing lost)."""
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    src = vol / "DCIM" / "UNLINKED.MP4"
    data = os.urandom(1 << 20)
    src.write_bytes(data)
    calls = []

    def meddle(serial, n):
        if not calls:
            src.unlink()
        calls.append(n)

    off, q = make_offloader(tmp_path, on_progress=meddle, buffer_kb=16)
    try:
        s = run_guarded(lambda: off.offload(CameraInfo("CAM1"), vol))
        assert calls and s.staged == 1
        c = q.clips()[0]
        assert Path(c.staged_path).read_bytes() == data
    finally:
        q.close()


def test_fifo_swapped_in_between_scan_and_copy_does_not_hang_offload(tmp_path, monkeypatch):
    vol = tmp_path / "vol"
    (vol / "DCIM").mkdir(parents=True)
    src = vol / "DCIM" / "A.MP4"
    src.write_bytes(b"x" * 1000)
    off, q = make_offloader(tmp_path)
    real_scan = Volume.scan

    def scan_then_swap(self, *a, **k):
        out = real_scan(self, *a, **k)
        src.unlink()
        os.mkfifo(src)
        return out

    monkeypatch.setattr(Volume, "scan", scan_then_swap)
    try:
        s = run_guarded(lambda: off.offload(CameraInfo("CAM1"), vol), timeout=30)
        assert s.aborted == 1 and "no longer a regular file" in s.errors[0]
        assert q.clips()[0].state is ClipState.DISCOVERED
    finally:
        q.close()
