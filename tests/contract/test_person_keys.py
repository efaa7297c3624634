"""`dockd keys new`: keys for reviewers, disclosers and recipients, enrolled by the agency root."""

from __future__ import annotations

import json
import os
import stat

from dockd.trust import log as trust
from tests.support.cli import run_dockd


def test_person_key_is_made_enrolled_and_checked(tmp_path):
    tdir, root = tmp_path / "trust", tmp_path / "root.ed25519"
    r = run_dockd(*["trust", "init", "--agency", "Test PD", "--root-key", str(root), "--dir", str(tdir)])
    assert r.returncode == 0, r.stderr
    key = tmp_path / "alice.ed25519"
    r = run_dockd(*["keys", "new", "--name", "Alice Reviewer", "--key", str(key), "--out", str(tmp_path / "req.json")])
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    req = json.loads((tmp_path / "req.json").read_text())
    assert req["subject"] == {"kind": "person", "name": "Alice Reviewer"}
    assert json.loads(r.stdout) == req
    r = run_dockd(*["trust", "enrol", str(tmp_path / "req.json"), "--root-key", str(root), "--dir", str(tdir),
                   "--role", "reviewer", "--until", "2099-01-01"])
    assert r.returncode == 0, r.stderr
    r = run_dockd(*["trust", "check", req["key_id"], "--role", "reviewer", "--at", "2030-01-01T00:00:00Z",
                   "--trust", str(tdir), "--root", str(tdir / "root.pub.pem")])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_dockd(*["trust", "check", req["key_id"], "--role", "discloser", "--at", "2030-01-01T00:00:00Z",
                   "--trust", str(tdir), "--root", str(tdir / "root.pub.pem")])
    assert r.returncode == 1
    assert trust.check_request(req)[1] == req


def test_person_key_never_overwritten_and_bad_name_refused(tmp_path):
    key = tmp_path / "k.ed25519"
    key.write_text("precious")
    r = run_dockd(*["keys", "new", "--name", "Bob", "--key", str(key)])
    assert r.returncode == 2 and "already exists" in r.stderr and key.read_text() == "precious"
    r = run_dockd(*["keys", "new", "--name", "evil\x1b[2J", "--key", str(tmp_path / "n.ed25519")])
    assert r.returncode == 2 and "printable" in r.stderr
    assert not (tmp_path / "n.ed25519").exists()
    assert "Traceback" not in r.stderr
