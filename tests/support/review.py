"""An agency for the completeness review's tests: a trust dir (root, station keys, a reviewer key), a signed
clip index generated with scripts/benchlib/indexgen.py (the format of docs/clip-index.md), put in storage."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockd.evidence import keys
from dockd.trust import log as trust
from dockd.trust import store as trustlog

REPO = Path(__file__).resolve().parents[2]
T0 = "2026-01-01T00:00:00Z"


def indexgen():
    """scripts/benchlib/indexgen.py, the signed index generator shared with ``scripts/bench review``."""
    name = "dockd_bench_indexgen"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "benchlib" / "indexgen.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


@dataclass
class Agency:
    dir: Path
    root: Ed25519PrivateKey
    root_key_file: Path
    stations: dict[str, keys.StationKey] = field(default_factory=dict)
    people: dict[str, tuple[keys.StationKey, Path]] = field(default_factory=dict)

    @property
    def root_pub_file(self) -> Path:
        return self.dir / "root.pub.pem"

    def state(self) -> trust.TrustState:
        return trust.load(self.root.public_key(), trustlog.read_dir(self.dir))

    def enrol(self, name: str, kind: str, role: str) -> keys.StationKey:
        kf = self.dir.parent / "keys" / f"{name}.ed25519"
        kf.parent.mkdir(exist_ok=True)
        priv = trustlog.create_private(kf)
        req = trustlog.make_request(priv, kind, name, T0)
        st = trust.enrol_statement(self.state(), req, [role], None, "2099-01-01T00:00:00Z", T0, self.root)
        trustlog.append_dir(self.dir, st)
        k = trustlog.load_signing_key(kf)
        if role == "station":
            self.stations[name] = k
        else:
            self.people[name] = (k, kf)
        return k


def make_agency(tmp: Path, stations: list[str], reviewers: list[str] = ()) -> Agency:  # type: ignore[assignment]
    d = tmp / "trust"
    d.mkdir(parents=True)
    rk = tmp / "root.ed25519"
    root = trustlog.create_private(rk)
    trustlog.append_dir(d, trust.root_statement("Test PD", root, T0))
    (d / "root.pub.pem").write_text(keys.public_pem(root.public_key()))
    a = Agency(d, root, rk)
    for s in stations:
        a.enrol(s, "station", "station")
    for r in reviewers:
        a.enrol(r, "person", "reviewer")
    return a
