"""Smoke tests for the real-parts test bed (tests/support/udevbed.py, tests/support/exfat.py).

* umockdev testbed (driver under umockdev-wrapper + system python) -> a child
  process's REAL pyudev sees add/remove uevents and enumerates cold-plugged
  devices, with the properties a docked USB camera disk has;
* the child (under the preload) can mount the real loop device named by DEVNAME;
* real exFAT images with ffmpeg clips: read-only hardened FUSE mount (flags read
  back from /proc/self/mountinfo), read-write remount deletes, deletion persists.

Skipped with a reason when not root, no /dev/fuse, tools or umockdev missing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.support import exfat, udevbed  # noqa: E402

HARDENED = exfat.HARDENED_FLAGS  # nosuid, nodev, noexec, nosymfollow
CAMERA_PROPS = {"ID_VENDOR_ID": "2b2e", "ID_MODEL_ID": "0c01", "ID_BUS": "usb",
                "ID_PATH": udevbed.DEFAULT_ID_PATH, "ID_FS_TYPE": "exfat", "SUBSYSTEM": "block"}
SCRIPT = b"#!/bin/sh\necho should-not-run\n"


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def need_exfat() -> None:
    ok, why = exfat.can_use_exfat()
    if not ok:
        pytest.skip(why)


@pytest.fixture(scope="module")
def need_udevbed(need_exfat) -> None:
    pytest.importorskip("pyudev")
    ok, why = udevbed.udevbed_available()
    if not ok:
        pytest.skip(why)


@pytest.fixture
def cleanup():
    """ExitStack unwound at teardown, even when the test fails."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
def mount_guard(cleanup):
    """Register a mount point: whatever is mounted there is unmounted at teardown."""
    def register(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        cleanup.callback(exfat.unmount, path)
        return path
    return register


@pytest.fixture
def camera_image(need_exfat, tmp_path) -> exfat.ExfatImage:
    return exfat.build_camera_image(
        tmp_path / "cam.img", clips=3, label="CAM042", volume_serial=0xCAFE0042,
        extra_files={"DCIM/100CAMERA/run.sh": SCRIPT},
    )


@pytest.fixture
def camera_loop(camera_image, cleanup) -> str:
    dev = exfat.attach_loop(camera_image.path)
    cleanup.callback(exfat.detach_loop, dev)
    return dev


@pytest.fixture
def bed(need_udevbed, cleanup) -> udevbed.UdevBed:
    b = udevbed.UdevBed().start()
    cleanup.callback(b.close)
    return b


def _block_events(reader: udevbed.JsonLines, n: int, timeout: float = 10) -> list[dict]:
    out = []
    while len(out) < n:
        ev = reader.wait_for(lambda e: e.get("event") == "uevent", timeout)
        assert ev["subsystem"] == "block", ev  # the monitor's subsystem filter works
        out.append(ev)
    return out


def _start_monitor(bed) -> tuple[subprocess.Popen, udevbed.JsonLines, list[dict]]:
    proc, reader = bed.spawn_monitor_child()
    first = reader.next(20)
    assert first.get("event") == "enumerated", first
    assert reader.next(10) == {"event": "ready"}
    return proc, reader, first["devices"]


# --------------------------------------------------------------------------- udev

def test_child_receives_add_and_remove_with_camera_properties(bed, camera_image, camera_loop):
    proc, reader, enumerated = _start_monitor(bed)
    assert enumerated == []

    cam = bed.add_usb_camera(camera_loop, serial="BC0001", fs_uuid=camera_image.uuid,
                             fs_label=camera_image.label)
    (add,) = _block_events(reader, 1)
    assert add["action"] == "add"
    assert add["sys_path"] == cam.disk_syspath
    assert add["device_type"] == "disk"
    assert add["device_node"] == camera_loop
    props = add["properties"]
    assert {k: props.get(k) for k in CAMERA_PROPS} == CAMERA_PROPS
    assert props["DEVTYPE"] == "disk"
    assert props["DEVNAME"] == camera_loop
    assert props["ID_SERIAL_SHORT"] == "BC0001"
    assert props["ID_FS_UUID"] == camera_image.uuid == "CAFE-0042"
    assert props["ID_FS_LABEL"] == "CAM042"
    assert add["device_number"] == os.stat(camera_loop).st_rdev
    assert add["usb_parent"]["attributes"] == {"idVendor": "2b2e", "idProduct": "0c01", "serial": "BC0001"}

    bed.unplug(cam)
    (rm,) = _block_events(reader, 1)
    assert rm["action"] == "remove"
    assert rm["sys_path"] == cam.disk_syspath
    assert rm["properties"]["ID_SERIAL_SHORT"] == "BC0001"
    assert rm["properties"]["DEVNAME"] == camera_loop
    assert reader.drain(0.2) == []  # exactly one event each
    assert proc.poll() is None


def test_partition_layout(bed, need_exfat, tmp_path, cleanup):
    img = exfat.build_camera_image(tmp_path / "p.img", clips=1, partitioned=True,
                                   size=16 << 20, volume_serial=0x0BADF00D)
    dev = exfat.attach_loop(img.path, partscan=True)
    cleanup.callback(exfat.detach_loop, dev)
    part = exfat.partition_node(dev, 1)

    proc, reader, _ = _start_monitor(bed)
    cam = bed.add_usb_camera(dev, fs_devname=part, serial="BC0002", fs_uuid=img.uuid, port="1.4")
    disk_ev, part_ev = _block_events(reader, 2)
    assert (disk_ev["device_type"], disk_ev["device_node"]) == ("disk", dev)
    assert "ID_FS_TYPE" not in disk_ev["properties"]
    assert disk_ev["properties"]["ID_PART_TABLE_TYPE"] == "dos"
    assert part_ev["sys_path"] == cam.part_syspath == cam.block_syspath
    assert (part_ev["device_type"], part_ev["device_node"]) == ("partition", part)
    pp = part_ev["properties"]
    assert pp["ID_FS_TYPE"] == "exfat" and pp["ID_FS_UUID"] == "0BAD-F00D"
    assert pp["ID_SERIAL_SHORT"] == "BC0002" and pp["ID_BUS"] == "usb"
    assert pp["ID_PATH"] == "pci-0000:00:14.0-usb-0:1.4:1.0-scsi-0:0:0:0"
    assert part_ev["usb_parent"]["attributes"]["serial"] == "BC0002"

    bed.unplug(cam)
    rm_part, rm_disk = _block_events(reader, 2)  # children first
    assert [rm_part["action"], rm_disk["action"]] == ["remove", "remove"]
    assert [rm_part["device_type"], rm_disk["device_type"]] == ["partition", "disk"]


def test_child_enumerates_preexisting_devices(bed, camera_image, camera_loop):
    # Added before the child listens: the 'add' uevents go nowhere (cold plug).
    cam = bed.add_usb_camera(camera_loop, serial="COLD01", fs_uuid=camera_image.uuid, port="1.3")
    proc, reader, enumerated = _start_monitor(bed)
    by_path = {d["sys_path"]: d for d in enumerated}
    assert list(by_path) == [cam.disk_syspath]  # only testbed devices, no real /sys
    d = by_path[cam.disk_syspath]
    assert d["device_node"] == camera_loop
    assert d["properties"]["ID_SERIAL_SHORT"] == "COLD01"
    assert d["properties"]["ID_FS_TYPE"] == "exfat"
    assert d["properties"]["ID_PATH"] == "pci-0000:00:14.0-usb-0:1.3:1.0-scsi-0:0:0:0"
    assert d["usb_parent"]["attributes"]["serial"] == "COLD01"
    assert reader.drain(0.2) == []

    # and a later unplug still reaches it
    bed.unplug(cam)
    (rm,) = _block_events(reader, 1)
    assert (rm["action"], rm["sys_path"]) == ("remove", cam.disk_syspath)


_MOUNTING_CHILD = r"""
import json, os, sys, pyudev
from tests.support import exfat
mnt = sys.argv[1]
ctx = pyudev.Context()
mon = pyudev.Monitor.from_netlink(ctx, source="udev"); mon.filter_by("block"); mon.start()
print(json.dumps({"event": "ready"}), flush=True)
for dev in iter(mon.poll, None):
    if dev.action == "add" and dev.properties.get("ID_FS_TYPE") == "exfat":
        e = exfat.mount_exfat(dev.device_node, mnt, read_only=True)
        files = sorted(os.listdir(os.path.join(mnt, "DCIM", "100CAMERA")))
        exfat.unmount(mnt)
        print(json.dumps({"event": "mounted", "source": e.source, "flags": sorted(e.mount_flags),
                          "fs_type": e.fs_type, "files": files}), flush=True)
        break
"""


def test_child_in_testbed_mounts_real_devname(bed, camera_image, camera_loop, mount_guard, tmp_path):
    mnt = mount_guard(tmp_path / "mnt" / "BC0003")
    env = dict(os.environ, PYTHONPATH=str(_REPO_ROOT))
    proc = bed.spawn([sys.executable, "-c", _MOUNTING_CHILD, str(mnt)], env=env,
                     stdout=subprocess.PIPE, text=True)
    reader = udevbed.JsonLines(proc.stdout, "mounting-child")
    assert reader.next(20) == {"event": "ready"}
    bed.add_usb_camera(camera_loop, serial="BC0003", fs_uuid=camera_image.uuid)
    res = reader.wait_for(lambda e: e.get("event") == "mounted", 20)
    assert res["source"] == camera_loop and res["fs_type"] == "fuseblk"
    assert HARDENED | {"ro"} <= set(res["flags"])
    assert res["files"] == ["VID_0001.MP4", "VID_0002.MP4", "VID_0003.MP4", "run.sh"]
    assert proc.wait(10) == 0


# --------------------------------------------------------------------------- exFAT

def test_exfat_image_identity(camera_image, camera_loop):
    out = subprocess.run(["blkid", "-p", "-o", "export", camera_loop], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"blkid unusable: {out.stderr.strip()}")
    info = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    assert info["TYPE"] == "exfat"
    assert info["UUID"] == camera_image.uuid == "CAFE-0042"
    assert info["LABEL"] == "CAM042"


def test_exfat_ro_hardened_then_rw_delete_persists(camera_image, camera_loop, mount_guard, tmp_path):
    mnt = mount_guard(tmp_path / "mnt" / "CAM042")
    clip_dir = mnt / "DCIM" / "100CAMERA"
    src = tmp_path / "cam.img.src" / "VID_0001.MP4"

    # 1. read-only + hardened
    entry = exfat.mount_exfat(camera_loop, mnt, read_only=True)
    assert entry == exfat.find_mount(mnt)
    assert entry.fs_type == "fuseblk" and entry.source == camera_loop
    assert {"ro", *HARDENED} <= entry.mount_flags, entry
    assert "ro" in entry.super_options
    names = sorted(p.name for p in clip_dir.iterdir())
    assert names == ["VID_0001.MP4", "VID_0002.MP4", "VID_0003.MP4", "run.sh"]
    for n in names[:3]:
        assert (clip_dir / n).read_bytes() == src.read_bytes()
        assert (clip_dir / n).read_bytes()[4:8] == b"ftyp"
    with pytest.raises(OSError) as ei:
        (clip_dir / "VID_0001.MP4").unlink()
    assert ei.value.errno == errno.EROFS
    # noexec is effective (exFAT shows every file as 0777)
    assert os.stat(clip_dir / "run.sh").st_mode & 0o111
    with pytest.raises(PermissionError):
        subprocess.run([str(clip_dir / "run.sh")], capture_output=True)
    exfat.unmount(mnt)
    assert exfat.find_mount(mnt) is None

    # 2. read-write (fresh FUSE mount; in-place remount,rw would give EIO) + hardened
    entry = exfat.mount_exfat(camera_loop, mnt, read_only=False)
    assert {"rw", *HARDENED} <= entry.mount_flags, entry
    assert "ro" not in entry.mount_flags and "rw" in entry.super_options
    (clip_dir / "VID_0002.MP4").unlink()
    assert not (clip_dir / "VID_0002.MP4").exists()
    exfat.unmount(mnt)

    # 3. deletion persisted on the device
    entry = exfat.mount_exfat(camera_loop, mnt, read_only=True)
    assert sorted(p.name for p in clip_dir.iterdir()) == ["VID_0001.MP4", "VID_0003.MP4", "run.sh"]
    assert (clip_dir / "VID_0003.MP4").read_bytes() == src.read_bytes()
    exfat.unmount(mnt)


def test_make_clip_size_hint(need_exfat, tmp_path):
    p = exfat.make_clip(tmp_path / "a.mp4", 1, min_bytes=100_000)
    assert p.stat().st_size == 100_000
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration",
                            "-of", "json", str(p)], capture_output=True, text=True)
    if probe.returncode == 0:  # ffprobe ships with ffmpeg; padded file still parses
        fmt = json.loads(probe.stdout)["format"]
        assert "mp4" in fmt["format_name"] and float(fmt["duration"]) == pytest.approx(1, abs=0.2)
