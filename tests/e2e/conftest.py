"""Fixtures shared by the end-to-end tests of the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.uploads import station_config


@pytest.fixture
def station(tmp_path: Path) -> tuple[Path, Path]:
    """``(config file, data dir)`` of a station with no storage, no reserve, clips under ``DCIM/``;
    the data dir is not created (a command meets it as on a fresh install)."""
    data = tmp_path / "data"
    cfg = station_config(tmp_path / "dockd.toml", data_dir=data,
                         offload={"reserve_free_mb": 0, "clip_globs": ["DCIM/**/*.MP4"]})
    return cfg, data
