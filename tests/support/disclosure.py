"""A disclosure world for tests: an agency root and trust log (published to a real SeaweedFS bucket), a
station whose real Offloader and Uploader put clips into storage and whose audit days are exported (or, with
``parts``, only the offload day's part segments: a same-day disclosure), and a discloser's key made with
``dockd keys new`` and enrolled with ``dockd trust enrol``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from dockd.evidence import keys
from dockd.queue.store import Queue
from dockd.station.auditlog import export_days
from dockd.station.auditparts import export_parts
from dockd.station.uploader import Uploader
from dockd.storage import open_backend
from dockd.trust import store as trustlog
from tests.support.cli import run_dockd
from tests.support.uploads import Clock, drain, make_camera, make_config, s3_storage, stage


class World:
    def __init__(self, tmp: Path, s3env, bucket: str, sizes: list[int], station: str = "st1", parts: bool = False):
        self.tmp, self.bucket, self.seaweed_client = tmp, bucket, s3env.client
        self.tdir, self.root_key = tmp / "trust", tmp / "root.ed25519"
        self.root_pub = self.tdir / "root.pub.pem"
        ok(run_dockd("trust", "init", "--agency", "Metro Police", "--root-key", self.root_key, "--dir", self.tdir))
        self.cfg = make_config(tmp, storage=s3_storage(s3env, bucket),
                               extra={"trust": {"root_pubkey": str(self.root_pub)}})
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "dockd.toml"
        # The station's key, requested before the clips are offloaded (the clock below is mid-2025).
        req, rp = trustlog.station_request(self.cfg.data_dir, "st1", "2025-01-01T00:00:00Z")
        self.station_key_id = req["key_id"]
        self.enrol(rp, "station", until="2027-01-01")
        self.discloser = self.person("Dana Discloser", "discloser")
        self.prosecutor = self.person("Pat Prosecutor", "recipient", "discloser")
        self.defence = self.person("Dee Defence", "recipient")
        self.publish()
        self.backend = open_backend(self.cfg.storage)
        self.queue = Queue(self.cfg.data_dir / "queue.db")
        clock = Clock()
        clips = stage(self.cfg, self.queue, make_camera(tmp / "cams", sizes), clock)
        key, _ = keys.load_or_create(self.cfg.data_dir)
        self.parts: list[str] = []
        if parts:  # part 1: the staging rows
            self.parts += export_parts(self.queue, self.backend, key, "st1", self.cfg.storage.prefix, clock())
        drain(Uploader(self.cfg, self.queue, self.backend, owner="t", clock=clock), self.queue, clock)
        if parts:  # the same day: part 2 the upload rows, part 3 a row about no clip; no day segment
            self.parts += export_parts(self.queue, self.backend, key, "st1", self.cfg.storage.prefix, clock())
            self.queue.record("test.note", detail={"n": 1}, now=clock())
            self.parts += export_parts(self.queue, self.backend, key, "st1", self.cfg.storage.prefix, clock())
            self.days = []
        else:
            later = clock() + 2 * 86400
            self.days = export_days(self.queue, self.backend, key, "st1", self.cfg.storage.prefix, now=later)
        self.object_keys = [c.object_key for c in self.queue.clips() if c.id in {x.id for x in clips}]
        self.queue.close()

    def enrol(self, request: Path, *roles: str, until: str = "2099-01-01") -> None:
        ok(run_dockd("trust", "enrol", request, "--root-key", self.root_key, "--dir", self.tdir,
                     *[a for r in roles for a in ("--role", r)], "--until", until, "--from", "2025-01-01T00:00:00Z"))

    def person(self, name: str, *roles: str) -> Path:
        key = self.tmp / f"{name.split()[0].lower()}.ed25519"
        req = self.tmp / f"{key.stem}.req.json"
        ok(run_dockd("keys", "new", "--name", name, "--key", key, "--out", req))
        self.enrol(req, *roles)
        return key

    def key_id(self, key: Path) -> str:
        return keys.key_id_of(trustlog.load_public(key.with_suffix(".pub.pem")))

    def publish(self) -> None:
        ok(run_dockd("trust", "publish", self.tdir, config=self.config))

    def create(self, out: Path, *extra: str, key: Path | None = None, clips: list[str] | None = None):
        args = ["disclose", "create", "--case", "2026-CR-0042", "--recipient", "County Prosecutor's Office",
                "--authority", "Discovery request DR-17", "--key", key or self.discloser, "--out", out]
        for k in self.object_keys if clips is None else clips:
            args += ["--clip", k]
        return run_dockd(*args, *extra, config=self.config)

    def verify(self, bag: Path, *extra: str):
        return run_dockd("disclose", "verify", bag, "--root", self.root_pub, *extra)

    def dockd(self, *args):
        return run_dockd(*args, config=self.config)


def world_in(seaweed, tmp_path_factory, name: str, sizes: list[int], **kw):
    """A module-scoped :class:`World` in a fresh bucket, with the SeaweedFS credentials in the environment
    (for the ``dockd`` subprocesses) while it lives: ``yield from world_in(...)`` in a fixture."""
    import pytest

    from tests.conftest import unique_name

    with pytest.MonkeyPatch.context() as mp:
        for k, v in seaweed.env().items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        bucket = seaweed.create_bucket(unique_name(name[:4]))
        yield World(tmp_path_factory.mktemp(name), seaweed, bucket, sizes, **kw)


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def load(p: Path):
    return json.loads(p.read_text())
