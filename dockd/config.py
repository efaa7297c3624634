"""Configuration: one TOML file, validated completely at load.

Lookup order: ``--config PATH``, else ``$DOCKD_CONFIG``, else
``/etc/dockd/dockd.toml``. Any unknown key, wrong type or missing required
value raises :class:`ConfigError` naming the file and the dotted key; the CLI
turns that into one line on stderr and exit code 2.

Storage credentials never come from this file: boto3's standard chain
(environment, shared files, ``$CREDENTIALS_DIRECTORY``) provides them.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn
from urllib.parse import urlparse

from dockd.core.clipnames import NameRule, check_rule
from dockd.core.errors import ConfigError

DEFAULT_PATH = "/etc/dockd/dockd.toml"

# A config file is small: anything bigger is a mistake (or /dev/zero), refused before parsing.
MAX_FILE_BYTES = 1 << 20
# No value dockd reads (paths, URLs, globs, names) needs more; a longer one is refused, not echoed.
MAX_STRING_CHARS = 4096

# Allowed udev properties in a [[camera]] match; anything else is a typo we refuse.
MATCH_KEYS = frozenset(
    {
        "ID_VENDOR_ID",
        "ID_MODEL_ID",
        "ID_SERIAL_SHORT",
        "ID_SERIAL",
        "ID_VENDOR",
        "ID_MODEL",
        "ID_FS_TYPE",
        "ID_FS_LABEL",
        "ID_FS_UUID",
        "ID_BUS",
        "ID_PATH",
        "DEVTYPE",
        "DOCKD_PROFILE",
        "DOCKD_CAMERA",
    }
)


@dataclass(frozen=True)
class StationConfig:
    id: str
    data_dir: Path = Path("/var/lib/dockd")


@dataclass(frozen=True)
class StorageConfig:
    url: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    multipart_threshold_mb: int = 64
    part_size_mb: int = 8
    concurrency: int = 8
    part_concurrency: int = 6  # multipart parts in flight for the whole station (memory: this x part_size_mb)
    object_lock_days: int = 0
    legal_hold: bool = False
    verify_after_upload: str = "head"  # "head" (checksum) or "read" (download and hash)
    timeout_s: float = 60.0
    conditional_writes: bool = True  # the server honours If-None-Match: * on PUT

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme

    @property
    def bucket(self) -> str:
        return urlparse(self.url).netloc

    @property
    def prefix(self) -> str:
        """Key prefix inside the bucket (s3) ; empty for file:// whose path is the root."""
        return urlparse(self.url).path.strip("/") if self.scheme == "s3" else ""

    @property
    def root(self) -> Path:
        """Directory of a ``file://`` share."""
        return Path(urlparse(self.url).path)


@dataclass(frozen=True)
class UploadConfig:
    max_attempts: int = 8
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 600.0
    bandwidth_limit_mbps: float = 0.0
    lease_s: float = 900.0


@dataclass(frozen=True)
class SourcesConfig:
    udev: bool = False
    watch_dirs: tuple[Path, ...] = ()
    drop_privileges: bool = True  # mount through dockd.camera.mounthelper; the daemon keeps no capabilities
    user: str = "dockd"  # with drop_privileges: the daemon switches to this user (if it exists) at start
    watch_profile: str = ""  # the [[camera]] profile (by name) that cameras from watch_dirs use; "" = none


@dataclass(frozen=True)
class OffloadConfig:
    clip_globs: tuple[str, ...] = ("DCIM/**/*.MP4", "DCIM/**/*.mp4", "DCIM/**/*.MOV", "DCIM/**/*.mov")
    sidecar_globs: tuple[str, ...] = ()
    wipe: str = "after-upload"
    wipe_check: str = "hash"
    verify: str = "reread"
    max_file_size_gb: float = 64.0
    max_depth: int = 16
    max_entries: int = 100_000
    reserve_free_mb: int = 1024
    parallel_cameras: int = 4
    keep_staged_hours: float = 0.0
    buffer_kb: int = 4096
    media_probe: bool = True  # ffprobe the staged copy; facts in the signed manifest (dockd.evidence.mediaprobe)
    ffprobe: str = "ffprobe"  # a path, or a name looked up on PATH
    media_probe_timeout_s: float = 10.0


@dataclass(frozen=True)
class NamesConfig:
    """A profile's clip-name rule (``names = {...}``): see dockd/core/clipnames.py."""
    pattern: str
    time_format: str = ""
    zone: str = "UTC"

    def rule(self, profile: str) -> NameRule:
        """The compiled rule (the pattern and zone were checked when the config was loaded)."""
        return _name_rule(profile, self.pattern, self.time_format, self.zone)


@dataclass(frozen=True)
class CameraProfile:
    name: str
    match: dict[str, tuple[str, ...]]
    filesystems: tuple[str, ...] = ("exfat", "vfat")
    clip_globs: tuple[str, ...] | None = None
    sidecar_globs: tuple[str, ...] | None = None
    names: NamesConfig | None = None  # how clip names give a sequence number and a start time
    device_id: str = ""  # "udev_serial", "label" or "file:RELPATH" (a file on the camera); "" = none

    def matches(self, props: dict[str, str]) -> bool:
        return all(props.get(k) in allowed for k, allowed in self.match.items())


@dataclass(frozen=True)
class HooksConfig:
    on_state: str = ""
    timeout_s: float = 10.0


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9464"


@dataclass(frozen=True)
class TrustConfig:
    root_pubkey: Path | None = None  # the agency root's public key every check pins (docs: README "Trust model")


@dataclass(frozen=True)
class AuditConfig:
    # Audit rows of days older than this, once their segment is exported and re-read from storage,
    # are compacted behind a signed checkpoint (dockd/retention.py). 0 = keep every row here forever.
    keep_days: float = 0.0
    # The current UTC day's new rows leave as signed part segments at most this often (seconds), so a
    # same-day disclosure carries its custody rows (dockd/station/auditparts.py); 0 = only finished days.
    part_interval_s: float = 900.0


@dataclass(frozen=True)
class IndexConfig:
    # The clip index (docs/clip-index.md): a segment of the current UTC day at most this often (seconds);
    # a finished day's last segment goes at once.
    interval_s: float = 900.0


@dataclass(frozen=True)
class ContinuityConfig:
    clock_ahead_s: float = 300.0  # a clip dated more than this after the station's clock: clock_ahead
    long_absence_days: float = 14.0  # a camera back after more days than this: long_absence (0 = never)


@dataclass(frozen=True)
class FleetConfig:
    # The station: a signed heartbeat to storage this often (dockd/station/heartbeat.py); 0 = none.
    heartbeat_interval_s: float = 300.0
    # The agency's `dockd fleet` (dockd/agency/fleet/): when a station is stale or unhealthy.
    stale_minutes: float = 15.0
    backlog_hours: float = 24.0  # a clip not yet uploaded for longer than this makes its station unhealthy
    low_free_gb: float = 10.0
    audit_export_overdue_hours: float = 48.0
    lookback_days: int = 8  # the first read looks this many days back (the lifecycle rule keeps 8)


@dataclass(frozen=True)
class ReviewConfig:
    """The completeness review's policy and inputs (dockd/agency/review; README "Completeness review")."""

    pre_roll_s: float = 120.0
    post_roll_s: float = 120.0
    grace_hours: float = 72.0  # a camera not docked since the incident is `pending` this long, then `missing`
    covered_percent: float = 90.0
    on_scene_weight: float = 2.0
    long_absence_days: float = 3.0
    excluded_call_types: tuple[str, ...] = ()
    reason_codes: tuple[str, ...] = ("malfunction", "battery", "not_assigned", "privacy_exemption", "other")
    cad_incident: str = "incident"
    cad_call_type: str = "call_type"
    cad_dispatched: str = "dispatched"
    cad_arrived: str = "arrived"
    cad_cleared: str = "cleared"
    cad_officer: str = "officer"
    cad_unit: str = "unit"
    cad_timezone: str = "UTC"
    reviewer_key: str = ""
    cache_dir: Path = Path("/var/cache/dockd-review")
    fetch_concurrency: int = 16
    fetch_procs: int = 2  # worker processes for a large fetch (1: all in the dockd process)


@dataclass(frozen=True)
class Config:
    path: Path
    station: StationConfig
    storage: StorageConfig | None
    upload: UploadConfig = field(default_factory=UploadConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    offload: OffloadConfig = field(default_factory=OffloadConfig)
    cameras: tuple[CameraProfile, ...] = ()
    hooks: HooksConfig = field(default_factory=HooksConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    continuity: ContinuityConfig = field(default_factory=ContinuityConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    review: ReviewConfig = field(default_factory=ReviewConfig)

    @property
    def data_dir(self) -> Path:
        return self.station.data_dir

    def profile_for(self, props: dict[str, str]) -> CameraProfile | None:
        """First matching ``[[camera]]`` profile wins (udiskie-style rules)."""
        for p in self.cameras:
            if p.matches(props):
                return p
        return None

    def profile_named(self, name: str | None) -> CameraProfile | None:
        """The ``[[camera]]`` profile called ``name`` (the first, if several share it), or None."""
        return next((p for p in self.cameras if name and p.name == name), None)


@lru_cache(maxsize=64)
def _name_rule(profile: str, pattern: str, time_format: str, zone: str) -> NameRule:
    from zoneinfo import ZoneInfo  # here: most commands never parse a clip name

    return NameRule(profile, re.compile(pattern), time_format or None, ZoneInfo(zone))


# Each TOML section and the dataclass whose field defaults are its defaults (the example TOML is checked
# against these by tests/unit/test_config.py).
SECTIONS: dict[str, type] = {
    "station": StationConfig,
    "storage": StorageConfig,
    "upload": UploadConfig,
    "sources": SourcesConfig,
    "offload": OffloadConfig,
    "camera": CameraProfile,
    "hooks": HooksConfig,
    "metrics": MetricsConfig,
    "trust": TrustConfig,
    "audit": AuditConfig,
    "index": IndexConfig,
    "continuity": ContinuityConfig,
    "fleet": FleetConfig,
    "review": ReviewConfig,
}

# ---------------------------------------------------------------- validation

_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", float: "a number", list: "a list",
               dict: "a table"}


class _Section:
    """Reads one table, remembering which keys were used so leftovers are errors."""

    def __init__(self, path: Path, name: str, table: Any, defaults: type | None = None):
        self.path, self.name, self.defaults = path, name, defaults
        if not isinstance(table, dict):
            self.fail(None, "must be a table")
        self.table = dict(table)

    def key(self, k: str | None) -> str:
        return f"[{self.name}] {_short(k)}" if k else f"[{self.name}]"

    def fail(self, k: str | None, why: str) -> NoReturn:
        raise ConfigError(self.path, f"{self.key(k)}: {why}")

    def get(self, k: str, typ: type, default: Any = ..., choices: tuple | None = None) -> Any:
        if k not in self.table:
            if default is ...:
                self.fail(k, "is required")
            return default
        v = self.table.pop(k)
        ok = isinstance(v, typ) and not (typ in (int, float) and isinstance(v, bool))
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            self.fail(k, f"must be {_TYPE_NAMES[typ]}, got {type(v).__name__} {_shown(v)}")
        if typ is str:
            _bounded(self, k, v)
        if typ is float and not math.isfinite(v):
            self.fail(k, f"must be a finite number, got {v!r}")
        if typ in (int, float) and v < 0:
            self.fail(k, f"must not be negative, got {v!r}")
        if choices is not None and v not in choices:
            self.fail(k, f"must be one of {', '.join(map(repr, choices))}, got {v!r}")
        return v

    def default(self, k: str) -> Any:
        """The default of key ``k``: the default of the field ``k`` of this section's dataclass
        (the one place defaults are written)."""
        return field_default(self.defaults, k)

    def opt(self, k: str, typ: type, choices: tuple | None = None) -> Any:
        """An optional key: its value, else the dataclass default."""
        return self.get(k, typ, self.default(k), choices)

    def opt_strings(self, k: str) -> Any:
        """An optional list of strings: its value, else the dataclass default."""
        return self.strings(k, self.default(k))

    def strings(self, k: str, default: Any = ...) -> tuple[str, ...] | None:
        v = self.get(k, list, default)
        if v is default and default is not ...:
            return default
        if not all(isinstance(x, str) and x for x in v):
            self.fail(k, "must be a list of non-empty strings")
        for x in v:
            _bounded(self, k, x)
        return tuple(v)

    def done(self) -> None:
        if self.table:
            self.fail(sorted(self.table)[0], "unknown key")


def field_default(cls: Any, name: str) -> Any:
    """The default value of field ``name`` of the dataclass ``cls``; KeyError if it has none."""
    for f in fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
            break
    raise KeyError(f"{cls.__name__}.{name} has no default")


def _short(k: str) -> str:
    """A key name from the file, cut short (an unknown key can be as long as the file)."""
    return k if len(k) <= 80 else f"{k[:80]}... ({len(k)} characters)"


def _shown(v: Any) -> str:
    """``repr(v)`` cut short: an error line quotes the bad value, not megabytes of it."""
    r = repr(v)
    return r if len(r) <= 80 else f"{r[:80]}... ({len(r)} characters)"


def _bounded(sec: _Section, k: str, v: str) -> None:
    if len(v) > MAX_STRING_CHARS:
        sec.fail(k, f"too long ({len(v)} characters, at most {MAX_STRING_CHARS})")


def _positive(sec: _Section, k: str, v: float) -> float:
    if v <= 0:
        sec.fail(k, f"must be greater than 0, got {v!r}")
    return v


def load(path: str | os.PathLike | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError on any problem."""
    p = Path(path or os.environ.get("DOCKD_CONFIG") or DEFAULT_PATH)
    try:
        raw = tomllib.loads(read_bounded(p).decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(p, "file not found (use --config PATH or set DOCKD_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(p, f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(p, f"not valid TOML: {e}") from None
    return parse(raw, p)


def read_bounded(p: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``p``; ConfigError for anything else or anything bigger than ``limit``.

    Opened with O_NONBLOCK so a FIFO cannot block the open, then checked with fstat on the open
    descriptor (no race with a rename): a FIFO, a device such as /dev/zero, a directory or a socket
    is refused before a byte is read, and at most ``limit + 1`` bytes are ever read.
    """
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(p, "cannot read: not a regular file")
        if st.st_size > limit:
            raise ConfigError(p, f"cannot read: too large ({st.st_size} bytes, at most {limit})")
        chunks, n = [], 0
        while n <= limit:
            b = os.read(fd, limit + 1 - n)
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > limit:  # grew while we read it
            raise ConfigError(p, f"cannot read: too large (more than {limit} bytes)")
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse(raw: dict, p: Path) -> Config:
    top = _Section(p, "top level", raw)
    top.name = "top level"

    if "station" not in raw:
        raise ConfigError(p, "[station]: section is required")
    st = _Section(p, "station", top.table.pop("station"), StationConfig)
    sid = st.get("id", str)
    if not sid or "/" in sid or sid.strip() != sid or sid in (".", ".."):
        st.fail("id", f"must be a non-empty name without '/' or surrounding spaces, got {sid!r}")
    data_dir = st.get("data_dir", str, str(st.default("data_dir")))
    if not data_dir.startswith("/"):
        st.fail("data_dir", f"must be an absolute path, got {data_dir!r}")
    station = StationConfig(id=sid, data_dir=Path(data_dir))
    st.done()

    storage = _parse_storage(p, top.table.pop("storage")) if "storage" in top.table else None

    up = _Section(p, "upload", top.table.pop("upload", {}), UploadConfig)
    upload = UploadConfig(
        max_attempts=int(_positive(up, "max_attempts", up.opt("max_attempts", int))),
        backoff_initial_s=_positive(up, "backoff_initial_s", up.opt("backoff_initial_s", float)),
        backoff_max_s=_positive(up, "backoff_max_s", up.opt("backoff_max_s", float)),
        bandwidth_limit_mbps=up.opt("bandwidth_limit_mbps", float),
        lease_s=_positive(up, "lease_s", up.opt("lease_s", float)),
    )
    up.done()

    so = _Section(p, "sources", top.table.pop("sources", {}), SourcesConfig)
    sources = SourcesConfig(
        udev=so.opt("udev", bool),
        watch_dirs=tuple(Path(d) for d in so.opt_strings("watch_dirs") or ()),
        drop_privileges=so.opt("drop_privileges", bool),
        user=so.opt("user", str),
        watch_profile=so.opt("watch_profile", str),
    )
    so.done()

    of = _Section(p, "offload", top.table.pop("offload", {}), OffloadConfig)
    if of.table.get("clip_globs") == []:
        of.fail("clip_globs", "must name at least one glob")
    offload = OffloadConfig(
        clip_globs=of.opt_strings("clip_globs"),
        sidecar_globs=of.opt_strings("sidecar_globs"),
        wipe=of.opt("wipe", str, ("after-upload", "never")),
        wipe_check=of.opt("wipe_check", str, ("hash", "stat")),
        verify=of.opt("verify", str, ("reread", "none")),
        max_file_size_gb=of.opt("max_file_size_gb", float),
        max_depth=int(_positive(of, "max_depth", of.opt("max_depth", int))),
        max_entries=int(_positive(of, "max_entries", of.opt("max_entries", int))),
        reserve_free_mb=of.opt("reserve_free_mb", int),
        parallel_cameras=int(_positive(of, "parallel_cameras", of.opt("parallel_cameras", int))),
        keep_staged_hours=of.opt("keep_staged_hours", float),
        buffer_kb=int(_positive(of, "buffer_kb", of.opt("buffer_kb", int))),
        media_probe=of.opt("media_probe", bool),
        ffprobe=of.opt("ffprobe", str),
        media_probe_timeout_s=_positive(of, "media_probe_timeout_s", of.opt("media_probe_timeout_s", float)),
    )
    if not offload.ffprobe:
        of.fail("ffprobe", "must name a program (a path or a name on PATH)")
    of.done()

    profiles = _parse_cameras(p, top.table.pop("camera", []))
    if sources.watch_profile and not any(c.name == sources.watch_profile for c in profiles):
        raise ConfigError(p, f"[sources] watch_profile: no [[camera]] profile is named {sources.watch_profile!r}")

    ho = _Section(p, "hooks", top.table.pop("hooks", {}), HooksConfig)
    hooks = HooksConfig(on_state=ho.opt("on_state", str), timeout_s=ho.opt("timeout_s", float))
    ho.done()

    me = _Section(p, "metrics", top.table.pop("metrics", {}), MetricsConfig)
    metrics = MetricsConfig(listen=me.opt("listen", str))
    if metrics.listen and (":" not in metrics.listen or not metrics.listen.rsplit(":", 1)[1].isdigit()):
        me.fail("listen", f"must be HOST:PORT or empty, got {metrics.listen!r}")
    me.done()

    tr = _Section(p, "trust", top.table.pop("trust", {}), TrustConfig)
    root_pub = tr.get("root_pubkey", str, None)  # default: unset (TrustConfig.root_pubkey is None)
    if root_pub is not None and not root_pub.startswith("/"):
        tr.fail("root_pubkey", f"must be an absolute path, got {root_pub!r}")
    trust_cfg = TrustConfig(root_pubkey=Path(root_pub) if root_pub else None)
    tr.done()
    au = _Section(p, "audit", top.table.pop("audit", {}), AuditConfig)
    audit = AuditConfig(keep_days=au.opt("keep_days", float), part_interval_s=au.opt("part_interval_s", float))
    if 0 < audit.part_interval_s < 10:  # no storm of tiny parts (negative and NaN are refused as numbers)
        au.fail("part_interval_s", f"must be 0 (no part segments) or at least 10, got {audit.part_interval_s}")
    if audit.keep_days < 0:
        au.fail("keep_days", f"must be 0 (keep forever) or more, got {audit.keep_days}")
    if 0 < audit.keep_days < 1:
        au.fail("keep_days", "must be at least 1 (a day's segment is exported after the day ends), "
                             f"got {audit.keep_days}")
    au.done()
    ix = _Section(p, "index", top.table.pop("index", {}), IndexConfig)
    index = IndexConfig(interval_s=_positive(ix, "interval_s", ix.opt("interval_s", float)))
    ix.done()
    co = _Section(p, "continuity", top.table.pop("continuity", {}), ContinuityConfig)
    continuity = ContinuityConfig(clock_ahead_s=co.opt("clock_ahead_s", float),
                                  long_absence_days=co.opt("long_absence_days", float))
    co.done()
    fleet = _parse_fleet(p, top.table.pop("fleet", {}))
    review = _parse_review(p, top.table.pop("review", {}))

    if top.table:
        k = sorted(top.table)[0]
        raise ConfigError(p, f"[{_short(k)}]: unknown section" if isinstance(top.table[k], dict)
                          else f"{_short(k)}: unknown key")

    return Config(
        path=p,
        station=station,
        storage=storage,
        upload=upload,
        sources=sources,
        offload=offload,
        cameras=profiles,
        hooks=hooks,
        metrics=metrics,
        trust=trust_cfg,
        audit=audit,
        index=index,
        continuity=continuity,
        fleet=fleet,
        review=review,
    )


def _parse_fleet(p: Path, table: Any) -> FleetConfig:
    """The ``[fleet]`` section (heartbeats on a station, thresholds of ``dockd fleet``)."""
    fs = _Section(p, "fleet", table, FleetConfig)
    fleet = FleetConfig(
        heartbeat_interval_s=fs.opt("heartbeat_interval_s", float),
        stale_minutes=_positive(fs, "stale_minutes", fs.opt("stale_minutes", float)),
        backlog_hours=_positive(fs, "backlog_hours", fs.opt("backlog_hours", float)),
        low_free_gb=fs.opt("low_free_gb", float),
        audit_export_overdue_hours=_positive(fs, "audit_export_overdue_hours",
                                             fs.opt("audit_export_overdue_hours", float)),
        lookback_days=int(_positive(fs, "lookback_days", fs.opt("lookback_days", int))),
    )
    if 0 < fleet.heartbeat_interval_s < 10:
        fs.fail("heartbeat_interval_s", f"must be 0 (no heartbeats) or at least 10, got {fleet.heartbeat_interval_s}")
    fs.done()
    return fleet


def _parse_storage(p: Path, table: Any) -> StorageConfig:
    """The ``[storage]`` section."""
    s = _Section(p, "storage", table, StorageConfig)
    url = s.get("url", str)
    u = urlparse(url)
    if u.scheme == "s3":
        if not u.netloc:
            s.fail("url", f"must name a bucket, like s3://bucket/prefix, got {url!r}")
    elif u.scheme == "file":
        if u.netloc or not u.path.startswith("/"):
            s.fail("url", f"must be an absolute path, like file:///mnt/evidence, got {url!r}")
    else:
        s.fail("url", f"must start with s3:// or file://, got {url!r}")
    storage = StorageConfig(
        url=url,
        endpoint_url=s.opt("endpoint_url", str),
        region=s.opt("region", str),
        multipart_threshold_mb=int(_positive(s, "multipart_threshold_mb", s.opt("multipart_threshold_mb", int))),
        part_size_mb=int(_positive(s, "part_size_mb", s.opt("part_size_mb", int))),
        concurrency=int(_positive(s, "concurrency", s.opt("concurrency", int))),
        part_concurrency=int(_positive(s, "part_concurrency", s.opt("part_concurrency", int))),
        object_lock_days=s.opt("object_lock_days", int),
        legal_hold=s.opt("legal_hold", bool),
        verify_after_upload=s.opt("verify_after_upload", str, ("head", "read")),
        timeout_s=_positive(s, "timeout_s", s.opt("timeout_s", float)),
        conditional_writes=s.opt("conditional_writes", bool),
    )
    if storage.part_size_mb < 5 and u.scheme == "s3":
        s.fail("part_size_mb", "must be at least 5 (the S3 minimum part size)")
    s.done()
    return storage


def _parse_cameras(p: Path, cams: Any) -> tuple[CameraProfile, ...]:
    """The ``[[camera]]`` profiles."""
    if not isinstance(cams, list):
        raise ConfigError(p, "[[camera]]: must be an array of tables ([[camera]])")
    profiles = []
    for i, c in enumerate(cams):
        cs = _Section(p, f"camera #{i + 1}", c, CameraProfile)
        name = cs.get("name", str)
        cs.name = f"camera {name!r}"
        m = cs.get("match", dict)
        if not m:
            cs.fail("match", "must name at least one udev property (an empty match would take every USB disk)")
        match: dict[str, tuple[str, ...]] = {}
        for mk, mv in m.items():
            if mk not in MATCH_KEYS:
                cs.fail(f"match.{mk}", f"unknown udev property (allowed: {', '.join(sorted(MATCH_KEYS))})")
            vals = mv if isinstance(mv, list) else [mv]
            if not vals or not all(isinstance(x, str) for x in vals):
                cs.fail(f"match.{mk}", "must be a string or a list of strings")
            for x in vals:
                _bounded(cs, f"match.{mk}", x)
            match[mk] = tuple(vals)
        profiles.append(
            CameraProfile(
                name=name,
                match=match,
                filesystems=cs.opt_strings("filesystems"),
                clip_globs=cs.opt_strings("clip_globs"),
                sidecar_globs=cs.opt_strings("sidecar_globs"),
                names=_parse_names(cs),
                device_id=_parse_device_id(cs),
            )
        )
        cs.done()
    return tuple(profiles)


def _parse_names(cs: _Section) -> NamesConfig | None:
    """A profile's ``names = { pattern, time_format, zone }``: the pattern compiles with the groups it may
    have, the format gives a full date and time, the zone is in the zone database."""
    t = cs.get("names", dict, None)
    if t is None:
        return None
    ns = _Section(cs.path, f"{cs.name} names", t, NamesConfig)
    names = NamesConfig(pattern=ns.get("pattern", str), time_format=ns.opt("time_format", str),
                        zone=ns.opt("zone", str))
    ns.done()
    why = check_rule(names.pattern, names.time_format or None)
    if why:
        cs.fail("names", why)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # here: only a profile with names needs it

    try:
        if not names.zone or names.zone.startswith(("/", ".")) or ".." in names.zone:
            raise ValueError(names.zone)
        ZoneInfo(names.zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        cs.fail("names", f"zone {names.zone!r} is not a time zone (e.g. \"UTC\", \"America/New_York\")")
    return names


def _parse_device_id(cs: _Section) -> str:
    """``device_id``: "udev_serial", "label" or "file:RELPATH" (relative, no '..', at most 255 characters)."""
    v = cs.opt("device_id", str)
    if v in ("", "udev_serial", "label"):
        return v
    rel = v.removeprefix("file:") if v.startswith("file:") else None
    parts = PurePosixPath(rel).parts if rel else ()
    if not rel or rel.startswith("/") or len(rel) > 255 or any(x in ("..", ".") for x in parts) or "//" in rel:
        cs.fail("device_id", f'must be "udev_serial", "label" or "file:RELPATH" (a relative path on the camera, '
                             f"no '..'), got {v!r}")
    return v


def _parse_review(p: Path, table: Any) -> ReviewConfig:
    """The ``[review]`` section (agency side: the completeness review)."""
    r = _Section(p, "review", table, ReviewConfig)
    covered = r.opt("covered_percent", float)
    if not 0 < covered <= 100:
        r.fail("covered_percent", f"must be more than 0 and at most 100, got {covered!r}")
    cache = r.opt("cache_dir", str)
    if not str(cache).startswith("/"):
        r.fail("cache_dir", f"must be an absolute path, got {cache!r}")
    codes = r.opt_strings("reason_codes")
    if not codes:
        r.fail("reason_codes", "must name at least one reason code")
    cad = {k: r.opt(k, str) for k in ("cad_incident", "cad_call_type", "cad_dispatched", "cad_arrived",
                                      "cad_cleared", "cad_officer", "cad_unit", "cad_timezone")}
    for k in ("cad_incident", "cad_call_type", "cad_dispatched", "cad_cleared", "cad_officer", "cad_timezone"):
        if not cad[k]:
            r.fail(k, "must not be empty")
    review = ReviewConfig(
        pre_roll_s=r.opt("pre_roll_s", float), post_roll_s=r.opt("post_roll_s", float),
        grace_hours=r.opt("grace_hours", float), covered_percent=covered,
        on_scene_weight=_positive(r, "on_scene_weight", r.opt("on_scene_weight", float)),
        long_absence_days=r.opt("long_absence_days", float),
        excluded_call_types=r.opt_strings("excluded_call_types"), reason_codes=codes,
        reviewer_key=r.opt("reviewer_key", str), cache_dir=Path(cache),
        fetch_concurrency=int(_positive(r, "fetch_concurrency", r.opt("fetch_concurrency", int))),
        fetch_procs=int(_positive(r, "fetch_procs", r.opt("fetch_procs", int))),
        **cad,
    )
    r.done()
    return review
