"""Docking through udev, end to end: real exFAT cameras, umockdev, ``dockd run``, real SeaweedFS.

Each test builds camera images (ffmpeg clips on exFAT), attaches them to real
loop devices and runs ``dockd run`` inside a umockdev testbed
(tests/support/dockbed.py): docking a camera is the 'add' uevent chain of a
USB mass-storage device whose DEVNAME is the loop device, undocking the
'remove' chain. The daemon mounts the device itself (exfat-fuse, hardened),
offloads, uploads to SeaweedFS, wipes, and reports through ``dockd status``.

Skipped (with the reason) unless root, /dev/fuse, the exFAT tools and umockdev
are available. Loop devices, mounts, cgroups and processes are cleaned up by
the ``dockbed`` fixture even when a test fails.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.support import dockbed as dbmod
from tests.support import exfat
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]

HARDENED = {"nosuid", "nodev", "noexec", "nosymfollow"}
VFAT_ONLY = {"name": "vfat-only", "match": {"ID_VENDOR_ID": dbmod.VENDOR_ID, "ID_MODEL_ID": "0c03"},
             "filesystems": ["vfat"]}


@pytest.fixture(scope="module", autouse=True)
def _need_bench():
    ok, why = dbmod.available()
    if not ok:
        print(f"test_docking skipped: {why}")
        pytest.skip(why)


@pytest.fixture
def make_bed(tmp_path, seaweed, bucket):
    """DockBed factory wired to the test's SeaweedFS bucket; every bed is closed at teardown."""
    beds = []

    def make(**kw) -> dbmod.DockBed:
        kw.setdefault("storage", {"url": f"s3://{bucket}/bwc", "endpoint_url": seaweed.endpoint_url})
        kw.setdefault("env", seaweed.env())
        b = dbmod.DockBed(tmp_path / f"bed{len(beds)}", **kw)
        beds.append(b)
        return b.start_bed()

    yield make
    errors = []
    for b in beds:
        try:
            b.close()
        except Exception as e:  # noqa: BLE001
            errors.append(str(e))
    assert not errors, errors


def _objects(seaweed, bucket: str) -> dict[str, bytes]:
    c = seaweed.client()
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: c.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _clip_objects(objs: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in objs.items() if not k.endswith(".manifest.json")}


def _staging(bed: dbmod.DockBed) -> list[Path]:
    d = bed.data_dir / "staging"
    return sorted(d.iterdir()) if d.is_dir() else []


# --------------------------------------------------------------------------- the happy path

def test_dock_offload_upload_wipe_ready(make_bed, seaweed, bucket):
    slow, _ = dbmod.throttle_available()
    bed = make_bed(throttle=slow)
    cam = bed.camera("BC1001", clips=2, big_mib=2, port="1.2")
    bed.start_daemon()
    if slow:  # ~2 s to read the 2 MiB clip: the mount can be inspected while the daemon holds it
        bed.throttle(cam, 1 << 20)
    bed.dock(cam)

    copying = bed.wait_log(lambda e: e.get("event") == "copying" and e.get("path", "").endswith("BIG_0001.MP4"))
    assert copying["camera"] == "BC1001"
    if slow:
        entry = bed.daemon_mount(cam)
        assert entry is not None, "camera not mounted under data_dir/mnt/<serial> while copying"
        assert entry.mount_point == str(bed.data_dir / "mnt" / "BC1001")
        assert entry.fs_type == "fuseblk" and entry.source == cam.loop
        assert {"ro", *HARDENED} <= entry.mount_flags, entry
        bed.throttle(cam, 0)

    ready = bed.wait_state("BC1001", ("ready", "attention", "error"), 60)
    assert ready["state"] == "ready", ready
    mounted = bed.logs("mounted", camera="BC1001")
    assert mounted[0]["mode"] == "ro" and mounted[0]["devnode"] == cam.loop
    assert {"ro", *HARDENED} <= set(mounted[0]["flags"].split(","))
    assert any(m["mode"] == "rw" and HARDENED <= set(m["flags"].split(",")) for m in mounted)  # the wipe
    assert bed.daemon_mount(cam) is None  # unmounted once ready

    st = bed.camera_status("BC1001")
    assert (st["state"], st["bay"], st["docked"], st["source"], st["profile"]) == \
        ("ready", "usb-0:1.2", True, "udev", "acme")
    assert st["progress"]["wiped"]["clips"] == 3

    clips = bed.clips("BC1001")
    assert {c["path"]: c["sha256"] for c in clips} == cam.hashes
    assert {c["state"] for c in clips} == {"wiped"}
    objs = _clip_objects(_objects(seaweed, bucket))
    assert sorted(hashlib.sha256(b).hexdigest() for b in objs.values()) == sorted(cam.hashes.values())
    assert all(k.startswith("bwc/bench-1/BC1001/") for k in objs)

    events = [r["event"] for r in bed.audit("BC1001")]
    assert events.count("camera.docked") == 1 and events.count("clip.wiped") == 3, events

    bed.undock(cam)
    bed.wait_log(lambda e: e.get("event") == "camera undocked" and e.get("camera") == "BC1001")
    assert bed.stop_daemon() == 0
    assert bed.list_image(cam) == []  # wiped: read back from the image through a fresh loop device


# --------------------------------------------------------------------------- pulled mid-copy

def test_pull_mid_copy_discards_partial_then_resumes(make_bed, seaweed, bucket):
    ok, why = dbmod.throttle_available()
    if not ok:
        pytest.skip(why)
    bed = make_bed(throttle=True)
    cam = bed.camera("BC2001", clips=1, big_mib=128, port="1.3")
    big = "DCIM/100CAMERA/BIG_0001.MP4"
    bed.start_daemon()
    bed.throttle(cam, 16 << 20)  # a slow USB link: the 128 MiB clip takes ~8 s
    bed.dock(cam)

    bed.wait_log(lambda e: e.get("event") == "copying" and e.get("path") == big)
    tmp = wait_for(lambda: [p for p in _staging(bed) if p.name.endswith(".tmp") and p.stat().st_size > 4 << 20],
                    30, "no partial copy appeared in staging")
    entry = bed.daemon_mount(cam)
    assert entry is not None and {"ro", *HARDENED} <= entry.mount_flags, entry

    mark = bed.mark()
    bed.undock(cam)  # pulled
    bed.wait_log(lambda e: e.get("event") == "camera work stopped" and e.get("camera") == "BC2001", 30, start=mark)
    lazy = bed.logs("unmounted", camera="BC2001")
    assert lazy and lazy[-1]["lazy"] is True
    assert bed.daemon_mount(cam) is None
    assert not tmp[0].exists()
    assert not [p.name for p in _staging(bed) if p.name.endswith(".tmp")]
    by_path = {c["path"]: c for c in bed.clips("BC2001")}
    assert by_path[big]["state"] == "discovered"
    assert "cancelled" in (by_path[big]["last_error"] or "")
    assert not (bed.data_dir / "staging" / f"{by_path[big]['id']:010d}.clip").exists()
    st = bed.camera_status("BC2001")
    assert (st["state"], st["docked"]) == ("undocked", False)
    events = [r["event"] for r in bed.audit("BC2001")]
    assert "camera.undocked" in events
    assert bed.list_image(cam) == sorted(cam.clips)  # nothing wiped

    # Docked again (full speed): the clip is copied from the start and everything finishes.
    bed.throttle(cam, 0)
    mark = bed.mark()
    bed.dock(cam)
    done = bed.wait_state("BC2001", ("ready", "attention", "error"), 90, start=mark)
    assert done["state"] == "ready", done
    clips = bed.clips("BC2001")
    assert {c["path"]: c["state"] for c in clips} == {p: "wiped" for p in cam.clips}
    assert {c["path"]: c["sha256"] for c in clips} == cam.hashes
    objs = _clip_objects(_objects(seaweed, bucket))
    assert sorted(hashlib.sha256(b).hexdigest() for b in objs.values()) == sorted(cam.hashes.values())
    assert not [p.name for p in _staging(bed) if p.name.endswith(".tmp")]
    bed.undock(cam)
    assert bed.stop_daemon() == 0
    assert bed.list_image(cam) == []


# --------------------------------------------------------------------------- refused volumes

def test_unmountable_cameras_error_and_daemon_carries_on(make_bed, seaweed, bucket):
    bed = make_bed(profiles=[dbmod.ACME, VFAT_ONLY])
    bad = bed.camera("BADFS01", garbage=True, port="1.2")
    vfat = bed.camera("VFATONLY1", clips=2, port="1.3", model_id="0c03")
    good = bed.camera("GOOD01", clips=2, port="1.4")
    bad_before = hashlib.sha256(bad.image.read_bytes()).hexdigest()
    bed.start_daemon()

    bed.dock(bad)
    bed.dock(vfat)
    e1 = bed.wait_state("BADFS01", ("error", "ready"))
    e2 = bed.wait_state("VFATONLY1", ("error", "ready"))
    assert e1["state"] == "error" and "no recognisable filesystem" in e1["reason"], e1
    assert e2["state"] == "error" and "'exfat' not allowed" in e2["reason"], e2
    for serial in ("BADFS01", "VFATONLY1"):
        st = bed.camera_status(serial)
        assert st["state"] == "error" and st["reason"].startswith("mount failed:"), st
        assert "camera.mount_failed" in [r["event"] for r in bed.audit(serial)]
        assert bed.clips(serial) == []
    assert bed.proc.poll() is None

    bed.dock(good)
    ok = bed.wait_state("GOOD01", ("ready", "error", "attention"))
    assert ok["state"] == "ready", ok
    objs = _objects(seaweed, bucket)
    assert len(_clip_objects(objs)) == 2 and all(k.startswith("bwc/bench-1/GOOD01/") for k in objs), sorted(objs)
    for c in (bad, vfat, good):
        bed.undock(c)
    bed.wait_log(lambda e: e.get("event") == "camera undocked" and e.get("camera") == "GOOD01")
    bed.stop_daemon()
    assert bed.list_image(vfat) == sorted(vfat.clips)  # refused: nothing wiped
    assert bed.list_image(good) == []
    bed.detach(bad)
    assert hashlib.sha256(bad.image.read_bytes()).hexdigest() == bad_before  # never written


# --------------------------------------------------------------------------- two at once

def test_two_cameras_at_once_both_ready(make_bed, seaweed, bucket):
    bed = make_bed()
    a = bed.camera("BC3001", clips=3, port="1.2")
    b = bed.camera("BC3002", clips=2, port="1.5", partitioned=True)  # a DOS label: the partition is the volume
    bed.start_daemon()
    bed.dock(a)
    bed.dock(b)
    for cam in (a, b):
        ev = bed.wait_state(cam.serial, ("ready", "error", "attention"))
        assert ev["state"] == "ready", ev
    st = {c["serial"]: c for c in bed.status()["cameras"]}
    assert (st["BC3001"]["bay"], st["BC3002"]["bay"]) == ("usb-0:1.2", "usb-0:1.5")
    assert st["BC3001"]["progress"]["wiped"]["clips"] == 3 and st["BC3002"]["progress"]["wiped"]["clips"] == 2
    assert bed.logs("mounted", camera="BC3002")[0]["devnode"] == b.node != b.loop
    objs = _clip_objects(_objects(seaweed, bucket))
    assert len(objs) == 5
    bed.undock(a)
    bed.undock(b)
    bed.stop_daemon()
    assert bed.list_image(a) == [] and bed.list_image(b) == []


# --------------------------------------------------------------------------- start-up

def test_cold_plugged_camera_is_picked_up_at_start(make_bed):
    bed = make_bed()
    cam = bed.camera("COLD01", clips=2, port="1.6")
    bed.dock(cam)  # before the daemon listens: only enumeration can find it
    bed.start_daemon()
    ev = bed.wait_state("COLD01", ("ready", "error", "attention"))
    assert ev["state"] == "ready", ev
    assert bed.camera_status("COLD01")["bay"] == "usb-0:1.6"
    bed.stop_daemon()
    assert bed.list_image(cam) == []


def test_stale_mount_from_a_crash_is_cleaned_at_start(make_bed):
    bed = make_bed()
    cam = bed.camera("STALE01", clips=1)
    stale = bed.data_dir / "mnt" / "STALE01"
    exfat.mount_exfat(cam.loop, stale, read_only=True)  # what a killed daemon leaves behind
    empty = bed.data_dir / "mnt" / "GONE02"
    empty.mkdir()
    assert exfat.find_mount(stale) is not None
    bed.start_daemon()
    assert exfat.find_mount(stale) is None
    assert not stale.exists() and not empty.exists()
    assert bed.logs("stale mount removed", path=str(stale))
    assert bed.proc.poll() is None
    bed.stop_daemon()


def test_crash_mid_copy_recovers_at_restart(make_bed):
    ok, why = dbmod.throttle_available()
    if not ok:
        pytest.skip(why)
    bed = make_bed(throttle=True)
    cam = bed.camera("CRASH01", clips=1, big_mib=48, port="1.8")
    big = "DCIM/100CAMERA/BIG_0001.MP4"
    bed.start_daemon()
    bed.throttle(cam, 8 << 20)
    bed.dock(cam)
    bed.wait_log(lambda e: e.get("event") == "copying" and e.get("path") == big)
    wait_for(lambda: [p for p in _staging(bed) if p.name.endswith(".tmp") and p.stat().st_size > 1 << 20],
              30, "no partial copy appeared in staging")
    bed.kill_daemon()  # crash: the FUSE mount, a partial .tmp and a 'copying' clip stay behind
    stale = exfat.find_mount(bed.mnt(cam))
    assert stale is not None and stale.source == cam.loop
    assert [c["state"] for c in bed.clips("CRASH01") if c["path"] == big] == ["copying"]

    bed.throttle(cam, 0)
    mark = bed.mark()
    bed.start_daemon()  # the camera is still docked: found again by enumeration
    rec = bed.wait_log(lambda e: e.get("event") == "recovered", 10, start=mark)
    assert len(rec["reset_copies"]) == 1
    assert bed.logs("stale mount removed", path=str(bed.mnt(cam)))
    done = bed.wait_state("CRASH01", ("ready", "error", "attention"), 60, start=mark)
    assert done["state"] == "ready", done
    assert {c["path"]: c["state"] for c in bed.clips("CRASH01")} == {p: "wiped" for p in cam.clips}
    assert not [p.name for p in _staging(bed) if p.name.endswith(".tmp")]
    assert exfat.find_mount(bed.mnt(cam)) is None
    assert bed.stop_daemon() == 0
    assert bed.list_image(cam) == []


# --------------------------------------------------------------------------- hooks

def test_state_hook_gets_bay_serial_state_and_a_slow_hook_does_not_block(make_bed, tmp_path):
    out, gate = tmp_path / "hook.log", tmp_path / "gate"
    script = tmp_path / "hook.sh"
    # Every call records "pid bay serial state". The 'docked' call then waits for the gate, which only
    # the 'ready' call opens: if hooks held up the pipeline, 'ready' could never be reached while the
    # 'docked' call is alive. The 'offloading' call sleeps far past the timeout and must be killed.
    script.write_text(f"""#!/bin/sh
echo "$$ $1 $2 $3" >> {out}
case "$3" in
  docked) i=0; while [ ! -e {gate} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
          echo "$$ released" >> {out} ;;
  offloading) exec sleep 60 ;;
  ready) touch {gate} ;;
esac
""")
    script.chmod(0o755)
    bed = make_bed(hooks={"on_state": str(script), "timeout_s": 6.0})
    cam = bed.camera("HOOK01", clips=1, port="1.7")
    bed.start_daemon()
    bed.dock(cam)
    ready = bed.wait_state("HOOK01", ("ready", "error", "attention"))
    assert ready["state"] == "ready", ready

    def calls() -> list[list[str]]:
        return [x.split() for x in out.read_text().splitlines()] if out.exists() else []

    wait_for(lambda: any(c[1:] == ["released"] for c in calls()), 10, "the 'docked' hook was never released")
    by_state = {c[3]: c for c in calls() if len(c) == 4}
    assert by_state["docked"][1:] == ["usb-0:1.7", "HOOK01", "docked"]
    assert by_state["ready"][1:] == ["usb-0:1.7", "HOOK01", "ready"]
    assert {"docked", "offloading", "ready"} <= set(by_state)
    released = next(c[0] for c in calls() if c[1:] == ["released"])
    assert released == by_state["docked"][0]  # the same call: it was alive until 'ready' opened the gate

    timed_out = bed.wait_log(lambda e: e.get("event") == "state hook timed out", 30)
    assert list(timed_out["args"]) == ["usb-0:1.7", "HOOK01", "offloading"]
    assert bed.lines.index(ready) < bed.lines.index(timed_out)
    pid = int(by_state["offloading"][0])
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or "zombie" in Path(f"/proc/{pid}/status").read_text(),
              5, "the timed-out hook is still running")
    assert not [e for e in bed.logs("state hook timed out") if e["args"][2] != "offloading"]
    bed.stop_daemon()
