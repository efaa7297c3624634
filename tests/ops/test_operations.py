"""Operations: doctor (each check failing for its reason), metrics exposition, signed audit heads and
daily audit segments in central storage, and the live status view."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockd import config as config_mod
from dockd.cli.doctor import run_checks
from dockd.evidence import keys
from dockd.queue.store import Queue
from dockd.station.auditlog import check_heads, check_segment, export_days, signed_head
from dockd.station.metrics import Metrics
from dockd.storage import open_backend
from tests.support.cli import dockd_argv, dockd_env, run_dockd
from tests.support.seaweed import listening_sockets
from tests.support.uploads import station_config
from tests.support.waiting import wait_for


def base_config(tmp_path: Path, seaweed, bucket: str, storage: dict | None = None, **sections: dict) -> Path:
    storage = {"url": f"s3://{bucket}/ops", "endpoint_url": seaweed.endpoint_url, **(storage or {})}
    return station_config(tmp_path / "dockd.toml", data_dir=tmp_path / "data", station_id="st-ops", storage=storage,
                          offload={"reserve_free_mb": 1}, metrics={"listen": ""}, **sections)


def prepared(tmp_path: Path, seaweed, bucket: str, **kw) -> Path:
    """A config whose data dir, key and queue exist as `dockd run` leaves them."""
    p = base_config(tmp_path, seaweed, bucket, **kw)
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    keys.load_or_create(d)
    Queue(d / "queue.db").close()
    return p


def by_check(results: list[dict]) -> dict[str, dict]:
    return {r["check"]: r for r in results}


# ------------------------------------------------------------------ doctor


def test_doctor_all_pass(tmp_path, s3env, bucket):
    r = by_check(run_checks(str(prepared(tmp_path, s3env, bucket))))
    for name in ("config", "data_dir", "station_key", "queue", "storage", "storage_probe", "free_space"):
        assert r[name]["ok"], r[name]


def test_doctor_bad_config(tmp_path):
    p = tmp_path / "dockd.toml"
    p.write_text("[station]\nid = 'x'\nbogus = 1\n")
    r = run_checks(str(p))
    assert len(r) == 1 and r[0]["check"] == "config" and not r[0]["ok"]
    assert "[station] bogus: unknown key" in r[0]["detail"]


def test_doctor_missing_data_dir(tmp_path, s3env, bucket):
    p = base_config(tmp_path, s3env, bucket)
    r = by_check(run_checks(str(p)))
    assert not r["data_dir"]["ok"] and "does not exist" in r["data_dir"]["detail"]


def test_doctor_unsafe_data_dir_mode(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket)
    os.chmod(tmp_path / "data", 0o777)
    r = by_check(run_checks(str(p)))
    assert not r["data_dir"]["ok"] and "0777" in r["data_dir"]["detail"]


def test_doctor_key_mode_and_missing(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket)
    kp = keys.key_path(tmp_path / "data")
    os.chmod(kp, 0o644)
    r = by_check(run_checks(str(p)))
    assert not r["station_key"]["ok"] and "0644" in r["station_key"]["detail"]
    kp.unlink()
    r = by_check(run_checks(str(p)))
    assert not r["station_key"]["ok"] and "does not exist" in r["station_key"]["detail"]


def test_doctor_queue_schema_old(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket)
    con = sqlite3.connect(tmp_path / "data" / "queue.db")
    con.execute("PRAGMA user_version = 0")
    con.close()
    r = by_check(run_checks(str(p)))
    assert not r["queue"]["ok"] and "schema v0" in r["queue"]["detail"]


def test_doctor_storage_unreachable(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket)
    p.write_text(p.read_text().replace(s3env.endpoint_url, "http://127.0.0.1:9"))
    r = by_check(run_checks(str(p)))
    assert not r["storage"]["ok"] and "storage_probe" not in r


def test_doctor_missing_bucket(tmp_path, s3env):
    p = prepared(tmp_path, s3env, "no-such-bucket-here")
    r = by_check(run_checks(str(p)))
    assert not r["storage"]["ok"] and "NoSuchBucket" in r["storage"]["detail"]


def test_doctor_wrong_credentials(tmp_path, s3env, bucket, monkeypatch):
    p = prepared(tmp_path, s3env, bucket)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    r = by_check(run_checks(str(p)))
    assert not r["storage"]["ok"] and "SignatureDoesNotMatch" in r["storage"]["detail"]


def test_doctor_object_lock_not_enforced(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket, storage={"object_lock_days": 1})
    r = by_check(run_checks(str(p)))
    assert not r["object_lock"]["ok"] and "does NOT enforce" in r["object_lock"]["detail"]


def test_doctor_object_lock_enforced(tmp_path, s3env, lock_bucket):
    p = prepared(tmp_path, s3env, lock_bucket, storage={"object_lock_days": 1})
    r = by_check(run_checks(str(p)))
    assert r["object_lock"]["ok"], r["object_lock"]


def test_doctor_free_space_below_reserve(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket)
    p.write_text(p.read_text().replace("reserve_free_mb = 1", "reserve_free_mb = 999999999"))
    r = by_check(run_checks(str(p)))
    assert not r["free_space"]["ok"]


def test_doctor_udev_rule(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket, sources={"udev": True})
    r = by_check(run_checks(str(p)))
    installed = Path("/etc/udev/rules.d/70-dockd.rules").exists()
    assert r["udev_rule"]["ok"] is installed


def test_doctor_no_storage_and_cli_exit(tmp_path):
    d = tmp_path / "data"
    p = station_config(tmp_path / "dockd.toml", data_dir=d, station_id="s", metrics={"listen": ""})
    d.mkdir(mode=0o700)
    keys.load_or_create(d)
    Queue(d / "queue.db").close()
    out = run_dockd("doctor", "--json", config=p)
    assert out.returncode == 1
    res = by_check(json.loads(out.stdout))
    assert not res["storage"]["ok"] and res["config"]["ok"] and res["station_key"]["ok"]
    txt = run_dockd("doctor", config=p)
    assert txt.returncode == 1
    lines = txt.stdout.splitlines()
    assert any(line.startswith("FAIL  storage") and "->" in line for line in lines)
    assert all(line.split()[0] in ("PASS", "FAIL") for line in lines)


# ------------------------------------------------------------------ metrics


def test_metrics_exposition_passes_promtool(tmp_path):
    promtool = shutil.which("promtool")
    q = Queue(tmp_path / "q.db")
    q.dock_camera("CAM1", source="watch", bay="usb-0:1.2")
    c, _ = q.discover("CAM1", "DCIM/a.mp4", 1234, 5)
    m = Metrics(q, tmp_path)
    m.offload_bytes.inc(1234)
    m.upload_errors.labels("transient").inc()
    text = m.exposition().decode()
    assert 'dockd_clips{state="discovered"} 1.0' in text
    assert 'dockd_clip_bytes{state="discovered"} 1234.0' in text
    assert 'dockd_camera_state{bay="usb-0:1.2",camera="CAM1",state="docked"} 1.0' in text
    assert "dockd_offload_bytes_total 1234.0" in text
    assert 'dockd_upload_errors_total{error_class="transient"} 1.0' in text
    assert "dockd_oldest_pending_clip_age_seconds" in text and "dockd_free_bytes" in text
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) not installed")
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _metrics_station(tmp_path: Path, listen: str) -> Path:
    watch = tmp_path / "watch"
    watch.mkdir()
    return station_config(tmp_path / "dockd.toml", data_dir=tmp_path / "data", station_id="st-metrics",
                          sources={"watch_dirs": [str(watch)], "drop_privileges": False}, metrics={"listen": listen})


def test_daemon_serves_metrics_on_loopback_only(tmp_path):
    """``dockd run`` with ``[metrics] listen = "127.0.0.1:0"``: the daemon's own listening sockets (read from
    /proc, what ``ss -ltnp`` shows) are on 127.0.0.1 and nowhere else, and serve the exposition."""
    cfg = _metrics_station(tmp_path, "127.0.0.1:0")
    log = tmp_path / "dockd.log"
    with open(log, "ab") as out:
        p = subprocess.Popen([*dockd_argv(), "--config", str(cfg), "run"], env=dockd_env(), stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        try:
            socks = wait_for(lambda: p.poll() is None and listening_sockets(p.pid), 30, "no listening socket")
        except TimeoutError:
            raise AssertionError(f"no listening socket from dockd run: {log.read_text()}") from None
        assert p.poll() is None, log.read_text()
        assert [ip for ip, _port in socks] == ["127.0.0.1"], socks
        port = socks[0][1]
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "dockd_clips" in body
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, log.read_text()


def test_metrics_listen_rule_for_all_interfaces(tmp_path):
    """What config.py's rule is today: ``listen`` must be HOST:PORT or empty; any host, 0.0.0.0 included,
    is accepted and kept as written (nothing rewrites it to loopback); a value without a port is refused."""
    def with_listen(listen: str) -> Path:
        return station_config(tmp_path / "dockd.toml", data_dir=tmp_path / "data", metrics={"listen": listen})

    cfg = config_mod.load(with_listen("0.0.0.0:9464"))
    assert cfg.metrics.listen == "0.0.0.0:9464"
    r = run_dockd("status", "--json", config=with_listen("0.0.0.0"))
    assert r.returncode == 2, r
    assert r.stderr.splitlines() == [f"dockd: error: {tmp_path / 'dockd.toml'}: [metrics] listen: must be "
                                     "HOST:PORT or empty, got '0.0.0.0'"], r.stderr


# ------------------------------------------------------------------ audit heads and segments


def test_signed_heads_detect_truncated_tail(tmp_path):
    d = tmp_path / "data"
    key, _ = keys.load_or_create(d)
    q = Queue(tmp_path / "q.db")
    for i in range(5):
        q.record("test.event", detail={"i": i})
    st = signed_head(q, key, "st", now=1_800_000_000.0)
    assert st["seq"] == 5 and check_heads(q, key.public) is None
    assert signed_head(q, key, "st", now=1_800_000_001.0) is None  # unchanged head is not re-signed
    con = sqlite3.connect(tmp_path / "q.db")
    con.execute("DELETE FROM audit WHERE seq >= 4")
    con.commit()
    con.close()
    assert q.verify_audit()[1] is None  # the shortened chain is internally consistent...
    bad = check_heads(q, key.public)  # ...but the signed head catches it
    assert bad is not None and bad[0] == 5 and "ends before" in bad[1]


def test_daily_audit_segment_exported_and_checkable_offline(tmp_path, s3env, bucket):
    d = tmp_path / "data"
    key, _ = keys.load_or_create(d)
    cfg = config_mod.load(base_config(tmp_path, s3env, bucket))
    q = Queue(tmp_path / "q.db")
    day1 = datetime(2026, 11, 19, 10, tzinfo=UTC).timestamp()
    day2 = datetime(2026, 11, 20, 9, tzinfo=UTC).timestamp()
    for i in range(3):
        q.record("test.day1", detail={"i": i}, now=day1 + i)
    q.record("test.day2", now=day2)
    backend = open_backend(cfg.storage)
    today = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()
    assert export_days(q, backend, key, "st-ops", "ops", now=today) == ["2026-11-19"]
    assert export_days(q, backend, key, "st-ops", "ops", now=today) == []  # once per day
    s3 = s3env.client()
    lines = s3.get_object(Bucket=bucket, Key="ops/st-ops/_audit/2026-11-19.jsonl")["Body"].read()
    head = json.loads(s3.get_object(Bucket=bucket, Key="ops/st-ops/_audit/2026-11-19.head.json")["Body"].read())
    assert head["rows"] == 3 and head["first_seq"] == 1
    ok, why = check_segment(lines, head, key.public)
    assert ok, why
    tampered = lines.replace(b'"i": 1', b'"i": 7')
    ok, why = check_segment(tampered, dict(head, sha256=__import__("hashlib").sha256(tampered).hexdigest()),
                            key.public)
    assert not ok  # re-hashed bytes no longer match the signed head
    assert any(r["event"] == "audit.exported" for r in q.audit_rows())


def _watched_station(tmp_path: Path) -> tuple[Path, config_mod.Config]:
    d = tmp_path / "data"
    p = station_config(tmp_path / "dockd.toml", data_dir=d, station_id="st-watch", metrics={"listen": ""})
    cfg = config_mod.load(p)
    d.mkdir(mode=0o700)
    q = Queue(d / "queue.db")
    q.dock_camera("CAM9", source="udev", bay="usb-0:1.4")
    q.discover("CAM9", "DCIM/x.mp4", 10, 1)
    q.close()
    return p, cfg


def test_status_watch_view_shows_bays_and_summary(tmp_path):
    """``live_view`` is what ``status --watch`` refreshes: the bays table and the summary under it."""
    from io import StringIO

    from rich.console import Console

    from dockd.cli import render

    _p, cfg = _watched_station(tmp_path)
    q = Queue(cfg.data_dir / "queue.db")
    try:
        buf = StringIO()
        Console(file=buf, width=160).print(render.live_view(render.status_dict(cfg, q)))
    finally:
        q.close()
    out = buf.getvalue()
    assert "station st-watch" in out
    [row] = [line for line in out.splitlines() if "CAM9" in line]
    assert "usb-0:1.4" in row and "docked" in row and "1 / 0 / 0 / 0" in row
    assert "daemon: not running" in out
    assert "queue: discovered 1  copying 0" in out


def test_status_watch_command_in_a_terminal(tmp_path):
    """``dockd status --watch`` on a pseudo-terminal draws the live view, and Ctrl-C leaves it."""
    import pty
    import re

    p, _cfg = _watched_station(tmp_path)
    master, slave = pty.openpty()
    env = dockd_env({"COLUMNS": "160", "LINES": "40", "TERM": "xterm", "PYTHONFAULTHANDLER": "1"})
    proc = subprocess.Popen([*dockd_argv(), "--config", str(p), "status", "--watch"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = bytearray()

    def screen() -> str:
        import select

        while select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen.extend(chunk)
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))

    try:
        def drawn() -> str:
            s = screen()
            return s if "queue: discovered 1" in s and "CAM9" in s else ""

        try:
            out = wait_for(drawn, 30, "status --watch drew no view")
        except TimeoutError:
            raise AssertionError(f"status --watch drew no view: {bytes(seen)!r}") from None
        assert "usb-0:1.4" in out and "station st-watch" in out
        assert proc.poll() is None  # still live
        proc.send_signal(signal.SIGINT)
        # keep reading: the view's last refresh must not block on a full terminal
        try:
            wait_for(lambda: screen() is not None and proc.poll() is not None, 60, "status --watch ignored Ctrl-C")
        except TimeoutError:
            proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack onto the terminal
            wait_for(lambda: screen() is not None and proc.poll() is not None, 30, "no stacks")
            raise AssertionError(f"status --watch ignored Ctrl-C; its stacks:\n{screen()[-8000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        os.close(master)
