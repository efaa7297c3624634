"""Camera-, config- and storage-controlled text is shown literally everywhere (issue #10 item 3).

Names in brackets must not be taken as rich markup (a `100[` directory used to break `dockd queue`
for the whole station, `[red]FAKE[bold] ok.MP4` used to be shown as `FAKE ok.MP4`), and control
characters (ESC, BEL, DEL, C1, bidi overrides, zero-width) must reach the terminal only as visible
escapes: in tables, plain lines, JSON, console logs, error lines and the `status --watch` view.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
import structlog
from rich.console import Console

from dockd import config
from dockd.cli import logs, render
from dockd.core import textsafe
from dockd.core.lifecycle import ClipEvent
from dockd.queue.store import Queue
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

# What a camera can put in a path (kept in the queue exactly as below: the display rule must not rely
# on volume.escape having run at scan time).
BRACKET_DIR = "DCIM/100[/x].MP4"
FAKE = "DCIM/100/[red]FAKE[bold] ok.MP4"
ESCAPES = "DCIM/101/a\x1b[2J\x07b\x7f\x9b\u202eKCOL\u200b.MP4"
ESCAPES_SHOWN = "DCIM/101/a\\x1b[2J\\x07b\\x7f\\x9b\\u202eKCOL\\u200b.MP4"
BAY = "[i]\x1b]0\x07"
BAY_SHOWN = "[i]\\x1b]0\\x07"
REASON = "[bold red]ok[/] \x1b[8m"
RAW = ("\x1b", "\x07", "\x7f", "\x9b", "\u202e", "\u200b")


def assert_literal(out: str, *shown: str) -> None:
    for raw in RAW:
        assert raw not in out, (raw, out)
    for s in shown:
        assert s in out, (s, out)


@pytest.fixture
def station(tmp_path):
    data = tmp_path / "data"
    cfg = station_config(tmp_path / "dockd.toml", data_dir=data, station_id="st[1]")
    data.mkdir()
    q = Queue(data / "queue.db")
    q.dock_camera("CAM1", source="watch", bay=BAY, vendor="V[i]\x1b", model="M\u202e")
    q.set_camera_state("CAM1", "attention", REASON)
    ids = {}
    for i, p in enumerate((BRACKET_DIR, FAKE, ESCAPES)):
        clip, _ = q.discover("CAM1", p, 10 + i, 1_000_000_000 + i)
        ids[p] = clip.id
    q.transition(ids[ESCAPES], ClipEvent.COPY_STARTED)
    q.update_clip(ids[ESCAPES], last_error="storage said [red]\x1b[41mNO\x1b[0m")
    q.add_skip("CAM1", "DCIM/[x]\x1b.MP4", "a symlink\u202e")
    q.raise_alarm("disk[x]", "alarm \x1b[5m[blink]")
    q.close()
    return cfg, data, ids


def dockd(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return run_dockd(*args, config=cfg, errors="surrogateescape")


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r
    assert r.stderr == "", r.stderr
    return r.stdout


def test_printable_rule():
    assert textsafe.printable("DCIM/[red]x.MP4") == "DCIM/[red]x.MP4"
    assert textsafe.printable("a\x1b[2J\tb\nc\x00\x7f\x85\u202e\u2066\u200d\ufeff\u2028") == \
        "a\\x1b[2J\\tb\\nc\\x00\\x7f\\x85\\u202e\\u2066\\u200d\\ufeff\\u2028"
    assert textsafe.printable("bad\udcff") == "bad\\udcff"  # an undecodable byte kept by surrogateescape
    assert textsafe.printable("caf\u00e9 \u65e5\u672c") == "caf\u00e9 \u65e5\u672c"  # printable text is untouched
    already = "DCIM/a\\x1b[2J.MP4"  # as volume.escape stored it: applying the rule again changes nothing
    assert textsafe.printable(already) == already
    t = render.text("[bold]x[/bold] \x1b")
    assert t.plain == "[bold]x[/bold] \\x1b" and not t.spans


def test_json_text_keeps_the_value_and_escapes_controls():
    value = {"p": "a\x7f\x9b\u202e\U000e0041\udcff b", "n": 1}
    out = textsafe.json_text(json.dumps(value, indent=2, ensure_ascii=False))
    assert all(c.isprintable() or c == "\n" for c in out)
    for raw in ("\x7f", "\x9b", "\u202e", "\U000e0041", "\udcff"):
        assert raw not in out
    assert json.loads(out) == value


def test_error_lines_are_printable_and_bounded():
    from dockd.core.errors import NotFound

    msg = NotFound("clip", "x\x1b[2J" + "y" * 100_000).message()
    assert "\x1b" not in msg and "\\x1b[2J" in msg
    assert len(msg) < 1100 and "more characters" in msg


def test_queue_table(station):
    cfg, _data, _ids = station
    out = ok(dockd(cfg, "queue"))
    assert_literal(out, BRACKET_DIR, FAKE, ESCAPES_SHOWN, "storage said [red]\\x1b[41mNO\\x1b[0m")


def test_show_each_clip(station):
    cfg, _data, ids = station
    for path, shown in ((BRACKET_DIR, BRACKET_DIR), (FAKE, FAKE), (ESCAPES, ESCAPES_SHOWN)):
        out = ok(dockd(cfg, "show", str(ids[path])))
        assert_literal(out, shown, "skipped on camera CAM1", "DCIM/[x]\\x1b.MP4", "a symlink\\u202e")
    # the audit trail table of show carries the camera's bay as it docked
    assert_literal(ok(dockd(cfg, "show", str(ids[FAKE]))), "path=" + FAKE)


def test_status(station):
    cfg, _data, _ids = station
    out = ok(dockd(cfg, "status"))
    assert_literal(out, "station st[1]", BAY_SHOWN, "[bold red]ok[/] \\x1b[8m", "ALARM disk[x]: alarm \\x1b[5m[blink]")


def test_audit_plain_and_json(station):
    cfg, _data, ids = station
    out = ok(dockd(cfg, "audit"))
    assert_literal(out, "clip.discovered", "[red]FAKE[bold] ok.MP4", "DCIM/100[/x].MP4")
    lines = ok(dockd(cfg, "audit", "--json")).splitlines()
    assert_literal("\n".join(lines))
    paths = {json.loads(x)["detail"].get("path") for x in lines}
    assert {BRACKET_DIR, FAKE, ESCAPES} <= paths  # JSON escapes, but carries the exact value
    clips = json.loads(ok(dockd(cfg, "queue", "--json")))
    assert {c["path"] for c in clips} == {BRACKET_DIR, FAKE, ESCAPES}
    assert_literal(ok(dockd(cfg, "audit", "--clip", str(ids[ESCAPES]))), "clip.copy_started")


def test_watch_view(station):
    cfg_path, data, _ids = station
    cfg = config.load(cfg_path)
    q = Queue(data / "queue.db")
    try:
        buf = io.StringIO()
        Console(file=buf, width=200, color_system=None).print(render.live_view(render.status_dict(cfg, q)))
    finally:
        q.close()
    assert_literal(buf.getvalue(), "station st[1]", BAY_SHOWN, "[bold red]ok[/] \\x1b[8m", "ALARM disk[x]")


def test_console_log_lines():
    buf = io.StringIO()
    logs.configure("info", stream=buf, force_json=False)
    try:
        log = structlog.get_logger("t")
        log.warning("entry skipped \x1b[2J", path="DCIM/[red]a\x1b]0;x\x07.MP4", reason="odd\u202e", n=3)
        try:
            raise OSError("cannot open DCIM/\x1b[31mred\u202e.MP4")
        except OSError:
            log.exception("copy failed")
    finally:
        structlog.reset_defaults()
    out = buf.getvalue()
    assert_literal(out, "entry skipped \\x1b[2J", "DCIM/[red]a\\x1b]0;x\\x07.MP4", "odd\\u202e",
                   "OSError: cannot open DCIM/\\x1b[31mred\\u202e.MP4", "Traceback")


def test_usage_error_quoting_a_hostile_argument(station):
    cfg, _data, _ids = station
    r = dockd(cfg, "show", "1\x1b[2J")
    assert r.returncode == 2, r
    assert "\x1b" not in r.stderr and "\\x1b[2J" in r.stderr and len(r.stderr.splitlines()) == 1
