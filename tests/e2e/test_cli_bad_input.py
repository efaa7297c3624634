"""Bad input to the command line (issue #10 item 7): each case is one line naming what is wrong and the
documented exit code, never "internal error", never a hang (every run has a subprocess timeout)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from dockd import config
from dockd.core.errors import ConfigError
from dockd.queue.store import Queue
from tests.support.cli import one_line_error
from tests.support.cli import run_with as dockd
from tests.support.uploads import camera_dir

ONE_CLIP = {"DCIM/100/A.MP4": b"clip bytes"}

READ_COMMANDS = [("queue",), ("show", "1"), ("status",), ("status", "--json"), ("audit",), ("audit", "--verify"),
                 ("replay", "--all-failed"), ("verify", "--all")]
HUGE = "9" * 20  # > 2**63 - 1: SQLite cannot hold it


def real_queue(data: Path) -> Path:
    """A queue.db with enough rows to span many pages."""
    data.mkdir(parents=True, exist_ok=True)
    q = Queue(data / "queue.db")
    q.dock_camera("CAM1", source="import")
    q.discover_many("CAM1", [(f"DCIM/100/C{i:05d}.MP4", i, i) for i in range(400)])
    q.close()
    return data / "queue.db"


def test_random_bytes_as_queue(station):
    cfg, data = station
    data.mkdir()
    (data / "queue.db").write_bytes(os.urandom(8192))
    for args in READ_COMMANDS:
        one_line_error(dockd(cfg, *args), 1, "queue database", str(data / "queue.db"), "cannot be used")


def test_truncated_queue(station, tmp_path):
    cfg, data = station
    db = real_queue(data)
    whole = db.read_bytes()
    db.write_bytes(whole[:8192])  # opens fine; the first query meets the missing pages
    for args in READ_COMMANDS:
        one_line_error(dockd(cfg, *args), 1, "cannot be used", "malformed")


def test_foreign_sqlite_database_is_refused_and_left_alone(station):
    cfg, data = station
    data.mkdir()
    db = data / "queue.db"
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE bookmarks (url TEXT)")
        c.execute("INSERT INTO bookmarks VALUES ('https://example.org')")
    c.close()
    before = db.read_bytes()
    for args in READ_COMMANDS + [("import", str(camera_dir(data.parent / "card", ONE_CLIP)), "--camera", "C1")]:
        one_line_error(dockd(cfg, *args), 2, "is not a dockd queue database", "schema version 0")
    assert db.read_bytes() == before  # no dockd table was added to another program's database


def test_queue_db_that_is_a_fifo_or_a_symlink(station, tmp_path):
    cfg, data = station
    data.mkdir()
    os.mkfifo(data / "queue.db")
    one_line_error(dockd(cfg, "queue"), 1, "not a regular file")
    os.unlink(data / "queue.db")
    other = real_queue(tmp_path / "elsewhere")
    os.symlink(other, data / "queue.db")
    one_line_error(dockd(cfg, "status"), 1, "not a regular file")


@pytest.fixture
def read_only(station):
    """The data dir, holding a valid queue, bind-mounted read-only onto itself (root only)."""
    cfg, data = station
    real_queue(data)
    if os.geteuid() != 0:
        pytest.skip("needs root for a read-only bind mount")
    if subprocess.run(["mount", "--bind", str(data), str(data)]).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(data)]).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield cfg, data
    finally:
        subprocess.run(["umount", str(data)], check=True)


def test_read_only_data_dir(read_only, tmp_path):
    cfg, data = read_only
    for args in READ_COMMANDS:
        one_line_error(dockd(cfg, *args), 1, str(data), "not writable")
    card = camera_dir(tmp_path / "card", ONE_CLIP)
    one_line_error(dockd(cfg, "import", str(card), "--camera", "C1"), 1, "dockd.lock", "Read-only file system")


def test_read_only_data_dir_parent(station, tmp_path):
    """The data dir does not exist and cannot be created."""
    cfg, _data = station
    cfg.write_text('[station]\nid = "st1"\ndata_dir = "/proc/dockd-data"\n')
    one_line_error(dockd(cfg, "status"), 1, "cannot create data dir")


@pytest.mark.parametrize("args", [("show", HUGE), ("queue", "--limit", HUGE), ("audit", "--clip", HUGE),
                                  ("replay", HUGE), ("verify", HUGE), ("replay", "1", HUGE),
                                  ("show", "-" + HUGE), ("show", "0"), ("queue", "--limit", "0")])
def test_integers_out_of_range_are_usage_errors(station, args):
    cfg, data = station
    real_queue(data)
    one_line_error(dockd(cfg, *args), 2)


def test_integers_at_the_sqlite_limit_still_work(station):
    cfg, data = station
    real_queue(data)
    top = str(2**63 - 1)
    one_line_error(dockd(cfg, "show", top), 1, "clip not found")
    r = dockd(cfg, "queue", "--limit", top, "--json")
    assert r.returncode == 0 and r.stdout.count('"path"') == 400


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "/dev/urandom", "dir"])
def test_config_that_is_not_a_regular_file(tmp_path, target):
    if target == "fifo":
        target = str(tmp_path / "fifo")
        os.mkfifo(target)  # nobody writes to it: reading it would block forever
    elif target == "dir":
        target = str(tmp_path)
    one_line_error(dockd(Path(target), "status"), 2, target, "not a regular file")


def test_config_too_large(tmp_path):
    p = tmp_path / "big.toml"
    p.write_text('[station]\nid = "s"\n# ' + "x" * (2 << 20) + "\n")
    one_line_error(dockd(p, "status"), 2, "too large")


def test_huge_config_value_is_not_echoed(tmp_path):
    p = tmp_path / "long.toml"
    p.write_text(f'[station]\nid = "s"\ndata_dir = "{tmp_path}/data"\n[hooks]\non_state = "{"A" * 900_000}"\n')
    line = one_line_error(dockd(p, "status"), 2, "[hooks] on_state", "too long (900000 characters")
    assert len(line) < 300
    p.write_text(f'[station]\nid = "s"\ndata_dir = "{tmp_path}/data"\n[hooks]\ntimeout_s = "{"A" * 900_000}"\n')
    line = one_line_error(dockd(p, "status"), 2, "[hooks] timeout_s", "must be a number")
    assert len(line) < 300
    p.write_text(f'[station]\nid = "s"\n{"k" * 900_000} = 1\n')
    line = one_line_error(dockd(p, "status"), 2, "unknown key", "(900000 characters)")
    assert len(line) < 300


@pytest.mark.parametrize("where", ["station.id", "sources.watch_dirs", "camera.match"])
def test_config_string_length_bound(tmp_path, where):
    long = "x" * 5000
    body = {"station.id": f'[station]\nid = "{long}"\n',
            "sources.watch_dirs": f'[station]\nid = "s"\n[sources]\nwatch_dirs = ["/{long}"]\n',
            "camera.match": f'[station]\nid = "s"\n[[camera]]\nname = "c"\nmatch = {{ ID_MODEL_ID = "{long}" }}\n'}
    p = tmp_path / "c.toml"
    p.write_text(body[where])
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert "too long" in e.value.message() and len(e.value.message()) < 300


def test_import_of_a_symlinked_directory_writes_nothing(station, tmp_path):
    cfg, data = station
    card = camera_dir(tmp_path / "card", ONE_CLIP)
    link = tmp_path / "link"
    link.symlink_to(card)
    one_line_error(dockd(cfg, "import", str(link), "--camera", "C1"), 2, str(link), "symbolic link")
    assert not data.exists()  # no lock, no queue, no key, no audit event
    ok = dockd(cfg, "import", str(card), "--camera", "C1", "--json")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("which", ["itself", "inside", "containing", "itself-via-symlinked-parent"])
def test_import_of_the_data_dir_is_refused(station, tmp_path, which):
    cfg, data = station
    real_queue(data)
    camera_dir(data / "staging" / "x", ONE_CLIP)
    before = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
    if which == "itself":
        target = data
    elif which == "inside":
        target = data / "staging"
    elif which == "containing":
        target = tmp_path
    else:
        (tmp_path / "alias").symlink_to(tmp_path)
        target = tmp_path / "alias" / "data"
    one_line_error(dockd(cfg, "import", str(target), "--camera", "C1"), 2, "data dir")
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*")) == before
    assert Queue(data / "queue.db").audit_rows(camera="C1") == []
    shutil.rmtree(data / "staging" / "x")
