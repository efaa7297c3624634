"""``dockd doctor``: one line per check, with what to do when it fails."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path

from dockd import config as config_mod
from dockd.camera import privileges
from dockd.core.errors import DockdError
from dockd.evidence import keys

UDEV_RULE = Path("/etc/udev/rules.d/70-dockd.rules")


def _r(name: str, ok: bool, detail: str, fix: str = "") -> dict:
    return {"check": name, "ok": ok, "detail": detail, "fix": "" if ok else fix}


def run_checks(config_path: str | None) -> list[dict]:
    out: list[dict] = []
    try:
        cfg = config_mod.load(config_path)
    except DockdError as e:
        return [_r("config", False, str(e), "fix the named key in the config file")]
    out.append(_r("config", True, f"{cfg.path} is valid"))

    d = cfg.data_dir
    try:
        st = os.stat(d, follow_symlinks=False)
        # Its owner is whoever runs dockd: this process, or the user the daemon switches to.
        owners = {os.geteuid()}
        if cfg.sources.drop_privileges and (user := privileges.target_user(cfg.sources.user)):
            owners.add(user[0])
        safe = stat.S_ISDIR(st.st_mode) and st.st_uid in owners and not st.st_mode & 0o022
        out.append(_r("data_dir", safe, f"{d} owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}",
                      f"chown the data dir to the dockd user and chmod 0700 {d}"))
    except FileNotFoundError:
        out.append(_r("data_dir", False, f"{d} does not exist", f"run scripts/install or mkdir -m 0700 {d}"))
        return out

    try:
        k = keys.load(d)
        out.append(_r("station_key", True, f"{k.key_id}, mode 0600"))
    except DockdError as e:
        out.append(_r("station_key", False, str(e), "start dockd once to create it; restore it from backup if lost"))
    else:
        from dockd.trust.store import station_status

        t = station_status(cfg)
        out.append(_r("enrolment", t["enrolled"], t["detail"],
                      "send `dockd keys request` to the agency's trust administrator, then `dockd keys install "
                      "storage` (ingest goes on meanwhile; manifests name the key id)"))

    from dockd.queue.store import MIGRATIONS, Queue, queue_path

    qp = queue_path(cfg.data_dir)
    if qp.exists():
        try:
            q = Queue(qp, migrate=False)
            v = q.schema_version()
            latest = MIGRATIONS[-1][0]
            out.append(_r("queue", v == latest, f"{qp} schema v{v} (current v{latest})",
                          "run `dockd run` once to migrate the queue"))
            q.close()
        except Exception as e:  # noqa: BLE001 - any failure to open the queue is this check's finding
            out.append(_r("queue", False, f"{qp}: {e}", "check the file; restore from backup"))
    else:
        out.append(_r("queue", False, f"{qp} does not exist yet", "start dockd once"))

    if cfg.storage is None:
        out.append(_r("storage", False, "no [storage] configured: clips are never wiped",
                      "add a [storage] section with url (s3://bucket/prefix or file:///path)"))
    else:
        out += _storage_checks(cfg, cfg.storage)

    free = shutil.disk_usage(d).free
    need = cfg.offload.reserve_free_mb << 20
    out.append(_r("free_space", free > need, f"{free >> 20} MiB free, reserve {need >> 20} MiB",
                  "free space on the data dir's disk or lower [offload] reserve_free_mb"))

    if cfg.sources.udev:
        out.append(_r("udev_rule", UDEV_RULE.exists(), str(UDEV_RULE),
                      "install udev-rules/70-dockd.rules with scripts/install and run udevadm control --reload"))

    td = shutil.which("timedatectl")
    if td:
        try:
            r = subprocess.run([td, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True,
                               timeout=10)
            if r.returncode == 0 and r.stdout.strip() in ("yes", "no"):
                out.append(_r("clock", r.stdout.strip() == "yes", f"NTPSynchronized={r.stdout.strip()}",
                              "enable time sync (systemd-timesyncd or chrony); S3 refuses skewed clocks"))
        except (OSError, subprocess.TimeoutExpired):
            pass
    return out


def _storage_checks(cfg: config_mod.Config, storage: config_mod.StorageConfig) -> list[dict]:
    from dockd.storage import open_backend
    from dockd.storage.base import StoreFailure

    out = []
    try:
        b = open_backend(storage)
        b.check()
        out.append(_r("storage", True, f"{storage.url} reachable"))
    except StoreFailure as e:
        return [_r("storage", False, f"{storage.url}: {e}", "check endpoint, bucket name and credentials")]
    key = "/".join(p for p in (storage.prefix, cfg.station.id, "_doctor", f"probe-{uuid.uuid4().hex}") if p)
    data = f"dockd doctor probe {time.time()}".encode()
    import hashlib

    try:
        b.put_bytes(key, data, hashlib.sha256(data).hexdigest())
        got, n = b.read_sha256(key)
        ok = got == hashlib.sha256(data).hexdigest() and n == len(data)
        try:
            b.delete(key)
        except StoreFailure:
            pass
        out.append(_r("storage_probe", ok, f"wrote, read back{' and deleted' if ok else ''} {key}",
                      "the storage returned different bytes: investigate before trusting it"))
    except StoreFailure as e:
        out.append(_r("storage_probe", False, f"probe object: {e}", "grant s3:PutObject/GetObject on the prefix"))
    if storage.object_lock_days or storage.legal_hold:
        try:
            ok = b.lock_enforced()
        except StoreFailure:
            ok = False
        out.append(_r("object_lock", ok, "bucket enforces Object Lock" if ok else "bucket does NOT enforce Object Lock",
                      "create the bucket with Object Lock enabled; dockd refuses to wipe until then"))
    return out
