"""Configuration loading: a complete valid file, and every class of mistake -> one-line ConfigError (exit 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dockd import config
from dockd.core.errors import EXIT_USAGE, ConfigError
from tests.support.cli import run_dockd

REPO = Path(__file__).resolve().parents[2]

FULL_EXAMPLE = """\
# every section and key dockd knows
[station]
id = "bay-station-07"
data_dir = "{data_dir}"

[storage]
url = "s3://evidence/precinct-7"
endpoint_url = "http://127.0.0.1:8333"
region = "eu-west-1"
multipart_threshold_mb = 32
part_size_mb = 8
concurrency = 2
object_lock_days = 2555
legal_hold = true
verify_after_upload = "read"
timeout_s = 30

[upload]
max_attempts = 5
backoff_initial_s = 1.5
backoff_max_s = 120
bandwidth_limit_mbps = 50.5
lease_s = 300

[sources]
udev = true
watch_dirs = ["/srv/dock/a", "/srv/dock/b"]

[offload]
clip_globs = ["DCIM/**/*.MP4"]
sidecar_globs = ["DCIM/**/*.XML", "DCIM/**/*.GPS"]
wipe = "never"
wipe_check = "stat"
verify = "none"
max_file_size_gb = 8
max_depth = 6
max_entries = 5000
reserve_free_mb = 256
parallel_cameras = 2
keep_staged_hours = 48
buffer_kb = 1024

[[camera]]
name = "axon-body-3"
match = {{ ID_VENDOR_ID = "2e3c", ID_MODEL_ID = ["0001", "0002"] }}
filesystems = ["exfat"]
clip_globs = ["DCIM/*/*.MP4"]

[[camera]]
name = "fallback"
match = {{ ID_FS_TYPE = ["exfat", "vfat"] }}

[hooks]
on_state = "/usr/local/bin/bay-led"
timeout_s = 5

[metrics]
listen = "127.0.0.1:9100"
"""


def write(tmp_path: Path, text: str, name: str = "dockd.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def minimal(tmp_path: Path, extra: str = "") -> str:
    return f'[station]\nid = "s1"\ndata_dir = "{tmp_path / "data"}"\n' + extra


def test_full_example_loads_with_every_value(tmp_path):
    p = write(tmp_path, FULL_EXAMPLE.format(data_dir=tmp_path / "data"))
    c = config.load(p)
    assert c.path == p
    assert c.station.id == "bay-station-07" and c.data_dir == tmp_path / "data"
    s = c.storage
    assert (s.scheme, s.bucket, s.prefix) == ("s3", "evidence", "precinct-7")
    assert s.endpoint_url == "http://127.0.0.1:8333" and s.region == "eu-west-1"
    assert (s.multipart_threshold_mb, s.part_size_mb, s.concurrency) == (32, 8, 2)
    assert s.object_lock_days == 2555 and s.legal_hold is True
    assert s.verify_after_upload == "read" and s.timeout_s == 30.0 and isinstance(s.timeout_s, float)
    u = c.upload
    assert (u.max_attempts, u.backoff_initial_s, u.backoff_max_s, u.bandwidth_limit_mbps, u.lease_s) == (
        5, 1.5, 120.0, 50.5, 300.0)
    assert c.sources.udev is True and c.sources.watch_dirs == (Path("/srv/dock/a"), Path("/srv/dock/b"))
    o = c.offload
    assert o.clip_globs == ("DCIM/**/*.MP4",) and o.sidecar_globs == ("DCIM/**/*.XML", "DCIM/**/*.GPS")
    assert (o.wipe, o.wipe_check, o.verify) == ("never", "stat", "none")
    assert (o.max_file_size_gb, o.max_depth, o.max_entries, o.reserve_free_mb) == (8.0, 6, 5000, 256)
    assert (o.parallel_cameras, o.keep_staged_hours, o.buffer_kb) == (2, 48.0, 1024)
    assert [p.name for p in c.cameras] == ["axon-body-3", "fallback"]
    axon = c.cameras[0]
    assert axon.match == {"ID_VENDOR_ID": ("2e3c",), "ID_MODEL_ID": ("0001", "0002")}
    assert axon.filesystems == ("exfat",) and axon.clip_globs == ("DCIM/*/*.MP4",) and axon.sidecar_globs is None
    assert c.hooks.on_state == "/usr/local/bin/bay-led" and c.hooks.timeout_s == 5.0
    assert c.metrics.listen == "127.0.0.1:9100"
    # profile matching: first match wins, every key must match
    assert c.profile_for({"ID_VENDOR_ID": "2e3c", "ID_MODEL_ID": "0002", "ID_FS_TYPE": "exfat"}).name == "axon-body-3"
    assert c.profile_for({"ID_VENDOR_ID": "2e3c", "ID_MODEL_ID": "9999", "ID_FS_TYPE": "vfat"}).name == "fallback"
    assert c.profile_for({"ID_FS_TYPE": "ntfs"}) is None


def test_minimal_config_gets_documented_defaults(tmp_path):
    c = config.load(write(tmp_path, '[station]\nid = "s1"\n'))
    assert c.data_dir == Path("/var/lib/dockd")
    assert c.storage is None
    assert c.offload.wipe == "after-upload" and c.offload.verify == "reread"
    assert c.offload.clip_globs == ("DCIM/**/*.MP4", "DCIM/**/*.mp4", "DCIM/**/*.MOV", "DCIM/**/*.mov")
    assert c.upload.max_attempts == 8 and c.metrics.listen == "127.0.0.1:9464" and c.cameras == ()


def test_file_storage_url(tmp_path):
    c = config.load(write(tmp_path, minimal(tmp_path, '[storage]\nurl = "file:///mnt/evidence"\n')))
    assert c.storage.scheme == "file" and c.storage.root == Path("/mnt/evidence") and c.storage.prefix == ""


@pytest.mark.parametrize("example", sorted(REPO.glob("examples/**/*.toml")), ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_example_configs_are_valid(example):
    config.load(example)


# (toml body appended to a valid [station], expected substrings of the message)
BAD = {
    "unknown key": ('[offload]\nwipe = "never"\nwpie = "x"\n', ["[offload] wpie", "unknown key"]),
    "unknown key in station": ('', None),  # filled in below (needs its own [station])
    "unknown top-level key": ('colour = "blue"\n', ["colour", "unknown key"]),
    "unknown section": ('[uploads]\nmax_attempts = 3\n', ["[uploads]", "unknown section"]),
    "wrong type int": ('[upload]\nmax_attempts = "8"\n', ["[upload] max_attempts", "must be an integer"]),
    "wrong type bool": ('[sources]\nudev = "yes"\n', ["[sources] udev", "true or false"]),
    "wrong type float": ('[upload]\nlease_s = true\n', ["[upload] lease_s", "must be a number"]),
    "wrong type list": ('[offload]\nclip_globs = "DCIM/*.MP4"\n', ["[offload] clip_globs", "must be a list"]),
    "list of non-strings": ('[offload]\nsidecar_globs = [1, 2]\n', ["[offload] sidecar_globs", "list of non-empty"]),
    "empty clip globs": ('[offload]\nclip_globs = []\n', ["[offload] clip_globs", "at least one"]),
    "negative": ('[offload]\nreserve_free_mb = -1\n', ["[offload] reserve_free_mb", "negative"]),
    "zero not allowed": ('[upload]\nmax_attempts = 0\n', ["[upload] max_attempts", "greater than 0"]),
    "nan": ('[upload]\nlease_s = nan\n', ["[upload] lease_s", "finite"]),
    "inf": ('[upload]\nbackoff_max_s = inf\n', ["[upload] backoff_max_s", "finite"]),
    "bad enum wipe": ('[offload]\nwipe = "always"\n', ["[offload] wipe", "'after-upload'", "'never'", "'always'"]),
    "bad enum verify": ('[offload]\nverify = "md5"\n', ["[offload] verify", "'reread'"]),
    "bad enum verify_after_upload": ('[storage]\nurl = "s3://b"\nverify_after_upload = "trust"\n',
                                     ["[storage] verify_after_upload"]),
    "missing storage.url": ('[storage]\nregion = "x"\n', ["[storage] url", "is required"]),
    "storage url http": ('[storage]\nurl = "http://evidence"\n', ["[storage] url", "s3:// or file://"]),
    "storage url no bucket": ('[storage]\nurl = "s3:///prefix"\n', ["[storage] url", "bucket"]),
    "storage url relative file": ('[storage]\nurl = "file://relative/dir"\n', ["[storage] url", "absolute"]),
    "storage url not string": ('[storage]\nurl = 5\n', ["[storage] url", "must be a string"]),
    "s3 part size too small": ('[storage]\nurl = "s3://b"\npart_size_mb = 4\n', ["[storage] part_size_mb", "5"]),
    "unknown camera match key": ('[[camera]]\nname = "c"\nmatch = { ID_VENDR_ID = "1" }\n',
                                 ["[camera 'c'] match.ID_VENDR_ID", "unknown udev property"]),
    "camera match not a table": ('[[camera]]\nname = "c"\nmatch = "ID_VENDOR_ID"\n',
                                 ["[camera 'c'] match", "must be a table"]),
    "camera match bad value": ('[[camera]]\nname = "c"\nmatch = { ID_VENDOR_ID = 7 }\n',
                               ["[camera 'c'] match.ID_VENDOR_ID", "string"]),
    "camera missing name": ('[[camera]]\nmatch = { ID_VENDOR_ID = "1" }\n', ["[camera #1] name", "is required"]),
    "camera unknown key": ('[[camera]]\nname = "c"\nmatch = { ID_BUS = "usb" }\nglobs = ["x"]\n', ["[camera 'c'] globs",
                                                                                  "unknown key"]),
    "camera not array": ('[camera]\nname = "c"\n', ["[[camera]]", "array of tables"]),
    "media probe timeout zero": ('[offload]\nmedia_probe_timeout_s = 0\n', ["[offload] media_probe_timeout_s",
                                                                          "greater than 0"]),
    "media probe not bool": ('[offload]\nmedia_probe = "yes"\n', ["[offload] media_probe", "true or false"]),
    "empty ffprobe": ('[offload]\nffprobe = ""\n', ["[offload] ffprobe", "must name a program"]),
    "metrics listen": ('[metrics]\nlisten = "localhost"\n', ["[metrics] listen", "HOST:PORT"]),
}
del BAD["unknown key in station"]


def assert_one_line(msg: str, path: Path, needles: list[str]) -> None:
    assert "\n" not in msg and "\r" not in msg, msg
    assert msg.startswith(f"{path}: "), msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_raises_one_line_config_error(tmp_path, name):
    body, needles = BAD[name]
    p = write(tmp_path, minimal(tmp_path, body))
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert ei.value.exit_code == EXIT_USAGE
    assert_one_line(str(ei.value), p, needles)


@pytest.mark.parametrize("body,needles", [
    ('[station]\ndata_dir = "/var/lib/x"\n', ["[station] id", "is required"]),
    ('[station]\nid = "s"\nname = "x"\n', ["[station] name", "unknown key"]),
    ('[station]\nid = "a/b"\n', ["[station] id", "'a/b'"]),
    ('[station]\nid = " s"\n', ["[station] id"]),
    ('[station]\nid = ".."\n', ["[station] id"]),
    ('[station]\nid = ""\n', ["[station] id"]),
    ('[station]\nid = "s"\ndata_dir = "relative/dir"\n', ["[station] data_dir", "absolute"]),
    ('[storage]\nurl = "s3://b"\n', ["[station]", "section is required"]),
    ('station = 3\n', ["[station]", "must be a table"]),
    ('storage = "s3://b"\n[station]\nid = "s"\n', ["[storage]", "must be a table"]),
    ('metrics = 1\n[station]\nid = "s"\n', ["[metrics]", "must be a table"]),
    ('[station]\nid = "s"\n"we\\nird" = 1\n', ["[station] we\\nird", "unknown key"]),
])
def test_bad_station(tmp_path, body, needles):
    p = write(tmp_path, body)
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert_one_line(str(ei.value), p, needles)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert_one_line(str(ei.value), p, ["file not found", "DOCKD_CONFIG"])


def test_invalid_toml(tmp_path):
    p = write(tmp_path, '[station]\nid = "s1\n')
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert_one_line(str(ei.value), p, ["not valid TOML", "line 2"])


def test_not_utf8_and_directory(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'[station]\nid = "caf\xe9"\n')
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    assert_one_line(str(ei.value), p, ["cannot read"])
    with pytest.raises(ConfigError) as ei:
        config.load(tmp_path)
    assert_one_line(str(ei.value), tmp_path, ["cannot read"])


def test_env_lookup_order(tmp_path, monkeypatch):
    a = write(tmp_path, '[station]\nid = "from-env"\n', "a.toml")
    b = write(tmp_path, '[station]\nid = "from-arg"\n', "b.toml")
    monkeypatch.setenv("DOCKD_CONFIG", str(a))
    assert config.load().station.id == "from-env"
    assert config.load(None).path == a
    assert config.load(b).station.id == "from-arg"  # an explicit path wins over the environment
    monkeypatch.setenv("DOCKD_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError) as ei:
        config.load()
    assert str(tmp_path / "missing.toml") in str(ei.value)


def test_default_path_without_env(monkeypatch):
    monkeypatch.delenv("DOCKD_CONFIG", raising=False)
    if Path(config.DEFAULT_PATH).exists():
        pytest.skip("a real /etc/dockd/dockd.toml exists on this machine")
    with pytest.raises(ConfigError) as ei:
        config.load()
    assert str(ei.value).startswith(config.DEFAULT_PATH + ": file not found")


# ------------------------------------------------------------------ via the CLI


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_dockd(*args, env=env)


def assert_cli_config_error(r: subprocess.CompletedProcess, path: Path, needle: str) -> None:
    assert r.returncode == 2, r
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"dockd: error: {path}: ") and needle in lines[0], lines
    assert r.stdout == ""


@pytest.mark.parametrize("name", ["unknown key", "unknown section", "wrong type int", "bad enum wipe",
                                  "missing storage.url", "storage url http", "unknown camera match key",
                                  "camera match not a table"])
def test_cli_bad_config_exit_2_one_line(tmp_path, name):
    body, needles = BAD[name]
    p = write(tmp_path, minimal(tmp_path, body))
    assert_cli_config_error(run_cli("--config", str(p), "status"), p, needles[0])


def test_cli_missing_station_id(tmp_path):
    p = write(tmp_path, "[station]\n")
    assert_cli_config_error(run_cli("--config", str(p), "status"), p, "[station] id: is required")


def test_cli_missing_and_invalid_files(tmp_path):
    missing = tmp_path / "missing.toml"
    assert_cli_config_error(run_cli("--config", str(missing), "status"), missing, "file not found")
    bad = write(tmp_path, "[station\nid=1\n")
    assert_cli_config_error(run_cli("--config", str(bad), "status"), bad, "not valid TOML")


def test_cli_uses_dockd_config_env(tmp_path):
    bad = write(tmp_path, minimal(tmp_path, '[offload]\nwipe = "sometimes"\n'))
    assert_cli_config_error(run_cli("status", env={"DOCKD_CONFIG": str(bad)}), bad, "[offload] wipe")
    good = write(tmp_path, minimal(tmp_path), "good.toml")
    r = run_cli("status", "--json", env={"DOCKD_CONFIG": str(good)})
    assert r.returncode == 0, r.stderr
    assert "s1" in r.stdout


def test_empty_camera_match_is_rejected(tmp_path):
    import pytest as _pytest

    from dockd.config import parse
    from dockd.core.errors import ConfigError

    raw = {"station": {"id": "s", "data_dir": "/var/lib/dockd"}, "camera": [{"name": "any", "match": {}}]}
    with _pytest.raises(ConfigError, match=r"camera 'any'\] match: must name at least one udev property"):
        parse(raw, tmp_path / "dockd.toml")


# ---------------------------------------------------------------- the example TOML against the defaults

EXAMPLE = REPO / "examples" / "dockd.example.toml"


def _example_keys() -> dict[str, dict[str, tuple[str, bool]]]:
    """Per section of the example: key -> (value text, shown as the default?). A commented ``#key = value``
    line shows the default unless it is marked ``# example``; a live ``key = value`` line is a setting."""
    import re

    out: dict[str, dict[str, tuple[str, bool]]] = {}
    section = None
    for line in EXAMPLE.read_text().splitlines():
        if m := re.fullmatch(r"\[\[?(\w+)\]\]?", line.strip()):
            section = m.group(1)
            out.setdefault(section, {})
        elif section and (m := re.fullmatch(r"(#?)([a-z_]+) = (.+)", line)):
            value, marked = m.group(3), False
            if value.endswith("  # example"):
                value, marked = value.removesuffix("  # example"), True
            out[section].setdefault(m.group(2), (value, m.group(1) == "#" and not marked))
    return out


def _toml_value(text: str):
    import tomllib

    return tomllib.loads(f"v = {text}")["v"]


def _plain(v):
    """A dataclass default as TOML would write it (tuples as lists, paths as strings)."""
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def test_example_toml_lists_every_config_key_in_its_section():
    import dataclasses

    keys = _example_keys()
    assert set(keys) == set(config.SECTIONS)
    for section, cls in config.SECTIONS.items():
        want = {f.name for f in dataclasses.fields(cls)}
        assert set(keys[section]) == want, section


def test_example_toml_commented_values_are_the_dataclass_defaults():
    checked = 0
    for section, entries in _example_keys().items():
        cls = config.SECTIONS[section]
        for key, (text, is_default) in entries.items():
            if not is_default:
                continue
            assert _toml_value(text) == _plain(config.field_default(cls, key)), f"[{section}] {key}"
            checked += 1
    assert checked >= 30  # the parser found the commented defaults (33 today)


def test_parse_takes_its_defaults_from_the_dataclasses(tmp_path):
    cfg = config.parse({"station": {"id": "s1"}, "storage": {"url": "s3://b/p"}, "camera": [
        {"name": "c", "match": {"ID_VENDOR_ID": "0c45"}}]}, tmp_path / "x.toml")
    assert cfg.station.data_dir == config.StationConfig("s1").data_dir
    assert cfg.storage == config.StorageConfig(url="s3://b/p")
    assert (cfg.upload, cfg.sources, cfg.offload) == (config.UploadConfig(), config.SourcesConfig(),
                                                      config.OffloadConfig())
    assert (cfg.hooks, cfg.metrics, cfg.trust, cfg.audit) == (config.HooksConfig(), config.MetricsConfig(),
                                                              config.TrustConfig(), config.AuditConfig())
    assert cfg.cameras == (config.CameraProfile(name="c", match={"ID_VENDOR_ID": ("0c45",)}),)


def test_fleet_section_defaults_and_bounds(tmp_path):
    base = {"station": {"id": "s1"}, "storage": {"url": "s3://b/p"}}
    assert config.parse(base, tmp_path / "x.toml").fleet == config.FleetConfig()
    cfg = config.parse({**base, "fleet": {"heartbeat_interval_s": 0, "stale_minutes": 5}}, tmp_path / "x.toml")
    assert (cfg.fleet.heartbeat_interval_s, cfg.fleet.stale_minutes) == (0.0, 5.0)
    with pytest.raises(ConfigError, match=r"\[fleet\] heartbeat_interval_s: must be 0"):
        config.parse({**base, "fleet": {"heartbeat_interval_s": 3}}, tmp_path / "x.toml")
    with pytest.raises(ConfigError, match=r"\[fleet\] stale_minute: unknown key"):
        config.parse({**base, "fleet": {"stale_minute": 3}}, tmp_path / "x.toml")
