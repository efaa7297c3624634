"""BagWriter.write_stream with ``direct`` (O_DIRECT through a reused aligned buffer): the file holds exactly the
bytes given and the digests are theirs, for every size around the buffer and block boundaries, whether the
filesystem takes direct writes, refuses them at open, or refuses a write (EINVAL) midway."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from dockd.agency.disclosure import writer as wr
from dockd.agency.disclosure.writer import DIRECT_BUF, BagWriter

SIZES = [0, 1, 4095, 4096, 4097, DIRECT_BUF - 1, DIRECT_BUF, DIRECT_BUF + 1, 3 * DIRECT_BUF + 12345]


def _chunks(data: bytes, step: int):
    return [data[i:i + step] for i in range(0, len(data), step)]


@pytest.mark.parametrize("mode", ["direct", "refused at open", "refused midway", "buffered"])
@pytest.mark.parametrize("size", SIZES)
def test_direct_write_holds_exactly_the_bytes(tmp_path, monkeypatch, size, mode):
    data = os.urandom(size)
    if mode == "refused at open":
        monkeypatch.setattr(wr, "set_direct", lambda fd, on: False)
    if mode == "refused midway":
        real, calls = os.write, []

        def write(fd, b):
            calls.append(len(b))
            if len(calls) == 2 and len(b) % 4096 == 0:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(fd, b)

        monkeypatch.setattr(wr.os, "write", write)
    w = BagWriter(tmp_path / "bag")
    got = w.write_stream("data/x", _chunks(data, 300_000), sync=True, direct=mode != "buffered")
    assert (w.tmp / "data" / "x").read_bytes() == data
    assert (got.size, got.sha256, got.sha512) == (size, hashlib.sha256(data).hexdigest(),
                                                   hashlib.sha512(data).hexdigest())
    # the next file in the same thread reuses the buffer: nothing of this one leaks into it
    got2 = w.write_stream("data/y", [b"abc"], sync=True, direct=True)
    assert (w.tmp / "data" / "y").read_bytes() == b"abc" and got2.size == 3


def test_a_writer_for_a_zip_writes_through_the_page_cache(tmp_path, monkeypatch):
    """BagWriter(direct=False) (the --zip case, which reads the bag back) never turns O_DIRECT on."""
    asked = []
    monkeypatch.setattr(wr, "set_direct", lambda fd, on: asked.append(on) or True)
    w = BagWriter(tmp_path / "bag", direct=False)
    data = os.urandom(DIRECT_BUF + 5)
    got = w.write_stream("data/x", [data], sync=True, direct=True)
    assert asked == [] and (w.tmp / "data" / "x").read_bytes() == data and got.size == len(data)
