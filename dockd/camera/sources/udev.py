"""udev: docked cameras as USB mass-storage block devices.

The pyudev observer thread only puts ``(action, properties)`` on a queue
(pyudev's callbacks block its thread); :func:`translate`, a pure function run
on a second thread, turns those into domain events for the daemon, matching
``[[camera]]`` profiles (first match wins). Identity: serial from
``ID_SERIAL_SHORT`` falling back to the filesystem UUID; bay from the USB port
path ``ID_PATH``. Devices present at start are enumerated (cold plug).
"""

from __future__ import annotations

import queue
import threading

import structlog

from dockd.config import Config
from dockd.core.events import CameraInfo, Docked, Rejected, Undocked, valid_serial

log = structlog.get_logger("dockd.udev")


def _serial(props: dict[str, str]) -> str | None:
    for k in ("ID_SERIAL_SHORT", "ID_FS_UUID"):
        v = props.get(k)
        if v:
            return v.replace(":", "-").replace(" ", "_")
    return None


def bay_of(props: dict[str, str]) -> str | None:
    """Bay name from the USB port path, e.g. ``pci-0000:00:14.0-usb-0:1.2:1.0-scsi-0:0:0:0`` -> ``usb-0:1.2``."""
    p = props.get("ID_PATH")
    if not p:
        return None
    if "-usb-" in p:
        port = p.split("-usb-", 1)[1].split(":")
        return "usb-" + ":".join(port[:2]) if len(port) >= 2 else "usb-" + port[0]
    return p


def translate(cfg: Config, action: str, props: dict[str, str]) -> Docked | Undocked | Rejected | None:
    """Map one udev event to a domain event, or None if it is not about a camera volume.

    Only a block device carrying a filesystem (a superfloppy disk, or a
    partition) that matches a ``[[camera]]`` profile is a camera volume; a
    partitioned disk itself is ignored (its partition brings the volume).
    'remove' events carry the same properties (from the udev database), so
    the same test picks the removals that matter.
    """
    if props.get("SUBSYSTEM") != "block" or props.get("DEVTYPE") not in ("disk", "partition"):
        return None
    if action not in ("add", "change", "remove"):
        return None
    if props.get("ID_FS_USAGE", "filesystem") != "filesystem" or not props.get("ID_FS_TYPE"):
        return None  # a partitioned disk itself, or no filesystem: its partition will come
    profile = cfg.profile_for(props)
    if profile is None:
        return None
    devnode = props.get("DEVNAME")
    serial = _serial(props)
    if action == "remove":
        return Undocked(serial, devnode=devnode) if serial and valid_serial(serial) else None
    if not serial or not valid_serial(serial):
        return Rejected(devnode or "?", f"camera serial {serial!r} is missing or unsafe")
    cam = CameraInfo(serial=serial, vendor=props.get("ID_VENDOR") or props.get("ID_VENDOR_ID"),
                     model=props.get("ID_MODEL") or props.get("ID_MODEL_ID"), bay=bay_of(props),
                     profile=profile.name, source="udev",
                     clip_globs=profile.clip_globs or cfg.offload.clip_globs,
                     sidecar_globs=profile.sidecar_globs or cfg.offload.sidecar_globs,
                     filesystems=profile.filesystems, label=props.get("ID_FS_LABEL") or None)
    return Docked(cam, devnode=devnode, fs_type=props.get("ID_FS_TYPE"), props=dict(props))


class UdevSource:
    """pyudev monitor on the udev netlink source, subsystem ``block``; raw events onto ``raw``."""

    def __init__(self, cfg: Config, events: queue.Queue):
        self.cfg, self.events = cfg, events
        self.raw: queue.Queue = queue.Queue()
        self._observer = None
        self._pump: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        import pyudev

        ctx = pyudev.Context()
        mon = pyudev.Monitor.from_netlink(ctx, source="udev")
        mon.filter_by("block")
        # The observer thread does nothing but enqueue (its callbacks block it).
        observer = pyudev.MonitorObserver(mon, callback=lambda d: self.raw.put((d.action, dict(d.properties))),
                                          name="udev-observer")
        self._observer = observer
        observer.start()
        # Cold plug, after the monitor is armed so nothing slips between (a
        # device both listed and announced is docked once: the daemon ignores
        # a second Docked for a camera it is handling). Translated here, so the
        # cameras present at start are on the event queue when start() returns
        # (``run --drain`` relies on it). A device udev has not processed yet
        # lacks its ID_* properties and is skipped; its 'add' event follows.
        for dev in ctx.list_devices(subsystem="block"):
            self._emit("add", dict(dev.properties))
        self._pump = threading.Thread(target=self._translate_loop, name="udev-translate", daemon=True)
        self._pump.start()

    def _emit(self, action: str | None, props: dict[str, str]) -> None:
        try:
            ev = translate(self.cfg, action or "add", props)
        except Exception:  # noqa: BLE001 - one odd device never stops the source
            log.exception("cannot translate udev event", action=action, devname=props.get("DEVNAME"))
            return
        if ev is not None:
            self.events.put(ev)

    def _translate_loop(self) -> None:
        while not self._stop.is_set():
            try:
                action, props = self.raw.get(timeout=0.5)
            except queue.Empty:
                continue
            self._emit(action, props)

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()  # send_stop + join
        if self._pump is not None:
            self._pump.join(timeout=5)
