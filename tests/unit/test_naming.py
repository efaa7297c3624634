"""Names of objects, sidecars, manifests and staging files: one pure module (dockd.core.naming)."""

from __future__ import annotations

import pytest

from dockd.core import naming
from dockd.core.outcomes import AttemptError, ErrorClass

NS = 1_764_460_799_999_999_999  # 2025-11-29T23:59:59.999999999Z


def test_object_key_is_content_addressed_under_the_clip_day():
    sha = "ab" * 32
    assert naming.object_key("bwc", "st1", "CAM1", NS, sha, ".mp4") == f"bwc/st1/CAM1/2025/11/29/{sha}.mp4"
    assert naming.object_key("", "st1", "CAM1", NS, sha, "") == f"st1/CAM1/2025/11/29/{sha}"
    assert naming.station_prefix("bwc", "st1") == "bwc/st1/" and naming.station_prefix("", "st1") == "st1/"


def test_sidecar_and_manifest_keys_sit_beside_the_clip():
    key = "bwc/st1/CAM1/2025/11/29/" + "ab" * 32 + ".mp4"
    assert naming.sidecar_key(key, "cd" * 32, "DCIM/100/CLIP0001.GPS") == f"bwc/st1/CAM1/2025/11/29/{'cd' * 32}.gps"
    assert naming.manifest_key(key) == key + ".manifest.json"
    assert naming.manifest_key(key, "ef" * 32) == key + ".efefefefefefefef.manifest.json"


@pytest.mark.parametrize(("path", "ext"), [("DCIM/A.MP4", ".mp4"), ("a.tar.GZ", ".gz"), ("noext", ""),
                                           ("x.toolongext1", ""), ("x.m\u00e9", ""), ("dir.d/file", "")])
def test_safe_ext_keeps_only_short_ascii_extensions(path, ext):
    assert naming.safe_ext(path) == ext


def test_staging_names_come_from_the_clip_id_only():
    assert naming.staged_clip_name(7) == "0000000007.clip"
    assert naming.staged_sidecar_name(7, 2) == "0000000007.side2"
    assert naming.staged_manifest_name(7) == "0000000007.manifest.json"


def test_attempt_error_round_trips_and_ignores_other_errors():
    e = AttemptError(ErrorClass.BAD_DIGEST, "server says: checksum differs")
    assert e.text() == "bad_digest: server says: checksum differs"
    assert AttemptError.parse(e.text()) == e
    for other in (None, "", "upload interrupted (daemon stopped or lease expired)",
                  "staged copy corrupt: aa != bb", "wipe refused: changed"):
        assert AttemptError.parse(other) is None
