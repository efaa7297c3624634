"""Watched directories: each subdirectory of a watch dir is a mounted camera volume named by its serial.

This is the layout an automounter (udisks2, systemd-mount) produces, and how
a card reader or a test hands dockd a camera. Subdirectories that exist at
start are docked at once (cold plug); watchdog reports later arrivals and
departures. Only directory events directly under a watch dir count.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path

from watchdog.events import DirCreatedEvent, DirDeletedEvent, DirMovedEvent, FileSystemEventHandler
from watchdog.observers import Observer

from dockd.config import CameraProfile
from dockd.core.events import CameraInfo, Docked, Rejected, Undocked, valid_serial


def to_event(path: Path, present: bool, profile: CameraProfile | None = None) -> Docked | Undocked | Rejected:
    """Translate "directory ``path`` appeared/disappeared" into a domain event. ``profile``
    (``[sources] watch_profile``) gives the camera its profile name and clip/sidecar globs."""
    serial = path.name
    if not valid_serial(serial):
        return Rejected(str(path), f"directory name {serial!r} is not a valid camera serial")
    if present:
        cam = CameraInfo(serial=serial, source="watch", bay=f"dir:{path.parent.name}")
        if profile is not None:
            cam = CameraInfo(serial=serial, source="watch", bay=cam.bay, profile=profile.name,
                             clip_globs=profile.clip_globs or (), sidecar_globs=profile.sidecar_globs or ())
        return Docked(cam, root=path)
    return Undocked(serial, root=path)


class _Handler(FileSystemEventHandler):
    def __init__(self, base: Path, emit: Callable[[object], None], profile: CameraProfile | None = None):
        self.base, self.emit, self.profile = base, emit, profile

    def _direct(self, p: str | bytes) -> Path | None:
        path = Path(p.decode() if isinstance(p, bytes) else p)
        return path if path.parent == self.base else None

    def on_created(self, event):
        if isinstance(event, DirCreatedEvent) and (p := self._direct(event.src_path)):
            self.emit(to_event(p, True, self.profile))

    def on_deleted(self, event):
        if isinstance(event, DirDeletedEvent) and (p := self._direct(event.src_path)):
            self.emit(to_event(p, False))

    def on_moved(self, event):
        if isinstance(event, DirMovedEvent):
            if p := self._direct(event.src_path):
                self.emit(to_event(p, False))
            if p := self._direct(event.dest_path):
                self.emit(to_event(p, True, self.profile))


class WatchDirSource:
    def __init__(self, dirs: tuple[Path, ...], events: queue.Queue, profile: CameraProfile | None = None):
        self.dirs = tuple(Path(d).resolve() for d in dirs)
        self.events = events
        self.profile = profile
        self.observer = Observer()

    def start(self) -> None:
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
            self.observer.schedule(_Handler(d, self.events.put, self.profile), str(d), recursive=False)
        self.observer.start()
        for d in self.dirs:  # cold plug, after the observer is armed so nothing slips between
            for sub in sorted(d.iterdir()):
                if sub.is_dir() and not sub.is_symlink():
                    self.events.put(to_event(sub, True, self.profile))

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)
