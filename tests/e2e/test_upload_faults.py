"""Uploads through a hostile network and a dying server or daemon (REAL SeaweedFS).

* Through :class:`tests.support.faultproxy.FaultProxy` (resets, lost answers,
  stalls longer than the client timeout, truncated answers, 503 SlowDown):
  every clip ends ``uploaded`` exactly once, its object downloads to the
  recorded SHA-256, no stray or duplicate object exists, and no multipart
  upload is left behind.
* SeaweedFS killed (SIGKILL) and restarted in the middle of a multipart
  upload (a server of its own, not the session one).
* ``kill -9`` of ``dockd run`` in the middle of a multipart upload, then
  ``dockd run --drain``: every clip uploaded and wiped exactly once, the
  multipart upload resumed (not restarted), nothing wiped before its upload
  was verified.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dockd.core.lifecycle import ClipState
from dockd.queue.store import Queue
from dockd.station.uploader import Uploader
from dockd.storage import open_backend
from tests.support.cli import dockd_argv
from tests.support.faultproxy import FaultProxy
from tests.support.uploads import Clock, drain, make_camera, make_config, remote_sha256, s3_storage, stage, write_config

MiB = 1 << 20
PART = r"partNumber="
CREATE = r"\?uploads(=|$|&)"
COMPLETE = r"\?uploadId="
SINGLE_PUT = r"^(?!.*partNumber=).*\.mp4$"

SCENARIOS = {
    "resets": [
        dict(kind="reset", count=2, method="PUT", match=PART),
        dict(kind="reset", count=1, method="PUT", match=SINGLE_PUT),
        dict(kind="reset", count=2, method="HEAD"),
        dict(kind="reset", count=2, per="connection"),
    ],
    "lost-answers": [
        dict(kind="reset_after", count=1, method="POST", match=CREATE),
        dict(kind="reset_after", count=2, method="PUT", match=PART),
        dict(kind="reset_after", count=1, method="POST", match=COMPLETE),
        dict(kind="reset_after", count=1, method="PUT", match=SINGLE_PUT),
        dict(kind="reset_after", count=1, method="PUT", match=r"manifest\.json$"),
    ],
    "stalls": [
        dict(kind="stall", count=1, method="PUT", match=PART, stall_s=3.0),
        dict(kind="stall", count=1, method="HEAD", stall_s=3.0),
        dict(kind="stall", count=1, method="POST", match=COMPLETE, stall_s=3.0),
        dict(kind="stall", count=1, per="connection", stall_s=3.0),
    ],
    "truncation": [
        dict(kind="truncate", count=2, method="HEAD"),
        dict(kind="truncate", count=2, method="GET", match=r"\.mp4$"),  # verify_after_upload = "read"
        dict(kind="truncate", count=1, method="PUT", match=PART),
        # three 503s on Complete end an attempt; the next one resumes: ListParts, cut off
        dict(kind="slowdown", count=3, method="POST", match=COMPLETE),
        dict(kind="truncate", count=1, method="GET", match=r"uploadId="),
    ],
    "slowdown": [
        dict(kind="slowdown", count=4),
        dict(kind="slowdown", count=3, method="PUT", match=PART),
        dict(kind="slowdown", count=1, method="POST", match=COMPLETE),
    ],
}


def check_settled(queue: Queue, clips, client, bucket: str) -> None:
    """Every clip uploaded exactly once, verified by download; nothing stray or left over."""
    expected = set()
    for c in clips:
        cur = queue.clip(c.id)
        assert cur.state in (ClipState.UPLOADED, ClipState.WIPED), (cur.state, cur.last_error)
        assert remote_sha256(client, bucket, c.object_key) == c.sha256
        assert len([r for r in queue.audit_rows(clip=c.id) if r["event"] == "clip.uploaded"]) == 1
        expected |= {c.object_key, c.object_key + ".manifest.json"}
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert sorted(listed) == sorted(expected)  # no duplicates, no strays
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    n, bad = queue.verify_audit()
    assert bad is None


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_faults_between_uploader_and_storage(tmp_path, s3env, bucket, scenario):
    client = s3env.client()
    with FaultProxy(s3env.s3_port, lifetime_s=120, seed=len(scenario)) as proxy:
        storage = s3_storage(s3env, bucket, endpoint_url=proxy.endpoint_url, timeout_s=1.5,
                             multipart_threshold_mb=5, part_size_mb=5,
                             verify_after_upload="read" if scenario == "truncation" else "head")
        cfg = make_config(tmp_path, storage=storage,
                          upload={"max_attempts": 30, "backoff_initial_s": 1.0, "backoff_max_s": 8.0})
        cfg.data_dir.mkdir(parents=True)
        q = Queue(cfg.data_dir / "queue.db")
        clock = Clock()
        clips = stage(cfg, q, make_camera(tmp_path / "cams", [400_000, 12 * MiB, 6 * MiB]), clock)
        faults = [proxy.add(**f) for f in SCENARIOS[scenario]]
        up = Uploader(cfg, q, open_backend(cfg.storage), owner="t", clock=clock)
        drain(up, q, clock)
        trace = "\n".join(f"{r.method} {r.target[-70:]} {r.status} {r.fault or ''}" for r in proxy.requests())
        for f in faults:  # every planned fault really happened
            assert f.fired == f.count, f"{f}\n{trace}"
    check_settled(q, clips, client, bucket)
    q.close()


@pytest.mark.slow
def test_chaos_mix_of_faults(tmp_path, s3env, bucket):
    client = s3env.client()
    with FaultProxy(s3env.s3_port, lifetime_s=150, seed=42) as proxy:
        storage = s3_storage(s3env, bucket, endpoint_url=proxy.endpoint_url, timeout_s=1.5,
                             multipart_threshold_mb=5, part_size_mb=5)
        cfg = make_config(tmp_path, storage=storage,
                          upload={"max_attempts": 40, "backoff_initial_s": 1.0, "backoff_max_s": 8.0})
        cfg.data_dir.mkdir(parents=True)
        q = Queue(cfg.data_dir / "queue.db")
        clock = Clock()
        clips = stage(cfg, q, make_camera(tmp_path / "cams", [100_000, 200_000, 11 * MiB, 16 * MiB]), clock)
        for kind in ("reset", "reset_after", "truncate", "slowdown"):
            proxy.add(kind, count=4, chance=0.12)
        proxy.add("stall", count=2, chance=0.05, stall_s=2.5)
        up = Uploader(cfg, q, open_backend(cfg.storage), owner="t", clock=clock)
        drain(up, q, clock, max_steps=400)
        assert proxy.fired() >= 5
    check_settled(q, clips, client, bucket)
    q.close()


# ------------------------------------------------------------------ the server dies mid-upload


@pytest.mark.slow
def test_seaweedfs_killed_and_restarted_mid_upload(tmp_path, own_seaweed, monkeypatch):
    for k, v in own_seaweed.env().items():
        monkeypatch.setenv(k, v)
    bucket = own_seaweed.create_bucket("restart-evidence")
    storage = s3_storage(own_seaweed, bucket, timeout_s=2.0, multipart_threshold_mb=5, part_size_mb=5)
    # 40 Mbit/s: the 22 MiB clip takes ~4.6 s, long enough to kill the server in the middle.
    cfg = make_config(tmp_path, storage=storage, upload={"max_attempts": 60, "backoff_initial_s": 0.5,
                                                         "backoff_max_s": 2.0, "bandwidth_limit_mbps": 40.0})
    cfg.data_dir.mkdir(parents=True)
    q = Queue(cfg.data_dir / "queue.db")
    clock = Clock()
    clips = stage(cfg, q, make_camera(tmp_path / "cams", [22 * MiB, 300_000]), clock)
    big = clips[0]
    up = Uploader(cfg, q, open_backend(cfg.storage), owner="t", clock=clock)
    errors: list[BaseException] = []

    def work():
        try:
            drain(up, q, clock, max_steps=400)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    t = threading.Thread(target=work, name="uploader")
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until parts are on the server and in the ledger
        cur = q.clip(big.id)
        if cur.upload_id and q.parts(big.id, cur.upload_id):
            break
        time.sleep(0.05)
    else:
        pytest.fail("multipart upload never started")
    assert q.clip(big.id).state is ClipState.UPLOADING
    own_seaweed.restart(hard=True, downtime=1.5)  # from the main thread (PDEATHSIG follows the starter)
    t.join(timeout=120)
    assert not t.is_alive() and not errors, errors
    attempts = q.clip(big.id).attempts
    assert attempts >= 1  # the outage really hit this upload
    check_settled(q, clips, own_seaweed.client(), bucket)
    q.close()


# ------------------------------------------------------------------ the daemon dies mid-upload


def _daemon_config(tmp_path: Path, seaweed, bucket: str, watch: Path, **upload) -> Path:
    sections = {
        "station": {"id": "st1", "data_dir": str(tmp_path / "data")},
        "storage": s3_storage(seaweed, bucket, multipart_threshold_mb=5, part_size_mb=5, concurrency=2,
                              timeout_s=10.0),
        "upload": {"backoff_initial_s": 0.5, "backoff_max_s": 2.0, "max_attempts": 20, **upload},
        "sources": {"watch_dirs": [str(watch)]},
        "offload": {"reserve_free_mb": 0},
        "metrics": {"listen": ""},
        "audit": {"part_interval_s": 0},  # the bucket holds the clips and manifests only (check_settled)
    }
    return write_config(tmp_path / "dockd.toml", sections)


def _dockd(cfg_path: Path, *args: str, env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*dockd_argv(), "--config", str(cfg_path), "run", *args], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_kill_9_daemon_mid_multipart_then_drain(tmp_path, s3env, bucket):
    client = s3env.client()
    watch = tmp_path / "watch"
    cam = make_camera(watch, [40 * MiB, 200_000, 300_000])
    on_camera = sorted(str(p.relative_to(cam)) for p in cam.rglob("*.MP4"))
    env = {**os.environ, **s3env.env()}
    log = tmp_path / "dockd.log"
    cfg_path = _daemon_config(tmp_path, s3env, bucket, watch, bandwidth_limit_mbps=40.0)  # ~8.4 s for 40 MiB
    qpath = tmp_path / "data" / "queue.db"

    proc = _dockd(cfg_path, env=env, log=log)
    big_id = upload_id = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if qpath.exists():
                q = Queue(qpath, migrate=False)
                try:
                    big = [c for c in q.clips(camera="CAM1") if c.size == 40 * MiB]
                    if big and big[0].upload_id and len(q.parts(big[0].id, big[0].upload_id)) >= 2:
                        big_id, upload_id = big[0].id, big[0].upload_id
                        break
                except Exception:  # noqa: BLE001 - schema not there yet
                    pass
                finally:
                    q.close()
            time.sleep(0.05)
        assert big_id is not None, f"no multipart progress seen; log:\n{log.read_text()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    q = Queue(qpath)
    killed = q.clip(big_id)
    assert killed.state is ClipState.UPLOADING and killed.upload_id == upload_id
    assert (cam / killed.path).exists()  # not uploaded, so certainly not wiped
    assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == [upload_id]
    q.close()

    drain_proc = _dockd(cfg_path, "--drain", env=env, log=log)
    try:
        rc = drain_proc.wait(timeout=120)
    finally:
        if drain_proc.poll() is None:
            os.kill(drain_proc.pid, signal.SIGKILL)
            drain_proc.wait(timeout=10)
    assert rc == 0, log.read_text()[-4000:]

    q = Queue(qpath)
    clips = q.clips(camera="CAM1")
    assert sorted(c.path for c in clips) == on_camera
    assert all(c.state is ClipState.WIPED for c in clips), [(c.path, c.state, c.last_error) for c in clips]
    assert list(cam.rglob("*.MP4")) == []  # wiped from the camera
    check_settled(q, clips, client, bucket)
    for c in clips:
        rows = q.audit_rows(clip=c.id)
        up = [r["seq"] for r in rows if r["event"] == "clip.uploaded"]
        wiped = [r["seq"] for r in rows if r["event"] == "clip.wiped"]
        assert len(up) == 1 and len(wiped) == 1 and up[0] < wiped[0]  # never wiped before verified
    # the big clip's multipart upload was resumed, not begun again
    started = [r for r in q.audit_rows(clip=big_id) if r["event"] == "upload.multipart_started"]
    assert [r["detail"]["upload_id"] for r in started] == [upload_id]
    events = [r["event"] for r in q.audit_rows()]
    assert events.count("daemon.started") == 2
    q.close()
