"""Bad input at the command line: one-line errors with the documented exit codes, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockd.queue.store import Queue
from dockd.station.runtime import DataDirLock
from tests.support.cli import one_line_error
from tests.support.cli import run_with as dockd
from tests.support.uploads import camera_dir

ONE_CLIP = {"DCIM/100/A.MP4": b"clip bytes"}


def make_queue(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    Queue(data / "queue.db").close()


def test_show_missing_clip(station):
    cfg, data = station
    make_queue(data)
    one_line_error(dockd(cfg, "show", "999"), 1, "clip not found: 999")
    one_line_error(dockd(cfg, "show", "999", "--json"), 1, "clip not found: 999")


def test_show_without_a_queue_is_a_usage_error(station):
    cfg, data = station
    one_line_error(dockd(cfg, "show", "1"), 2, "no queue at", str(data / "queue.db"))
    assert not (data / "queue.db").exists()  # a read command does not create a queue


def test_queue_bogus_state(station):
    cfg, data = station
    make_queue(data)
    r = dockd(cfg, "queue", "--state", "bogus")
    assert r.returncode == 2, r
    assert "Traceback" not in r.stdout + r.stderr
    assert "bogus" in r.stderr and "discovered" in r.stderr  # names the bad value and the choices
    ok = dockd(cfg, "queue", "--state", "staged", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout) == []


def test_non_integer_clip_id_is_a_usage_error(station):
    cfg, data = station
    make_queue(data)
    r = dockd(cfg, "show", "abc")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "abc" in r.stderr


def test_import_nonexistent_directory(station, tmp_path):
    cfg, data = station
    one_line_error(dockd(cfg, "import", str(tmp_path / "nonexistent"), "--camera", "X"), 2, "not a directory")
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    r = dockd(cfg, "import", str(f), "--camera", "X")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (data / "queue.db").exists()


@pytest.mark.parametrize("serial", ["../x", "..", "a/b", "", "x" * 65, "-x", "cam 1", "ca\nm"])
def test_import_bad_camera_serial(station, tmp_path, serial):
    cfg, data = station
    d = camera_dir(tmp_path / "card", ONE_CLIP)
    one_line_error(dockd(cfg, "import", str(d), "--camera", serial), 2, "--camera")
    assert not data.exists()  # refused before anything was created


def test_import_refused_while_data_dir_locked(station, tmp_path):
    cfg, data = station
    d = camera_dir(tmp_path / "card", ONE_CLIP)
    lock = DataDirLock(data).acquire()
    try:
        line = one_line_error(dockd(cfg, "import", str(d), "--camera", "CAM1"), 1, "in use by another dockd",
                              str(os.getpid()))
        assert str(data) in line
    finally:
        lock.release()
    assert not (data / "queue.db").exists()  # nothing was touched
    ok = dockd(cfg, "import", str(d), "--camera", "CAM1", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["staged"] == 1


def test_keys_show_before_any_key(station):
    cfg, data = station
    one_line_error(dockd(cfg, "keys", "show"), 1, "station key", "does not exist")
    one_line_error(dockd(cfg, "keys", "show", "--pem"), 1, "station key")


def test_keys_show_refuses_a_world_readable_key(station, tmp_path):
    cfg, data = station
    d = camera_dir(tmp_path / "card", ONE_CLIP)
    assert dockd(cfg, "import", str(d), "--camera", "CAM1").returncode == 0
    ok = dockd(cfg, "keys", "show")
    assert ok.returncode == 0 and ok.stdout.startswith("ed25519:")
    os.chmod(data / "keys" / "station.ed25519", 0o644)
    one_line_error(dockd(cfg, "keys", "show"), 1, "must be 0600")


@pytest.mark.parametrize("args,code", [
    (("replay",), 2),
    (("verify",), 2),
    (("replay", "4242"), 1),
    (("audit", "--clip", "x"), 2),
])
def test_misc_bad_invocations(station, args, code):
    cfg, data = station
    make_queue(data)
    r = dockd(cfg, *args)
    assert r.returncode == code, r
    assert "Traceback" not in r.stdout + r.stderr
    if r.stderr.startswith("dockd: error: "):
        assert len(r.stderr.splitlines()) == 1


def test_read_commands_need_an_existing_queue(station):
    cfg, data = station
    for args in (("audit",), ("audit", "--verify"), ("replay", "--all-failed"), ("verify", "--all")):
        one_line_error(dockd(cfg, *args), 2, "no queue at")
