"""S3 error classification: a boto3/botocore exception becomes a :class:`~dockd.storage.base.StoreFailure`
with its class (transient, permanent, clock, bad digest), the server's code, and a hint for the operator.

The uploader decides what a class means (retry, fail, alarm); this module only names it.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from .base import ErrorClass, StoreFailure

TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
                   "ThrottlingException", "TooManyRequests", "RequestLimitExceeded", "OperationAborted",
                   "500", "502", "503", "504", "429"}
PERMANENT_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
                   "AllAccessDisabled", "AccountProblem", "InvalidBucketName", "InvalidArgument",
                   "InvalidRequest", "MethodNotAllowed", "NotImplemented", "EntityTooLarge", "403", "400"}
DIGEST_CODES = {"BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest", "InvalidChecksum"}
# Complete failed in a way that means this upload id can never complete: start over.
RESTART_CODES = {"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall"}
HINTS = {
    "InvalidAccessKeyId": "unknown access key: check the storage credentials",
    "SignatureDoesNotMatch": "wrong secret key: check the storage credentials",
    "AccessDenied": "check the credentials' permissions on the bucket",
    "NoSuchBucket": "the bucket does not exist: create it or fix [storage] url",
    "RequestTimeTooSkewed": "the station clock is wrong: fix NTP",
}


def classify(e: BaseException, bucket: str | None = None) -> StoreFailure:
    """Translate a boto3/botocore exception into a StoreFailure with its class."""
    if isinstance(e, StoreFailure):
        return e
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        msg = f"{code or status}: {err.get('Message') or e}"
        if code in HINTS:
            msg += f" ({HINTS[code]}{f'; bucket {bucket!r}' if bucket and code == 'NoSuchBucket' else ''})"
        if code == "RequestTimeTooSkewed":
            return StoreFailure(ErrorClass.CLOCK, msg, code)
        if code in DIGEST_CODES:
            return StoreFailure(ErrorClass.BAD_DIGEST, msg, code)
        if code in TRANSIENT_CODES or status >= 500 or status == 429:
            return StoreFailure(ErrorClass.TRANSIENT, msg, code)
        return StoreFailure(ErrorClass.PERMANENT, msg, code)
    if isinstance(e, NoCredentialsError):
        return StoreFailure(ErrorClass.PERMANENT, "no storage credentials found (AWS environment, shared "
                                                  "credentials file or $CREDENTIALS_DIRECTORY)", "NoCredentials")
    if isinstance(e, ParamValidationError):
        return StoreFailure(ErrorClass.PERMANENT, f"invalid request: {e}", "ParamValidation")
    if isinstance(e, (BotoCoreError, OSError)):
        return StoreFailure(ErrorClass.TRANSIENT, f"{type(e).__name__}: {e}", type(e).__name__)
    return StoreFailure(ErrorClass.TRANSIENT, f"{type(e).__name__}: {e}", type(e).__name__)
