"""The uploader's policy against a REAL SeaweedFS (``seaweed`` fixture).

Clips are staged by the real Offloader from a camera directory into a real
queue; the uploader talks to SeaweedFS through the real S3Backend. Wrappers
around the boto3 client or the backend appear only where a failure cannot be
produced for real on demand (BadDigest without corruption, clock skew, a
crash after N parts, a lost Complete answer), and they are named so. The
clock is injected (``Clock``), never patched.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
import socket
import threading
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from dockd import config as config_mod
from dockd.camera.volume import Volume
from dockd.core.lifecycle import ClipState
from dockd.evidence import manifest as mf
from dockd.queue.store import Queue
from dockd.station.uploader import Uploader
from dockd.station.wipe import wipe_clips
from dockd.storage import open_backend
from dockd.storage.base import ErrorClass, StoreFailure, TokenBucket, station_prefix
from dockd.storage.s3 import composite_checksum
from tests.support.uploads import Clock, drain, make_camera, make_config, remote_sha256, s3_storage, stage

MiB = 1 << 20


# ----------------------------------------------------------------- helpers (also used by test_upload_faults)


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def local_composite(path: Path, part: int) -> str:
    data = Path(path).read_bytes()
    return composite_checksum([sha256_b64(data[i:i + part]) for i in range(0, len(data), part)])


def audit_events(queue: Queue, clip: int | None = None) -> list[str]:
    return [r["event"] for r in queue.audit_rows(clip=clip)]


class Crash(BaseException):
    """Stands for the process dying: nothing in dockd catches it."""


# ----------------------------------------------------------------- fixtures


@pytest.fixture
def s3(seaweed):
    return seaweed.client()


@pytest.fixture
def world(tmp_path, s3env, bucket):
    """A config for ``bucket``, a real queue and a clock."""

    class World:
        def __init__(self):
            self.clock = Clock()
            self.bucket = bucket
            self.queue: Queue | None = None

        def setup(self, storage: dict | None = None, **kw) -> config_mod.Config:
            self.cfg = make_config(tmp_path, storage=s3_storage(s3env, bucket, **(storage or {})), **kw)
            self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
            self.queue = Queue(self.cfg.data_dir / "queue.db")
            return self.cfg

        def uploader(self, backend=None, owner: str = "test") -> Uploader:
            return Uploader(self.cfg, self.queue, backend or open_backend(self.cfg.storage), owner=owner,
                            clock=self.clock)

    w = World()
    yield w
    if w.queue:
        w.queue.close()


# ----------------------------------------------------------------- happy path, HEAD-first, conflict


def test_upload_verifies_clip_and_manifest(world, s3, tmp_path):
    cfg = world.setup()
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [300_000]))
    up = world.uploader()
    done = up.run_once()
    assert done.state is ClipState.UPLOADED and done.id == clip.id
    assert remote_sha256(s3, world.bucket, clip.object_key) == clip.sha256
    assert clip.object_key.startswith("ev/st1/CAM1/2023/11/14/")
    man = s3.get_object(Bucket=world.bucket, Key=clip.object_key + ".manifest.json")["Body"].read()
    assert clip.sha256.encode() in man
    ev = [r for r in world.queue.audit_rows(clip=clip.id) if r["event"] == "clip.uploaded"]
    assert ev and ev[0]["detail"]["object_key"] == clip.object_key and ev[0]["detail"]["already_present"] is False
    assert up.run_once() is None


def _count_puts(backend) -> list[tuple[str, str]]:
    """(key, outcome) of every put_object the backend sends: "ok" or the error code (observation only)."""
    seen: list[tuple[str, str]] = []
    real_put = backend.client.put_object

    def counting_put(**kw):  # forwards every call
        try:
            r = real_put(**kw)
        except Exception as e:
            seen.append((kw["Key"], getattr(e, "response", {}).get("Error", {}).get("Code", repr(e))))
            raise
        seen.append((kw["Key"], "ok"))
        return r

    backend.client.put_object = counting_put
    return seen


@pytest.mark.parametrize("how", ["conditional_writes_off", "retry"])
def test_head_first_object_present_is_not_uploaded_again(world, s3, tmp_path, how):
    """Without conditional writes, and for any clip tried before, a HEAD comes first:
    an object already holding our bytes is never sent again."""
    cfg = world.setup({"conditional_writes": False} if how == "conditional_writes_off" else {})
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [200_000]))
    if how == "retry":
        world.queue.update_clip(clip.id, attempts=1, last_error="transient: connection reset")
    data = Path(clip.staged_path).read_bytes()
    s3.put_object(Bucket=world.bucket, Key=clip.object_key, Body=data, ChecksumSHA256=sha256_b64(data))
    backend = open_backend(cfg.storage)
    puts = _count_puts(backend)
    done = world.uploader(backend).run_once()
    assert done.state is ClipState.UPLOADED
    assert [k for k, _ in puts] == [clip.object_key + ".manifest.json"]  # no PUT of the clip
    assert "upload.already_present" in audit_events(world.queue, clip.id)


def test_first_attempt_goes_straight_to_conditional_put_which_never_overwrites(world, s3, tmp_path):
    """A clip's first upload skips the HEAD: the PUT carries If-None-Match: *, the server refuses
    it (412) because the key is taken, and the proving HEAD finds our bytes there."""
    cfg = world.setup()
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [200_000]))
    data = Path(clip.staged_path).read_bytes()
    first = s3.put_object(Bucket=world.bucket, Key=clip.object_key, Body=data, ChecksumSHA256=sha256_b64(data))
    before = s3.head_object(Bucket=world.bucket, Key=clip.object_key)
    backend = open_backend(cfg.storage)
    puts = _count_puts(backend)
    done = world.uploader(backend).run_once()
    assert done.state is ClipState.UPLOADED
    assert puts[0] == (clip.object_key, "PreconditionFailed")
    assert puts[1:] == [(clip.object_key + ".manifest.json", "ok")]
    after = s3.head_object(Bucket=world.bucket, Key=clip.object_key)
    assert after["LastModified"] == before["LastModified"] and after["ETag"] == first["ETag"]
    assert "upload.already_present" in audit_events(world.queue, clip.id)
    detail = [r for r in world.queue.audit_rows(clip=clip.id) if r["event"] == "clip.uploaded"][0]["detail"]
    assert detail["already_present"] is True


def test_fresh_single_put_clip_costs_three_requests(world, s3, tmp_path):
    """The common case, counted: conditional PUT, HEAD proving size and checksum, manifest PUT
    (its checksum echoed by the server) -- no pre-check HEAD, no multipart listing."""
    cfg = world.setup()
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [300_000]))
    backend = open_backend(cfg.storage)
    calls: list[str] = []
    backend.client.meta.events.register("before-call.s3.*", lambda model, **kw: calls.append(model.name))
    done = world.uploader(backend).run_once()
    assert done.state is ClipState.UPLOADED
    # HeadBucket: the bucket-exists check before the first write, then cached for minutes
    assert calls == ["HeadBucket", "PutObject", "HeadObject", "PutObject"]
    assert remote_sha256(s3, world.bucket, clip.object_key) == clip.sha256
    man = s3.get_object(Bucket=world.bucket, Key=clip.object_key + ".manifest.json", ChecksumMode="ENABLED")
    assert man["Body"].read() == mf.dumps(json.loads(clip.manifest))


def test_head_first_multipart_object_of_another_part_size_is_proven_by_download(world, s3, tmp_path):
    cfg = world.setup({"multipart_threshold_mb": 5, "part_size_mb": 5})
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [13 * MiB]))
    data = Path(clip.staged_path).read_bytes()
    # Someone uploaded our bytes in 6 MiB parts: a composite "-3" we cannot recompute from 5 MiB parts.
    up_id = s3.create_multipart_upload(Bucket=world.bucket, Key=clip.object_key, ChecksumAlgorithm="SHA256")["UploadId"]
    parts = []
    for n, off in enumerate(range(0, len(data), 6 * MiB), 1):
        chunk = data[off:off + 6 * MiB]
        r = s3.upload_part(Bucket=world.bucket, Key=clip.object_key, UploadId=up_id, PartNumber=n, Body=chunk,
                           ChecksumSHA256=sha256_b64(chunk))
        parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": sha256_b64(chunk)})
    s3.complete_multipart_upload(Bucket=world.bucket, Key=clip.object_key, UploadId=up_id,
                                 MultipartUpload={"Parts": parts})
    backend = open_backend(cfg.storage)
    gets: list[str] = []
    real_get = backend.client.get_object

    def counting_get(**kw):  # observation only
        gets.append(kw["Key"])
        return real_get(**kw)

    backend.client.get_object = counting_get
    done = world.uploader(backend).run_once()
    assert done.state is ClipState.UPLOADED
    assert gets == [clip.object_key]  # proven by download and hash, not trusted
    assert "upload.already_present" in audit_events(world.queue, clip.id)


def test_conflict_quarantines_and_never_overwrites(world, s3, tmp_path):
    cfg = world.setup()
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [100_000]))
    other = b"not the evidence" * 1000
    s3.put_object(Bucket=world.bucket, Key=clip.object_key, Body=other)
    done = world.uploader().run_once()
    assert done.state is ClipState.QUARANTINED
    assert "conflict" in done.last_error
    assert [a["kind"] for a in world.queue.alarms()] == ["conflict"]
    assert s3.get_object(Bucket=world.bucket, Key=clip.object_key)["Body"].read() == other


# ----------------------------------------------------------------- bad digest


@pytest.mark.parametrize("multipart", [False, True], ids=["single-put", "multipart"])
def test_bad_digest_from_local_corruption_quarantines(world, s3, tmp_path, multipart):
    sizes = [12 * MiB] if multipart else [300_000]
    cfg = world.setup({"multipart_threshold_mb": 5, "part_size_mb": 5})
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", sizes))
    with open(clip.staged_path, "r+b") as f:  # bit rot in staging, same size
        f.seek(sizes[0] - 1000)
        b = f.read(1)
        f.seek(sizes[0] - 1000)
        f.write(bytes([b[0] ^ 0xFF]))
    done = world.uploader().run_once()
    assert done.state is ClipState.QUARANTINED
    assert "staged copy corrupt" in done.last_error
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=world.bucket, Key=clip.object_key)
    assert ei.value.response["Error"]["Code"] == "404"
    assert s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads", []) == []
    assert world.queue.clip(clip.id).upload_id is None


class FailingBackend:
    """Wrapper: a real backend whose put_file fails with a given StoreFailure (policy tests only)."""

    def __init__(self, inner, failure: StoreFailure, times: int = 1_000_000):
        self.inner, self.failure, self.left = inner, failure, times
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_file(self, *a, **kw):
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise self.failure
        return self.inner.put_file(*a, **kw)


def test_bad_digest_twice_without_corruption_fails(world, s3, tmp_path):
    cfg = world.setup()
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [50_000]))
    fb = FailingBackend(open_backend(cfg.storage), StoreFailure(ErrorClass.BAD_DIGEST, "BadDigest: x", "BadDigest"))
    up = world.uploader(fb)
    first = up.run_once()
    assert first.state is ClipState.STAGED and first.attempts == 1  # intact: one more try
    world.clock.t = first.next_attempt_at
    second = up.run_once()
    assert second.state is ClipState.FAILED
    assert second.last_error.startswith("bad_digest:")
    assert fb.calls == 2
    assert "Contents" not in s3.list_objects_v2(Bucket=world.bucket)


# ----------------------------------------------------------------- transient, permanent, clock


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_transient_errors_back_off_then_fail(world, tmp_path):
    # A real transient failure: nothing listens on the endpoint (connection refused).
    cfg = world.setup({"endpoint_url": f"http://127.0.0.1:{_closed_port()}", "timeout_s": 2.0},
                      upload={"max_attempts": 3, "backoff_initial_s": 10.0, "backoff_max_s": 100.0})
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [10_000]))
    up = world.uploader()
    for attempt in (1, 2):
        now = world.clock()
        c = up.run_once()
        assert c.state is ClipState.STAGED and c.attempts == attempt
        assert c.last_error.startswith("transient:")
        assert now <= c.next_attempt_at <= now + min(100.0, 10.0 * 2 ** (attempt - 1))
        world.clock.t = now + 0.0001  # not yet due (unless jitter drew ~0): nothing claimed
        if c.next_attempt_at > world.clock():
            assert up.run_once() is None
        world.clock.t = c.next_attempt_at
    last = up.run_once()
    assert last.state is ClipState.FAILED and last.attempts == 3
    assert world.queue.alarms() == []  # transient trouble is not an operator alarm


@pytest.mark.parametrize("what,expect", [
    ("access_key", "InvalidAccessKeyId"),
    ("secret_key", "SignatureDoesNotMatch"),
    ("bucket", "NoSuchBucket"),
])
def test_permanent_errors_fail_with_a_clear_reason(world, s3, tmp_path, monkeypatch, what, expect):
    if what == "access_key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody-knows-me")
    elif what == "secret_key":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-0000000000000000")
    # (SeaweedFS would create a missing bucket on PUT; dockd must refuse instead)
    storage = {"url": f"s3://absent-{uuid.uuid4().hex[:16]}/ev"} if what == "bucket" else {}
    cfg = world.setup(storage)
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [10_000]))
    c = world.uploader().run_once()
    assert c.state is ClipState.FAILED and c.attempts == 1
    assert c.last_error.startswith("permanent:") and expect in c.last_error
    assert [a["kind"] for a in world.queue.alarms()] == ["storage"]
    if what == "bucket":
        assert cfg.storage.bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_clock_skew_raises_alarm_and_spends_no_attempt(world, tmp_path):
    cfg = world.setup()
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [10_000]))
    backend = open_backend(cfg.storage)

    # Wrapper: a server that thinks our clock is wrong answers HEAD with a bare
    # 403 and anything with a body with RequestTimeTooSkewed.
    def bare_403(**kw):
        raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "HeadObject")

    def skewed(**kw):
        raise ClientError({"Error": {"Code": "RequestTimeTooSkewed", "Message": "The difference between the "
                                     "request time and the server's time is too large."},
                           "ResponseMetadata": {"HTTPStatusCode": 403}}, "ListObjectsV2")

    backend.client.head_object, backend.client.list_objects_v2 = bare_403, skewed
    now = world.clock()
    c = world.uploader(backend).run_once()
    assert c.state is ClipState.STAGED
    assert c.attempts == 0
    assert c.next_attempt_at == now + cfg.upload.backoff_max_s
    assert [a["kind"] for a in world.queue.alarms()] == ["clock"]
    # once the clock is right again the clip goes, and the alarm clears
    world.clock.t = c.next_attempt_at
    done = world.uploader().run_once()
    assert done.state is ClipState.UPLOADED
    assert world.queue.alarms() == []


# ----------------------------------------------------------------- multipart


def _mp_setup(world, tmp_path, size=17 * MiB):
    cfg = world.setup({"multipart_threshold_mb": 5, "part_size_mb": 5})
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [size]))
    return cfg, clip


def test_multipart_records_parts_and_verifies_composite(world, s3, tmp_path):
    cfg, clip = _mp_setup(world, tmp_path)
    backend = open_backend(cfg.storage)
    seen_ledger: list[list[dict]] = []
    real_complete = backend.client.complete_multipart_upload

    def observing_complete(**kw):  # observation only
        seen_ledger.append(world.queue.parts(clip.id, kw["UploadId"]))
        return real_complete(**kw)

    backend.client.complete_multipart_upload = observing_complete
    done = world.uploader(backend).run_once()
    assert done.state is ClipState.UPLOADED
    [ledger] = seen_ledger
    assert [(p["part_number"], p["size"]) for p in ledger] == [(1, 5 * MiB), (2, 5 * MiB), (3, 5 * MiB), (4, 2 * MiB)]
    head = s3.head_object(Bucket=world.bucket, Key=clip.object_key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == local_composite(clip.staged_path, 5 * MiB)
    assert head["ChecksumSHA256"].endswith("-4")
    assert remote_sha256(s3, world.bucket, clip.object_key) == clip.sha256
    assert world.queue.parts(clip.id, ledger[0]["upload_id"]) == []  # ledger closed
    assert world.queue.clip(clip.id).upload_id is None


def test_multipart_resumes_after_crash_with_only_missing_parts(world, s3, tmp_path):
    cfg, clip = _mp_setup(world, tmp_path)
    backend = open_backend(cfg.storage)
    real_part = backend.client.upload_part
    lock = threading.Lock()
    calls: list[int] = []

    def dying_part(**kw):  # wrapper: the process "dies" after two parts reached the server
        with lock:
            calls.append(kw["PartNumber"])
            n = len(calls)
        if n > 2:
            raise Crash()
        return real_part(**kw)

    backend.client.upload_part = dying_part
    with pytest.raises(Crash):
        world.uploader(backend, owner="first").run_once()
    crashed = world.queue.clip(clip.id)
    assert crashed.state is ClipState.UPLOADING and crashed.upload_id
    recorded = {p["part_number"] for p in world.queue.parts(clip.id, crashed.upload_id)}
    assert len(recorded) == 2

    # restart: leases released as the daemon does at start, a fresh backend and uploader
    assert world.queue.release_leases(now=world.clock()) == [clip.id]
    backend2 = open_backend(cfg.storage)
    real_part2 = backend2.client.upload_part
    calls2: list[int] = []

    def counting_part(**kw):  # observation only
        with lock:
            calls2.append(kw["PartNumber"])
        return real_part2(**kw)

    backend2.client.upload_part = counting_part
    done = world.uploader(backend2, owner="second").run_once()
    assert done.state is ClipState.UPLOADED
    assert sorted(calls2) == sorted({1, 2, 3, 4} - recorded)
    assert remote_sha256(s3, world.bucket, clip.object_key) == clip.sha256
    assert s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads", []) == []


def test_lost_complete_answer_is_settled_by_head(world, s3, tmp_path):
    cfg, clip = _mp_setup(world, tmp_path, size=11 * MiB)
    backend = open_backend(cfg.storage)
    real_complete = backend.client.complete_multipart_upload
    completes: list[str] = []

    def complete_then_drop(**kw):  # wrapper: the server completes, the answer is lost
        completes.append(kw["UploadId"])
        r = real_complete(**kw)
        if len(completes) == 1:
            raise ConnectionClosedError(endpoint_url=cfg.storage.endpoint_url)
        return r

    backend.client.complete_multipart_upload = complete_then_drop
    done = world.uploader(backend).run_once()
    assert done.state is ClipState.UPLOADED
    assert len(completes) >= 2 and len(set(completes)) == 1  # retried the same upload, then settled
    assert remote_sha256(s3, world.bucket, clip.object_key) == clip.sha256
    assert s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads", []) == []


def test_unknown_multipart_uploads_are_aborted_within_our_prefix(world, s3, tmp_path):
    cfg = world.setup()
    mine = station_prefix(cfg.storage.prefix, cfg.station.id)
    orphan = s3.create_multipart_upload(Bucket=world.bucket, Key=mine + "CAM1/2024/01/01/x.mp4")["UploadId"]
    known = s3.create_multipart_upload(Bucket=world.bucket, Key=mine + "CAM1/2024/01/01/y.mp4")["UploadId"]
    foreign = s3.create_multipart_upload(Bucket=world.bucket, Key="ev/other-station/CAM9/z.mp4")["UploadId"]
    backend = open_backend(cfg.storage)
    aborted = backend.abort_unknown_uploads({known}, prefix=mine)
    assert aborted == [orphan]
    left = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads", [])}
    assert left == {known, foreign}
    for key, uid in ((mine + "CAM1/2024/01/01/y.mp4", known), ("ev/other-station/CAM9/z.mp4", foreign)):
        s3.abort_multipart_upload(Bucket=world.bucket, Key=key, UploadId=uid)


def test_orphan_of_a_lost_create_is_aborted_once_the_clip_is_settled(world, s3, tmp_path):
    cfg, clip = _mp_setup(world, tmp_path, size=11 * MiB)
    # An upload of our key that the queue never heard of (its Create answer was lost).
    stray = s3.create_multipart_upload(Bucket=world.bucket, Key=clip.object_key, ChecksumAlgorithm="SHA256")
    done = world.uploader().run_once()
    assert done.state is ClipState.UPLOADED
    assert s3.list_multipart_uploads(Bucket=world.bucket).get("Uploads", []) == []
    orphans = [r for r in world.queue.audit_rows(clip=clip.id) if r["event"] == "upload.orphans_aborted"]
    assert orphans and orphans[0]["detail"]["upload_ids"] == [stray["UploadId"]]


# ----------------------------------------------------------------- Object Lock


def test_object_lock_retains_uploads_in_compliance_mode(tmp_path, s3env, s3, lock_bucket):
    cfg = make_config(tmp_path, storage=s3_storage(s3env, lock_bucket, object_lock_days=1,
                                                   multipart_threshold_mb=5, part_size_mb=5))
    cfg.data_dir.mkdir(parents=True)
    q = Queue(cfg.data_dir / "queue.db")
    clock = Clock()
    clips = stage(cfg, q, make_camera(tmp_path / "cams", [100_000, 11 * MiB]), clock)
    up = Uploader(cfg, q, open_backend(cfg.storage), owner="t", clock=clock)
    drain(up, q, clock)
    now = dt.datetime.now(dt.UTC)
    for clip in clips:
        assert q.clip(clip.id).state is ClipState.UPLOADED
        for key in (clip.object_key, clip.object_key + ".manifest.json"):
            h = s3.head_object(Bucket=lock_bucket, Key=key)
            assert h["ObjectLockMode"] == "COMPLIANCE"
            assert now + dt.timedelta(hours=23) < h["ObjectLockRetainUntilDate"] <= now + dt.timedelta(days=1, hours=1)
            with pytest.raises(ClientError) as ei:  # the storage itself refuses to delete evidence
                s3.delete_object(Bucket=lock_bucket, Key=key, VersionId=h["VersionId"])
            assert ei.value.response["Error"]["Code"] == "AccessDenied"
            assert s3.head_object(Bucket=lock_bucket, Key=key)["VersionId"] == h["VersionId"]
    assert q.alarms() == []
    q.close()


def test_object_lock_already_present_object_gets_retention(tmp_path, s3env, s3, lock_bucket):
    cfg = make_config(tmp_path, storage=s3_storage(s3env, lock_bucket, object_lock_days=1))
    cfg.data_dir.mkdir(parents=True)
    q = Queue(cfg.data_dir / "queue.db")
    [clip] = stage(cfg, q, make_camera(tmp_path / "cams", [20_000]))
    data = Path(clip.staged_path).read_bytes()
    s3.put_object(Bucket=lock_bucket, Key=clip.object_key, Body=data, ChecksumSHA256=sha256_b64(data))
    assert "ObjectLockMode" not in s3.head_object(Bucket=lock_bucket, Key=clip.object_key)
    done = Uploader(cfg, q, open_backend(cfg.storage), owner="t", clock=Clock()).run_once()
    assert done.state is ClipState.UPLOADED
    assert s3.head_object(Bucket=lock_bucket, Key=clip.object_key)["ObjectLockMode"] == "COMPLIANCE"
    q.close()


def test_object_lock_configured_but_bucket_without_lock_refuses_wipe(world, s3, tmp_path):
    cfg = world.setup({"object_lock_days": 1})
    cam = make_camera(tmp_path / "cams", [30_000, 40_000])
    clips = stage(cfg, world.queue, cam, world.clock)
    backend = open_backend(cfg.storage)
    up = world.uploader(backend)
    drain(up, world.queue, world.clock)
    assert all(world.queue.clip(c.id).state is ClipState.UPLOADED for c in clips)  # evidence is off the station
    assert [a["kind"] for a in world.queue.alarms()] == ["object-lock"]
    with Volume(cam) as vol:
        res = wipe_clips(cfg, world.queue, vol, world.queue.clips(state=ClipState.UPLOADED),
                         lock_ok=backend.lock_enforced, clock=world.clock)
    assert res.wiped == [] and {cid for cid, _ in res.refused} == {c.id for c in clips}
    assert all((cam / c.path).exists() for c in clips)  # nothing deleted from the camera
    assert all(world.queue.clip(c.id).state is ClipState.UPLOADED for c in clips)
    assert "wipe.refused" in audit_events(world.queue, clips[0].id)


# ----------------------------------------------------------------- bandwidth limit


def test_token_bucket_arithmetic_with_a_fake_clock():
    clock = Clock(0.0)
    tb = TokenBucket(1000.0, burst=500.0, clock=clock, sleep=clock.sleep)
    tb.take(500)  # the burst goes at once
    assert clock.slept == 0.0
    tb.take(1000)  # then at the rate
    assert clock.slept == pytest.approx(1.0)
    # callers that arrive together queue behind each other
    assert tb.reserve(1000) == pytest.approx(1.0)
    assert tb.reserve(1000) == pytest.approx(2.0)
    clock.advance(10.0)  # idle time refills only up to the burst
    assert tb.reserve(500) == 0.0
    assert tb.reserve(1) > 0.0
    # many small takes: bytes sent never exceed rate * elapsed + burst
    clock2 = Clock(0.0)
    tb2 = TokenBucket(4096.0, burst=1024.0, clock=clock2, sleep=clock2.sleep)
    sent = 0
    for _ in range(500):
        tb2.take(100)
        sent += 100
        assert sent <= 4096.0 * clock2.t + 1024.0 + 1e-6
    assert sent / clock2.t == pytest.approx(4096.0, rel=0.03)
    assert TokenBucket.from_mbps(8.0).rate == 1_000_000.0  # megabits per second


def test_bandwidth_limit_is_shared_and_charged_once_per_byte(world, s3, tmp_path):
    cfg = world.setup({"multipart_threshold_mb": 5, "part_size_mb": 5}, upload={"bandwidth_limit_mbps": 80.0})
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [12 * MiB]))
    backend = open_backend(cfg.storage)
    backend.part_workers = 1  # one sender, so the fake clock's waits add up exactly
    up = world.uploader(backend)
    assert isinstance(backend.limiter, TokenBucket) and backend.limiter.rate == 10_000_000.0
    # Same rate, injected clock: count what the limiter is charged and how long it makes us wait.
    fake = Clock(0.0)
    charged: list[int] = []
    tb = TokenBucket(10_000_000.0, burst=1 * MiB, clock=fake, sleep=fake.sleep)
    real_take = tb.take

    def counting_take(n):
        charged.append(n)
        real_take(n)

    tb.take = counting_take
    backend.limiter = tb
    assert up.run_once().state is ClipState.UPLOADED
    assert sum(charged) == clip.size  # every clip byte charged exactly once (no signing re-read)
    assert fake.slept == pytest.approx((clip.size - 1 * MiB) / 10_000_000.0, rel=0.01)
    assert remote_sha256(s3, world.bucket, clip.object_key) == clip.sha256


def test_part_concurrency_bounds_parts_in_flight_for_the_whole_station(world, s3, tmp_path):
    """Two big clips uploaded at once share ``part_concurrency`` part buffers: never more
    parts in flight than that, and each clip still ends uploaded with its checksum proven."""
    cfg = world.setup({"multipart_threshold_mb": 5, "part_size_mb": 5, "part_concurrency": 2})
    clips = stage(cfg, world.queue, make_camera(tmp_path / "cams", [17 * MiB, 16 * MiB]))
    backend = open_backend(cfg.storage)
    active, peak, lock = [0], [0], threading.Lock()
    real_part = backend.client.upload_part

    def observing_part(**kw):  # observation only: forwards every call
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return real_part(**kw)
        finally:
            with lock:
                active[0] -= 1

    backend.client.upload_part = observing_part
    up = world.uploader(backend)
    threads = [threading.Thread(target=up.run_once) for _ in clips]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(not t.is_alive() for t in threads)
    assert 1 <= peak[0] <= 2
    for c in clips:
        done = world.queue.clip(c.id)
        assert done.state is ClipState.UPLOADED
        assert remote_sha256(s3, world.bucket, c.object_key) == c.sha256
    assert backend._part_bufs.qsize() == 2  # every buffer back in the pool


@pytest.mark.parametrize("size", [5 * MiB + 12345, 9 * MiB + 7], ids=["one-piece", "streamed"])
def test_single_put_body_is_resent_whole_on_a_retry(world, s3, tmp_path, size):
    """A transient failure after part of a single PUT's body was sent resends all of it from the
    start (the server's checksum check would refuse a body that starts mid-file). A clip no bigger
    than a part goes as one buffer; a bigger one below the multipart threshold is streamed."""
    cfg = world.setup()
    [clip] = stage(cfg, world.queue, make_camera(tmp_path / "cams", [size]))
    backend = open_backend(cfg.storage)
    real_put = backend.client.put_object
    calls = []

    def flaky_put(**kw):  # the first attempt reads 1 MiB of the body, then the connection "resets"
        calls.append((kw["Key"], type(kw["Body"]).__name__))
        if len(calls) == 1:
            if hasattr(kw["Body"], "read"):
                kw["Body"].read(1 << 20)
            raise ConnectionClosedError(endpoint_url=s3.endpoint_url)
        return real_put(**kw)

    backend.client.put_object = flaky_put
    done = world.uploader(backend).run_once()
    assert done.state is ClipState.UPLOADED
    assert [k for k, _ in calls[:2]] == [clip.object_key, clip.object_key]
    assert calls[0][1] == ("bytearray" if size <= cfg.storage.part_size_mb * MiB else "_Throttled")
    assert remote_sha256(s3, world.bucket, clip.object_key) == clip.sha256


@pytest.mark.parametrize("size", [1, 4096, 5 * MiB + 12345, 8 * MiB])
def test_part_reader_reads_exact_sizes_directly(tmp_path, size):
    """The staged-file reader fills a buffer of any length with O_DIRECT (tmp_path is ext4 here),
    reading an unaligned tail by rounding the request up, not by falling back to the page cache."""
    from dockd.storage.s3 import _PartReader

    data = random.Random(size).randbytes(size)
    p = tmp_path / "staged.clip"
    p.write_bytes(data)
    r = _PartReader(p)
    try:
        direct = r.stage is not None
        buf = bytearray(size)
        assert r.read_into(buf, 0) == size and bytes(buf) == data
        assert (r.stage is not None) == direct  # no fallback happened
        bigger = bytearray(size + 3 * 4096)  # the end of the file ends the read
        assert r.read_into(bigger, 0) == size and bytes(bigger[:size]) == data
    finally:
        r.close()
