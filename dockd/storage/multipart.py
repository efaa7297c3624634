"""Hand-driven, resumable S3 multipart uploads, and the reader that feeds them from a staged file.

The upload id and each finished part go to a :class:`~dockd.storage.base.PartLedger` (the queue) as they
finish; on resume ListParts (paginated) confirms what the server holds, and only missing parts are sent.
Every part carries its SHA-256; the object's composite checksum (SHA-256 of the concatenated part
digests, ``-N``) is computed here, and one sequential read of the staged file also hashes the whole of it,
so an upload proves the staged copy still has the offloaded SHA-256. A Complete whose answer was lost is
settled by what the server then holds; an upload the server forgot (aborted, expired) starts over.

The backend (:class:`dockd.storage.s3.S3Backend`) owns the client, the in-call retries, the part-buffer
pool and the bandwidth limit; :class:`Multipart` drives one upload through it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import mmap
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from dockd.evidence.copier import _read as read_aligned  # the copier's O_DIRECT read with its EINVAL fallback
from dockd.evidence.copier import set_direct

from .base import ErrorClass, PartLedger, StoreFailure
from .s3_errors import RESTART_CODES
from .throttle import Progress, throttled

if TYPE_CHECKING:
    from .s3 import S3Backend


def composite_checksum(part_digests_b64: list[str]) -> str:
    """The S3 composite SHA-256 of a multipart object: ``b64(sha256(d1||d2||...))-N``."""
    h = hashlib.sha256()
    for d in part_digests_b64:
        h.update(base64.b64decode(d))
    return f"{base64.b64encode(h.digest()).decode()}-{len(part_digests_b64)}"


class _MemoryLedger:
    """A ledger kept only in memory (multipart without a queue behind it)."""

    def __init__(self) -> None:
        self.upload_id: str | None = None
        self.parts: dict[int, tuple[int, str, str]] = {}

    def begin(self, upload_id: str) -> None:
        self.upload_id, self.parts = upload_id, {}

    def done_parts(self) -> dict[int, tuple[int, str, str]]:
        return dict(self.parts)

    def record(self, number: int, size: int, sha256_b64: str, etag: str) -> None:
        self.parts[number] = (size, sha256_b64, etag)

    def finish(self) -> None:
        self.upload_id, self.parts = None, {}


class _PartReader:
    """Reads a staged file part by part, with O_DIRECT where the filesystem allows it.

    Direct reads come from the disk (so the full-file hash proves what is on
    disk), cost no copy through the page cache and leave nothing cached; they
    go through a small aligned buffer because O_DIRECT needs aligned memory,
    offsets and lengths (parts are whole MiB, so every offset is aligned).
    Where O_DIRECT is refused (tmpfs, some network or FUSE filesystems) the
    file is read the ordinary way, straight into the caller's buffer.

    O_DIRECT is switched on, and a read refused for alignment (EINVAL) falls
    back, by the copier's own code (:func:`dockd.evidence.copier.set_direct`
    and its aligned read), so the staging copy and the upload read a staged
    file the same way. Reads are sequential (the file position follows the
    parts); a read from another offset seeks first.
    """

    CHUNK = 1 << 20  # a multiple of copier.ALIGN: a direct read's length must be a multiple of the block size

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        self.pos = 0
        self._direct = [False]
        self.stage: mmap.mmap | None = None  # page-aligned staging buffer while reads are direct
        try:
            if set_direct(self.fd, True):
                self._direct = [True]
                self.stage = mmap.mmap(-1, self.CHUNK)
        except BaseException:
            os.close(self.fd)
            raise

    def read_into(self, buf: bytearray, offset: int) -> int:
        """Fill ``buf`` from ``offset``; return the bytes read (fewer only at the end of the file)."""
        if offset != self.pos:
            self.pos = os.lseek(self.fd, offset, os.SEEK_SET)
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            stage = self.stage
            if stage is not None:
                n = read_aligned(self.fd, stage, self._direct)
                take = min(n, len(buf) - got)  # more than asked only at the end of the file
                view[got:got + take] = memoryview(stage)[:take]
                if not self._direct[0]:  # direct I/O refused after all: the ordinary way from here on
                    self.stage = None
            else:
                n = take = os.readv(self.fd, [view[got:]])
            if not n:
                break
            got += take
            self.pos += n
        return got

    def close(self) -> None:
        os.close(self.fd)


class Multipart:
    """One multipart upload of a staged file through ``backend`` (its client, retries, part buffers, limit).

    Made per upload, so it sees the backend's settings as they are when the upload starts."""

    def __init__(self, backend: S3Backend):
        self.b = backend

    def _part_len(self, size: int, number: int) -> int:
        return min(self.b.part_size, size - (number - 1) * self.b.part_size)

    def _drop(self, key: str, upload_id: str, ledger: PartLedger) -> None:
        """Give up on an upload id for good: abort it on the server and forget it."""
        try:
            self.b.abort(key, upload_id)
        finally:
            ledger.finish()

    def upload(self, key: str, path: Path, size: int, sha256: str, ledger: PartLedger,
               progress: Progress | None) -> str:
        """Upload (or resume) ``path`` to ``key``; return the composite checksum of the completed object.

        Raises StoreFailure: TRANSIENT when the upload id is gone and the next attempt starts over,
        BAD_DIGEST when the staged copy no longer hashes to ``sha256`` (the upload is dropped)."""
        b = self.b
        n_parts = math.ceil(size / b.part_size)
        done: dict[int, tuple[int, str, str]] = {}
        if ledger.upload_id:
            server = self.list_parts(key, ledger.upload_id)
            if server is None:  # the server no longer knows the upload (aborted, expired, completed)
                ledger.finish()
            else:
                done = {n: v for n, v in ledger.done_parts().items()
                        if n <= n_parts and v[0] == self._part_len(size, n) and n in server
                        and server[n][0] == v[0] and server[n][1].strip('"') == v[2].strip('"')}
        if not ledger.upload_id:
            r = b._call(b.client.create_multipart_upload, Bucket=b.bucket, Key=key,
                        ChecksumAlgorithm="SHA256", **b._lock_params())
            ledger.begin(r["UploadId"])
        upload_id = ledger.upload_id
        assert upload_id
        try:
            digests, etags = self._send_parts(key, path, size, sha256, upload_id, n_parts, done, ledger, progress)
        except StoreFailure as e:
            if e.code in RESTART_CODES:
                ledger.finish()
                raise StoreFailure(ErrorClass.TRANSIENT, f"{key}: multipart upload {upload_id} is gone from "
                                                         f"the server ({e}); starting over", e.code) from e
            if e.cls is ErrorClass.BAD_DIGEST:
                self._drop(key, upload_id, ledger)
            raise
        ordered = [digests[n] for n in range(1, n_parts + 1)]
        composite = composite_checksum(ordered)
        parts = [{"PartNumber": n, "ETag": etags[n], "ChecksumSHA256": digests[n]} for n in range(1, n_parts + 1)]
        try:
            b._call(b.client.complete_multipart_upload, Bucket=b.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except StoreFailure as e:
            # A Complete whose answer was lost (the retry then finds the key
            # taken), or a key that already exists: settle it by what the
            # server now holds.
            try:
                obj = b.find(key, size, sha256, path)
            except StoreFailure as conflict:
                if conflict.cls is ErrorClass.CONFLICT:
                    self._drop(key, upload_id, ledger)
                raise
            if obj is None:
                if e.code in RESTART_CODES or e.cls is ErrorClass.BAD_DIGEST:
                    self._drop(key, upload_id, ledger)
                    if e.cls is not ErrorClass.BAD_DIGEST:
                        raise StoreFailure(ErrorClass.TRANSIENT, f"{key}: Complete refused ({e}); starting over",
                                           e.code) from e
                raise
            # Our bytes are there. If this upload id is still open (the object
            # came from another upload), abort it so no parts linger.
            if self.list_parts(key, upload_id) is not None:
                b.abort(key, upload_id)
        ledger.finish()
        return composite

    def _send_parts(self, key: str, path: Path, size: int, sha256: str, upload_id: str, n_parts: int,
                    done: dict[int, tuple[int, str, str]], ledger: PartLedger,
                    progress: Progress | None) -> tuple[dict[int, str], dict[int, str]]:
        b = self.b
        digests: dict[int, str] = {n: v[1] for n, v in done.items()}
        etags: dict[int, str] = {n: v[2] for n, v in done.items()}
        full = hashlib.sha256()
        lock = threading.Lock()
        pool_bufs = b._part_bufs

        def send(number: int, data: bytearray | bytes, digest: str, buf: bytearray) -> None:
            try:
                # Without a bandwidth limit the part goes out in one piece (no
                # 16 KiB read loop, no Expect: 100-continue round trip) and
                # counts as progress once it is stored, so a retried part is
                # never counted twice.
                limiter = b.limiter
                body = throttled(io.BytesIO(data), limiter, progress) if limiter else data
                r = b._call(b.client.upload_part, Bucket=b.bucket, Key=key, UploadId=upload_id,
                            PartNumber=number, Body=body, ContentLength=len(data), ChecksumSHA256=digest)
                ledger.record(number, len(data), digest, r["ETag"])
                with lock:
                    etags[number] = r["ETag"]
                if progress and not limiter:
                    progress(len(data))
            finally:
                pool_bufs.put(buf)

        # One sequential reader: it feeds the full-file hash (proves the staged
        # copy still has the offloaded SHA-256) and hands parts to the pool.
        reader = _PartReader(path)
        try:
            with ThreadPoolExecutor(b.part_workers, thread_name_prefix="part") as pool:
                futs: list[Future[None]] = []
                for number in range(1, n_parts + 1):
                    buf = b._take_part_buf()  # waits while part_concurrency parts are in flight
                    handed = False
                    try:
                        if any(f.done() and f.exception() for f in futs):
                            break
                        n = reader.read_into(buf, (number - 1) * b.part_size)
                        view = memoryview(buf)[:n]
                        full.update(view)
                        if number in digests:
                            if progress:
                                progress(n)
                            continue
                        digests[number] = base64.b64encode(hashlib.sha256(view).digest()).decode()
                        data = buf if n == len(buf) else bytes(view)  # the last part is shorter
                        del view
                        futs.append(pool.submit(send, number, data, digests[number], buf))
                        handed = True
                        del data
                    finally:
                        if not handed:
                            pool_bufs.put(buf)
                wait(futs, return_when=FIRST_EXCEPTION)
                for f in futs:
                    err = f.exception()
                    if err is not None:
                        raise err
        finally:
            reader.close()
        if full.hexdigest() != sha256:
            raise StoreFailure(ErrorClass.BAD_DIGEST, f"staged copy no longer hashes to {sha256}", "LocalDigest")
        return digests, etags

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]] | None:
        """Part number -> (size, ETag) the server holds for ``upload_id``; None if it no longer knows it."""
        b = self.b
        out: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            try:
                r = b._call(b.client.list_parts, Bucket=b.bucket, Key=key, UploadId=upload_id,
                            PartNumberMarker=marker, MaxParts=1000)
            except StoreFailure as e:
                if e.code in ("NoSuchUpload", "404"):
                    return None
                raise
            for p in r.get("Parts", []):
                out[p["PartNumber"]] = (p["Size"], p["ETag"])
            if not r.get("IsTruncated"):
                return out
            marker = r["NextPartNumberMarker"]
