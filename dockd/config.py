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
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, overload
from urllib.parse import urlparse

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
    data_dir: Path


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


@dataclass(frozen=True)
class CameraProfile:
    name: str
    match: dict[str, tuple[str, ...]]
    filesystems: tuple[str, ...] = ("exfat", "vfat")
    clip_globs: tuple[str, ...] | None = None
    sidecar_globs: tuple[str, ...] | None = None

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

    @property
    def data_dir(self) -> Path:
        return self.station.data_dir

    def profile_for(self, props: dict[str, str]) -> CameraProfile | None:
        """First matching ``[[camera]]`` profile wins (udiskie-style rules)."""
        for p in self.cameras:
            if p.matches(props):
                return p
        return None


# ---------------------------------------------------------------- validation

_TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer", float: "a number", list: "a list",
               dict: "a table"}


class _Section:
    """Reads one table, remembering which keys were used so leftovers are errors."""

    def __init__(self, path: Path, name: str, table: Any):
        self.path, self.name = path, name
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

    @overload
    def strings(self, k: str, default: tuple[str, ...] = ...) -> tuple[str, ...]: ...
    @overload
    def strings(self, k: str, default: None) -> tuple[str, ...] | None: ...

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
    st = _Section(p, "station", top.table.pop("station"))
    sid = st.get("id", str)
    if not sid or "/" in sid or sid.strip() != sid or sid in (".", ".."):
        st.fail("id", f"must be a non-empty name without '/' or surrounding spaces, got {sid!r}")
    data_dir = st.get("data_dir", str, "/var/lib/dockd")
    if not data_dir.startswith("/"):
        st.fail("data_dir", f"must be an absolute path, got {data_dir!r}")
    station = StationConfig(id=sid, data_dir=Path(data_dir))
    st.done()

    storage = _storage(p, top)

    up = _Section(p, "upload", top.table.pop("upload", {}))
    upload = UploadConfig(
        max_attempts=int(_positive(up, "max_attempts", up.get("max_attempts", int, 8))),
        backoff_initial_s=_positive(up, "backoff_initial_s", up.get("backoff_initial_s", float, 2.0)),
        backoff_max_s=_positive(up, "backoff_max_s", up.get("backoff_max_s", float, 600.0)),
        bandwidth_limit_mbps=up.get("bandwidth_limit_mbps", float, 0.0),
        lease_s=_positive(up, "lease_s", up.get("lease_s", float, 900.0)),
    )
    up.done()

    so = _Section(p, "sources", top.table.pop("sources", {}))
    sources = SourcesConfig(
        udev=so.get("udev", bool, False),
        watch_dirs=tuple(Path(d) for d in so.strings("watch_dirs", ())),
        drop_privileges=so.get("drop_privileges", bool, True),
        user=so.get("user", str, "dockd"),
    )
    so.done()

    d = OffloadConfig()
    of = _Section(p, "offload", top.table.pop("offload", {}))
    if of.table.get("clip_globs") == []:
        of.fail("clip_globs", "must name at least one glob")
    offload = OffloadConfig(
        clip_globs=of.strings("clip_globs", d.clip_globs),
        sidecar_globs=of.strings("sidecar_globs", d.sidecar_globs),
        wipe=of.get("wipe", str, d.wipe, ("after-upload", "never")),
        wipe_check=of.get("wipe_check", str, d.wipe_check, ("hash", "stat")),
        verify=of.get("verify", str, d.verify, ("reread", "none")),
        max_file_size_gb=of.get("max_file_size_gb", float, d.max_file_size_gb),
        max_depth=int(_positive(of, "max_depth", of.get("max_depth", int, d.max_depth))),
        max_entries=int(_positive(of, "max_entries", of.get("max_entries", int, d.max_entries))),
        reserve_free_mb=of.get("reserve_free_mb", int, d.reserve_free_mb),
        parallel_cameras=int(_positive(of, "parallel_cameras", of.get("parallel_cameras", int, d.parallel_cameras))),
        keep_staged_hours=of.get("keep_staged_hours", float, d.keep_staged_hours),
        buffer_kb=int(_positive(of, "buffer_kb", of.get("buffer_kb", int, d.buffer_kb))),
    )
    of.done()

    profiles = _cameras(p, top)

    ho = _Section(p, "hooks", top.table.pop("hooks", {}))
    hooks = HooksConfig(on_state=ho.get("on_state", str, ""), timeout_s=ho.get("timeout_s", float, 10.0))
    ho.done()

    me = _Section(p, "metrics", top.table.pop("metrics", {}))
    metrics = MetricsConfig(listen=me.get("listen", str, "127.0.0.1:9464"))
    if metrics.listen and (":" not in metrics.listen or not metrics.listen.rsplit(":", 1)[1].isdigit()):
        me.fail("listen", f"must be HOST:PORT or empty, got {metrics.listen!r}")
    me.done()

    tr = _Section(p, "trust", top.table.pop("trust", {}))
    root_pub = tr.get("root_pubkey", str, None)
    if root_pub is not None and not root_pub.startswith("/"):
        tr.fail("root_pubkey", f"must be an absolute path, got {root_pub!r}")
    trust_cfg = TrustConfig(root_pubkey=Path(root_pub) if root_pub else None)
    tr.done()
    au = _Section(p, "audit", top.table.pop("audit", {}))
    audit = AuditConfig(keep_days=au.get("keep_days", float, 0.0))
    if audit.keep_days < 0:
        au.fail("keep_days", f"must be 0 (keep forever) or more, got {audit.keep_days}")
    if 0 < audit.keep_days < 1:
        au.fail("keep_days", f"must be at least 1 (a day's segment is exported after the day ends), got {audit.keep_days}")
    au.done()

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
    )


def _storage(p: Path, top: _Section) -> StorageConfig | None:
    """The optional [storage] section (None without it: dockd then offloads and queues but never wipes)."""
    if "storage" not in top.table:
        return None
    s = _Section(p, "storage", top.table.pop("storage"))
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
        endpoint_url=s.get("endpoint_url", str, None),
        region=s.get("region", str, "us-east-1"),
        multipart_threshold_mb=int(_positive(s, "multipart_threshold_mb",
                                             s.get("multipart_threshold_mb", int, 64))),
        part_size_mb=int(_positive(s, "part_size_mb", s.get("part_size_mb", int, 8))),
        concurrency=int(_positive(s, "concurrency", s.get("concurrency", int, 8))),
        part_concurrency=int(_positive(s, "part_concurrency", s.get("part_concurrency", int, 6))),
        object_lock_days=s.get("object_lock_days", int, 0),
        legal_hold=s.get("legal_hold", bool, False),
        verify_after_upload=s.get("verify_after_upload", str, "head", ("head", "read")),
        timeout_s=_positive(s, "timeout_s", s.get("timeout_s", float, 60.0)),
        conditional_writes=s.get("conditional_writes", bool, True),
    )
    if storage.part_size_mb < 5 and u.scheme == "s3":
        s.fail("part_size_mb", "must be at least 5 (the S3 minimum part size)")
    s.done()
    return storage


def _cameras(p: Path, top: _Section) -> tuple[CameraProfile, ...]:
    """The [[camera]] profiles, in file order (first match wins)."""
    cams = top.table.pop("camera", [])
    if not isinstance(cams, list):
        raise ConfigError(p, "[[camera]]: must be an array of tables ([[camera]])")
    profiles: list[CameraProfile] = []
    for i, c in enumerate(cams):
        cs = _Section(p, f"camera #{i + 1}", c)
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
                filesystems=cs.strings("filesystems", ("exfat", "vfat")),
                clip_globs=cs.strings("clip_globs", None),
                sidecar_globs=cs.strings("sidecar_globs", None),
            )
        )
        cs.done()
    return tuple(profiles)
