"""dockd.evidence.copier on real files: copy+hash and hash-only, with O_DIRECT where the filesystem allows it.

Filesystems used: ``tmp_path`` (ext4 here: O_DIRECT works, with its alignment
rules), ``/dev/shm`` (tmpfs: O_DIRECT is refused before Linux 6.6 and accepted,
without alignment rules, since) and, as root, a ramfs mounted for this module
(O_DIRECT is refused on every kernel), so the buffered fallback is always
exercised somewhere.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from dockd.evidence import copier, durable
from dockd.evidence.copier import (
    ALIGN,
    DEPTH,
    Cancelled,
    ShortRead,
    WriteError,
    chunk_size,
    copy_hash,
    hash_fd,
    set_direct,
)
from tests.support import scratch

O_DIRECT = getattr(os, "O_DIRECT", 0)
pytestmark = pytest.mark.skipif(not O_DIRECT, reason="O_DIRECT is Linux-only")

DEFAULT_BUF = 4 << 20  # copy_hash's / hash_fd's default bufsize
SIZES = [0, 1, 4095, 4096, 4097, (256 << 10) + 1, (3 << 20) + 7]
# (size, bufsize) with size an exact multiple of the chunk copy_hash picks
EXACT = [(2 << 20, DEFAULT_BUF), (1 << 20, 256 << 10)]
CASES = [(s, DEFAULT_BUF) for s in SIZES] + EXACT
CASE_IDS = [f"{s}" for s in SIZES] + [f"{s}-exact-buf{b >> 10}k" for s, b in EXACT]
FS_PAIRS = [("ext4", "ext4"), ("shm", "shm"), ("shm", "ext4"), ("ramfs", "ramfs"), ("ramfs", "ext4"),
            ("ext4", "ramfs")]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 31 + seed).randbytes(size)


def flags(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETFL)


def kernel_allows_direct(d: Path) -> bool:
    """Whether the filesystem of ``d`` accepts O_DIRECT, asked of the kernel directly (not via set_direct)."""
    p = d / ".probe"
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags(fd) | O_DIRECT)
        except OSError:
            return False
        return bool(flags(fd) & O_DIRECT)
    finally:
        os.close(fd)
        p.unlink()


def run_bounded(fn, timeout: float = 20.0):
    """Run ``fn`` so that a deadlock fails the test instead of hanging the suite."""
    return scratch.run_bounded(fn, timeout, "copier call did not return (deadlock?)")


# ------------------------------------------------------------------ places


@pytest.fixture
def shm_dir():
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    d = Path(tempfile.mkdtemp(prefix="dockd-test-copier-", dir="/dev/shm"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ramfs_mount(tmp_path_factory):
    with scratch.mounted("ramfs", "mode=0700", tmp_path_factory.mktemp("ramfs")) as mnt:
        yield mnt


@pytest.fixture
def ramfs_dir(ramfs_mount):
    d = Path(tempfile.mkdtemp(prefix="t-", dir=ramfs_mount))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def place(request, tmp_path):
    """place(kind) -> a directory on that filesystem (cleaned up after the test)."""
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            if kind == "ext4":
                made[kind] = tmp_path
            elif kind == "shm":
                made[kind] = request.getfixturevalue("shm_dir")
            elif kind == "ramfs":
                made[kind] = request.getfixturevalue("ramfs_dir")
            else:
                raise ValueError(kind)
        return made[kind]

    return get


# ------------------------------------------------------------------ correctness on every filesystem


@pytest.mark.parametrize("src_fs,dst_fs", FS_PAIRS, ids=[f"{a}-to-{b}" for a, b in FS_PAIRS])
@pytest.mark.parametrize("size,bufsize", CASES, ids=CASE_IDS)
def test_copy_hash_and_hash_fd_match_hashlib(size, bufsize, src_fs, dst_fs, place):
    if (size, bufsize) in EXACT:
        assert size % chunk_size(size, bufsize) == 0 and size // chunk_size(size, bufsize) >= 2
    data = payload(size)
    src, dst = place(src_fs) / "src.bin", place(dst_fs) / "dst.bin"
    src.write_bytes(data)
    src_direct_ok, dst_direct_ok = kernel_allows_direct(src.parent), kernel_allows_direct(dst.parent)
    seen: list[int] = []
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            got = run_bounded(lambda: copy_hash(sfd, dfd, size, bufsize=bufsize, progress=seen.append))
            src_flags, dst_flags = flags(sfd), flags(dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    assert got == sha(data)
    assert dst.stat().st_size == size and dst.read_bytes() == data
    assert sum(seen) == size and all(n > 0 for n in seen)
    # the source was read with O_DIRECT wherever the filesystem allows it (and kept it to the end:
    # reading at EOF from an unaligned offset is not an error)
    assert bool(src_flags & O_DIRECT) == src_direct_ok
    # the destination was written with O_DIRECT where allowed, switched to buffered only for an unaligned tail
    assert bool(dst_flags & O_DIRECT) == (dst_direct_ok and size % ALIGN == 0)

    fd = os.open(dst, os.O_RDONLY)
    try:
        assert run_bounded(lambda: hash_fd(fd, size_hint=size, bufsize=bufsize)) == (sha(data), size)
        assert bool(flags(fd) & O_DIRECT) == dst_direct_ok
    finally:
        os.close(fd)


def test_source_is_really_read_with_o_direct_on_ext4(tmp_path):
    if not kernel_allows_direct(tmp_path):
        pytest.skip("tmp_path refuses O_DIRECT")
    data = payload(700_001)
    (tmp_path / "src").write_bytes(data)
    sfd = os.open(tmp_path / "src", os.O_RDONLY)
    dfd = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert not flags(sfd) & O_DIRECT
        assert copy_hash(sfd, dfd, len(data), bufsize=64 << 10) == sha(data)
        assert flags(sfd) & O_DIRECT  # the direct path was taken, not the fallback
        assert not flags(dfd) & O_DIRECT  # the unaligned tail went through the page cache
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (tmp_path / "dst").read_bytes() == data


@pytest.mark.parametrize("kind", ["ext4", "shm", "ramfs"])
def test_set_direct_reports_what_the_kernel_did(kind, place):
    """True means the flag is set; False means the fd is unchanged; turning it off always works."""
    d = place(kind)
    fd = os.open(d / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        before = flags(fd)
        on = set_direct(fd, True)
        assert on == kernel_allows_direct(d)
        if on:
            assert flags(fd) == before | O_DIRECT
            assert set_direct(fd, True) is True and flags(fd) == before | O_DIRECT  # idempotent
        else:
            assert flags(fd) == before
        assert set_direct(fd, False) is True and flags(fd) == before
    finally:
        os.close(fd)


def test_ramfs_refuses_o_direct_and_copies_still_work(place):
    """A filesystem that refuses O_DIRECT (ramfs on every kernel; tmpfs before Linux 6.6): buffered both ways."""
    d = place("ramfs")
    data = payload((1 << 20) + 4096)  # an aligned size: nothing but the refusal turns direct I/O off
    (d / "src").write_bytes(data)
    sfd = os.open(d / "src", os.O_RDONLY)
    dfd = os.open(d / "dst", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert set_direct(sfd, True) is False and not flags(sfd) & O_DIRECT
        assert copy_hash(sfd, dfd, len(data), bufsize=256 << 10) == sha(data)
        assert not flags(sfd) & O_DIRECT and not flags(dfd) & O_DIRECT
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (d / "dst").read_bytes() == data


def test_shm_copy_works_whatever_the_kernel_says_about_o_direct(place):
    d = place("shm")
    data = payload(300_003)
    (d / "src").write_bytes(data)
    sfd = os.open(d / "src", os.O_RDONLY)
    dfd = os.open(place("ext4") / "dst", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert set_direct(sfd, True) == kernel_allows_direct(d)
        set_direct(sfd, False)
        assert copy_hash(sfd, dfd, len(data)) == sha(data)
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (place("ext4") / "dst").read_bytes() == data


# ------------------------------------------------------------------ hash_fd and the durable wrappers


def test_hash_fd_from_an_unaligned_offset_falls_back_to_ordinary_reads(tmp_path):
    if not kernel_allows_direct(tmp_path):
        pytest.skip("tmp_path refuses O_DIRECT: no EINVAL to fall back from")
    data = payload(300_000)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        os.lseek(fd, 1000, os.SEEK_SET)
        assert hash_fd(fd, bufsize=64 << 10) == (sha(data[1000:]), len(data) - 1000)
        assert not flags(fd) & O_DIRECT  # the direct read was refused (EINVAL) and the fd switched back
        assert os.lseek(fd, 0, os.SEEK_CUR) == len(data)
    finally:
        os.close(fd)


def test_hash_fd_at_end_of_file_is_the_empty_hash(tmp_path):
    data = payload(5000)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        os.lseek(fd, 0, os.SEEK_END)
        assert hash_fd(fd) == (sha(b""), 0)
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["ext4", "shm"])
def test_durable_sha256_helpers_delegate_to_hash_fd(kind, place, monkeypatch):
    d = place(kind)
    data = payload(200_001)
    (d / "f").write_bytes(data)
    calls = []
    real = durable.hash_fd
    monkeypatch.setattr(durable, "hash_fd", lambda fd, **kw: calls.append(kw) or real(fd, **kw))
    assert durable.sha256_file(d / "f", uncached=True) == (sha(data), len(data))
    assert durable.sha256_file(d / "f", bufsize=64 << 10) == (sha(data), len(data))
    fd = os.open(d / "f", os.O_RDONLY)
    try:
        os.lseek(fd, 1000, os.SEEK_SET)
        assert durable.sha256_fd(fd, bufsize=64 << 10) == (sha(data[1000:]), len(data) - 1000)
    finally:
        os.close(fd)
    assert [c.get("bufsize") for c in calls] == [4 << 20, 64 << 10, 64 << 10]


# ------------------------------------------------------------------ errors, cancellation, no leaked threads


@pytest.fixture
def no_thread_leak():
    before = threading.active_count()
    yield
    assert threading.active_count() == before


def open_pair(src: Path, dst: Path, *, dst_flags: int = os.O_WRONLY | os.O_CREAT):
    return os.open(src, os.O_RDONLY), os.open(dst, dst_flags, 0o600)


@pytest.mark.parametrize("kind", ["ext4", "ramfs"])
@pytest.mark.parametrize("delta", [+1, -1, +(1 << 20), -(300_000 - 1)])
def test_short_read_when_recorded_size_differs(kind, delta, place, no_thread_leak):
    d = place(kind)
    data = payload(300_000)
    (d / "src").write_bytes(data)
    sfd, dfd = open_pair(d / "src", d / "dst")
    try:
        with pytest.raises(ShortRead):
            run_bounded(lambda: copy_hash(sfd, dfd, len(data) + delta, bufsize=64 << 10))
    finally:
        os.close(sfd)
        os.close(dfd)


def test_short_read_on_empty_source_with_nonzero_size(tmp_path, no_thread_leak):
    (tmp_path / "src").write_bytes(b"")
    sfd, dfd = open_pair(tmp_path / "src", tmp_path / "dst")
    try:
        with pytest.raises(ShortRead):
            run_bounded(lambda: copy_hash(sfd, dfd, 1))
    finally:
        os.close(sfd)
        os.close(dfd)


def test_cancel_set_before_start(tmp_path, no_thread_leak):
    data = payload(1 << 20)
    (tmp_path / "src").write_bytes(data)
    cancel = threading.Event()
    cancel.set()
    seen: list[int] = []
    sfd, dfd = open_pair(tmp_path / "src", tmp_path / "dst")
    try:
        with pytest.raises(Cancelled):
            run_bounded(lambda: copy_hash(sfd, dfd, len(data), cancel=cancel, progress=seen.append))
        with pytest.raises(Cancelled):
            run_bounded(lambda: hash_fd(sfd, cancel=cancel))
    finally:
        os.close(sfd)
        os.close(dfd)
    assert seen == []


def test_cancel_mid_copy(tmp_path, no_thread_leak):
    data = payload(3 << 20)
    (tmp_path / "src").write_bytes(data)
    cancel = threading.Event()
    seen: list[int] = []

    def progress(n):
        seen.append(n)
        if len(seen) == 3:
            cancel.set()

    sfd, dfd = open_pair(tmp_path / "src", tmp_path / "dst")
    try:
        with pytest.raises(Cancelled):
            run_bounded(lambda: copy_hash(sfd, dfd, len(data), bufsize=64 << 10, cancel=cancel, progress=progress))
    finally:
        os.close(sfd)
        os.close(dfd)
    assert len(seen) == 3 and sum(seen) < len(data)


@pytest.mark.parametrize("size", [1, 4096, 3 << 20])
def test_write_error_on_read_only_destination(size, tmp_path, no_thread_leak):
    data = payload(size)
    (tmp_path / "src").write_bytes(data)
    (tmp_path / "dst").write_bytes(b"")
    sfd, dfd = open_pair(tmp_path / "src", tmp_path / "dst", dst_flags=os.O_RDONLY)
    try:
        with pytest.raises(WriteError) as ei:
            run_bounded(lambda: copy_hash(sfd, dfd, size, bufsize=64 << 10))
        assert ei.value.errno == errno.EBADF
        assert "staging write failed" in str(ei.value)
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (tmp_path / "dst").read_bytes() == b""


def test_source_read_error_propagates(tmp_path, no_thread_leak):
    """A source that cannot be read (here: a directory) raises OSError from the reader thread."""
    (tmp_path / "d").mkdir()
    sfd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    dfd = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as ei:
            run_bounded(lambda: copy_hash(sfd, dfd, 10))
        assert ei.value.errno == errno.EISDIR
    finally:
        os.close(sfd)
        os.close(dfd)


def test_the_same_fds_copy_correctly_after_an_error(tmp_path, no_thread_leak):
    """Errors leave no stale state behind (buffers returned to the pool are reused cleanly)."""
    data = payload(500_000)
    (tmp_path / "src").write_bytes(data)
    sfd, dfd = open_pair(tmp_path / "src", tmp_path / "bad")
    os.close(dfd)
    dfd = os.open(tmp_path / "bad", os.O_RDONLY)
    try:
        with pytest.raises(WriteError):
            copy_hash(sfd, dfd, len(data), bufsize=64 << 10)
    finally:
        os.close(dfd)
    os.lseek(sfd, 0, os.SEEK_SET)
    dfd = os.open(tmp_path / "good", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert copy_hash(sfd, dfd, len(data), bufsize=64 << 10) == sha(data)
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (tmp_path / "good").read_bytes() == data


# ------------------------------------------------------------------ the buffer pool


def test_buffer_pool_is_bounded(tmp_path, no_thread_leak):
    bufsize = 192 << 10  # a chunk size no other test uses (not a power of two)
    size = DEPTH * bufsize + 12345
    assert chunk_size(size, bufsize) == bufsize
    data = payload(size)
    (tmp_path / "src").write_bytes(data)
    copier._pool.pop(bufsize, None)
    # four copies holding their DEPTH buffers at the same time: 4 * DEPTH buffers come back to the pool
    n = 4
    barrier = threading.Barrier(n, timeout=15)
    errors: list[BaseException] = []

    def one(i: int, sync: bool = True) -> None:
        first = [sync]

        def progress(_n):
            if first[0]:
                first[0] = False
                barrier.wait()

        try:
            sfd = os.open(tmp_path / "src", os.O_RDONLY)
            dfd = os.open(tmp_path / f"dst{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                assert copy_hash(sfd, dfd, size, bufsize=bufsize, progress=progress) == sha(data)
            finally:
                os.close(sfd)
                os.close(dfd)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    for _round in range(3):
        ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert not any(t.is_alive() for t in ts) and errors == []
        assert len(copier._pool[bufsize]) == 2 * DEPTH
    # sequential copies reuse the pooled buffers: no growth, the same objects
    kept = {id(b) for b in copier._pool[bufsize]}
    for i in range(10):
        one(100 + i, sync=False)
        fd = os.open(tmp_path / "src", os.O_RDONLY)
        try:
            assert hash_fd(fd, size_hint=size, bufsize=bufsize) == (sha(data), size)
        finally:
            os.close(fd)
    assert errors == []
    assert {id(b) for b in copier._pool[bufsize]} == kept
    # and a mix of sizes never leaves more than 2 * DEPTH buffers of any one size
    for s in (0, 1, 4097, 300_000, 1 << 20, 3 << 20):
        (tmp_path / "m").write_bytes(payload(s))
        for _ in range(3):
            fd = os.open(tmp_path / "m", os.O_RDONLY)
            try:
                assert hash_fd(fd, size_hint=s)[1] == s
            finally:
                os.close(fd)
    assert all(len(v) <= 2 * DEPTH for v in copier._pool.values()), {k: len(v) for k, v in copier._pool.items()}
    assert all(not b.closed for v in copier._pool.values() for b in v)
