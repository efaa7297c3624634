"""`dockd import` then `dockd show` (text and --json): the signed media and station clock facts of a clip
(a readable MP4 and a file that is not one), and an import that completes without ffprobe."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cli import run_with as dockd
from tests.support.uploads import camera_dir, station_config

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")


def clip(path: Path) -> bytes:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "testsrc=duration=3:size=320x240:rate=10", "-c:v", "mpeg4", "-q:v", "10",
                    "-metadata", "creation_time=2025-12-29T09:00:00Z",
                    "-f", "mp4", str(path)], check=True, timeout=60)
    return path.read_bytes()


def test_show_lists_media_and_clock_facts(tmp_path):
    card = camera_dir(tmp_path / "card", {"DCIM/100/A.MP4": clip(tmp_path / "a.mp4"),
                                          "DCIM/100/B.MP4": b"not a video at all"})
    cfg = station_config(tmp_path / "dockd.toml", data_dir=tmp_path / "data", metrics={"listen": ""})
    r = dockd(cfg, "import", str(card), "--camera", "C1", "--json")
    assert r.returncode == 0, r.stderr
    ids = {}
    for i in (1, 2):
        d = json.loads(dockd(cfg, "show", str(i), "--json").stdout)
        ids[d["path"]] = d
        assert d["media"] == d["manifest"]["media"] and d["station_clock"] == d["manifest"]["station_clock"]
    a, b = ids["DCIM/100/A.MP4"], ids["DCIM/100/B.MP4"]
    assert (a["media"]["ok"], a["media"]["duration_s"], a["media"]["created_at"], a["media"]["width"]) == \
        (True, 3, "2025-12-29T09:00:00.000Z", 320)
    assert b["media"]["ok"] is False and b["media"]["reason"] == "unreadable"
    text = dockd(cfg, "show", str(a["id"])).stdout
    assert "320x240" in text and "created 2025-12-29T09:00:00.000Z" in text and "station clock" in text
    assert "not readable (unreadable" in dockd(cfg, "show", str(b["id"])).stdout


def test_import_without_ffprobe_completes_and_says_unavailable(tmp_path):
    card = camera_dir(tmp_path / "card", {"DCIM/100/A.MP4": clip(tmp_path / "a.mp4")})
    cfg = station_config(tmp_path / "dockd.toml", data_dir=tmp_path / "data", metrics={"listen": ""},
                         offload={"ffprobe": str(tmp_path / "absent" / "ffprobe")})
    r = dockd(cfg, "import", str(card), "--camera", "C1", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["staged"] == 1, r.stderr
    d = json.loads(dockd(cfg, "show", "1", "--json").stdout)
    assert d["state"] == "staged" and d["media"]["reason"] == "unavailable"
    assert "not probed (unavailable" in dockd(cfg, "show", "1").stdout
