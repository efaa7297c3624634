"""S3-compatible storage through boto3 (AWS, MinIO, Ceph RGW, SeaweedFS).

Integrity end to end: a single PUT carries ``x-amz-checksum-sha256`` of the
staged clip, so the server refuses bytes that differ; multipart sends a
SHA-256 with every part and the composite (SHA-256 of the concatenated part
digests, ``-N``) is computed locally. After completion a HEAD with checksum
mode must report the expected checksum and size before the caller may mark
the clip ``uploaded`` (with ``verify_after_upload = "read"``, or when the
server reports no checksum it can be compared with, the object is also
downloaded and hashed). The body itself is not SigV4-signed: the signed
checksum header already binds it, and signing would read every file twice.

Multipart is driven by hand so it survives restarts: the upload id and each
finished part are written to the queue's ledger as they finish; on resume
ListParts (paginated) confirms what the server holds, and only missing parts
are sent. Writes are conditional (``If-None-Match: *``): an existing object
is never overwritten; the caller compares it instead. A Complete whose
answer was lost is settled by what the server then holds; an upload the
server forgot (aborted, expired) starts over; uploads for a key that nobody
records (a CreateMultipartUpload whose answer was lost) are aborted once the
key is settled, so no part is left behind.

Transient errors are retried here a few times with tenacity (short, jittered);
longer backoff across attempts is the uploader's, recorded in the queue.

Split by concern: error classification in :mod:`dockd.storage.s3_errors`, the
hand-driven multipart upload and its staged-file reader in
:mod:`dockd.storage.multipart`, throttled request bodies in
:mod:`dockd.storage.throttle`; this module is the backend.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import math
import os
import queue
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ..config import StorageConfig
from .base import ErrorClass, PartLedger, RemoteObject, StoreFailure, TokenBucket, b64
from .multipart import Multipart, _MemoryLedger, _PartReader, composite_checksum
from .s3_errors import HINTS, classify
from .throttle import throttled

__all__ = ["S3Backend", "classify", "composite_checksum"]

def _session(cfg: StorageConfig) -> boto3.Session:
    bs = botocore.session.Session()
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and not os.environ.get("AWS_SHARED_CREDENTIALS_FILE"):
        f = Path(cred_dir) / "aws-credentials"
        if f.is_file():
            bs.set_config_variable("credentials_file", str(f))
    return boto3.Session(botocore_session=bs, region_name=cfg.region)


class S3Backend:
    name = "s3"
    LOCK_CACHE_S = 300.0

    def __init__(self, cfg: StorageConfig, *, max_pool: int = 32, client=None, limiter: TokenBucket | None = None):
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.part_size = cfg.part_size_mb << 20
        self.threshold = cfg.multipart_threshold_mb << 20
        self.part_workers = cfg.part_concurrency
        # Part buffers, shared by every clip this backend uploads: memory stays at
        # part_concurrency * part_size however many clips are in flight, and no
        # fresh pages are faulted in per part. Made on first use.
        self._part_bufs: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.part_workers):
            self._part_bufs.put(None)
        bc = BotoConfig(
            region_name=cfg.region,
            connect_timeout=min(10.0, cfg.timeout_s),
            read_timeout=cfg.timeout_s,
            retries={"total_max_attempts": 1, "mode": "standard"},  # no botocore retries: ours, classified
            max_pool_connections=max_pool,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path", "payload_signing_enabled": False},
        )
        self.client = client or _session(cfg).client("s3", endpoint_url=cfg.endpoint_url, config=bc)
        self.conditional_writes = cfg.conditional_writes
        self.limiter = limiter  # the station's shared bandwidth limit, if any
        self._lock_cache: tuple[float, bool] | None = None
        self._bucket_ok: float | None = None  # when the bucket was last seen to exist

    # -- plumbing

    def _call(self, fn, /, **kw):
        """One S3 call with short in-call retries of transient errors; raises StoreFailure.

        A file-like ``Body`` is rewound before every attempt (a retry must send
        the whole body again, not what is left of it)."""
        body = kw.get("Body")
        retrying = Retrying(
            stop=stop_after_attempt(3),
            wait=wait_random_exponential(multiplier=0.25, max=4),
            retry=retry_if_exception(lambda e: isinstance(e, StoreFailure) and e.cls is ErrorClass.TRANSIENT),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                if body is not None and hasattr(body, "seek"):
                    body.seek(0)
                try:
                    return fn(**kw)
                except StoreFailure:
                    raise
                except Exception as e:  # noqa: BLE001 - every transport error is classified
                    raise classify(e, self.bucket) from e
        raise AssertionError("unreachable")

    def _diagnose(self, e: StoreFailure) -> StoreFailure:
        """HEAD answers carry no body, so a refusal is a bare "403": ask with a request that tells why."""
        if not e.code.isdigit():
            return e
        try:
            self._call(self.client.list_objects_v2, Bucket=self.bucket, MaxKeys=1)
        except StoreFailure as real:
            return real if not real.code.isdigit() else e
        return StoreFailure(e.cls, f"{e} (HEAD refused although listing works: check the bucket policy)", e.code)

    def _bucket_locks(self) -> bool:
        t = time.monotonic()
        if self._lock_cache is None or t - self._lock_cache[0] > self.LOCK_CACHE_S:
            self._lock_cache = (t, self.lock_enforced())
        return self._lock_cache[1]

    def _ensure_bucket(self) -> None:
        """Before writing: the bucket must exist. Some servers (SeaweedFS) create a
        missing bucket on PUT; evidence must never land in a bucket a typo made."""
        t = time.monotonic()
        if self._bucket_ok is None or t - self._bucket_ok > self.LOCK_CACHE_S:
            self.check()
            self._bucket_ok = t

    def _lock_wanted(self) -> bool:
        return bool(self.cfg.object_lock_days or self.cfg.legal_hold)

    def _lock_params(self) -> dict:
        """Retention for a new object, if configured and the bucket can hold it.

        A bucket without Object Lock refuses these headers; the object is then
        written without them (the evidence is safer off the station than on it)
        and the wipe gate keeps the clip on the camera until lock is enforced."""
        p: dict = {}
        if not self._lock_wanted() or not self._bucket_locks():
            return p
        if self.cfg.object_lock_days:
            p["ObjectLockMode"] = "COMPLIANCE"
            p["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(days=self.cfg.object_lock_days)
        if self.cfg.legal_hold:
            p["ObjectLockLegalHoldStatus"] = "ON"
        return p

    # -- interface

    def head(self, key: str) -> RemoteObject | None:
        try:
            r = self._call(self.client.head_object, Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except StoreFailure as e:
            if e.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._diagnose(e) from e
        ck = r.get("ChecksumSHA256")
        sha = composite = None
        if ck:
            if "-" in ck:
                composite = ck
            else:
                sha = base64.b64decode(ck).hex()
        return RemoteObject(key=key, size=r["ContentLength"], sha256=sha, composite=composite,
                            version_id=r.get("VersionId"), retain_until=r.get("ObjectLockRetainUntilDate"),
                            legal_hold=r.get("ObjectLockLegalHoldStatus") == "ON",
                            lock_mode=r.get("ObjectLockMode"))

    def find(self, key: str, size: int, sha256: str, path: Path | None = None) -> RemoteObject | None:
        obj = self.head(key)
        if obj is None:
            return None
        if obj.size != size:
            raise self._conflict(obj)
        if obj.sha256 is not None:
            if obj.sha256 == sha256:
                return obj
            raise self._conflict(obj)
        if obj.composite is not None and path is not None:
            n = int(obj.composite.rsplit("-", 1)[1])
            if n == math.ceil(size / self.part_size) and self._local_composite(path) == obj.composite:
                return obj
        # A checksum we cannot recompute (other part size, or none at all): download and hash.
        got, n = self.read_sha256(key)
        if got == sha256 and n == size:
            return obj
        raise self._conflict(obj, got)

    @staticmethod
    def _conflict(obj: RemoteObject, read: str | None = None) -> StoreFailure:
        return StoreFailure(ErrorClass.CONFLICT, f"{obj.key}: storage holds different content "
                                                 f"(size {obj.size}, checksum {read or obj.sha256 or obj.composite})",
                            "Conflict")

    def _local_composite(self, path: Path) -> str:
        digests = []
        with open(path, "rb", buffering=0) as f:
            while data := f.read(self.part_size):
                digests.append(base64.b64encode(hashlib.sha256(data).digest()).decode())
        return composite_checksum(digests)

    def multipart_for(self, size: int) -> bool:
        return size >= self.threshold and size > self.part_size

    def put_bytes(self, key: str, data: bytes, sha256: str) -> RemoteObject:
        """Store a small object (a manifest). The PUT carries the SHA-256, which the server
        checks before it stores anything: a PUT that succeeds and echoes that checksum
        back proves the bytes without another request. Otherwise a HEAD proves them."""
        self._ensure_bucket()
        r = self._put_conditional(key, io.BytesIO(data), len(data), sha256)
        if r is not None and r.get("ChecksumSHA256") == b64(sha256) and self.cfg.verify_after_upload == "head":
            return RemoteObject(key=key, size=len(data), sha256=sha256, version_id=r.get("VersionId"))
        return self._verify(key, len(data), sha256, None, existed=r is None)

    def put_file(self, key: str, path: Path, size: int, sha256: str, ledger: PartLedger | None = None,
                 progress=None) -> RemoteObject:
        self._ensure_bucket()
        if self.multipart_for(size):
            composite = Multipart(self).upload(key, path, size, sha256, ledger or _MemoryLedger(), progress)
            return self._verify(key, size, sha256, composite, path)
        if size <= self.part_size:
            r = self._put_small(key, path, size, sha256, progress)
        else:
            with open(path, "rb") as f:
                r = self._put_conditional(key, throttled(f, self.limiter, progress), size, sha256)
        return self._verify(key, size, sha256, None, path, existed=r is None)

    def _put_small(self, key: str, path: Path, size: int, sha256: str, progress) -> dict | None:
        """A clip no bigger than a part goes like one: read from the disk (O_DIRECT where
        allowed: no page-cache copy) into a buffer of its exact size and sent in one piece.
        It holds one of the station's part_concurrency slots while in memory, so bodies and
        parts together never exceed part_concurrency x part_size. Progress counts once the
        PUT is answered (a retried body is never counted twice)."""
        slot = self._part_bufs.get()  # waits while part_concurrency bodies/parts are in memory
        del slot  # a pooled part buffer is let go: this body is allocated to its exact size
        try:
            data = bytearray(size)
            reader = _PartReader(path)
            try:
                n = reader.read_into(data, 0)
            finally:
                reader.close()
            if n != size:  # (the server checks the bytes sent against the recorded SHA-256)
                raise StoreFailure(ErrorClass.BAD_DIGEST, f"staged copy holds {n} bytes, not {size}", "LocalRead")
            body = throttled(io.BytesIO(data), self.limiter, progress) if self.limiter else data
            r = self._put_conditional(key, body, size, sha256)
            del data, body
        finally:
            self._part_bufs.put(None)
        if progress and not self.limiter:
            progress(size)  # stored, or already there (then it is ours or _verify says CONFLICT)
        return r

    def _take_part_buf(self) -> bytearray:
        """A part buffer from the station's pool; waits while part_concurrency are in use."""
        b = self._part_bufs.get()
        return b if b is not None and len(b) == self.part_size else bytearray(self.part_size)

    def _put_conditional(self, key: str, body, size: int, sha256: str) -> dict | None:
        """PUT unless the key is taken: the server's response, or None if an object is already there
        (the caller's verification then decides whether it is ours)."""
        try:
            return self._call(self.client.put_object, Bucket=self.bucket, Key=key, Body=body, ContentLength=size,
                              ChecksumSHA256=b64(sha256), IfNoneMatch="*", **self._lock_params())
        except StoreFailure as e:
            if e.code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return None
            raise

    def _verify(self, key: str, size: int, sha256: str, composite: str | None,
                path: Path | None = None, existed: bool = False) -> RemoteObject:
        """Prove the key now holds exactly our bytes (raise CONFLICT if it holds others).

        ``existed``: our conditional PUT was refused because the key was taken."""
        obj = self.head(key)
        if obj is None:
            raise StoreFailure(ErrorClass.TRANSIENT, f"{key}: not found right after upload", "Missing")
        if not self.matches(obj, size, sha256, composite):
            obj = self.find(key, size, sha256, path)  # another layout or no checksum: compare harder
            assert obj is not None
        if self.cfg.verify_after_upload == "read":
            got, n = self.read_sha256(key)
            if got != sha256 or n != size:
                raise self._conflict(obj, got)
        return dataclasses.replace(obj, already_present=True) if existed else obj

    @staticmethod
    def matches(obj: RemoteObject, size: int, sha256: str, composite: str | None) -> bool:
        """True only if the server reports exactly our size and our checksum."""
        if obj.size != size:
            return False
        if obj.sha256 is not None:
            return obj.sha256 == sha256
        if obj.composite is not None:
            return composite is not None and obj.composite == composite
        return False

    def read_sha256(self, key: str) -> tuple[str, int]:
        def fetch() -> tuple[str, int]:
            r = self.client.get_object(Bucket=self.bucket, Key=key)
            h, n = hashlib.sha256(), 0
            for chunk in r["Body"].iter_chunks(1 << 20):
                h.update(chunk)
                n += len(chunk)
            return h.hexdigest(), n
        return self._call(fetch)

    def check(self) -> None:
        try:
            self._call(self.client.head_bucket, Bucket=self.bucket)
        except StoreFailure as e:
            if e.code in ("404", "NoSuchBucket", "NotFound"):
                raise StoreFailure(ErrorClass.PERMANENT, f"NoSuchBucket: bucket {self.bucket!r} does not exist "
                                                         f"({HINTS['NoSuchBucket']})", "NoSuchBucket") from e
            raise self._diagnose(e) from e

    def lock_enforced(self) -> bool:
        try:
            r = self._call(self.client.get_object_lock_configuration, Bucket=self.bucket)
        except StoreFailure as e:
            if e.cls is ErrorClass.PERMANENT:
                return False
            raise
        return r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def ensure_lock(self, obj: RemoteObject) -> RemoteObject:
        """Give an object that is already there (uploaded before lock was configured,
        or by an earlier attempt) the configured retention and legal hold."""
        if not self._lock_wanted() or not self._bucket_locks():
            return obj
        changed = False
        vid = {"VersionId": obj.version_id} if obj.version_id else {}
        if self.cfg.object_lock_days and obj.retain_until is None:
            until = datetime.now(UTC) + timedelta(days=self.cfg.object_lock_days)
            self._call(self.client.put_object_retention, Bucket=self.bucket, Key=obj.key,
                       Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until}, **vid)
            changed = True
        if self.cfg.legal_hold and not obj.legal_hold:
            self._call(self.client.put_object_legal_hold, Bucket=self.bucket, Key=obj.key,
                       LegalHold={"Status": "ON"}, **vid)
            changed = True
        return (self.head(obj.key) or obj) if changed else obj

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=key)

    def list_keys(self, prefix: str, start_after: str | None = None) -> Iterator[str]:
        """Every key under ``prefix`` (only those sorting after ``start_after``), page by page (1000 keys held
        at a time)."""
        kw: dict = {"StartAfter": start_after} if start_after else {}
        while True:
            r = self._call(self.client.list_objects_v2, Bucket=self.bucket, Prefix=prefix, **kw)
            for o in r.get("Contents", []):
                yield o["Key"]
            if not r.get("IsTruncated") or not r.get("NextContinuationToken"):
                return
            kw = {"ContinuationToken": r["NextContinuationToken"]}

    def read_small(self, key: str, limit: int) -> bytes | None:
        """The bytes of a small object (a trust statement), None if there is none; StoreFailure(PERMANENT)
        if it is bigger than ``limit`` bytes (never read unbounded)."""
        try:
            r = self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        except StoreFailure as e:
            if e.code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        body = r["Body"]
        try:
            if r.get("ContentLength", 0) > limit:
                raise StoreFailure(ErrorClass.PERMANENT, f"{key}: {r['ContentLength']} bytes, more than {limit}",
                                   "TooBig")
            data = body.read(limit + 1)
        except StoreFailure:
            raise
        except Exception as e:  # noqa: BLE001 - transport errors are classified like every other call
            raise classify(e, self.bucket) from e
        finally:
            body.close()
        if len(data) > limit:
            raise StoreFailure(ErrorClass.PERMANENT, f"{key}: more than {limit} bytes", "TooBig")
        return data

    def iter_chunks(self, key: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The object streamed in chunks (never held whole); a read error mid-stream is classified."""
        r = self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        body = r["Body"]
        try:
            yield from body.iter_chunks(chunk)
        except Exception as e:  # noqa: BLE001 - transport errors are classified like every other call
            raise classify(e, self.bucket) from e
        finally:
            body.close()

    # -- multipart

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self._call(self.client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StoreFailure as e:
            if e.code not in ("NoSuchUpload", "404"):
                raise

    def list_multipart_uploads(self, prefix: str = "") -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        kw: dict[str, str] = {}
        while True:
            r = self._call(self.client.list_multipart_uploads, Bucket=self.bucket, Prefix=prefix, **kw)
            out += [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
            if not r.get("IsTruncated"):
                return out
            kw = {"KeyMarker": r["NextKeyMarker"], "UploadIdMarker": r["NextUploadIdMarker"]}

    def abort_unknown_uploads(self, known: set[str], prefix: str | None = None, key: str | None = None) -> list[str]:
        """Abort multipart uploads the queue does not know (no orphans): those of exactly
        ``key``, else those under ``prefix`` (default: the configured key prefix)."""
        if key is not None:
            prefix = key
        elif prefix is None:
            prefix = f"{self.cfg.prefix}/" if self.cfg.prefix else ""
        aborted = []
        for k, uid in self.list_multipart_uploads(prefix):
            if uid in known or (key is not None and k != key) or not k.startswith(prefix):
                continue
            self.abort(k, uid)
            aborted.append(uid)
        return aborted
