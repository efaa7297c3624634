"""`dockd review` end to end against a real SeaweedFS: the golden day (tests/unit/review/golden/day) published as
signed index segments, fetched, justified, reported; the report checked by `dockd review verify`, by the
README's openssl+jq recipe, and its HTML rendered in Debian's chromium; bad input is one line, exit 2."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import uuid
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dockd.config import StorageConfig
from dockd.storage import open_backend
from tests.support.cli import one_line_error, run_dockd
from tests.support.review import REPO, indexgen, make_agency
from tests.support.uploads import write_config

GOLDEN = REPO / "tests" / "unit" / "review" / "golden" / "day"
PREFIX = "ev"


def publish_golden(backend, key) -> int:
    """The golden index as one segment per UTC date, in seq order."""
    gen = indexgen()
    by_date: dict[str, tuple[list, list]] = {}
    for line in (GOLDEN / "index.jsonl").read_text().splitlines():
        o = json.loads(line)
        t = o["started_at"] if o["type"] == "clip" else o["docked_at"]
        by_date.setdefault(t[:10], ([], []))[0 if o["type"] == "clip" else 1].append(o)
    prev = None
    for seq, (date, (clips, docks)) in enumerate(sorted(by_date.items()), 1):
        prev, objs = gen.segment(PREFIX, key, "st-1", seq, date, clips, docks, prev, f"{date}T23:59:00Z")
        for k, v in objs.items():
            backend.put_bytes(k, v, hashlib.sha256(v).hexdigest())
    return len(by_date)


@pytest.fixture(scope="module")
def world(tmp_path_factory, seaweed):
    """One agency, index and config for the module (each dockd run costs a second or two)."""
    tmp_path = tmp_path_factory.mktemp("review")
    bucket = seaweed.create_bucket(f"rv-{uuid.uuid4().hex[:12]}")
    a = make_agency(tmp_path, ["st-1"], ["alice"])
    a.enrol("bob", "person", "discloser")
    storage = {"url": f"s3://{bucket}/{PREFIX}", "endpoint_url": seaweed.endpoint_url, "timeout_s": 10.0}
    ENV.update(seaweed.env())
    backend = _backend(storage, seaweed)
    n = publish_golden(backend, a.stations["st-1"])
    cfg = write_config(tmp_path / "agency.toml", {
        "station": {"id": "agency", "data_dir": str(tmp_path / "unused")},
        "storage": storage,
        "trust": {"root_pubkey": str(a.root_pub_file)},
        "review": {"excluded_call_types": ["ADMIN"], "cad_incident": "Incident No", "cad_call_type": "Nature",
                   "cad_dispatched": "Disp", "cad_arrived": "OnScene", "cad_cleared": "Clr", "cad_officer": "Badge",
                   "cad_unit": "Unit", "reviewer_key": str(a.people["alice"][1]),
                   "cache_dir": str(tmp_path / "cache")},
    })
    return a, cfg, n


ENV: dict[str, str] = {}


def _backend(storage, seaweed):
    import os

    saved = {k: os.environ.get(k) for k in seaweed.env()}
    os.environ.update(seaweed.env())
    try:
        return open_backend(StorageConfig(**storage))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def review(cfg, *args, **kw):
    return run_dockd("review", *args, "--trust", str(cfg.parent / "trust"), config=cfg, env=ENV, **kw)


def do_report(cfg, out: Path, *extra: str):
    return review(cfg, "report", "--from", "2026-03-01", "--to", "2026-03-10", "--roster", GOLDEN / "roster.csv",
                  "--cad", GOLDEN / "cad.csv", "--out", out, "--now", "2026-03-10T00:00:00Z", *extra)


@pytest.fixture(scope="module")
def reported(world, tmp_path_factory):
    a, cfg, n = world
    tmp_path = tmp_path_factory.mktemp("reported")
    r = review(cfg, "fetch")
    assert r.returncode == 0 and f"fetched {n} new segments" in r.stdout, r
    for reason, note in (("malfunction", "first look"), ("battery", "battery log shows 0%")):
        r = review(cfg, "justify", "I-JUST", "--officer", "O2", "--reason", reason, "--note", note)
        assert r.returncode == 0, r
    assert "superseding entry 1" in r.stdout
    out = tmp_path / "out"
    r = do_report(cfg, out)
    assert r.returncode == 0, r
    return a, cfg, out, r.stdout


def test_report_rows_equal_the_golden_rows_and_summary_adds_up(reported, tmp_path):
    a, cfg, shared, stdout = reported
    out = tmp_path / "out"
    shutil.copytree(shared, out)  # altered below; the module's report stays intact
    rep = json.loads((out / "report.json").read_text())
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(GOLDEN / "expected.csv", newline="") as f:
        want = list(csv.DictReader(f))
    assert [(r["incident"], r["officer"], r["outcome"], r["coverage_bp"]) for r in rows] == \
        [(w["incident"], w["officer"], w["outcome"], w["coverage_bp"]) for w in want]
    assert rep["summary"]["outcomes"] == dict(Counter(w["outcome"] for w in want))
    act = rep["summary"]["activation"]
    assert (act["with_video"], act["required"]) == (8, 13)  # 3 covered + 5 partial of 15 - excluded - pending
    just = [x for x in rep["exceptions"] if x["outcome"] == "justified"]
    assert just[0]["justification"]["reason"] == "battery" and just[0]["justification"]["supersedes"] == 1
    assert "alice" in just[0]["justification"]["by"]
    assert [e[0] for e in rep["inputs"]["justifications"]] == [1, 2]
    assert sum(len(v) for v in rep["inputs"]["index"]["segments"].values()) == 4  # four UTC dates
    assert rep["csv"]["rows"] == 15 and "activation rate 61.53%" in stdout
    r = review(cfg, "verify", out)
    assert r.returncode == 0 and "report OK" in r.stdout, r
    (out / "report.csv").write_bytes((out / "report.csv").read_bytes().replace(b"missing", b"covered", 1))
    one_line_error(review(cfg, "verify", out), 1, "report.csv: does not match")


def test_rerun_with_as_of_gives_the_same_rows(reported, tmp_path):
    a, cfg, out, _ = reported
    rep = json.loads((out / "report.json").read_text())
    r = do_report(cfg, tmp_path / "again", "--justifications-upto", str(rep["inputs"]["justifications"][-1][0]),
                  "--no-fetch")
    assert r.returncode == 0, r
    assert (tmp_path / "again" / "report.csv").read_bytes() == (out / "report.csv").read_bytes()


def readme_recipe() -> str:
    readme = (REPO / "README.md").read_text()
    block = readme.split("### Checking a review report without dockd", 1)[1].split("```", 2)[1]
    cmds = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    assert len(cmds) >= 5
    return "set -e\n" + "\n".join(cmds) + "\n"


def test_readme_recipe_verifies_the_report_and_fails_after_a_one_byte_change(reported, tmp_path):
    if not (shutil.which("jq") and shutil.which("openssl")):
        pytest.skip("jq or openssl missing")
    a, cfg, shared, _ = reported
    out = tmp_path / "out"
    shutil.copytree(shared, out)
    shutil.copytree(a.dir, out / "trust")
    recipe = readme_recipe()
    r = subprocess.run(["bash", "-c", recipe], cwd=out, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout, r.stdout + r.stderr
    assert "8 of 13" in r.stdout and "enrol\nalice\nreviewer\n" in r.stdout
    raw = (out / "report.json").read_bytes()
    i = raw.index(b'"required": 13') + len(b'"required": 1')
    (out / "report.json").write_bytes(raw[:i] + b"4" + raw[i + 1:])  # one byte: 13 rows become 14
    r = subprocess.run(["bash", "-c", recipe], cwd=out, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Signature Verified Successfully" not in r.stdout


class _DataK(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack: list[str | None] = []
        self.found: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        self.stack.append(dict(attrs).get("data-k"))

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1]:
            self.found[self.stack[-1]] = self.found.get(self.stack[-1], "") + data


def chromium_dom(html: Path) -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (scripts/_common.sh APT_PACKAGES lists it)")
    r = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--no-first-run", "--user-data-dir=" + str(html.parent / "chromium-profile"),
                        "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or "<html" not in r.stdout:
        pytest.skip(f"chromium cannot start in this sandbox: {r.stderr.strip()[-300:]}")
    return r.stdout


def pct(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d}%"


def test_html_renders_in_chromium_with_the_json_numbers(reported):
    a, cfg, out, _ = reported
    rep = json.loads((out / "report.json").read_text())
    dom = chromium_dom(out / "report.html")
    p = _DataK()
    p.feed(dom)
    got, s = p.found, rep["summary"]
    assert got["activation.rate_bp"] == pct(s["activation"]["rate_bp"])
    assert int(got["activation.with_video"]) == s["activation"]["with_video"]
    assert int(got["activation.required"]) == s["activation"]["required"]
    assert int(got["rows"]) == s["rows"] and int(got["exceptions"]) == len(rep["exceptions"])
    for o, n in s["outcomes"].items():
        assert int(got[f"outcomes.{o}"]) == n
    for u, v in s["by_unit"].items():
        assert got[f"unit.{u}"] == pct(v["activation"]["rate_bp"])  # the chart's label
        assert got[f"unit.{u}.rate_bp"] == pct(v["activation"]["rate_bp"])  # the table
    for m, v in s["by_month"].items():
        assert got[f"month.{m}"] == pct(v["activation"]["rate_bp"])
    assert int(got["segments"]) == 4 and int(got["justifications"]) == 2
    assert "<script" not in dom.lower()


def test_hostile_names_are_escaped_in_the_html(world, tmp_path):
    a, cfg, n = world
    cad = tmp_path / "cad.csv"
    cad.write_text((GOLDEN / "cad.csv").read_text().replace("I-NOCAM", '<img src=x onerror="alert(1)">'))
    r = review(cfg, "report", "--from", "2026-03-01", "--to", "2026-03-10", "--roster", GOLDEN / "roster.csv",
               "--cad", cad, "--out", tmp_path / "o", "--now", "2026-03-10T00:00:00Z")
    assert r.returncode == 0, r
    page = (tmp_path / "o" / "report.html").read_text()
    assert "<img" not in page and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page


def test_bad_inputs_are_one_line_exit_2(world, tmp_path):
    a, cfg, n = world
    bad = tmp_path / "bad.csv"
    bad.write_text((GOLDEN / "cad.csv").read_text().replace("2026-03-01 17:00:00", "17h"))
    r = review(cfg, "report", "--from", "2026-03-01", "--to", "2026-03-10", "--roster", GOLDEN / "roster.csv",
               "--cad", bad, "--out", tmp_path / "o", "--no-fetch")
    one_line_error(r, 2, f"CAD export {bad}: line 12: field Disp: not a time")
    one_line_error(review(cfg, "justify", "I-1", "--officer", "O1", "--reason", "lunch", "--note", "x"), 2,
                   "--reason lunch: not a reason code")
    r = review(cfg, "justify", "I-1", "--officer", "O1", "--reason", "battery", "--note", "x", "--key",
               a.people["bob"][1])
    one_line_error(r, 1, "justification refused", "enrolled for discloser, not for role reviewer")
    r = review(cfg, "report", "--from", "2026-03-10", "--to", "2026-03-01", "--roster", GOLDEN / "roster.csv",
               "--cad", GOLDEN / "cad.csv", "--out", tmp_path / "o")
    one_line_error(r, 2, "--to must be after --from")
