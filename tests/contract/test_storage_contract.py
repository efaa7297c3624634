"""One contract, every backend: S3 (REAL SeaweedFS) and FileBackend (a tmp dir).

The uploader relies on exactly these promises (see dockd/storage/base.py), so
each test runs against both backends through one parametrized fixture. A
``raw`` side door writes and reads objects behind the backend's back, the
way another writer (or an earlier run) would.
"""

from __future__ import annotations

import hashlib
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from dockd.config import StorageConfig
from dockd.storage.base import ErrorClass, StoreFailure
from dockd.storage.localfs import FileBackend
from dockd.storage.s3 import S3Backend

MiB = 1 << 20


class Raw:
    """Direct access to what the storage holds, bypassing the backend."""

    def __init__(self, put, get):
        self.put, self.get = put, get


@pytest.fixture(params=["s3", "file"])
def store(request, tmp_path):
    if request.param == "s3":
        seaweed = request.getfixturevalue("seaweed")
        bucket = request.getfixturevalue("bucket")
        mp = request.getfixturevalue("monkeypatch")
        for k, v in seaweed.env().items():
            mp.setenv(k, v)
        cfg = StorageConfig(url=f"s3://{bucket}/pfx", endpoint_url=seaweed.endpoint_url, multipart_threshold_mb=5,
                            part_size_mb=5, timeout_s=10.0)
        backend = S3Backend(cfg)
        client = seaweed.client()

        def get(key: str) -> bytes | None:
            try:
                return client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as e:
                if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                    return None
                raise

        raw = Raw(lambda key, data: client.put_object(Bucket=bucket, Key=key, Body=data), get)
    else:
        root = tmp_path / "share"
        root.mkdir()
        backend = FileBackend(StorageConfig(url=f"file://{root}"))

        def put(key: str, data: bytes) -> None:
            p = root / key
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)

        def get(key: str) -> bytes | None:
            p = root / key
            return p.read_bytes() if p.exists() else None

        raw = Raw(put, get)
    return backend, raw


def blob(tmp_path: Path, size: int, seed: int = 0) -> tuple[Path, bytes, str]:
    data = random.Random(seed).randbytes(size)
    p = tmp_path / f"blob-{seed}-{size}"
    p.write_bytes(data)
    return p, data, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1000, 11 * MiB], ids=["empty", "small", "multipart-size"])
def test_put_file_round_trip(store, tmp_path, size):
    backend, raw = store
    path, data, sha = blob(tmp_path, size)
    obj = backend.put_file("a/b/clip.mp4", path, size, sha)
    assert obj.size == size and (obj.sha256 == sha or obj.composite)
    head = backend.head("a/b/clip.mp4")
    assert head is not None and head.size == size
    assert backend.find("a/b/clip.mp4", size, sha, path) is not None
    assert backend.read_sha256("a/b/clip.mp4") == (sha, size)
    assert raw.get("a/b/clip.mp4") == data


def test_put_bytes_round_trip(store):
    backend, raw = store
    data = b'{"manifest": true}'
    sha = hashlib.sha256(data).hexdigest()
    obj = backend.put_bytes("m/x.manifest.json", data, sha)
    assert (obj.size, obj.sha256) == (len(data), sha)
    assert backend.head("m/x.manifest.json").sha256 == sha
    assert backend.read_sha256("m/x.manifest.json") == (sha, len(data))
    assert raw.get("m/x.manifest.json") == data


def test_head_and_find_of_missing_key_are_none(store):
    backend, _ = store
    assert backend.head("no/such/key.mp4") is None
    assert backend.find("no/such/key.mp4", 10, "0" * 64) is None


@pytest.mark.parametrize("same_size", [False, True], ids=["other-size", "same-size"])
def test_never_overwrites_a_different_object(store, tmp_path, same_size):
    backend, raw = store
    path, data, sha = blob(tmp_path, 4000)
    other = bytes(reversed(data)) if same_size else b"someone else's bytes"
    raw.put("k/clip.mp4", other)
    with pytest.raises(StoreFailure) as ei:
        backend.put_file("k/clip.mp4", path, len(data), sha)
    assert ei.value.cls is ErrorClass.CONFLICT
    with pytest.raises(StoreFailure) as ei:
        backend.put_bytes("k/clip.mp4", data, sha)
    assert ei.value.cls is ErrorClass.CONFLICT
    with pytest.raises(StoreFailure) as ei:
        backend.find("k/clip.mp4", len(data), sha, path)
    assert ei.value.cls is ErrorClass.CONFLICT
    assert raw.get("k/clip.mp4") == other  # the original is intact


def test_idempotent_reput_of_the_same_content(store, tmp_path):
    backend, raw = store
    path, data, sha = blob(tmp_path, 6000)
    first = backend.put_file("i/clip.mp4", path, len(data), sha)
    again = backend.put_file("i/clip.mp4", path, len(data), sha)
    assert (again.size, again.sha256) == (first.size, first.sha256) == (len(data), sha)
    assert backend.put_bytes("i/clip.mp4", data, sha).sha256 == sha
    assert raw.get("i/clip.mp4") == data


def test_same_content_from_concurrent_writers_is_one_object(store, tmp_path):
    backend, raw = store
    path, data, sha = blob(tmp_path, 300_000, seed=7)
    start = threading.Barrier(4)

    def put(_):
        start.wait()
        return backend.put_file("c/clip.mp4", path, len(data), sha)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(put, range(4)))
    assert {(r.size, r.sha256) for r in results} == {(len(data), sha)}
    assert raw.get("c/clip.mp4") == data


def test_delete_removes_the_object_and_a_missing_key_is_fine(store):
    backend, raw = store
    data = b"doctor probe"
    backend.put_bytes("_doctor/probe-1", data, hashlib.sha256(data).hexdigest())
    backend.delete("_doctor/probe-1")
    assert backend.head("_doctor/probe-1") is None and raw.get("_doctor/probe-1") is None
    backend.delete("_doctor/probe-1")  # again: nothing there is not an error


def test_abort_of_an_upload_that_is_not_there_is_fine(store):
    backend, _ = store
    backend.abort("a/b/never-started.mp4", "no-such-upload-id")
    assert backend.abort_unknown_uploads(set(), key="a/b/never-started.mp4") == []


def test_limiter_is_given_at_construction(store):
    from dockd.storage import open_backend
    from dockd.storage.base import TokenBucket

    backend, _ = store
    assert backend.limiter is None
    cfg = backend.cfg if isinstance(backend, S3Backend) else StorageConfig(url=f"file://{backend.root}")
    tb = TokenBucket(1 << 30)
    again = open_backend(cfg, limiter=tb)
    assert type(again) is type(backend) and again.limiter is tb


def test_list_keys_start_after_lists_only_later_keys(store):
    """The fleet reader lists only what sorts after the last heartbeat it verified (S3 StartAfter)."""
    backend, _raw = store
    keys = [f"pfx/_fleet/heartbeats/station=s/2026-01-0{d}/00000{i}-{i:016d}.json" for d in (1, 2) for i in (1, 2)]
    for k in keys:
        backend.put_bytes(k, b"x", hashlib.sha256(b"x").hexdigest())
    base = "pfx/_fleet/heartbeats/station=s/"
    assert sorted(backend.list_keys(base)) == keys
    assert list(backend.list_keys(base, start_after=keys[1])) == keys[2:]
    assert list(backend.list_keys(base, start_after=keys[-1])) == []
    assert list(backend.list_keys(base + "2026-01-02/", start_after=base + "2026-01-01/~")) == keys[2:]


def test_iter_chunks_streams_the_object_in_bounded_chunks(store, tmp_path):
    """Disclosure reads clips with iter_chunks: every byte, in chunks of at most the size asked for."""
    backend, _ = store
    path, data, sha = blob(tmp_path, 3 * MiB + 17, seed=5)
    backend.put_file("s/clip.mp4", path, len(data), sha)
    chunks = list(backend.iter_chunks("s/clip.mp4", 1 << 20))
    assert b"".join(chunks) == data and max(len(c) for c in chunks) <= 1 << 20
    with pytest.raises(StoreFailure):
        list(backend.iter_chunks("s/missing.mp4"))
