"""Privilege separation: the mount helper process, its protocol, and the capability-free daemon.

* protocol tests talk JSON lines to a real ``python -m dockd.camera.mounthelper``
  process: every bad request gets ``ok: false`` and a one-line reason, nothing
  is mounted, and the helper keeps serving; a real exFAT loop device goes
  through mount / remount rw / remount ro / unmount by handle;
* daemon tests run ``dockd run`` (udev through the umockdev DockBed, and a
  watch-dir station): the daemon and all its threads hold no capability
  (CapEff 0, NoNewPrivs), the helper holds exactly CAP_SYS_ADMIN, a process
  the daemon starts (the state hook) cannot mount, cameras still mount,
  offload and hold; a dead helper puts the next camera in ``error`` and the
  daemon carries on. ``[sources] drop_privileges = false`` keeps the old model.

Root only (real mounts, loop devices, /dev/fuse).
"""

from __future__ import annotations

import json
import os
import pwd
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dockd.camera import privileges
from dockd.camera.mounthelper import MountClient
from dockd.camera.mounts import MountError
from tests.support import dockbed as dbmod
from tests.support import exfat, udevbed
from tests.support.uploads import station_config
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root]

SYS_ADMIN = 1 << privileges.CAP_SYS_ADMIN
HARDENED = {"nosuid", "nodev", "noexec", "nosymfollow"}


@pytest.fixture(scope="module", autouse=True)
def _need_root():
    if os.geteuid() != 0 or not privileges.has(privileges.CAP_SYS_ADMIN):
        pytest.skip("needs root with CAP_SYS_ADMIN")


def caps(pid: int | str) -> dict[str, int]:
    return privileges.status(pid)


def proc_status(pid: int | str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in
                                           Path(f"/proc/{pid}/status").read_text().splitlines())}


def write_config(path: Path) -> Path:
    """A config whose one [[camera]] profile is the DockBed's ACME (USB 2b2e:0c01, exFAT)."""
    return station_config(path, data_dir=path.parent / "data", station_id="helper-1", sources={"udev": True},
                          camera=[{"name": "acme", "match": {"ID_VENDOR_ID": dbmod.VENDOR_ID,
                                                             "ID_MODEL_ID": [dbmod.MODEL_ID]},
                                   "filesystems": ["exfat"]}])


class Raw:
    """A helper process driven by hand, one JSON line at a time (inside a umockdev testbed if ``bed``)."""

    def __init__(self, base: Path, stderr: Path, *, bed: udevbed.UdevBed | None = None,
                 prefix: list[str] | None = None, owner: str | None = None):
        argv = [*(prefix or [sys.executable, "-I", "-m", "dockd.camera.mounthelper"]), "--base", str(base),
                "--config", str(write_config(base.parent / "helper.toml"))]
        argv += ["--owner", owner] if owner else []
        spawn = bed.spawn if bed is not None else subprocess.Popen
        with open(stderr, "wb") as err:
            self.p = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        self.hello = self.read()

    def send(self, raw: bytes) -> None:
        self.p.stdin.write(raw)
        self.p.stdin.flush()

    def read(self, timeout: float = 60) -> dict:
        assert select.select([self.p.stdout], [], [], timeout)[0], "helper did not answer"
        line = self.p.stdout.readline()
        assert line.endswith(b"\n"), line
        return json.loads(line)

    def ask(self, req: dict | bytes) -> dict:
        self.send(req if isinstance(req, bytes) else json.dumps(req).encode() + b"\n")
        return self.read()

    def alive(self) -> bool:
        r = self.ask({"id": 999, "op": "cleanup_stale"})
        return r == {"id": 999, "ok": True, "result": [], "log": []} and self.p.poll() is None

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p.stdout.close()


@pytest.fixture
def raw(tmp_path):
    h = Raw(tmp_path / "mnt", tmp_path / "helper.stderr")
    yield h
    h.close()


@pytest.fixture
def loopdev(tmp_path):
    ok, why = exfat.can_use_exfat()
    if not ok:
        pytest.skip(why)
    img = exfat.build_image(tmp_path / "cam.img", files={"DCIM/100CAMERA/A.MP4": b"clip bytes"})
    dev = exfat.attach_loop(img.path)
    yield dev
    for mp in (tmp_path / "mnt" / "CAM1", tmp_path / "elsewhere"):
        exfat.unmount(mp)
    exfat.detach_loop(dev)


@pytest.fixture
def otherdev(tmp_path):
    """A second exFAT loop device (not announced by udev), holding B.MP4 instead of A.MP4."""
    img = exfat.build_image(tmp_path / "other.img", files={"DCIM/100CAMERA/B.MP4": b"other bytes"})
    dev = exfat.attach_loop(img.path)
    yield dev
    exfat.unmount(tmp_path / "mnt" / "CAM1")
    exfat.detach_loop(dev)


@pytest.fixture
def udev(loopdev):
    """A umockdev testbed in which ``loopdev`` is docked camera CAM1 (matching the helper config's profile)."""
    ok, why = udevbed.udevbed_available()
    if not ok:
        pytest.skip(why)
    with udevbed.UdevBed() as bed:
        bed.add_usb_camera(loopdev, serial="CAM1", fs_uuid="1234-5678")
        yield bed


@pytest.fixture
def craw(tmp_path, udev):
    """A helper that sees ``loopdev`` announced as camera CAM1."""
    h = Raw(tmp_path / "mnt", tmp_path / "helper.stderr", bed=udev)
    yield h
    h.close()


# --------------------------------------------------------------------------- the protocol

def test_helper_keeps_only_cap_sys_admin(raw):
    assert raw.hello["ok"] is True and raw.hello["result"]["pid"] == raw.p.pid
    c = caps(raw.p.pid)
    assert raw.hello["result"]["caps"] == c["CapEff"] == c["CapPrm"] == SYS_ADMIN
    assert c["CapBnd"] == SYS_ADMIN and c["CapInh"] == c["CapAmb"] == 0
    assert proc_status(raw.p.pid)["NoNewPrivs"] == "1"


@pytest.mark.parametrize("req, reason", [
    ({"id": 1, "op": "format"}, "unknown op 'format'"),
    ({"id": 1, "op": ["mount"]}, "unknown op"),
    ({"id": 1}, "unknown op None"),
    ({"id": "1", "op": "cleanup_stale"}, "integer id"),
    ({"id": 1, "op": "cleanup_stale", "path": "/etc"}, "arguments must be exactly none"),
    ({"id": 1, "op": "mount", "serial": "A/../../etc", "devnode": "/dev/null", "udev_type": None,
      "allowed": ["exfat"]}, "unsafe serial"),
    ({"id": 1, "op": "mount", "serial": "..", "devnode": "/dev/null", "udev_type": None,
      "allowed": ["exfat"]}, "unsafe serial"),
    ({"id": 1, "op": "mount", "serial": "CAM1", "devnode": "/dev/null", "udev_type": None,
      "allowed": ["exfat"], "path": "/etc"}, "arguments must be exactly serial, devnode, udev_type, allowed"),
    ({"id": 1, "op": "mount", "serial": "CAM1", "devnode": "/dev/null", "udev_type": None, "allowed": ["exfat"]},
     "/dev/null: not a block device"),
    ({"id": 1, "op": "mount", "serial": "CAM1", "devnode": "/tmp/x", "udev_type": None, "allowed": ["exfat"]},
     "is not a device node under /dev"),
    ({"id": 1, "op": "mount", "serial": "CAM1", "devnode": "/dev/../etc/passwd", "udev_type": None,
      "allowed": ["exfat"]}, "is not a device node under /dev"),
    ({"id": 1, "op": "mount", "serial": "CAM1", "devnode": "/dev/nonexistent", "udev_type": None,
      "allowed": ["exfat"]}, "No such file"),
    ({"id": 1, "op": "mount", "serial": "CAM1", "devnode": "/dev/null", "udev_type": None, "allowed": ["ext4"]},
     "allowed filesystems must be some of exfat, ntfs, udf, vfat"),
    ({"id": 1, "op": "mount", "serial": "CAM1", "devnode": "/dev/null", "udev_type": None, "allowed": []},
     "allowed filesystems"),
    ({"id": 1, "op": "mount", "serial": 7, "devnode": "/dev/null", "udev_type": None, "allowed": ["exfat"]},
     "arguments must be exactly"),
    ({"id": 1, "op": "remount_rw", "handle": 1}, "no mount with handle 1"),
    ({"id": 1, "op": "remount_rw", "handle": True}, "arguments must be exactly handle"),
    ({"id": 1, "op": "unmount", "handle": 1, "lazy": 1}, "arguments must be exactly handle, lazy"),
])
def test_bad_requests_are_refused_and_the_helper_carries_on(raw, tmp_path, req, reason):
    r = raw.ask(req)
    assert r["ok"] is False and r["id"] == (req["id"] if isinstance(req.get("id"), int) else None), r
    assert reason in r["error"] and "\n" not in r["error"], r
    assert raw.alive()
    assert not (tmp_path / "mnt").exists() or not any((tmp_path / "mnt").iterdir())


def test_garbage_and_oversized_lines_are_refused(raw):
    r = raw.ask(b"{not json\n")
    assert r["ok"] is False and r["id"] is None and r["error"]
    r = raw.ask(b"[1, 2]\n")
    assert r["ok"] is False and "JSON object" in r["error"]
    r = raw.ask(b'{"id": 5, "op": "cleanup_stale", "pad": "' + b"x" * 70_000 + b'"}\n')
    assert r["ok"] is False and "longer than" in r["error"]
    assert raw.alive()


def test_mount_point_must_stay_under_the_base(raw, tmp_path, loopdev):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "EVIL").symlink_to(outside)  # a symlink planted where a camera would be mounted
    r = raw.ask({"id": 1, "op": "mount", "serial": "EVIL", "devnode": loopdev, "udev_type": "exfat",
                 "allowed": ["exfat"]})
    assert r["ok"] is False and "is not a directory" in r["error"], r
    assert exfat.find_mount(outside) is None and exfat.find_mount(tmp_path / "mnt" / "EVIL") is None
    assert raw.alive()


def test_device_mounted_elsewhere_is_refused(raw, tmp_path, loopdev):
    exfat.mount_exfat(loopdev, tmp_path / "elsewhere")  # e.g. the host's own disk, or a desktop automount
    r = raw.ask({"id": 1, "op": "mount", "serial": "CAM1", "devnode": loopdev, "udev_type": "exfat",
                 "allowed": ["exfat"]})
    assert r["ok"] is False and f"is in use (mounted at {tmp_path / 'elsewhere'})" in r["error"], r
    assert exfat.find_mount(tmp_path / "mnt" / "CAM1") is None
    assert raw.alive()


def test_mount_remount_unmount_by_handle(craw, tmp_path, loopdev):
    raw = craw
    mnt = tmp_path / "mnt" / "CAM1"
    req = {"op": "mount", "serial": "CAM1", "devnode": loopdev, "udev_type": "exfat", "allowed": ["exfat"]}
    r = raw.ask({"id": 1, **req})
    assert r["ok"] is True and r["result"] == {"handle": 1, "fs_type": "exfat", "path": str(mnt)}, r
    assert [e["event"] for e in r["log"]] == ["mounted"] and r["log"][0]["level"] == "info"
    assert {"ro", *HARDENED} <= exfat.find_mount(mnt).mount_flags
    assert (mnt / "DCIM/100CAMERA/A.MP4").read_bytes() == b"clip bytes"
    r = raw.ask({"id": 2, **req})
    assert r["ok"] is False and "CAM1 is already mounted" in r["error"]

    assert raw.ask({"id": 3, "op": "remount_rw", "handle": 1})["ok"] is True
    assert {"rw", *HARDENED} <= exfat.find_mount(mnt).mount_flags
    assert raw.ask({"id": 4, "op": "remount_ro", "handle": 1})["ok"] is True
    assert {"ro", *HARDENED} <= exfat.find_mount(mnt).mount_flags
    r = raw.ask({"id": 5, "op": "unmount", "handle": 1, "lazy": False})
    assert r["ok"] is True and r["log"][0]["event"] == "unmounted"
    assert exfat.find_mount(mnt) is None and not mnt.exists()
    r = raw.ask({"id": 6, "op": "remount_rw", "handle": 1})  # closed by its unmount: the handle is gone
    assert r["ok"] is False and "no mount with handle 1" in r["error"]


def test_eof_leaves_mounts_for_stale_cleanup_and_shutdown_unmounts(tmp_path, loopdev, udev):
    mnt = tmp_path / "mnt" / "CAM1"
    req = {"id": 1, "op": "mount", "serial": "CAM1", "devnode": loopdev, "udev_type": "exfat", "allowed": ["exfat"]}
    crashed = Raw(tmp_path / "mnt", tmp_path / "a.stderr", bed=udev)
    assert crashed.ask(req)["ok"] is True
    crashed.close()  # stdin closed without "shutdown": what a crashed daemon looks like
    assert crashed.p.returncode == 0
    assert exfat.find_mount(mnt) is not None  # left for the next start, as before the split
    assert "the daemon is gone" in (tmp_path / "a.stderr").read_text()

    h = Raw(tmp_path / "mnt", tmp_path / "b.stderr", bed=udev)
    r = h.ask({"id": 1, "op": "cleanup_stale"})
    assert r["ok"] is True and r["result"] == ["CAM1"] and r["log"][0]["event"] == "stale mount removed"
    assert h.ask(req)["ok"] is True and exfat.find_mount(mnt) is not None
    assert h.ask({"id": 2, "op": "shutdown"})["ok"] is True
    assert h.p.wait(30) == 0
    assert exfat.find_mount(mnt) is None
    h.close()


def test_client_raises_mount_error_with_the_helpers_reason_and_when_it_dies(tmp_path):
    c = MountClient(tmp_path / "mnt", config=write_config(tmp_path / "helper.toml"))
    try:
        assert c.caps == SYS_ADMIN and caps(c.pid)["CapEff"] == SYS_ADMIN
        with pytest.raises(MountError, match="/dev/null: not a block device"):
            c.mount("CAM1", "/dev/null", None, ("exfat",))
        with pytest.raises(MountError, match="unsafe serial"):
            c.mount("../x", "/dev/null", None, ("exfat",))
        assert c.cleanup_stale() == []
        c.proc.kill()
        c.proc.wait()
        with pytest.raises(MountError, match="mount helper is gone .*restart dockd"):
            c.mount("CAM1", "/dev/null", None, ("exfat",))
        with pytest.raises(MountError, match="restart dockd"):  # stays failed
            c.cleanup_stale()
    finally:
        c.close()
    assert c.proc.poll() is not None


# --------------------------------------------------------------------------- the daemon

@pytest.fixture
def bench():
    ok, why = dbmod.available()
    if not ok:
        pytest.skip(why)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _children(pid: int) -> list[int]:
    out = []
    for t in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (t / "children").read_text().split()]
    return out


def test_daemon_runs_without_capabilities_and_mounts_through_the_helper(bench, tmp_path):
    hook_out, spot = tmp_path / "hook.out", tmp_path / "spot"
    spot.mkdir()
    script = tmp_path / "hook.sh"
    script.write_text(f"""#!/bin/sh
[ "$3" = docked ] || exit 0
grep -E '^(CapEff|CapPrm|NoNewPrivs):' /proc/self/status > {hook_out}.tmp
if mount -t tmpfs dockdtest {spot} 2>/dev/null; then echo MOUNTED; umount {spot}; \
else echo REFUSED; fi >> {hook_out}.tmp
mv {hook_out}.tmp {hook_out}
""")
    script.chmod(0o755)
    with dbmod.DockBed(tmp_path / "bed", hooks={"on_state": str(script)}) as bed:
        cam = bed.camera("PRIV01", clips=2, port="1.2")
        cam2 = bed.camera("PRIV02", clips=1, port="1.3")
        bed.start_daemon()
        pid = bed.pid
        dropped = bed.logs("privileges dropped")
        assert len(dropped) == 1 and dropped[0]["cap_eff"] == dropped[0]["cap_prm"] == "0" * 16, dropped
        hpid = dropped[0]["mount_helper_pid"]
        assert dropped[0]["mount_helper_cap_eff"] == f"{SYS_ADMIN:016x}"
        if not _user_exists("dockd"):  # a development machine: uid 0 stays, and the daemon says so
            assert dropped[0]["user"] is None and dropped[0]["uid"] == 0
            assert [e for e in bed.logs() if e.get("event", "").startswith("no such user to run as")
                    and e.get("user") == "dockd" and e.get("level") == "warning"]

        # The daemon: no capability in any thread, no way back; the helper: CAP_SYS_ADMIN only.
        for task in Path(f"/proc/{pid}/task").iterdir():
            c = caps(f"{pid}/task/{task.name}")
            assert c["CapEff"] == c["CapPrm"] == c["CapInh"] == c["CapAmb"] == 0, (task.name, c)
        assert caps(pid)["CapBnd"] == 0 and proc_status(pid)["NoNewPrivs"] == "1"
        assert caps(hpid)["CapEff"] == SYS_ADMIN and proc_status(hpid)["PPid"] == str(pid)
        assert "dockd.camera.mounthelper" in Path(f"/proc/{hpid}/cmdline").read_text()
        assert _children(pid) == [hpid]
        audit = [r for r in bed.audit() if r["event"] == "privileges.dropped"]
        assert len(audit) == 1 and audit[0]["detail"]["cap_eff"] == "0" * 16

        # Cameras still mount (in the helper), and the capability-free daemon reads them.
        bed.dock(cam)
        st = bed.wait_state("PRIV01", ("holding", "error", "attention"))
        assert st["state"] == "holding", st
        mounted = bed.logs("mounted", camera="PRIV01")
        assert mounted and {"ro", *HARDENED} <= set(mounted[0]["flags"].split(","))
        assert {c["path"]: c["sha256"] for c in bed.clips("PRIV01")} == cam.hashes
        assert bed.logs("unmounted", camera="PRIV01")

        # A process the daemon starts (the state hook) cannot mount either: uid 0, but no capability.
        wait_for(hook_out.exists, 30, "the state hook did not run")
        assert hook_out.read_text().split() == ["CapPrm:", "0" * 16, "CapEff:", "0" * 16, "NoNewPrivs:", "1",
                                                "REFUSED"]
        assert exfat.find_mount(spot) is None
        bed.undock(cam)

        # The helper dies: the next camera goes to error, the daemon carries on.
        os.kill(hpid, signal.SIGKILL)
        wait_for(lambda: proc_status(hpid)["State"].startswith("Z"), 10, "helper not dead")
        mark = bed.mark()
        bed.dock(cam2)
        st = bed.wait_state("PRIV02", ("holding", "error", "attention"), start=mark)
        assert st["state"] == "error" and "mount helper is gone" in st["reason"], st
        assert bed.proc.poll() is None
        bed.undock(cam2)
        bed.wait_log(lambda e: e.get("event") == "camera undocked" and e.get("camera") == "PRIV02", start=mark)
        assert bed.stop_daemon() == 0
        assert bed.list_image(cam) == sorted(cam.clips)  # no storage: held, never wiped


class _KeepBed(dbmod.DockBed):
    def write_config(self) -> Path:
        p = super().write_config()
        p.write_text(p.read_text().replace("udev = true", "udev = true\ndrop_privileges = false", 1))
        return p


def test_drop_privileges_false_keeps_the_old_model(bench, tmp_path):
    with _KeepBed(tmp_path / "bed") as bed:
        bed.start_daemon()
        assert not bed.logs("privileges dropped")
        assert caps(bed.pid)["CapEff"] == caps("self")["CapEff"] != 0
        assert _children(bed.pid) == []
        assert "privileges.dropped" not in [r["event"] for r in bed.audit()]
        assert bed.stop_daemon() == 0


def test_watch_dir_station_drops_everything_without_a_helper(tmp_path):
    watch = tmp_path / "watch"
    watch.mkdir()
    cfg = station_config(tmp_path / "dockd.toml", data_dir=tmp_path / "data", station_id="wd-1",
                         sources={"watch_dirs": [str(watch)]}, metrics={"listen": ""})
    p = subprocess.Popen([*dbmod.dockd_argv(), "--config", str(cfg), "run"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        lines = []
        for raw_line in p.stdout:
            try:
                lines.append(json.loads(raw_line))
            except ValueError:
                lines.append({"raw": raw_line.decode(errors="replace")})
            if lines[-1].get("event") == "dockd running":
                break
        dropped = [x for x in lines if x.get("event") == "privileges dropped"]
        assert len(dropped) == 1 and dropped[0]["mount_helper_pid"] is None, lines
        assert dropped[0]["cap_eff"] == "0" * 16
        assert caps(p.pid)["CapEff"] == caps(p.pid)["CapPrm"] == 0
        assert _children(p.pid) == []
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
        p.stdout.close()


# --------------------------------------------------------------------------- what the helper mounts

_SWAP_AT_MOUNT = """
import os, sys
import dockd.camera.mounts as m, dockd.camera.mounthelper as h
link, other = os.environ["SWAP_LINK"], os.environ["SWAP_TO"]
orig, done = m._run, []
def run(argv, timeout=60):
    if argv[0] == "mount" and not done:  # after every check, right before the first mount: swap the symlink
        done.append(1)
        os.remove(link)
        os.symlink(other, link)
    return orig(argv, timeout)
m._run = run
sys.exit(h.main(sys.argv[1:]))
"""


def test_symlink_swapped_between_check_and_mount_mounts_what_was_checked(tmp_path, loopdev, otherdev, udev):
    link = Path(f"/dev/shm/dockd-test-{os.getpid()}-swap")
    link.unlink(missing_ok=True)
    link.symlink_to(loopdev)
    try:
        h = Raw(tmp_path / "mnt", tmp_path / "helper.stderr", bed=udev,
                prefix=["env", f"SWAP_LINK={link}", f"SWAP_TO={otherdev}", sys.executable, "-I", "-c",
                        _SWAP_AT_MOUNT])
        try:
            r = h.ask({"id": 1, "op": "mount", "serial": "CAM1", "devnode": str(link), "udev_type": "exfat",
                       "allowed": ["exfat"]})
            assert os.readlink(link) == otherdev  # the hook ran: the name now points at the other device
            mnt = tmp_path / "mnt" / "CAM1"
            assert r["ok"] is True, r
            assert sorted(p.name for p in (mnt / "DCIM/100CAMERA").iterdir()) == ["A.MP4"]  # the checked camera
            assert exfat.find_mount(mnt).source == loopdev
            assert h.ask({"id": 2, "op": "shutdown"})["ok"] is True
        finally:
            h.close()
    finally:
        link.unlink(missing_ok=True)


def test_only_a_device_udev_announces_as_that_camera_is_mounted(tmp_path, loopdev, otherdev, udev):
    craw = Raw(tmp_path / "mnt", tmp_path / "helper.stderr", bed=udev)
    try:
        req = {"op": "mount", "serial": "CAM1", "udev_type": "exfat", "allowed": ["exfat"]}
        # An exFAT block device, not mounted anywhere, that udev does not know as a camera.
        r = craw.ask({"id": 1, **req, "devnode": otherdev})
        assert r["ok"] is False and f"{otherdev} is not a docked camera" in r["error"], r
        # The announced camera, asked for under another camera's name.
        r = craw.ask({"id": 2, **req, "devnode": loopdev, "serial": "CAM2"})
        assert r["ok"] is False and f"{loopdev} is camera CAM1, not CAM2" in r["error"], r
        assert not any((tmp_path / "mnt").iterdir()) if (tmp_path / "mnt").exists() else True
        assert exfat.find_mount(tmp_path / "mnt" / "CAM1") is None
        assert exfat.find_mount(tmp_path / "mnt" / "CAM2") is None
        assert craw.alive()
    finally:
        craw.close()
    # A device udev announces, but whose USB ids match no [[camera]] profile.
    udev.add_usb_camera(otherdev, serial="CAM9", fs_uuid="9999-0001", model_id="6666", port="1.3")
    h = Raw(tmp_path / "mnt", tmp_path / "helper2.stderr", bed=udev)
    try:
        r = h.ask({"id": 1, "op": "mount", "serial": "CAM9", "devnode": otherdev, "udev_type": "exfat",
                   "allowed": ["exfat"]})
        assert r["ok"] is False and "no [[camera]] profile matches" in r["error"], r
        assert exfat.find_mount(tmp_path / "mnt" / "CAM9") is None
    finally:
        h.close()
