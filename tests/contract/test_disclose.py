"""Disclosure bags (issue #16): clips put into a real SeaweedFS by the real station code, a bag built from
storage by ``dockd disclose create``, judged by ``dockd disclose verify``, by the field's own tools
(bagit.py, bagit-profile, bdbag) and by its own VERIFY.txt run literally; then broken in every way the
issue names and judged again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dockd.agency.disclosure.create import PROFILE_ID
from tests.conftest import unique_name
from tests.support.cli import run_dockd
from tests.support.disclosure import World, ok

PROFILE = Path(__file__).resolve().parents[2] / "dockd" / "agency" / "disclosure" / "dockd-bagit-profile.json"


@pytest.fixture(scope="module")
def world(seaweed, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in seaweed.env().items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        bucket = seaweed.create_bucket(unique_name("disc"))
        yield World(tmp_path_factory.mktemp("disclose"), seaweed, bucket, [200_000, 150_000, 1_000])


@pytest.fixture(scope="module")
def bag(world):
    out = world.tmp / "bag"
    r = ok(world.create(out))
    assert "3 clip(s)" in r.stdout
    return out


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def copy(bag: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bag, dst, symlinks=True)
    return dst


def test_bag_holds_what_storage_holds_and_verifies(world, bag):
    t = json.loads((bag / "transfer.json").read_text())
    assert t["case"] == "2026-CR-0042" and t["recipient"] == {"name": "County Prosecutor's Office"}
    assert [c["object_key"] for c in t["clips"]] == world.object_keys
    s3 = world.backend
    for c in t["clips"]:
        assert (bag / c["path"]).read_bytes() == b"".join(s3.iter_chunks(c["object_key"]))
        assert c["audit"] and all(a["seqs"] for a in c["audit"])  # staged, uploading, uploaded rows
        assert c["station_key_id"] == world.station_key_id
    assert t["sender"]["key_id"] == world.key_id(world.discloser)
    assert sorted(p.name for p in (bag / "data" / "trust" / "log").iterdir())[0] == "00000000.json"
    r = world.verify(bag)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout.splitlines()[-1] and "3 station manifest(s) verified" in r.stdout
    j = json.loads(world.verify(bag, "--json").stdout)
    assert j["valid"] is True and j["reasons"] == [] and j["clips"] == 3


def test_field_tools_accept_the_bag(bag):
    r = subprocess.run([tool("bagit.py"), "--validate", str(bag)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([tool("bagit_profile.py"), "--no-logfile", "--file", str(PROFILE), PROFILE_ID, str(bag)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Validates against" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([tool("bdbag"), "--validate", "full", str(bag)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_verify_txt_runs_literally_with_standard_tools(world, bag, tmp_path):
    env = {"PATH": os.environ["PATH"], "ROOT": str(world.root_pub)}
    r = subprocess.run(["bash", "-euo", "pipefail", "VERIFY.txt"], cwd=bag, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bag verified" in r.stdout and r.stdout.count("Signature Verified Successfully") >= 5
    b = copy(bag, tmp_path)
    clip = b / json.loads((b / "transfer.json").read_text())["clips"][0]["path"]
    data = bytearray(clip.read_bytes())
    data[100] ^= 1
    clip.write_bytes(bytes(data))
    r = subprocess.run(["bash", "-euo", "pipefail", "VERIFY.txt"], cwd=b, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "bag verified" not in r.stdout


def mutate_clip_byte(b: Path) -> None:
    p = b / json.loads((b / "transfer.json").read_text())["clips"][1]["path"]
    data = bytearray(p.read_bytes())
    data[7] ^= 0x40
    p.write_bytes(bytes(data))


def extra_file(b: Path) -> None:
    (b / "data" / "clips" / "planted.mp4").write_bytes(b"x")


def missing_file(b: Path) -> None:
    (b / json.loads((b / "transfer.json").read_text())["clips"][2]["path"]).unlink()


def strip_tagmanifests(b: Path) -> None:
    for p in b.glob("tagmanifest-*.txt"):
        p.unlink()


def edit_bag_info(b: Path) -> None:
    p = b / "bag-info.txt"
    p.write_text(p.read_text().replace("County Prosecutor's Office", "Someone Else"))


def symlinked_payload(b: Path) -> None:
    p = b / json.loads((b / "transfer.json").read_text())["clips"][0]["path"]
    p.unlink()
    p.symlink_to("/etc/passwd")


@pytest.mark.parametrize("breakage,needle", [
    (mutate_clip_byte, "sha256 differs from manifest-sha256.txt"),
    (extra_file, "planted.mp4: in the payload but listed in no manifest"),
    (missing_file, "listed in the payload manifest but missing"),
    (strip_tagmanifests, "tagmanifest-sha256.txt is missing"),
    (edit_bag_info, "bag-info.txt: sha256 differs from tagmanifest-sha256.txt"),
    (symlinked_payload, "not a regular file or directory"),
])
def test_broken_bags_are_invalid_with_reasons(world, bag, tmp_path, breakage, needle):
    b = copy(bag, tmp_path)
    breakage(b)
    r = world.verify(b)
    assert r.returncode == 1, r.stdout + r.stderr
    assert needle in r.stdout and "Traceback" not in r.stderr
    j = json.loads(world.verify(b, "--json").stdout)
    assert j["valid"] is False and any(needle in x for x in j["reasons"])


def test_field_tools_reject_what_we_reject(bag, tmp_path):
    """bagit.py accepts a bag whose tag manifests were deleted; our profile (via bagit-profile) does not."""
    b = copy(bag, tmp_path)
    strip_tagmanifests(b)
    r = subprocess.run([tool("bagit_profile.py"), "--no-logfile", "--file", str(PROFILE), PROFILE_ID, str(b)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Does not validate" in r.stdout, r.stdout + r.stderr
    b = copy(bag, tmp_path / "2")
    mutate_clip_byte(b)
    assert subprocess.run([tool("bagit.py"), "--validate", str(b)], capture_output=True).returncode != 0
    assert subprocess.run([tool("bdbag"), "--validate", "full", str(b)], capture_output=True).returncode != 0


def test_create_refuses_what_it_cannot_vouch_for(world, tmp_path):
    r = world.create(tmp_path / "x", clips=["ev/st1/CAM1/2023/11/14/" + "0" * 64 + ".mp4"])
    assert r.returncode == 1 and "no signed manifest" in r.stderr and not (tmp_path / "x").exists()
    r = world.create(tmp_path / "y", clips=["ev/../../etc/passwd"])
    assert r.returncode == 1 and "not a clip object key" in r.stderr
    r = world.create(tmp_path / "z", "--case", "a/b")
    assert r.returncode == 2 and "--case" in r.stderr
    r = run_dockd("disclose", "verify", tmp_path / "nothing", "--root", world.root_pub)
    assert r.returncode == 2 and "Traceback" not in r.stderr
