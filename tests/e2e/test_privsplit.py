"""The daemon runs as an unprivileged user; only the mount helper stays root (with CAP_SYS_ADMIN only).

A throw-away system user stands in for ``dockd`` (``[sources] user``): the
daemon starts as root under a umockdev testbed, starts the helper, switches
uid/gid (no supplementary groups) and drops every capability. Proven with a
state hook, which runs with the daemon's credentials exactly (checked against
/proc): it cannot open the camera's block device for writing nor read a
root-only file, while the daemon still offloads, uploads to SeaweedFS and
wipes the camera (the helper mounts it with the daemon user as the owner of
every file). A data dir that the user does not own is refused with one line.

Root only (real mounts, loop devices, /dev/fuse, useradd).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from dockd.camera import privileges
from tests.support import dockbed as dbmod
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module", autouse=True)
def _need_bench():
    if os.geteuid() != 0 or not privileges.has(privileges.CAP_SYS_ADMIN):
        pytest.skip("needs root with CAP_SYS_ADMIN")
    if not shutil.which("useradd"):
        pytest.skip("useradd not found")
    ok, why = dbmod.available()
    if not ok:
        pytest.skip(why)


@pytest.fixture
def user():
    """A fresh system user and group (deleted afterwards): (name, uid, gid)."""
    name = f"dkt{uuid.uuid4().hex[:10]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", "--user-group", name], check=True, capture_output=True)
    pw = pwd.getpwnam(name)
    yield name, pw.pw_uid, pw.pw_gid
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


@pytest.fixture
def workdir():
    """A work dir the test user can traverse (pytest's tmp_path is root's, 0700)."""
    d = Path(tempfile.mkdtemp(prefix="dockd-priv-", dir="/tmp"))
    d.chmod(0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class _UserBed(dbmod.DockBed):
    def __init__(self, *a, user: str, **kw):
        super().__init__(*a, **kw)
        self.user = user

    def write_config(self) -> Path:
        p = super().write_config()
        p.write_text(p.read_text().replace("udev = true", f"udev = true\nuser = {self.user!r}".replace("'", '"'), 1))
        p.chmod(0o600)  # root's alone: the daemon reads it before it switches
        return p

    def start_bed(self):
        super().start_bed()
        # As on a real station, where /sys is readable and udev netlink open to everyone: umockdev emulates
        # the netlink monitor with a socket the client creates in the testbed root.
        os.chmod(self.bed.root, 0o1777)
        return self


def _readable_python(workdir: Path) -> list[str]:
    """argv prefix that runs dockd where the test user can read the interpreter's standard library.

    The test venv's base Python may live under /root (0700), which the daemon
    can no longer traverse once it is the test user (a station's
    /opt/dockd/venv sits on /usr's Python). In a private mount namespace a
    0755 tmpfs covers /root, and only the interpreter's directory is bound
    back into it.
    """
    base = os.path.realpath(sys.base_prefix)
    if not base.startswith("/root/"):
        return []
    keep = workdir / "python"
    keep.mkdir(exist_ok=True)
    script = (f'mount --bind "{base}" "{keep}" && mount -t tmpfs -o mode=0755 dockd-test /root && '
              f'mkdir -p "{base}" && mount --bind "{keep}" "{base}" && exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh"]


def _status(pid: int | str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in
                                           Path(f"/proc/{pid}/status").read_text().splitlines())}


def test_daemon_as_user_cannot_touch_devices_or_root_files_yet_offloads_uploads_and_wipes(
        user, workdir, seaweed, bucket, monkeypatch):
    name, uid, gid = user
    argv = [*_readable_python(workdir), *dbmod.dockd_argv()]
    monkeypatch.setattr(dbmod, "dockd_argv", lambda: argv)
    secret = workdir / "root-only"
    secret.write_text("root's secret\n")
    secret.chmod(0o600)
    out = workdir / "hook-out"
    out.mkdir()
    os.chown(out, uid, gid)
    hook = workdir / "hook.sh"
    report = out / "report"
    with _UserBed(workdir / "bed", user=name, storage={"url": f"s3://{bucket}/bwc",
                                                       "endpoint_url": seaweed.endpoint_url},
                  env=seaweed.env(), hooks={"on_state": str(hook)}) as bed:
        cam = bed.camera("USER01", clips=2, big_mib=1, port="1.2")
        hook.write_text(f"""#!/bin/sh
[ "$3" = offloading ] || exit 0
grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|NoNewPrivs):' /proc/self/status > {report}.tmp
if (: <> {cam.loop}) 2>/dev/null; then echo DEVICE-WRITABLE; else echo DEVICE-REFUSED; fi >> {report}.tmp
if cat {secret} >/dev/null 2>&1; then echo SECRET-READ; else echo SECRET-REFUSED; fi >> {report}.tmp
mv {report}.tmp {report}
""")
        hook.chmod(0o755)
        bed.data_dir.mkdir(parents=True)
        os.chown(bed.data_dir, uid, gid)
        bed.start_daemon()
        pid = bed.pid

        dropped = bed.logs("privileges dropped")
        assert len(dropped) == 1, bed.lines
        d = dropped[0]
        assert (d["user"], d["uid"], d["gid"], d["cap_eff"], d["cap_prm"]) == (name, uid, gid, "0" * 16, "0" * 16)
        st = _status(pid)
        assert st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split() == [str(gid)] * 4, st
        assert st["Groups"] == "" and st["CapEff"] == st["CapPrm"] == "0" * 16 and st["NoNewPrivs"] == "1"
        helper = d["mount_helper_pid"]
        hs = _status(helper)
        assert hs["Uid"].split()[0] == "0" and int(hs["CapEff"], 16) == 1 << privileges.CAP_SYS_ADMIN
        assert hs["PPid"] == str(pid)
        assert (bed.data_dir / "queue.db").stat().st_uid == uid  # everything the daemon made is its user's

        bed.dock(cam)
        ready = bed.wait_state("USER01", ("ready", "attention", "error"), 90)
        assert ready["state"] == "ready", ready
        mounted = bed.logs("mounted", camera="USER01")
        assert any(m["mode"] == "rw" for m in mounted)  # the wipe went through the helper

        # The hook ran with the daemon's credentials: no device, no root file.
        lines = [x.split() for x in report.read_text().splitlines()]
        assert lines == [["Uid:", *[str(uid)] * 4], ["Gid:", *[str(gid)] * 4], ["Groups:"], ["CapPrm:", "0" * 16],
                         ["CapEff:", "0" * 16], ["NoNewPrivs:", "1"], ["DEVICE-REFUSED"], ["SECRET-REFUSED"]], lines

        clips = bed.clips("USER01")
        assert {c["path"]: c["sha256"] for c in clips} == cam.hashes
        assert {c["state"] for c in clips} == {"wiped"}
        c = seaweed.client()
        keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])
                if not o["Key"].endswith(".manifest.json")]
        got = sorted(hashlib.sha256(c.get_object(Bucket=bucket, Key=k)["Body"].read()).hexdigest() for k in keys)
        assert got == sorted(cam.hashes.values())
        assert [r["detail"]["user"] for r in bed.audit() if r["event"] == "privileges.dropped"] == [name]

        bed.undock(cam)
        bed.wait_log(lambda e: e.get("event") == "camera undocked" and e.get("camera") == "USER01")
        assert bed.stop_daemon() == 0
        assert bed.list_image(cam) == []  # wiped, read back through a fresh loop device


def test_data_dir_not_owned_by_the_user_is_refused_in_one_line(user, workdir):
    name, uid, gid = user
    data = workdir / "data"
    data.mkdir()
    cfg = station_config(workdir / "dockd.toml", data_dir=data, station_id="priv-1",
                         sources={"watch_dirs": [str(workdir)], "user": name}, metrics={"listen": ""})
    r = run_dockd("run", "--drain", config=cfg)
    assert r.returncode == 1, (r.stdout, r.stderr)
    err = [x for x in r.stderr.splitlines() if x.strip()]
    assert err == [f"dockd: error: could not drop privileges: data dir {data} is owned by uid 0, not by {name} "
                   f"(uid {uid}): chown -R {name}: {data} (scripts/install does) (to run without privilege "
                   "separation set [sources] drop_privileges = false)"], r.stderr
    assert not (data / "queue.db").exists()


def test_doctor_accepts_a_data_dir_owned_by_the_daemon_user(user, workdir):
    from dockd.cli.doctor import run_checks

    name, uid, gid = user
    data = workdir / "data"
    data.mkdir(mode=0o710)
    cfg = station_config(workdir / "dockd.toml", data_dir=data, station_id="priv-1", sources={"user": name})
    os.chown(data, uid, gid)
    r = next(x for x in run_checks(str(cfg)) if x["check"] == "data_dir")
    assert r["ok"] and f"owner uid {uid}, mode 0710" in r["detail"], r
    os.chown(data, uid + 1, gid)  # someone else's
    r = next(x for x in run_checks(str(cfg)) if x["check"] == "data_dir")
    assert not r["ok"], r


def test_root_cli_on_a_station_acts_as_the_daemon_user(user, workdir):
    """``dockd import`` (and every command opening the queue) run by root leaves nothing the daemon can't use."""
    name, uid, gid = user
    data = workdir / "data"
    data.mkdir(mode=0o710)
    os.chown(data, uid, gid)
    src = workdir / "card" / "DCIM" / "100CAMERA"
    src.mkdir(parents=True)
    (src / "CLIP0001.MP4").write_bytes(b"\0\0\0\x18ftypmp42" + os.urandom(4096))
    for d in (workdir / "card", workdir / "card" / "DCIM", src):
        d.chmod(0o755)
    (src / "CLIP0001.MP4").chmod(0o644)
    cfg = station_config(workdir / "dockd.toml", data_dir=data, station_id="priv-1", sources={"user": name})
    cfg.chmod(0o644)
    argv = [*_readable_python(workdir), *dbmod.dockd_argv(), "--config", str(cfg)]
    r = subprocess.run([*argv, "import", str(workdir / "card"), "--camera", "CARD01", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    made = [p for p in data.rglob("*")]
    assert made and all(p.lstat().st_uid == uid for p in made), [(str(p), p.lstat().st_uid) for p in made]
    staged = [p for p in (data / "staging").rglob("*") if p.is_file() and p.stat().st_size > 4096]
    assert (data / "queue.db") in made and staged, made  # the queue, and the staged clip the daemon will upload
    r = subprocess.run([*argv, "queue", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and [c["state"] for c in json.loads(r.stdout)] == ["staged"], r.stdout + r.stderr
    assert all(p.lstat().st_uid == uid for p in data.rglob("*"))
