"""scripts/install and scripts/uninstall into a staging root: layout, idempotence, nothing of value overwritten."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_install_is_idempotent_and_uninstall_keeps_data(tmp_path):
    if not (REPO / "examples" / "dockd.example.toml").exists():
        pytest.skip("examples/dockd.example.toml missing")
    root = tmp_path / "root"
    env = dict(os.environ, DOCKD_ROOT=str(root), PIP_DISABLE_PIP_VERSION_CHECK="1")
    r = subprocess.run([str(REPO / "scripts" / "install")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    exe = root / "opt/dockd/venv/bin/dockd"
    assert exe.exists()
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "import" in out.stdout
    cfg = root / "etc/dockd/dockd.toml"
    assert cfg.read_text() == (REPO / "examples/dockd.example.toml").read_text()
    assert (root / "etc/systemd/system/dockd.service").read_text() == (REPO / "systemd/dockd.service").read_text()
    assert (root / "etc/udev/rules.d/70-dockd.rules").exists()
    assert (root / "var/lib/dockd").stat().st_mode & 0o7777 == 0o710  # the helper (group dockd) passes through
    assert (root / "var/lib/dockd/mnt").stat().st_mode & 0o7777 == 0o1770  # sticky: the daemon can't move mounts
    assert (root / "etc/dockd/aws-credentials").stat().st_mode & 0o777 == 0o600

    # an operator's edits and the station key survive a re-install and an uninstall
    cfg.write_text("# edited by the operator\n")
    key = root / "var/lib/dockd/keys/station.ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("precious")
    r = subprocess.run([str(REPO / "scripts" / "install")], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "keeping existing" in r.stdout
    assert cfg.read_text() == "# edited by the operator\n" and key.read_text() == "precious"

    r = subprocess.run([str(REPO / "scripts" / "uninstall")], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not (root / "opt/dockd").exists() and not (root / "etc/systemd/system/dockd.service").exists()
    assert cfg.read_text() == "# edited by the operator\n" and key.read_text() == "precious"
