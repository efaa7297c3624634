"""S3-compatible storage through boto3 (AWS, MinIO, Ceph RGW, SeaweedFS).

Integrity end to end: a single PUT carries ``x-amz-checksum-sha256`` of the
staged clip, so the server refuses bytes that differ; multipart sends a
SHA-256 with every part and the composite (SHA-256 of the concatenated part
digests, ``-N``) is computed locally. After completion a HEAD with checksum
mode must report the expected checksum and size before the caller may mark
the clip ``uploaded``.

Multipart is driven by hand so it survives restarts: the upload id and each
finished part are written to the queue's ledger as they finish; on resume
ListParts (paginated) confirms what the server holds, and only missing parts
are sent. Writes are conditional (``If-None-Match: *``): an existing object
is never overwritten; the caller compares it instead.

Transient errors are retried here a few times with tenacity (short, jittered);
longer backoff across attempts is the uploader's, recorded in the queue.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError as BotoConnectionError
from botocore.exceptions import NoCredentialsError, ReadTimeoutError, ResponseStreamingError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from ..config import StorageConfig
from .base import ErrorClass, PartLedger, RemoteObject, StoreFailure, b64

TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                   "ThrottlingException", "TooManyRequests", "RequestLimitExceeded", "OperationAborted",
                   "500", "502", "503", "504", "429"}
PERMANENT_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
                   "AllAccessDisabled", "AccountProblem", "InvalidBucketName", "InvalidArgument",
                   "InvalidRequest", "MethodNotAllowed", "NotImplemented", "EntityTooLarge", "403", "400"}
DIGEST_CODES = {"BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest", "InvalidChecksum"}


def classify(e: BaseException) -> StoreFailure:
    """Translate a boto3/botocore exception into a StoreFailure with its class."""
    if isinstance(e, StoreFailure):
        return e
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        msg = f"{code or status}: {err.get('Message') or e}"
        if code == "RequestTimeTooSkewed":
            return StoreFailure(ErrorClass.CLOCK, f"{msg} (station clock is wrong)", code)
        if code in DIGEST_CODES:
            return StoreFailure(ErrorClass.BAD_DIGEST, msg, code)
        if code in TRANSIENT_CODES or status >= 500 or status == 429:
            return StoreFailure(ErrorClass.TRANSIENT, msg, code)
        return StoreFailure(ErrorClass.PERMANENT, msg, code)
    if isinstance(e, NoCredentialsError):
        return StoreFailure(ErrorClass.PERMANENT, "no storage credentials found (AWS environment, shared "
                                                  "credentials file or $CREDENTIALS_DIRECTORY)", "NoCredentials")
    if isinstance(e, (BotoConnectionError, ReadTimeoutError, ResponseStreamingError, BotoCoreError, OSError)):
        return StoreFailure(ErrorClass.TRANSIENT, f"{type(e).__name__}: {e}", type(e).__name__)
    return StoreFailure(ErrorClass.TRANSIENT, f"{type(e).__name__}: {e}", type(e).__name__)


def composite_checksum(part_digests_b64: list[str]) -> str:
    """The S3 composite SHA-256 of a multipart object: ``b64(sha256(d1||d2||...))-N``."""
    h = hashlib.sha256()
    for d in part_digests_b64:
        h.update(base64.b64decode(d))
    return f"{base64.b64encode(h.digest()).decode()}-{len(part_digests_b64)}"


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

    def __init__(self, cfg: StorageConfig, *, part_workers: int = 4, max_pool: int = 32):
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.part_size = cfg.part_size_mb << 20
        self.threshold = cfg.multipart_threshold_mb << 20
        self.part_workers = part_workers
        bc = BotoConfig(
            region_name=cfg.region,
            connect_timeout=min(10.0, cfg.timeout_s),
            read_timeout=cfg.timeout_s,
            retries={"max_attempts": 1, "mode": "standard"},  # retries are ours, classified
            max_pool_connections=max_pool,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
        )
        self.client = _session(cfg).client("s3", endpoint_url=cfg.endpoint_url, config=bc)
        self.limiter = None  # optional shared bandwidth limiter (set by the uploader)

    # -- plumbing

    def _call(self, fn, /, **kw):
        """One S3 call with short in-call retries of transient errors; raises StoreFailure."""
        retrying = Retrying(
            stop=stop_after_attempt(3),
            wait=wait_random_exponential(multiplier=0.25, max=4),
            retry=retry_if_exception(lambda e: isinstance(e, StoreFailure) and e.cls is ErrorClass.TRANSIENT),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                try:
                    return fn(**kw)
                except ClientError as e:
                    raise classify(e) from e
                except Exception as e:  # noqa: BLE001 - every transport error is classified
                    raise classify(e) from e

    def _lock_params(self) -> dict:
        p: dict = {}
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
            raise
        ck = r.get("ChecksumSHA256")
        sha = composite = None
        if ck:
            if "-" in ck:
                composite = ck
            else:
                sha = base64.b64decode(ck).hex()
        return RemoteObject(key=key, size=r["ContentLength"], sha256=sha, composite=composite,
                            version_id=r.get("VersionId"), retain_until=r.get("ObjectLockRetainUntilDate"),
                            legal_hold=r.get("ObjectLockLegalHoldStatus") == "ON")

    def put_bytes(self, key: str, data: bytes, sha256: str) -> RemoteObject:
        self._put_conditional(key, data, len(data), sha256)
        return self._verify_head(key, len(data), sha256, None)

    def put_file(self, key: str, path: Path, size: int, sha256: str, ledger: PartLedger | None = None,
                 progress=None) -> RemoteObject:
        if size >= self.threshold and ledger is not None and size > self.part_size:
            composite = self._multipart(key, path, size, sha256, ledger, progress)
            return self._verify_head(key, size, sha256, composite)
        with open(path, "rb") as f:
            body = _Throttled(f, self.limiter, progress) if (self.limiter or progress) else f
            self._put_conditional(key, body, size, sha256)
        return self._verify_head(key, size, sha256, None)

    def _put_conditional(self, key: str, body, size: int, sha256: str) -> None:
        try:
            if hasattr(body, "seek"):
                body.seek(0)
            self._call(self.client.put_object, Bucket=self.bucket, Key=key, Body=body, ContentLength=size,
                       ChecksumSHA256=b64(sha256), IfNoneMatch="*", **self._lock_params())
        except StoreFailure as e:
            if e.code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return  # an object is already there: _verify_head decides whether it is ours
            raise

    def _verify_head(self, key: str, size: int, sha256: str, composite: str | None) -> RemoteObject:
        obj = self.head(key)
        if obj is None:
            raise StoreFailure(ErrorClass.TRANSIENT, f"{key}: not found right after upload", "Missing")
        if not self.matches(obj, size, sha256, composite):
            raise StoreFailure(ErrorClass.CONFLICT, f"{key}: storage holds different content "
                                                    f"(size {obj.size}, checksum {obj.sha256 or obj.composite})",
                               "Conflict")
        return obj

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
        r = self._call(self.client.get_object, Bucket=self.bucket, Key=key)
        h, n = hashlib.sha256(), 0
        for chunk in r["Body"].iter_chunks(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return h.hexdigest(), n

    def check(self) -> None:
        # A listing (not HeadBucket) so that errors carry their S3 code:
        # HEAD responses have no body to say NoSuchBucket or SignatureDoesNotMatch.
        self._call(self.client.list_objects_v2, Bucket=self.bucket, MaxKeys=1, Prefix=self.cfg.prefix)

    def lock_enforced(self) -> bool:
        try:
            r = self._call(self.client.get_object_lock_configuration, Bucket=self.bucket)
        except StoreFailure as e:
            if e.cls is ErrorClass.PERMANENT:
                return False
            raise
        return r.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"

    def delete(self, key: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=key)

    # -- multipart

    def _multipart(self, key: str, path: Path, size: int, sha256: str, ledger: PartLedger, progress) -> str:
        n_parts = math.ceil(size / self.part_size)
        done = ledger.done_parts() if ledger.upload_id else {}
        if ledger.upload_id:
            server = self._list_parts(key, ledger.upload_id)
            if server is None:  # the server no longer knows the upload (aborted, expired)
                done = {}
                ledger.upload_id = None
            else:
                done = {n: v for n, v in done.items() if n in server and server[n][0] == v[0]}
        if not ledger.upload_id:
            r = self._call(self.client.create_multipart_upload, Bucket=self.bucket, Key=key,
                           ChecksumAlgorithm="SHA256", **self._lock_params())
            ledger.begin(r["UploadId"])
        upload_id = ledger.upload_id
        digests: dict[int, str] = {n: v[1] for n, v in done.items()}
        etags: dict[int, str] = {n: v[2] for n, v in done.items()}
        full = hashlib.sha256()
        errors: list[BaseException] = []
        slots = threading.Semaphore(self.part_workers)
        lock = threading.Lock()

        def send(number: int, data: bytes, digest: str) -> None:
            try:
                if self.limiter:
                    self.limiter.take(len(data))
                r = self._call(self.client.upload_part, Bucket=self.bucket, Key=key, UploadId=upload_id,
                               PartNumber=number, Body=data, ContentLength=len(data), ChecksumSHA256=digest)
                ledger.record(number, len(data), digest, r["ETag"])
                with lock:
                    etags[number] = r["ETag"]
                if progress:
                    progress(len(data))
            finally:
                slots.release()

        # One sequential reader: it feeds the full-file hash (proves the staged
        # copy still has the offloaded SHA-256) and hands parts to the pool.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            with ThreadPoolExecutor(self.part_workers, thread_name_prefix="part") as pool:
                futs = []
                for number in range(1, n_parts + 1):
                    data = os.pread(fd, self.part_size, (number - 1) * self.part_size)
                    full.update(data)
                    if number in digests:
                        if progress:
                            progress(len(data))
                        continue
                    digests[number] = base64.b64encode(hashlib.sha256(data).digest()).decode()
                    slots.acquire()
                    if errors or any(f.done() and f.exception() for f in futs):
                        slots.release()
                        break
                    futs.append(pool.submit(send, number, data, digests[number]))
                    del data
                wait(futs, return_when=FIRST_EXCEPTION)
                for f in futs:
                    if f.exception():
                        raise f.exception()
        finally:
            os.close(fd)
        if full.hexdigest() != sha256:
            raise StoreFailure(ErrorClass.BAD_DIGEST, f"staged copy no longer hashes to {sha256}", "LocalDigest")
        ordered = [digests[n] for n in range(1, n_parts + 1)]
        composite = composite_checksum(ordered)
        parts = [{"PartNumber": n, "ETag": etags[n], "ChecksumSHA256": digests[n]} for n in range(1, n_parts + 1)]
        try:
            self._call(self.client.complete_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except StoreFailure as e:
            # A Complete whose response was lost, or a key that already exists:
            # settle it by what the server now holds.
            obj = self.head(key)
            if obj is None or not self.matches(obj, size, sha256, composite):
                if e.code in ("NoSuchUpload", "PreconditionFailed", "412"):
                    ledger.finish()
                    self.abort(key, upload_id)
                raise
        ledger.finish()
        return composite

    def _list_parts(self, key: str, upload_id: str) -> dict[int, tuple[int, str]] | None:
        out: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            try:
                r = self._call(self.client.list_parts, Bucket=self.bucket, Key=key, UploadId=upload_id,
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

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self._call(self.client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StoreFailure as e:
            if e.code not in ("NoSuchUpload", "404"):
                raise

    def list_multipart_uploads(self) -> list[tuple[str, str]]:
        out, kw = [], {}
        while True:
            r = self._call(self.client.list_multipart_uploads, Bucket=self.bucket, **kw)
            out += [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
            if not r.get("IsTruncated"):
                return out
            kw = {"KeyMarker": r["NextKeyMarker"], "UploadIdMarker": r["NextUploadIdMarker"]}

    def abort_unknown_uploads(self, known: set[str]) -> list[str]:
        """Abort multipart uploads under our prefix that the queue does not know (no orphans)."""
        aborted = []
        prefix = "/".join(p for p in (self.cfg.prefix,) if p)
        for key, uid in self.list_multipart_uploads():
            if uid not in known and key.startswith(prefix):
                self.abort(key, uid)
                aborted.append(uid)
        return aborted


class _Throttled:
    """File wrapper that charges reads to a shared bandwidth limiter and reports progress."""

    def __init__(self, f, limiter, progress):
        self.f, self.limiter, self.progress = f, limiter, progress

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        if b:
            if self.limiter:
                self.limiter.take(len(b))
            if self.progress:
                self.progress(len(b))
        return b

    def seek(self, *a):
        return self.f.seek(*a)

    def tell(self):
        return self.f.tell()
