"""Records read from the queue (:class:`Clip`, :class:`Camera`) and their stable JSON shapes.

The JSON of a clip is part of the CLI contract (``dockd queue --json``, ``dockd show --json``);
its times come from :mod:`dockd.core.timefmt`, the one home of time formatting.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from dockd.core.lifecycle import ClipState
from dockd.core.timefmt import rfc3339, rfc3339_ns


@dataclass(frozen=True)
class Clip:
    id: int
    camera: str
    path: str
    size: int
    mtime_ns: int
    state: ClipState
    sha256: str | None
    staged_path: str | None
    object_key: str | None
    manifest: str | None
    verify_mode: str | None
    attempts: int
    last_error: str | None
    next_attempt_at: float | None
    lease_owner: str | None
    lease_expires: float | None
    upload_id: str | None
    created_at: float
    updated_at: float
    staged_at: float | None
    uploaded_at: float | None
    wiped_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> Clip:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, m: Any) -> Clip:
        """From a row as a mapping of column names (columns this dockd does not know are ignored)."""
        vals: dict[str, Any] = {f.name: m[f.name] for f in fields(cls)}
        vals["state"] = ClipState(vals["state"])
        return cls(**vals)

    def to_json(self) -> dict:
        """The stable JSON shape of a clip (``dockd queue --json``, ``dockd show --json``)."""
        return {
            "id": self.id,
            "camera": self.camera,
            "path": self.path,
            "size": self.size,
            "mtime": rfc3339_ns(self.mtime_ns),
            "sha256": self.sha256,
            "state": str(self.state),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": rfc3339(self.next_attempt_at),
            "object_key": self.object_key,
            "staged_path": self.staged_path,
            "verify": self.verify_mode,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "staged_at": rfc3339(self.staged_at),
            "uploaded_at": rfc3339(self.uploaded_at),
            "wiped_at": rfc3339(self.wiped_at),
        }


@dataclass(frozen=True)
class Camera:
    serial: str
    vendor: str | None
    model: str | None
    profile: str | None
    bay: str | None
    source: str | None
    state: str
    reason: str | None
    docked: int
    docked_at: float | None
    updated_at: float

    @classmethod
    def from_row(cls, row: Any) -> Camera:
        return cls.from_mapping(row._mapping)

    @classmethod
    def from_mapping(cls, m: Any) -> Camera:
        return cls(**{f.name: m[f.name] for f in fields(cls)})
