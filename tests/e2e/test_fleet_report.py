"""`dockd fleet report --html` opened in a real headless browser (Debian's chromium): it renders what
`fleet stations --json` and `fleet cameras --json` say, loads nothing from outside, runs no script, and shows
hostile names as text."""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dockd import config
from dockd.storage.localfs import FileBackend
from tests.support import fleet as sf
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

HOSTILE = '<script>alert("x")</script>&amp;\'"'


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium (Debian package chromium) not installed")
    r = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp / 'profile'}",
                        "--no-first-run", *args], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 and not r.stdout:
        pytest.skip(f"chromium cannot start here: {r.stderr.strip().splitlines()[-1:]}")
    return r


class _Dom(html.parser.HTMLParser):
    """What the browser's DOM holds: station rows, counters, every tag name, and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.counts: dict[str, str] = {}
        self.tags: set[str] = set()
        self.cameras: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if "data-station" in a:
            self.rows[a["data-station"]] = a
        if "data-camera" in a:
            self.cameras.append(a["data-camera"])
        if a.get("id", "").startswith("count-"):
            self.counts[a["id"][6:]] = a["data-n"]

    def handle_data(self, data):
        self.text.append(data)


def test_report_renders_what_the_json_says(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    a = sf.agency(tmp_path / "agency")
    backend = FileBackend(config.StorageConfig(url=f"file://{share}"))
    now = time.time()
    for i, name in enumerate(["north", "south", HOSTILE]):
        k = a.station_key(name)
        for j in range(3):  # three heartbeats each, read over three runs: a backlog over time
            sf.put(backend, "", k, sf.body(name, now - 900 + j * 300, j + 1, pending=i * 3 + j,
                                           oldest_s=3600 * (i + 1),
                                           cameras=[sf.camera(f"{name}-CAM{c}", now - c * 86400,
                                                              anomalies=["clock jump"] if c == 2 else [])
                                                    for c in range(3)]))
    a.station_key("east")  # enrolled, silent
    west = "west\u202e<b>"  # not enrolled, and its name (from storage) is not printable: shown escaped
    sf.put(backend, "", a.station_key(west, enrol=False), sf.body(west, now - 60, 1))
    cfg = station_config(tmp_path / "agency.toml", data_dir=tmp_path / "d", storage={"url": f"file://{share}"},
                         trust={"root_pubkey": str(a.root_pem)})
    common = ["--trust", str(a.trust_dir), "--cache", str(tmp_path / "c.json")]
    out = tmp_path / "report.html"
    r = run_dockd("fleet", "report", "--html", out, *common, config=cfg)
    assert r.returncode == 0, r.stderr
    stations = json.loads(run_dockd("fleet", "stations", "--json", *common, config=cfg).stdout)
    cameras = json.loads(run_dockd("fleet", "cameras", "--json", *common, config=cfg).stdout)
    page = out.read_text()
    # self-contained: nothing to fetch, no script, the only "<script" is the escaped station name
    assert not any(s in page for s in ("src=", "href=", "url(", "@import")), page
    assert "<script" not in page
    assert run_dockd("fleet", "report", "--html", out, *common, config=cfg).returncode == 2  # never overwrites

    dom_text = chromium("--dump-dom", out.as_uri(), tmp=tmp_path).stdout
    dom = _Dom()
    dom.feed(dom_text)
    assert "script" not in dom.tags and "svg" in dom.tags
    by_status: dict[str, int] = {}
    for s in stations:
        by_status[s["status"]] = by_status.get(s["status"], 0) + 1
        row = dom.rows[s["station"].replace("\u202e", "\\u202e")]  # shown as printable text, never markup
        assert row["data-status"] == s["status"]
        assert row["data-pending"] == ("" if s["pending"] is None else str(s["pending"]))
    assert {k: int(v) for k, v in dom.counts.items() if k != "cameras" and int(v)} == by_status
    assert by_status["untrusted"] == 1 and by_status["no-heartbeat"] == 1
    assert int(dom.counts["cameras"]) == len(cameras) == len(dom.cameras) == 9
    assert sorted(dom.cameras) == sorted(c["serial"] for c in cameras)
    assert any("<script>" in t for t in dom.text)  # shown as text, not run

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,900", out.as_uri(), tmp=tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
