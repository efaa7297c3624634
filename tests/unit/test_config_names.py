"""Config: a [[camera]] profile's names rule and device id, [sources] watch_profile, [continuity]."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockd import config
from dockd.core.errors import EXIT_USAGE, ConfigError
from tests.support.cli import run_dockd

GENERIC = r"""names = { pattern = '^DCIM/\d{3}MEDIA/FILE(?P<seq>\d{4})\.MP4$' }"""
DATED = (r"""names = { pattern = '^DCIM/(?P<start>\d{8}_\d{6})_(?P<seq>\d{4})\.MP4$', """
         r"""time_format = "%Y%m%d_%H%M%S", zone = "Europe/Paris" }""")


def cfg_text(tmp_path: Path, camera: str = GENERIC, extra: str = "") -> Path:
    p = tmp_path / "dockd.toml"
    p.write_text(f'[station]\nid = "s1"\ndata_dir = "{tmp_path / "data"}"\n{extra}'
                 f'[[camera]]\nname = "bwc"\nmatch = {{ DOCKD_PROFILE = "bwc" }}\n{camera}\n', encoding="utf-8")
    return p


def test_both_name_styles_parse(tmp_path):
    c = config.load(cfg_text(tmp_path))
    rule = c.cameras[0].names.rule("bwc")
    assert rule.pattern.fullmatch("DCIM/100MEDIA/FILE0001.MP4").group("seq") == "0001"
    assert c.cameras[0].device_id == "" and c.sources.watch_profile == ""
    c = config.load(cfg_text(tmp_path, DATED + '\ndevice_id = "file:MISC/ID.TXT"',
                             '[sources]\nwatch_profile = "bwc"\n[continuity]\nclock_ahead_s = 60\n'))
    n = c.cameras[0].names
    assert (n.time_format, n.zone) == ("%Y%m%d_%H%M%S", "Europe/Paris")
    assert c.cameras[0].device_id == "file:MISC/ID.TXT" and c.sources.watch_profile == "bwc"
    assert c.continuity == config.ContinuityConfig(clock_ahead_s=60.0)
    assert c.profile_named("bwc") is c.cameras[0] and c.profile_named("nope") is None


BAD = [
    ("names = { pattern = 'FILE(?P<seq>\\d+' }", ["[camera 'bwc'] names", "not a valid regular expression"]),
    ("names = { pattern = 'FILE\\d+' }", ["must name a group"]),
    ("names = { pattern = '(?P<seq>\\d+)(?P<x>.)' }", ["unknown named group 'x'"]),
    ("names = { pattern = '(?P<start>\\d+)' }", ["time_format is required"]),
    ("names = { pattern = '(?P<start>\\d+)', time_format = '%H%M' }", ["full date and time"]),
    ("names = { pattern = '(?P<seq>\\d+)', zone = 'Mars/Olympus' }", ["zone 'Mars/Olympus'"]),
    ("names = { pattern = '(?P<seq>\\d+)', zone = '../../etc/passwd' }", ["is not a time zone"]),
    ("names = { pattern = '(?P<seq>\\d+)', colour = 'x' }", ["[camera 'bwc' names] colour", "unknown key"]),
    ("names = { time_format = '%Y' }", ["[camera 'bwc' names] pattern", "is required"]),
    ("names = 'FILE'", ["[camera 'bwc'] names", "must be a table"]),
    ('device_id = "serial"', ["[camera 'bwc'] device_id", "udev_serial"]),
    ('device_id = "file:../x"', ["device_id", "no '..'"]),
    ('device_id = "file:/etc/machine-id"', ["device_id"]),
    ('device_id = "file:"', ["device_id"]),
]


@pytest.mark.parametrize(("camera", "needles"), BAD)
def test_bad_names_are_one_line_config_errors(tmp_path, camera, needles):
    p = cfg_text(tmp_path, camera)
    with pytest.raises(ConfigError) as ei:
        config.load(p)
    msg = str(ei.value)
    assert ei.value.exit_code == EXIT_USAGE and "\n" not in msg and msg.startswith(f"{p}: ")
    for n in needles:
        assert n in msg, (n, msg)


def test_watch_profile_must_name_a_profile(tmp_path):
    p = cfg_text(tmp_path, extra='[sources]\nwatch_profile = "other"\n')
    with pytest.raises(ConfigError, match=r"\[sources\] watch_profile: no \[\[camera\]\] profile is named 'other'"):
        config.load(p)


def test_cli_exit_2_one_line(tmp_path):
    p = cfg_text(tmp_path, "names = { pattern = '(?P<seq>' }")
    r = run_dockd("--config", str(p), "status")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "not a valid regular expression" in r.stderr
