"""Domain events and camera identity: what sources (udev, watched dirs, import) hand to the daemon.

Sources translate raw signals into these; nothing downstream sees a pyudev
Device or a watchdog event (udiskie's adapter pattern).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SERIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def valid_serial(serial: str) -> bool:
    """Serials become object-key and directory components, so only a safe alphabet is accepted."""
    return bool(SERIAL_RE.match(serial)) and ".." not in serial


@dataclass(frozen=True)
class CameraInfo:
    serial: str
    vendor: str | None = None
    model: str | None = None
    bay: str | None = None
    profile: str | None = None
    source: str = "watch"
    clip_globs: tuple[str, ...] = ()
    sidecar_globs: tuple[str, ...] = ()
    filesystems: tuple[str, ...] = ()
    label: str | None = None  # the volume label (udev ID_FS_LABEL), for a profile's device_id = "label"

    def manifest_fields(self) -> dict[str, str]:
        d = {"serial": self.serial, "vendor": self.vendor, "model": self.model, "profile": self.profile,
             "bay": self.bay}
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class Docked:
    """A camera volume is available: either already mounted at ``root`` or a block device ``devnode`` to mount."""

    camera: CameraInfo
    root: Path | None = None
    devnode: str | None = None
    fs_type: str | None = None
    props: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Undocked:
    serial: str
    root: Path | None = None
    devnode: str | None = None


@dataclass(frozen=True)
class Rejected:
    """A device or directory that looked like a camera but cannot be accepted (bad serial, ...)."""

    what: str
    reason: str
