"""Operations: doctor (each check failing for its reason), metrics exposition, signed audit heads and
daily audit segments in central storage, and the live status view."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
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

DOCKD = [sys.executable, "-c", "import sys; from dockd.cli.main import entry; sys.argv[0] = 'dockd'; entry()"]


def write_config(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "dockd.toml"
    p.write_text(body)
    return p


@pytest.fixture
def s3env(seaweed, monkeypatch):
    for k, v in seaweed.env().items() if callable(getattr(seaweed, "env", None)) else seaweed.env.items():
        monkeypatch.setenv(k, v)
    return seaweed


def base_config(tmp_path: Path, seaweed, bucket: str, extra: str = "", storage_extra: str = "") -> Path:
    return write_config(tmp_path, f"""
[station]
id = "st-ops"
data_dir = "{tmp_path / 'data'}"
[storage]
url = "s3://{bucket}/ops"
endpoint_url = "{seaweed.endpoint_url}"
{storage_extra}
[offload]
reserve_free_mb = 1
[metrics]
listen = ""
{extra}
""")


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
    p = write_config(tmp_path, "[station]\nid = 'x'\nbogus = 1\n")
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
    p = prepared(tmp_path, s3env, bucket, storage_extra="object_lock_days = 1")
    r = by_check(run_checks(str(p)))
    assert not r["object_lock"]["ok"] and "does NOT enforce" in r["object_lock"]["detail"]


def test_doctor_object_lock_enforced(tmp_path, s3env, lock_bucket):
    p = prepared(tmp_path, s3env, lock_bucket, storage_extra="object_lock_days = 1")
    r = by_check(run_checks(str(p)))
    assert r["object_lock"]["ok"], r["object_lock"]


def test_doctor_free_space_below_reserve(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket)
    p.write_text(p.read_text().replace("reserve_free_mb = 1", "reserve_free_mb = 999999999"))
    r = by_check(run_checks(str(p)))
    assert not r["free_space"]["ok"]


def test_doctor_udev_rule(tmp_path, s3env, bucket):
    p = prepared(tmp_path, s3env, bucket, extra="[sources]\nudev = true")
    r = by_check(run_checks(str(p)))
    installed = Path("/etc/udev/rules.d/70-dockd.rules").exists()
    assert r["udev_rule"]["ok"] is installed


def test_doctor_no_storage_and_cli_exit(tmp_path):
    d = tmp_path / "data"
    p = write_config(tmp_path, f"[station]\nid = 's'\ndata_dir = '{d}'\n[metrics]\nlisten = ''\n")
    d.mkdir(mode=0o700)
    keys.load_or_create(d)
    Queue(d / "queue.db").close()
    out = subprocess.run(DOCKD + ["--config", str(p), "doctor", "--json"], capture_output=True, text=True)
    assert out.returncode == 1
    res = by_check(json.loads(out.stdout))
    assert not res["storage"]["ok"] and res["config"]["ok"] and res["station_key"]["ok"]
    txt = subprocess.run(DOCKD + ["--config", str(p), "doctor"], capture_output=True, text=True)
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


def test_metrics_served_on_loopback(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    q = Queue(tmp_path / "q.db")
    m = Metrics(q, tmp_path)
    m.serve(f"127.0.0.1:{port}")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "dockd_clips" in body
    finally:
        m.stop()


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


def test_status_watch_renders_once(tmp_path):
    from io import StringIO

    from rich.console import Console

    from dockd.cli import render

    d = tmp_path / "data"
    p = write_config(tmp_path, f"[station]\nid = 's'\ndata_dir = '{d}'\n")
    cfg = config_mod.load(p)
    d.mkdir()
    q = Queue(d / "queue.db")
    q.dock_camera("CAM9", source="udev", bay="usb-0:1.4")
    q.discover("CAM9", "DCIM/x.mp4", 10, 1)
    st = render.status_dict(cfg, q)
    buf = StringIO()
    con = Console(file=buf, width=140)
    con.print(render._cameras_table(st))
    out = buf.getvalue()
    assert "usb-0:1.4" in out and "CAM9" in out and "docked" in out
