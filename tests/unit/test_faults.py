"""The fault-injection wrappers of tests/support/faults.py fail exactly the calls they are told to."""

from __future__ import annotations

import errno
import io
import os

import pytest

from tests.support.faults import FailingFile, FailingOS


def test_failing_os_fails_the_nth_call_of_one_function_only(tmp_path):
    seen = []
    fos = FailingOS(os, fail={"write": {2}}, on_fail=lambda: seen.append("fail"))
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert fos.write(fd, b"a") == 1
        with pytest.raises(OSError) as ei:
            fos.write(fd, b"b")
        assert ei.value.errno == errno.EIO and seen == ["fail"]
        assert fos.write(fd, b"c") == 1
        fos.fsync(fd)  # not wrapped: the real one
    finally:
        os.close(fd)
    assert fos.calls == {"write": 3} and (tmp_path / "f").read_bytes() == b"ac"
    assert fos.O_RDONLY == os.O_RDONLY


def test_failing_file_fails_the_nth_method_call():
    f = FailingFile(io.BytesIO(b"0123456789"), {"read": 2}, err=errno.ENOSPC)
    with f as g:
        assert g.read(3) == b"012"
        with pytest.raises(OSError) as ei:
            g.read(3)
        assert ei.value.errno == errno.ENOSPC
        assert g.read(3) == b"345" and f.calls == {"read": 3}
