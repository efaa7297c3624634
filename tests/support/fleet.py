"""Fleet test helpers: an agency trust log with enrolled stations, and synthetic signed heartbeats."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockd.core import heartbeat as hb
from dockd.core.timefmt import rfc3339_ns
from dockd.evidence import keys
from dockd.station.heartbeat import signed
from dockd.trust import log as trust
from dockd.trust import store

T0 = "2026-01-01T00:00:00Z"
UNTIL = "2099-01-01T00:00:00Z"


@dataclass
class Agency:
    dir: Path
    root: Ed25519PrivateKey
    root_pem: Path
    trust_dir: Path
    statements: list[dict[str, Any]] = field(default_factory=list)
    stations: dict[str, keys.StationKey] = field(default_factory=dict)

    def state(self) -> trust.TrustState:
        return trust.load(self.root.public_key(), [trust.canonical(s) for s in self.statements])

    def station_key(self, name: str, *, enrol: bool = True) -> keys.StationKey:
        """A new station key (enrolled for ``name`` unless ``enrol`` is False)."""
        data = self.dir / "stations" / f"{len(self.stations)}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        data.mkdir(parents=True)
        k, _ = keys.load_or_create(data)
        if enrol:
            req, _ = store.station_request(data, name, T0)
            st = trust.enrol_statement(self.state(), req, ["station"], T0, UNTIL, T0, self.root)
            self.statements.append(st)
            store.append_dir(self.trust_dir, st)
        self.stations[name] = k
        return k


def agency(tmp: Path) -> Agency:
    tmp.mkdir(parents=True, exist_ok=True)
    root = Ed25519PrivateKey.generate()
    pem = tmp / "root.pub.pem"
    pem.write_text(keys.public_pem(root.public_key()))
    a = Agency(tmp, root, pem, tmp / "trust")
    st = trust.root_statement("Test PD", root, T0)
    a.statements.append(st)
    store.append_dir(a.trust_dir, st)
    return a


def body(station: str, at: float, seq: int, *, cameras: list[dict[str, Any]] | None = None,
         alarms: list[dict[str, Any]] | None = None, pending: int = 0, oldest_s: int | None = None,
         free_bytes: int = 100 << 30, export_at: str | None = None) -> dict[str, Any]:
    """A heartbeat body as a station would build it (the figures given, the rest plausible)."""
    return {"format": hb.FORMAT, "station": station, "seq": seq, "at": rfc3339_ns(int(at * 1e9)), "interval_s": 300,
            "software": "dockd test", "clock": {"alarm": False}, "free_bytes": free_bytes,
            "queue": {"staged": pending, "uploaded": 0, "wiped": 10, "failed": 0, "quarantined": 0},
            "oldest_pending_age_s": oldest_s, "upload_failures": 0, "storage": {"reachable": True},
            "alarms": alarms or [], "audit": {"last_head_at": None, "last_export_at": export_at},
            "cameras": cameras or [], "cameras_not_listed": 0}


def camera(serial: str, last_dock: float, *, docked: bool = False, bay: str = "1",
           anomalies: list[str] | None = None) -> dict[str, Any]:
    return {"serial": serial, "bay": bay, "state": "ready" if docked else "undocked", "docked": docked,
            "last_dock": rfc3339_ns(int(last_dock * 1e9))[:23] + "Z", "anomalies": anomalies or [],
            "clock_offset_s": None}


def put(backend, prefix: str, key: keys.StationKey, b: dict[str, Any], *, at_key: str | None = None,
        data: bytes | None = None) -> str:
    """Store the signed heartbeat ``b`` under its own key (or ``at_key``); return the key."""
    data = signed(b, key) if data is None else data
    k = at_key or hb.key(prefix, b["station"], int(hb_seconds(b["at"]) * 1e9), b["seq"])
    backend.put_bytes(k, data, hashlib.sha256(data).hexdigest())
    marker = f"{b['station']}\n".encode()
    backend.put_bytes(hb.marker_key(prefix, b["station"]), marker, hashlib.sha256(marker).hexdigest())
    return k


def hb_seconds(at: str) -> float:
    return trust.time_ns(at) / 1e9
