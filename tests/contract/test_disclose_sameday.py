"""A clip disclosed on the day it was offloaded (issue #16): its day has no segment yet, only the part
segments the station exported so far; the bag carries the parts that hold its custody rows, and
``dockd disclose verify`` and the bag's VERIFY.txt judge them like day segments. Tampered or missing parts
in storage are refused by ``dockd disclose create``, a tampered part in the bag by ``verify``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.disclosure import ok, world_in


@pytest.fixture(scope="module")
def world(seaweed, tmp_path_factory):
    yield from world_in(seaweed, tmp_path_factory, "sameday", [20_000], parts=True)


@pytest.fixture(scope="module")
def bag(world):
    out = world.tmp / "bag"
    ok(world.create(out))
    return out


def test_same_day_clip_carries_its_custody_rows_from_the_parts(world, bag):
    assert len(world.parts) == 3 and world.days == []
    t = json.loads((bag / "transfer.json").read_text())
    (c,) = t["clips"]
    segs = [a["segment"] for a in c["audit"]]
    day = c["offloaded_at"][:10]
    assert segs == [f"data/audit/st1/{day}.part-{p.rsplit('.part-', 1)[1]}" for p in world.parts[:2]]
    rows = [json.loads(x) for s in segs for x in (bag / s).read_text().splitlines()]
    events = {r["event"] for a in c["audit"] for r in rows if r["seq"] in a["seqs"]}
    assert {"clip.staged", "clip.uploaded"} <= events, events
    assert not (bag / f"data/audit/st1/{day}.part-{world.parts[2].rsplit('.part-', 1)[1]}").exists()
    r = world.verify(bag)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 segment(s) chained to their signed heads" in r.stdout
    env = {"PATH": os.environ["PATH"], "ROOT": str(world.root_pub)}
    r = subprocess.run(["bash", "-euo", "pipefail", "VERIFY.txt"], cwd=bag, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "bag verified" in r.stdout, r.stdout + r.stderr
    assert r.stdout.count("Signature Verified Successfully") >= 2 + 1 + 2  # tags, manifest, the two part heads
    r = subprocess.run([str(Path(sys.executable).with_name("bagit.py")), "--validate", str(bag)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_a_tampered_part_in_the_bag_is_invalid(world, bag, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bag, b, symlinks=True)
    seg = json.loads((b / "transfer.json").read_text())["clips"][0]["audit"][1]["segment"]
    p = b / seg
    p.write_text(p.read_text().replace("clip.uploaded", "clip.uploadeD", 1))
    r = world.verify(b)
    assert r.returncode == 1 and f"{seg}: segment bytes do not match the head's sha256" in r.stdout, r.stdout


def _swap(world, key: str, data: bytes | None) -> bytes:
    """Replace (or, with None, delete) the object behind the station code's back; return the old bytes."""
    s3 = world.seaweed_client()
    old = s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    if data is None:
        s3.delete_object(Bucket=world.bucket, Key=key)
    else:
        s3.put_object(Bucket=world.bucket, Key=key, Body=data)
    return old


def test_a_tampered_part_in_storage_is_refused(world, tmp_path):
    key, s3 = world.parts[1], world.seaweed_client()
    old = s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=world.bucket, Key=key, Body=old.replace(b"clip.uploaded", b"clip.uploadeD", 1))
    try:
        r = world.create(tmp_path / "bag")
        assert r.returncode == 1 and f"audit part {key}: segment bytes do not match" in r.stderr, r.stderr
        assert not (tmp_path / "bag").exists()
    finally:
        s3.put_object(Bucket=world.bucket, Key=key, Body=old)


def test_a_missing_middle_part_is_refused_naming_the_parts(world, tmp_path):
    body = world.parts[1]
    head = body[: -len(".jsonl")] + ".head.json"
    saved = {k: _swap(world, k, None) for k in (body, head)}
    try:
        r = world.create(tmp_path / "bag")
        assert r.returncode == 1 and "do not chain" in r.stderr, r.stderr
        assert world.parts[0] in r.stderr and world.parts[2] in r.stderr
    finally:
        for k, v in saved.items():
            world.seaweed_client().put_object(Bucket=world.bucket, Key=k, Body=v)


def test_onward_disclosure_of_a_same_day_bag_keeps_its_parts(world, bag, tmp_path):
    """The prosecutor passes the same-day bag on to defence: the child carries the parent's part segments
    as they are, and ``verify`` and the child's VERIFY.txt check them back to the station's signed heads."""
    from tests.support.cli import run_dockd

    child = tmp_path / "to-defence"
    ok(run_dockd("disclose", "create", "--from-bag", str(bag), "--case", "2026-CR-0042", "--recipient",
                 "Defence Counsel", "--authority", "Rule 16 disclosure", "--key", str(world.prosecutor),
                 "--out", str(child), "--root", str(world.root_pub)))
    parts = sorted(p.relative_to(bag) for p in (bag / "data" / "audit").rglob("*.part-*"))
    assert parts and all((child / p).read_bytes() == (bag / p).read_bytes() for p in parts), parts
    r = world.verify(child)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 segment(s) chained to their signed heads" in r.stdout, r.stdout
    env = {"PATH": os.environ["PATH"], "ROOT": str(world.root_pub)}
    r = subprocess.run(["bash", "-euo", "pipefail", "VERIFY.txt"], cwd=child, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "bag verified" in r.stdout, r.stdout + r.stderr
