"""End to end through a watched directory: the real daemon (``python -m dockd``
in a subprocess), real ffmpeg clips, real SeaweedFS.

A simulated camera is a directory named by its serial holding
``DCIM/100MEDIA/CLIP000{1,2,3}.MP4`` (three distinct clips) and a GPS sidecar
of clip 1; it is docked by renaming it into ``[sources] watch_dirs``, either
while the daemon runs (hot plug) or before it starts (cold plug).

Proved here, from the outside only (CLI output, the bucket, the camera dir):

* every clip is in S3 at ``{prefix}/{station}/{serial}/{YYYY}/{MM}/{DD}/{sha256}.mp4``
  (date from the clip's mtime), and downloading it gives that SHA-256;
* its signed manifest is beside it and verifies against ``dockd keys show --pem``;
* the camera holds no clips afterwards, the camera is ``ready``, the queue says
  ``wiped`` for each clip, and ``dockd queue --json`` has the documented fields;
* nothing was wiped before its upload was verified: in the audit log every
  ``clip.uploaded`` precedes its ``clip.wiped`` (the proof), and a poller
  watching the camera dir during the hot-plug run HEADs the object (with its
  checksum) the moment a file vanishes (a live cross-check);
* without ``[storage]``, and with ``wipe = "never"``, nothing is ever deleted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.support.cli import dockd_argv, dockd_env, run_dockd
from tests.support.exfat import make_clip
from tests.support.seaweed import SeaweedServer
from tests.support.uploads import station_config

pytestmark = pytest.mark.slow

STATION = "e2e-station"
PREFIX = "e2e"
SERIAL = "CAM-0042"
MEDIA = "DCIM/100MEDIA"
CLIPS = [f"{MEDIA}/CLIP000{i}.MP4" for i in (1, 2, 3)]
SIDECAR = f"{MEDIA}/CLIP0001.GPS"
# Clip mtimes on the camera: a fixed past day, so the key's date is the clip's, not today's.
MTIME_NS = int(datetime(2024, 3, 5, 23, 59, 30, tzinfo=UTC).timestamp()) * 10**9
QUEUE_FIELDS = {"id", "camera", "path", "size", "sha256", "state", "attempts", "last_error", "object_key"}


def sha256_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def b64(hexdigest: str) -> str:
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


def key_of(sha: str, ext: str = ".mp4") -> str:
    return f"{PREFIX}/{STATION}/{SERIAL}/2024/03/05/{sha}{ext}"


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> list[Path]:
    """Three real MP4s with different content (1, 2 and 3 seconds of testsrc)."""
    d = tmp_path_factory.mktemp("clips")
    files = [make_clip(d / f"c{i}.mp4", seconds=i) for i in (1, 2, 3)]
    assert len({sha256_file(f) for f in files}) == 3, "clips must differ (content-addressed keys)"
    return files


class WatchStation:
    """A daemon's station: a config, a data dir, a watch dir and a camera prepared beside it (the offloader-only
    station of the unit tier is tests/support/offloader_helpers.Station)."""

    def __init__(self, tmp: Path, seaweed: SeaweedServer | None, bucket: str | None, clip_files: list[Path],
                 wipe: str | None = None):
        self.tmp, self.seaweed, self.bucket = tmp, seaweed, bucket
        self.data = tmp / "data"
        self.watch = tmp / "dock"
        self.prep = tmp / "prep" / SERIAL
        self.cam = self.watch / SERIAL  # where the camera is once docked
        self.cfg = tmp / "dockd.toml"
        self.log = tmp / "dockd.log"
        self.watch.mkdir()
        storage = seaweed and bucket
        station_config(self.cfg, data_dir=self.data, station_id=STATION, sources={"watch_dirs": [str(self.watch)]},
                       offload={"sidecar_globs": [f"{MEDIA}/*.GPS"], **({"wipe": wipe} if wipe else {})},
                       metrics={"listen": ""},
                       storage={"url": f"s3://{bucket}/{PREFIX}", "endpoint_url": seaweed.endpoint_url,
                                "region": seaweed.region} if storage else None,
                       upload={"backoff_initial_s": 0.2} if storage else None)
        # The camera: three clips and a sidecar, mtimes on a fixed day.
        self.files: dict[str, str] = {}  # camera path -> sha256
        for rel, src in zip(CLIPS, clip_files, strict=True):
            dst = self.prep / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        (self.prep / SIDECAR).write_text("$GPRMC,235930,A,5130.000,N,00007.000,W,0.0,0.0,050324,,*00\n")
        for rel in [*CLIPS, SIDECAR]:
            os.utime(self.prep / rel, ns=(MTIME_NS, MTIME_NS))
            self.files[rel] = sha256_file(self.prep / rel)
        self.env = dockd_env()
        if seaweed:
            self.env.update(AWS_ACCESS_KEY_ID=seaweed.access_key, AWS_SECRET_ACCESS_KEY=seaweed.secret_key,
                            AWS_DEFAULT_REGION=seaweed.region, AWS_EC2_METADATA_DISABLED="true",
                            AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)

    # -- the daemon and the CLI

    def argv(self, *args: str) -> list[str]:
        return [*dockd_argv(), "--config", str(self.cfg), *args]

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
        r = run_dockd(*args, config=self.cfg, env=self.env)
        if ok:
            assert r.returncode == 0, f"dockd {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def json(self, *args: str):
        return json.loads(self.cli(*args, "--json").stdout)

    def drain(self) -> subprocess.CompletedProcess:
        """``dockd run --drain`` to the end; its log lines go to self.log."""
        with open(self.log, "ab") as out:
            r = subprocess.run(self.argv("run", "--drain"), env=self.env, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=90)
        return r

    def dock(self) -> None:
        os.rename(self.prep, self.cam)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def audit(self) -> list[dict]:
        out = self.cli("audit", "--json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def camera(self) -> dict:
        cams = {c["serial"]: c for c in self.json("status")["cameras"]}
        assert SERIAL in cams, cams
        return cams[SERIAL]


class WipeWatcher(threading.Thread):
    """Watches the docked camera's files; when one vanishes, HEADs its object at once.

    ``results[path]`` is (object held the right checksum, detail). Objects are
    never deleted, so this is a cross-check sampled within milliseconds of the
    deletion; the proof of order is the audit log.
    """

    def __init__(self, st: WatchStation, expected: dict[str, tuple[str, str, int]]):
        super().__init__(name="wipe-watcher", daemon=True)
        self.root, self.bucket, self.expected = st.cam, st.bucket, expected  # path -> (key, sha256, size)
        self.client = st.seaweed.client()
        self.seen: set[str] = set()
        self.results: dict[str, tuple[bool, str]] = {}
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def _head(self, key: str, sha: str, size: int) -> tuple[bool, str]:
        try:
            h = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as e:
            return False, f"HEAD {key}: {e.response['Error'].get('Code')}"
        got = (h.get("ChecksumSHA256"), h["ContentLength"])
        return got == (b64(sha), size), f"HEAD {key}: checksum {got[0]}, {got[1]} bytes"

    def run(self) -> None:
        try:
            while not self.halt.is_set() and len(self.results) < len(self.expected):
                for rel, (key, sha, size) in self.expected.items():
                    if rel in self.results:
                        continue
                    if os.path.lexists(self.root / rel):
                        self.seen.add(rel)
                    elif rel in self.seen:  # was on the docked camera, now gone
                        self.results[rel] = self._head(key, sha, size)
                self.halt.wait(0.002)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


# ----------------------------------------------------------------- checks


def expected_objects(st: WatchStation) -> dict[str, tuple[str, str, int]]:
    """Camera path -> (object key, sha256, size) for each clip and the sidecar."""
    out = {rel: (key_of(st.files[rel]), st.files[rel], (st.prep / rel).stat().st_size) for rel in CLIPS}
    out[SIDECAR] = (key_of(st.files[SIDECAR], ".gps"), st.files[SIDECAR], (st.prep / SIDECAR).stat().st_size)
    return out


def assert_stored(st: WatchStation, objects: dict[str, tuple[str, str, int]]) -> None:
    """Each object is in the bucket under its key; reading it back gives the recorded SHA-256;
    each clip's manifest is there and verifies with the station's public key."""
    s3 = st.seaweed.client()
    pem = st.tmp / "station.pub.pem"
    pem.write_text(st.cli("keys", "show", "--pem").stdout)
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=st.bucket).get("Contents", [])}
    down = st.tmp / "download"
    down.mkdir(exist_ok=True)
    for rel, (key, sha, size) in objects.items():
        assert key in listed, f"{rel}: no object {key} in {sorted(listed)}"
        body = s3.get_object(Bucket=st.bucket, Key=key)["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (size, sha), f"{key}: stored bytes differ"
        if rel == SIDECAR:
            continue
        clip = down / Path(key).name
        clip.write_bytes(body)
        manifest = down / (Path(key).name + ".manifest.json")
        manifest.write_bytes(s3.get_object(Bucket=st.bucket, Key=key + ".manifest.json")["Body"].read())
        m = json.loads(manifest.read_bytes())
        assert (m["clip"]["sha256"], m["clip"]["size"]) == (sha, size)
        r = st.cli("manifest", "verify", "--pubkey", str(pem), "--clip", str(clip), str(manifest))
        assert "valid" in r.stdout


def assert_wiped_after_upload(st: WatchStation, objects: dict[str, tuple[str, str, int]]) -> None:
    """The end state of a docked camera whose clips all went to storage."""
    # The camera holds nothing dockd offloaded (the directory itself stays: it is the volume).
    assert st.cam.is_dir()
    left = sorted(str(p.relative_to(st.cam)) for p in st.cam.rglob("*") if p.is_file())
    assert left == [], f"files left on the camera: {left}"

    status = st.json("status")
    cams = {c["serial"]: c for c in status["cameras"]}
    assert cams[SERIAL]["state"] == "ready", cams[SERIAL]
    assert status["queue"]["wiped"] == 3, status["queue"]
    assert sum(status["queue"].values()) == 3, status["queue"]

    rows = st.json("queue")
    assert len(rows) == 3
    for row in rows:
        assert QUEUE_FIELDS <= set(row), f"missing fields: {QUEUE_FIELDS - set(row)}"
        key, sha, size = objects[row["path"]]
        assert (row["camera"], row["state"], row["sha256"], row["size"], row["object_key"]) == \
            (SERIAL, "wiped", sha, size, key)
        assert row["attempts"] == 0 and row["last_error"] is None, row
    assert sorted(r["path"] for r in rows) == CLIPS

    # Order, from the hash-chained audit log: verified upload first, then the wipe.
    audit = st.audit()
    assert [r["seq"] for r in audit] == sorted(r["seq"] for r in audit)
    for row in rows:
        ev = {r["event"]: r for r in audit if r["clip"] == row["id"]}
        assert "clip.uploaded" in ev and "clip.wiped" in ev, sorted(ev)
        assert ev["clip.uploaded"]["seq"] < ev["clip.wiped"]["seq"], (row["path"], ev)
        assert ev["clip.wiped"]["detail"]["receipt"]["sha256"] == row["sha256"]
    assert "audit chain intact" in st.cli("audit", "--verify").stdout

    assert_stored(st, objects)


# ----------------------------------------------------------------- tests


def test_hot_plug_offloads_uploads_verifies_then_wipes(tmp_path, seaweed, bucket, clip_files):
    st = WatchStation(tmp_path, seaweed, bucket, clip_files)
    objects = expected_objects(st)
    with open(st.log, "wb") as out:
        proc = subprocess.Popen(st.argv("run"), env=st.env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    watcher = WipeWatcher(st, objects)
    try:
        deadline = time.monotonic() + 60
        while '"dockd running"' not in st.log_text():  # logged once the watch dirs are armed
            assert proc.poll() is None, f"daemon exited with {proc.returncode}:\n{st.log_text()}"
            assert time.monotonic() < deadline, f"daemon not running after 60 s:\n{st.log_text()}"
            time.sleep(0.05)
        watcher.start()
        st.dock()  # hot plug: the camera appears while the daemon watches

        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"daemon exited with {proc.returncode}:\n{st.log_text()}"
            status = st.json("status")
            cam = {c["serial"]: c for c in status["cameras"]}.get(SERIAL)
            if cam and cam["state"] == "ready" and status["queue"]["wiped"] == 3:
                break
            assert not (cam and cam["state"] in ("attention", "error")), (cam, st.log_text())
            assert time.monotonic() < deadline, f"not done after 120 s: {status}\n{st.log_text()}"
            time.sleep(0.3)
        assert status["daemon"]["running"] is True
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        watcher.halt.set()
        watcher.join(timeout=10)
    assert rc == 0, f"daemon exit code {rc}:\n{st.log_text()}"
    assert watcher.error is None, watcher.error

    # Live cross-check: every file was seen on the docked camera, and when it
    # vanished its object with the right checksum was already in storage.
    assert watcher.seen == set(objects), watcher.seen
    assert set(watcher.results) == set(objects), watcher.results
    early = {rel: detail for rel, (ok, detail) in watcher.results.items() if not ok}
    assert not early, f"wiped before the object was verifiably stored: {early}"

    assert_wiped_after_upload(st, objects)
    assert "Traceback" not in st.log_text()


def test_cold_plug_drain(tmp_path, seaweed, bucket, clip_files):
    st = WatchStation(tmp_path, seaweed, bucket, clip_files)
    objects = expected_objects(st)
    st.dock()  # docked before the daemon starts: found by the start-up scan
    r = st.drain()
    assert r.returncode == 0, st.log_text()
    assert_wiped_after_upload(st, objects)
    cam = st.camera()
    assert (cam["bay"], cam["source"], cam["docked"]) == ("dir:dock", "watch", True)

    # Docked again with nothing on it: a second drain finds nothing, uploads nothing, stays ready.
    assert st.drain().returncode == 0, st.log_text()
    assert st.json("status")["queue"]["wiped"] == 3
    assert st.camera()["state"] == "ready"


def _assert_held(st: WatchStation) -> list[dict]:
    """Every file still on the camera, unchanged; camera holding; each clip has a verified staged copy
    or an object, and no wipe was ever recorded."""
    for rel, sha in st.files.items():
        assert sha256_file(st.cam / rel) == sha, f"{rel} changed on the camera"
    cam = st.camera()
    assert cam["state"] == "holding", cam
    rows = st.json("queue")
    assert sorted(r["path"] for r in rows) == CLIPS
    for r in rows:
        assert r["sha256"] == st.files[r["path"]]
    events = {r["event"] for r in st.audit()}
    assert not {"clip.wiped", "wipe.refused"} & events, events
    return rows


def test_without_storage_offloads_and_queues_but_never_wipes(tmp_path, clip_files):
    st = WatchStation(tmp_path, None, None, clip_files)
    st.dock()
    r = st.drain()
    assert r.returncode == 0, st.log_text()
    rows = _assert_held(st)
    assert {x["state"] for x in rows} == {"staged"}
    assert st.json("status")["storage"]["url"] is None
    # The staged copies are the verified evidence: right bytes, signed manifest beside each.
    for x in rows:
        staged = Path(x["staged_path"])
        assert sha256_file(staged) == st.files[x["path"]]
        manifest = staged.with_name(f"{x['id']:010d}.manifest.json")
        out = st.cli("manifest", "verify", "--clip", str(staged), str(manifest)).stdout
        assert "valid" in out and x["sha256"] in out


def test_wipe_never_uploads_but_keeps_clips_on_camera(tmp_path, seaweed, bucket, clip_files):
    st = WatchStation(tmp_path, seaweed, bucket, clip_files, wipe="never")
    objects = expected_objects(st)
    st.dock()
    r = st.drain()
    assert r.returncode == 0, st.log_text()
    rows = _assert_held(st)
    assert {x["state"] for x in rows} == {"uploaded"}
    assert st.json("status")["queue"]["uploaded"] == 3
    assert_stored(st, objects)


def test_refused_wipe_leaves_camera_in_attention_and_drain_reports_it(tmp_path, seaweed, bucket, clip_files):
    """Object Lock configured but the bucket does not enforce it: uploads succeed, the wipe gate refuses,
    the camera ends ``attention`` with the reason, every file stays, and ``--drain`` exits 1 (no spin)."""
    st = WatchStation(tmp_path, seaweed, bucket, clip_files)
    st.cfg.write_text(st.cfg.read_text().replace(f'region = "{seaweed.region}"',
                                                 f'region = "{seaweed.region}"\nobject_lock_days = 1'))
    st.dock()
    r = st.drain()
    assert r.returncode == 1, st.log_text()
    for rel, sha in st.files.items():
        assert sha256_file(st.cam / rel) == sha, f"{rel} changed on the camera"
    cam = st.camera()
    assert cam["state"] == "attention" and "not wiped" in cam["reason"] and "Object Lock" in cam["reason"], cam
    assert {x["state"] for x in st.json("queue")} == {"uploaded"}
    assert "clip.wiped" not in {e["event"] for e in st.audit()}


@pytest.mark.parametrize("reachable", [True, False])
def test_status_reports_storage_reachability_seen_by_the_daemon(tmp_path, seaweed, bucket, clip_files, reachable):
    st = WatchStation(tmp_path, seaweed, bucket, clip_files)
    if not reachable:
        st.cfg.write_text(st.cfg.read_text().replace(seaweed.endpoint_url, "http://127.0.0.1:9"))
    assert st.json("status")["storage"]["reachable"] is None  # no daemon: nobody has looked
    with open(st.log, "ab") as out:
        p = subprocess.Popen(st.argv("run"), env=st.env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        sto = None
        while time.monotonic() < deadline:
            sto = st.json("status")["storage"]
            if sto["reachable"] is not None:
                break
            time.sleep(0.3)
        assert sto["reachable"] is reachable, (sto, st.log_text())
        assert (sto["error"] is None) is reachable
    finally:
        p.terminate()
        assert p.wait(timeout=30) == 0, st.log_text()
