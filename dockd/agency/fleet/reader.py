"""Reading the fleet's heartbeats from storage: verified against the trust log, incrementally.

Contract:

* A heartbeat is trusted only if (1) it is strict I-JSON of at most ``MAX_BYTES`` and well formed,
  (2) its key is exactly where its signed station, ``at`` and ``seq`` put it (a copy elsewhere is a replay),
  (3) ``TrustState.verify_signed(obj, "station", "at")`` accepts it (enrolled for the station role at the
  heartbeat's own time, not revoked or rotated out), (4) the enrolment names this very station, and
  (5) its ``seq`` is above the newest one already verified for the station (the local cache).
  Anything else makes the station ``untrusted`` with the reason, until a newer heartbeat verifies.
* Cost grows with what changed: the cache (one small JSON file) holds, per station, the newest verified key;
  the next run lists only keys after it (S3 ``StartAfter``) and reads only the newest of them. Without a
  cache it lists the day folders from today back to ``lookback_days`` and stops at the first that holds a
  heartbeat that verifies. A rejected key is remembered (bounded) and not re-read; it never moves the
  listing position, so a forged key sorting far in the future cannot hide the real heartbeats after it.
* The cache is re-verified every run (signature and enrolment), so editing it cannot smuggle in a claim.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockd.agency.fleet import classify
from dockd.core import heartbeat as hb
from dockd.core import ijson
from dockd.core.timefmt import rfc3339
from dockd.evidence.durable import write_atomic
from dockd.storage.base import Backend, ErrorClass, StoreFailure
from dockd.trust.log import TrustState

CACHE_VERSION = 1
MAX_REJECTED = 64  # rejected keys remembered per station
MAX_HISTORY = 2000  # (at, pending, oldest) points kept per station for the report's backlog over time
MAX_STATIONS = 10_000


@dataclass
class StationState:
    station: str
    last_key: str | None = None  # newest verified key: the next listing starts after it
    seq: int = 0  # newest verified seq (replay bound)
    heartbeat: dict[str, Any] | None = None  # the newest verified heartbeat (signed object)
    problem: str | None = None  # why a newer object was not trusted
    problem_seq: int = 0
    rejected: list[str] = field(default_factory=list)
    history: list[list[Any]] = field(default_factory=list)
    reads: int = 0  # objects read this run (the incremental cost, shown by the benchmark)


def verify(state: TrustState, station: str, prefix: str, key: str, raw: bytes | None,
           newest_seq: int) -> tuple[dict[str, Any] | None, str | None]:
    """``(heartbeat, None)`` if the object under ``key`` is trusted, else ``(None, reason)``."""
    name = "/".join(key.rsplit("/", 2)[-2:])  # the day and file name: enough to find it under the station
    if raw is None:
        return None, "vanished while read"
    try:
        obj = ijson.loads(raw, max_bytes=hb.MAX_BYTES)
    except ijson.Invalid as e:
        return None, f"heartbeat {name}: not strict JSON ({e})"
    why = hb.problem(obj)
    if why is not None:
        return None, f"heartbeat {name}: {why}"
    if not hb.key_matches_body(prefix, station, key, obj):
        return None, f"heartbeat {name}: stored under a name its signed body does not give (copied or replayed)"
    v = state.verify_signed(obj, "station", "at")
    if not v.ok:
        return None, f"heartbeat {name}: {v.reason}"
    kid = obj["signature"]["key_id"]
    names = {e.subject.get("name") for e in state.enrolments.get(kid, []) if e.subject.get("kind") == "station"}
    if station not in names:
        return None, f"heartbeat {name}: signed by key {kid} enrolled for {sorted(map(str, names))}, not {station}"
    if obj["seq"] <= newest_seq:
        return None, f"heartbeat {name}: seq {obj['seq']} is not above the verified {newest_seq} (replayed)"
    return obj, None


class Reader:
    """One pass over the fleet: :meth:`read` returns every station's state and saves the cache."""

    def __init__(self, backend: Backend, prefix: str, trust: TrustState, *, cache: Path | None,
                 now: float, lookback_days: int = 8, threads: int = 16):
        self.backend, self.prefix, self.trust, self.cache_path = backend, prefix, trust, cache
        self.now, self.lookback_days, self.threads = now, lookback_days, threads

    # -- stations

    def station_names(self) -> list[str]:
        """Stations with a marker in storage, and every station the trust log enrolled."""
        names: set[str] = set()
        base = hb.stations_prefix(self.prefix)
        for k in self.backend.list_keys(base):
            name = k[len(base):]
            if name and "/" not in name:
                names.add(name)
            if len(names) >= MAX_STATIONS:
                break
        for ens in self.trust.enrolments.values():
            for e in ens:
                if e.subject.get("kind") == "station" and "station" in e.roles:
                    names.add(e.subject["name"])
        return sorted(names)

    def read(self) -> list[StationState]:
        cache = self._load_cache()
        names = self.station_names()
        with ThreadPoolExecutor(max(1, min(self.threads, len(names)))) as pool:
            states = list(pool.map(lambda n: self._read_station(cache.get(n) or StationState(n)), names))
        self._save_cache(states)
        return states

    def _read_station(self, st: StationState) -> StationState:
        self._recheck_cached(st)
        if st.last_key is not None:
            keys = list(self.backend.list_keys(hb.station_dir(self.prefix, st.station), start_after=st.last_key))
            self._take_newest(st, keys)
            return st
        for d in range(self.lookback_days + 1):  # first time: newest day folder first
            day = hb.day_of(int((self.now - d * 86400) * 1e9))
            keys = list(self.backend.list_keys(hb.day_dir(self.prefix, st.station, day)))
            if self._take_newest(st, keys):
                break
        return st

    def _recheck_cached(self, st: StationState) -> None:
        if st.heartbeat is None or st.last_key is None:
            return
        obj, why = verify(self.trust, st.station, self.prefix, st.last_key,
                          json.dumps(st.heartbeat).encode(), st.seq - 1)
        if obj is None:  # the cache was edited, or the key was revoked since: start again from storage
            st.heartbeat, st.last_key, st.seq, st.problem = None, None, 0, f"cached heartbeat no longer verifies: {why}"
            st.problem_seq = 0

    def _take_newest(self, st: StationState, keys: list[str]) -> bool:
        """Verify the new keys newest first until one is trusted; True if one was."""
        found = []
        for k in keys:
            p = hb.parse_key(self.prefix, st.station, k)
            if p is not None and k not in st.rejected:
                found.append((p[2], k))
        for seq, k in sorted(found, reverse=True):
            why: str | None = None
            try:
                raw = self.backend.read_small(k, hb.MAX_BYTES)
            except StoreFailure as e:
                if e.cls != ErrorClass.PERMANENT:  # storage trouble is not the station's fault: the run fails
                    raise
                raw, why = None, f"heartbeat {'/'.join(k.rsplit('/', 2)[-2:])}: {e}"
            st.reads += 1
            obj: dict[str, Any] | None = None
            why2 = why
            if why is None:
                obj, why2 = verify(self.trust, st.station, self.prefix, k, raw, st.seq)
            if obj is not None:
                st.heartbeat, st.last_key, st.seq = obj, k, obj["seq"]
                if st.problem_seq <= obj["seq"]:
                    st.problem, st.problem_seq = None, 0
                st.history.append([obj["at"], classify.pending(obj), obj.get("oldest_pending_age_s")])
                del st.history[:-MAX_HISTORY]
                return True
            if raw is None and why is None:
                continue  # vanished (expired) between the listing and the read
            st.rejected.append(k)
            del st.rejected[:-MAX_REJECTED]
            if seq >= st.problem_seq:
                st.problem, st.problem_seq = why2, seq
        return False

    # -- cache

    def _load_cache(self) -> dict[str, StationState]:
        if self.cache_path is None:
            return {}
        try:
            raw = self.cache_path.read_bytes()
            doc = json.loads(raw)
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("version") != CACHE_VERSION:
            return {}
        out = {}
        for name, d in (doc.get("stations") or {}).items():
            try:
                out[name] = StationState(station=name, last_key=d["last_key"], seq=int(d["seq"]),
                                         heartbeat=d["heartbeat"], problem=d.get("problem"),
                                         problem_seq=int(d.get("problem_seq", 0)), rejected=list(d["rejected"]),
                                         history=list(d["history"]))
            except (KeyError, TypeError, ValueError):
                continue  # an entry we cannot use is read again from storage
        return out

    def _save_cache(self, states: list[StationState]) -> None:
        if self.cache_path is None:
            return
        doc = {"version": CACHE_VERSION, "saved_at": rfc3339(self.now), "stations": {
            s.station: {"last_key": s.last_key, "seq": s.seq, "heartbeat": s.heartbeat, "problem": s.problem,
                        "problem_seq": s.problem_seq, "rejected": s.rejected, "history": s.history}
            for s in states}}
        self.cache_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.cache_path, json.dumps(doc, sort_keys=True).encode(), mode=0o600)


def default_cache(storage_url: str, endpoint: str | None) -> Path:
    """``$XDG_CACHE_HOME/dockd/fleet-<hash of the storage>.json``: one cache per bucket and prefix."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    h = hashlib.sha256(f"{storage_url}\n{endpoint or ''}".encode()).hexdigest()[:16]
    return base / "dockd" / f"fleet-{h}.json"
