"""Pure unit tests of the udev translation (dockd.camera.sources.udev): no pyudev, no devices.

translate() maps (action, udev properties) to Docked / Undocked / Rejected /
None; bay_of() names the bay from ID_PATH; profiles are first-match with list
alternatives; match keys are checked at config load.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dockd import config as config_mod
from dockd.camera.sources.udev import bay_of, translate
from dockd.core.errors import ConfigError
from dockd.core.events import Docked, Rejected, Undocked

ID_PATH = "pci-0000:00:14.0-usb-0:1.2:1.0-scsi-0:0:0:0"


def make_cfg(cameras: list[dict], **offload) -> config_mod.Config:
    raw = {"station": {"id": "st1", "data_dir": "/var/lib/dockd-test"}, "sources": {"udev": True},
           "camera": cameras}
    if offload:
        raw["offload"] = offload
    return config_mod.parse(raw, Path("/etc/dockd/test.toml"))


CFG = make_cfg([
    {"name": "axon", "match": {"ID_VENDOR_ID": "2e3c", "ID_MODEL_ID": ["0001", "0002"]},
     "filesystems": ["exfat"], "clip_globs": ["DCIM/**/*.MP4"]},
    {"name": "generic", "match": {"ID_VENDOR_ID": ["2e3c", "0c45"]}},
], sidecar_globs=["DCIM/**/*.GPS"])


def disk(**over: str) -> dict[str, str]:
    """Properties of a superfloppy camera disk (filesystem on the whole disk), as udev reports them."""
    p = {"SUBSYSTEM": "block", "DEVTYPE": "disk", "DEVNAME": "/dev/sdb", "ID_BUS": "usb",
         "ID_VENDOR_ID": "2e3c", "ID_MODEL_ID": "0001", "ID_VENDOR": "Axon", "ID_MODEL": "Body_3",
         "ID_SERIAL_SHORT": "X6000123", "ID_PATH": ID_PATH, "ID_FS_TYPE": "exfat", "ID_FS_USAGE": "filesystem",
         "ID_FS_UUID": "1234-ABCD"}
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


# --------------------------------------------------------------------------- bays

@pytest.mark.parametrize("id_path, bay", [
    (ID_PATH, "usb-0:1.2"),
    ("pci-0000:00:14.0-usb-0:1.4.3:1.0-scsi-0:0:0:0", "usb-0:1.4.3"),  # behind a hub
    ("platform-xhci-hcd.1.auto-usb-0:1:1.0-scsi-0:0:0:0", "usb-0:1"),
    ("pci-0000:00:1f.2-ata-1", "pci-0000:00:1f.2-ata-1"),  # not USB: the path itself
])
def test_bay_of(id_path, bay):
    assert bay_of({"ID_PATH": id_path}) == bay


def test_bay_of_without_id_path():
    assert bay_of({}) is None


# --------------------------------------------------------------------------- docking

def test_add_of_matching_disk_is_docked_with_profile_identity_and_globs():
    ev = translate(CFG, "add", disk())
    assert isinstance(ev, Docked)
    cam = ev.camera
    assert (cam.serial, cam.bay, cam.profile, cam.source) == ("X6000123", "usb-0:1.2", "axon", "udev")
    assert (cam.vendor, cam.model) == ("Axon", "Body_3")
    assert cam.filesystems == ("exfat",)
    assert cam.clip_globs == ("DCIM/**/*.MP4",)          # from the profile
    assert cam.sidecar_globs == ("DCIM/**/*.GPS",)       # profile has none: [offload] default
    assert (ev.devnode, ev.fs_type, ev.root) == ("/dev/sdb", "exfat", None)


def test_change_event_also_docks():
    assert isinstance(translate(CFG, "change", disk()), Docked)


@pytest.mark.parametrize("action", ["bind", "unbind", "move", "online", ""])
def test_other_actions_are_ignored(action):
    assert translate(CFG, action, disk()) is None


def test_profile_first_match_wins_and_list_alternatives():
    assert translate(CFG, "add", disk(ID_MODEL_ID="0002")).camera.profile == "axon"   # second alternative
    assert translate(CFG, "add", disk(ID_MODEL_ID="0099")).camera.profile == "generic"  # falls through
    ev = translate(CFG, "add", disk(ID_VENDOR_ID="0c45", ID_MODEL_ID="6366"))
    assert ev.camera.profile == "generic"
    assert ev.camera.filesystems == ("exfat", "vfat")   # the default
    assert ev.camera.clip_globs == CFG.offload.clip_globs


def test_every_match_key_must_match():
    cfg = make_cfg([{"name": "p", "match": {"ID_VENDOR_ID": "2e3c", "ID_FS_LABEL": "CAM"}}])
    assert translate(cfg, "add", disk()) is None                       # no label
    assert translate(cfg, "add", disk(ID_FS_LABEL="CAM")).camera.profile == "p"
    assert translate(cfg, "add", disk(ID_FS_LABEL="CAMX")) is None


@pytest.mark.parametrize("over", [
    {"ID_VENDOR_ID": "abcd"},                    # another USB device
    {"ID_VENDOR_ID": None},                      # no vendor at all (e.g. a SATA disk)
    {"SUBSYSTEM": "usb"},                        # not a block device
    {"DEVTYPE": "usb_device"},
    {"ID_FS_TYPE": None},                        # no filesystem
    {"ID_FS_USAGE": "crypto"},                   # LUKS, RAID member...: not a filesystem
    {"ID_FS_TYPE": ""},
])
def test_non_camera_devices_are_ignored(over):
    assert translate(CFG, "add", disk(**over)) is None
    assert translate(CFG, "remove", disk(**over)) is None


def test_partitioned_camera_docks_its_partition_not_the_disk():
    whole = disk(ID_FS_TYPE=None, ID_FS_USAGE=None, ID_FS_UUID=None, ID_PART_TABLE_TYPE="dos")
    part = disk(DEVTYPE="partition", DEVNAME="/dev/sdb1", PARTN="1", ID_PART_ENTRY_NUMBER="1")
    assert translate(CFG, "add", whole) is None
    ev = translate(CFG, "add", part)
    assert isinstance(ev, Docked) and ev.devnode == "/dev/sdb1" and ev.camera.serial == "X6000123"
    # removal: the partition undocks, the disk's own removal is not a camera event
    rm = translate(CFG, "remove", part)
    assert rm == Undocked("X6000123", devnode="/dev/sdb1")
    assert translate(CFG, "remove", whole) is None


# --------------------------------------------------------------------------- identity

def test_serial_falls_back_to_filesystem_uuid():
    ev = translate(CFG, "add", disk(ID_SERIAL_SHORT=None))
    assert ev.camera.serial == "1234-ABCD"
    ev = translate(CFG, "add", disk(ID_SERIAL_SHORT=""))
    assert ev.camera.serial == "1234-ABCD"


def test_serial_separators_are_made_safe():
    assert translate(CFG, "add", disk(ID_SERIAL_SHORT="AB:CD EF")).camera.serial == "AB-CD_EF"


@pytest.mark.parametrize("serial", ["../../etc", "a/b", ".hidden", "-rf", "x" * 65, "ca\u00f1on", "a\nb"])
def test_unsafe_serial_is_rejected(serial):
    ev = translate(CFG, "add", disk(ID_SERIAL_SHORT=serial))
    assert isinstance(ev, Rejected), ev
    assert ev.what == "/dev/sdb" and "unsafe" in ev.reason
    assert translate(CFG, "remove", disk(ID_SERIAL_SHORT=serial)) is None


def test_no_serial_and_no_uuid_is_rejected():
    ev = translate(CFG, "add", disk(ID_SERIAL_SHORT=None, ID_FS_UUID=None))
    assert isinstance(ev, Rejected) and "missing" in ev.reason


def test_remove_of_camera_is_undocked():
    assert translate(CFG, "remove", disk()) == Undocked("X6000123", devnode="/dev/sdb")


# --------------------------------------------------------------------------- config load

def test_unknown_match_key_is_rejected_at_load(tmp_path):
    p = tmp_path / "dockd.toml"
    p.write_text('[station]\nid = "s"\ndata_dir = "/var/lib/x"\n\n'
                 '[[camera]]\nname = "c"\nmatch = { ID_VENDOR_ID = "2e3c", ID_MODLE_ID = "0001" }\n')
    with pytest.raises(ConfigError) as ei:
        config_mod.load(p)
    msg = str(ei.value)
    assert "match.ID_MODLE_ID" in msg and "unknown udev property" in msg and str(p) in msg
    assert ei.value.exit_code == 2


@pytest.mark.parametrize("bad", [[], [1], 7])
def test_match_value_must_be_string_or_strings(bad):
    with pytest.raises(ConfigError):
        make_cfg([{"name": "c", "match": {"ID_VENDOR_ID": bad}}])


# --------------------------------------------------------------------------- mount helper, pure parts

def test_mount_flags_reads_the_topmost_mount_with_escaped_paths(tmp_path):
    from dockd.camera.mounts import mount_flags

    target = tmp_path / "mnt" / "cam 1\u00e9"
    esc = str(target).replace(" ", "\\040").replace("\u00e9", "\\303\\251")
    info = tmp_path / "mountinfo"
    info.write_text(
        f"36 25 0:32 / {tmp_path}/other rw,relatime shared:1 - tmpfs tmpfs rw\n"
        f"37 25 7:0 / {esc} ro,nosuid,nodev,relatime - fuseblk /dev/loop0 ro,user_id=0\n"
        f"38 37 7:0 / {esc} ro,nosuid,nodev,noexec,relatime,nosymfollow - fuseblk /dev/loop0 ro,user_id=0\n",
        encoding="utf-8")
    assert mount_flags(target, str(info)) == {"ro", "nosuid", "nodev", "noexec", "relatime", "nosymfollow"}
    assert mount_flags(tmp_path / "mnt", str(info)) is None


@pytest.mark.parametrize("node, why", [
    (None, "no device node"), ("", "no device node"), ("/tmp/x", "not a device node under /dev"),
    ("/dev/../etc/passwd", "not a device node under /dev"), ("/dev/null", "not a block device"),
    ("/dev/does-not-exist-dockd", "No such file"),
])
def test_only_block_devices_under_dev_are_mounted(node, why):
    from dockd.camera.mounts import MountError, check_devnode

    with pytest.raises(MountError, match=why):
        check_devnode(node)
