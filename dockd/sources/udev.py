"""udev: docked cameras as USB mass-storage block devices.

The pyudev observer thread only puts ``(action, properties)`` on a queue
(pyudev's callbacks block its thread); :func:`translate` turns those into
domain events on the daemon's thread, matching ``[[camera]]`` profiles
(first match wins). Identity: serial from ``ID_SERIAL_SHORT`` falling back to
the filesystem UUID; bay from the USB port path ``ID_PATH``.
"""

from __future__ import annotations

import queue
import threading

from ..config import Config
from ..events import CameraInfo, Docked, Rejected, Undocked, valid_serial


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
    """Map one udev event to a domain event, or None if it is not about a camera volume."""
    if props.get("SUBSYSTEM") != "block" or props.get("DEVTYPE") not in ("disk", "partition"):
        return None
    devnode = props.get("DEVNAME")
    if action == "remove":
        serial = _serial(props)
        return Undocked(serial, devnode=devnode) if serial else None
    if action not in ("add", "change"):
        return None
    if props.get("ID_FS_USAGE", "filesystem") != "filesystem" or not props.get("ID_FS_TYPE"):
        return None  # a partitioned disk itself, or no filesystem: its partition will come
    profile = cfg.profile_for(props)
    if profile is None:
        return None
    serial = _serial(props)
    if not serial or not valid_serial(serial):
        return Rejected(devnode or "?", f"camera serial {serial!r} is missing or unsafe")
    cam = CameraInfo(serial=serial, vendor=props.get("ID_VENDOR") or props.get("ID_VENDOR_ID"),
                     model=props.get("ID_MODEL") or props.get("ID_MODEL_ID"), bay=bay_of(props),
                     profile=profile.name, source="udev",
                     clip_globs=profile.clip_globs or cfg.offload.clip_globs,
                     sidecar_globs=profile.sidecar_globs or cfg.offload.sidecar_globs,
                     filesystems=profile.filesystems)
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
        self._observer = pyudev.MonitorObserver(mon, callback=lambda d: self.raw.put((d.action, dict(d.properties))),
                                                name="udev-observer")
        self._observer.start()
        self._pump = threading.Thread(target=self._translate_loop, name="udev-translate", daemon=True)
        self._pump.start()
        for dev in ctx.list_devices(subsystem="block"):  # cold plug
            self.raw.put(("add", dict(dev.properties)))

    def _translate_loop(self) -> None:
        while not self._stop.is_set():
            try:
                action, props = self.raw.get(timeout=0.5)
            except queue.Empty:
                continue
            ev = translate(self.cfg, action or "add", props)
            if ev is not None:
                self.events.put(ev)

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.send_stop()
        if self._pump is not None:
            self._pump.join(timeout=5)
