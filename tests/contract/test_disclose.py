"""Disclosure bags (issue #16): clips put into a real SeaweedFS by the real station code, a bag built from
storage by ``dockd disclose create``, judged by ``dockd disclose verify``, by the field's own tools
(bagit.py, bagit-profile, bdbag) and by its own VERIFY.txt run literally; then broken in every way the
issue names and judged again."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dockd.agency.disclosure.create import PROFILE_ID
from tests.support.cli import run_dockd
from tests.support.disclosure import ok, world_in

PROFILE = Path(__file__).resolve().parents[2] / "dockd" / "agency" / "disclosure" / "dockd-bagit-profile.json"


@pytest.fixture(scope="module")
def world(seaweed, tmp_path_factory):
    yield from world_in(seaweed, tmp_path_factory, "disclose", [200_000, 150_000, 1_000])


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


def test_case_graph_conforms_to_case_1_5(bag):
    # --allow-info: UCO reports each xsd:string hash method as "not typed as its vocabulary" at level Info
    # (while typing it as the vocabulary is a Warning since UCO 1.4); anything above Info fails.
    r = subprocess.run([tool("case_validate"), "--built-version", "case-1.5.0", "--allow-info",
                        str(bag / "case.jsonld")], capture_output=True, text=True)
    assert r.returncode == 0 and "Conforms: True" in r.stdout, r.stdout[-3000:] + r.stderr
    g = json.loads((bag / "case.jsonld").read_text())
    types = [n["@type"] for n in g["@graph"]]
    assert types.count("uco-observable:File") == 3 and "case-investigation:Authorization" in types


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
    r = world.verify(b, "--json")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    j = json.loads(r.stdout)
    assert j["valid"] is False and any(needle in x for x in j["reasons"]), j["reasons"]


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


def test_ledger_receipt_and_ack(world, bag, tmp_path):
    r = ok(world.dockd("disclose", "ledger", "--case", "2026-CR-0042", "--json"))
    [row] = [x for x in json.loads(r.stdout)["transfers"] if x["seq"] == 0]
    t = (bag / "transfer.json").read_bytes()
    assert row["transfer_sha256"] == hashlib.sha256(t).hexdigest() and row["acknowledged"] is None
    assert row["recipient"] == {"name": "County Prosecutor's Office"}
    receipt = tmp_path / "receipt.json"
    ok(world.dockd("disclose", "receipt", bag, "--key", world.prosecutor, "--out", receipt))
    r = ok(world.dockd("disclose", "ack", receipt, "--key", world.discloser))
    assert "recorded as ledger entry" in r.stdout
    r = world.dockd("disclose", "ledger", "--case", "2026-CR-0042")
    assert "acknowledged" in r.stdout and "NOT acknowledged" not in r.stdout.splitlines()[1]
    r = world.dockd("disclose", "ack", receipt, "--key", world.discloser)
    assert r.returncode == 1 and "acknowledged already" in r.stderr
    # A receipt for another bag (a digest that this case never sent) is refused.
    other = json.loads(receipt.read_text())
    other["tagmanifest_sha256"] = "0" * 64
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(other))
    r = world.dockd("disclose", "ack", forged, "--key", world.discloser)
    assert r.returncode == 1 and "does not verify" in r.stderr  # altered after signing
    b2 = tmp_path / "bag2"
    ok(world.create(b2))
    assert json.loads((b2 / "transfer.json").read_text())["previous"] == hashlib.sha256(t).hexdigest()
    r2 = tmp_path / "r2.json"
    ok(world.dockd("disclose", "receipt", b2, "--key", world.prosecutor, "--out", r2))
    body = json.loads(r2.read_text())
    body["case"] = "2026-CR-9999"  # re-signed by the recipient for a case that never had this bag
    from dockd.evidence import manifest as mf
    from dockd.trust import store as trustlog

    r3 = tmp_path / "r3.json"
    r3.write_bytes(mf.dumps(mf.sign(body, trustlog.load_signing_key(world.prosecutor))))
    r = world.dockd("disclose", "ack", r3, "--key", world.discloser)
    assert r.returncode == 1 and "another bag" in r.stderr


def test_tampered_ledger_is_refused(world, bag, tmp_path):
    s3 = world.seaweed_client()
    case = "2026-CR-0042"
    keys_ = sorted(k for k in world.backend.list_keys(f"ev/_disclosure/{case}/ledger/"))
    assert len(keys_) >= 2
    first = s3.get_object(Bucket=world.bucket, Key=keys_[0])["Body"].read()
    second = s3.get_object(Bucket=world.bucket, Key=keys_[1])["Body"].read()
    try:  # reordered: entries 0 and 1 swapped
        s3.put_object(Bucket=world.bucket, Key=keys_[0], Body=second)
        s3.put_object(Bucket=world.bucket, Key=keys_[1], Body=first)
        r = world.dockd("disclose", "ledger", "--case", case)
        assert r.returncode == 1 and "reordered" in r.stderr
        s3.put_object(Bucket=world.bucket, Key=keys_[0], Body=first)
        s3.delete_object(Bucket=world.bucket, Key=keys_[1])  # truncated in the middle
        r = world.dockd("disclose", "ledger", "--case", case)
        if len(keys_) > 2:
            assert r.returncode == 1 and "missing (removed?)" in r.stderr
    finally:
        s3.put_object(Bucket=world.bucket, Key=keys_[0], Body=first)
        s3.put_object(Bucket=world.bucket, Key=keys_[1], Body=second)
    r = world.dockd("disclose", "ledger", "--case", case)
    assert "ledger chain intact" in r.stdout, r.stdout + r.stderr


def test_revoked_discloser_and_swapped_station_key(world, bag, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from dockd.evidence import keys
    from dockd.evidence import manifest as mf
    from dockd.trust import store as trustlog

    rex = world.person("Rex Revoked", "discloser")
    world.publish()
    rbag = tmp_path / "rbag"
    ok(world.create(rbag, key=rex))
    ok(world.verify(rbag))
    ok(run_dockd("trust", "revoke", world.key_id(rex), "--from", "2026-01-01T00:00:00Z", "--reason", "key lost",
                 "--root-key", world.root_key, "--dir", world.tdir))
    world.publish()
    r = world.verify(rbag, "--trust", world.tdir)  # judged by the newer trust log
    assert r.returncode == 1 and "revoked" in r.stdout
    r = world.create(tmp_path / "never", key=rex)
    assert r.returncode == 1 and "revoked" in r.stderr and not (tmp_path / "never").exists()
    # Rex's entry stays in the case ledger, flagged; the case goes on.
    r = world.dockd("disclose", "ledger", "--case", "2026-CR-0042")
    assert r.returncode == 1 and "INVALID SIGNER" in r.stdout and "revoked" in r.stdout
    # A clip manifest re-signed by another station's (enrolled) key, the bag's digests recomputed to match.
    k2 = Ed25519PrivateKey.generate()
    req = tmp_path / "st2.req.json"
    req.write_bytes(trustlog.dumps(trustlog.make_request(k2, "station", "st2", "2025-01-01T00:00:00Z")))
    world.enrol(req, "station")
    b = copy(bag, tmp_path / "swap")
    mpath = b / json.loads((b / "transfer.json").read_text())["clips"][0]["manifests"][0]
    m = json.loads(mpath.read_text())
    mpath.write_bytes(mf.dumps(mf.sign(m, keys.StationKey(k2, tmp_path / "k2"))))
    rehash(b)
    r = world.verify(b, "--trust", world.tdir)
    assert r.returncode == 1 and "swapped station key" in r.stdout and "tagmanifest-sha256.txt.sig" in r.stdout


def rehash(b: Path) -> None:
    """What a forger with no key can do: recompute every manifest and tag manifest."""
    for alg in ("sha256", "sha512"):
        lines = (b / f"manifest-{alg}.txt").read_text().splitlines()
        paths = [x.split("  ", 1)[1] for x in lines]
        (b / f"manifest-{alg}.txt").write_text("".join(
            f"{hashlib.new(alg, (b / p).read_bytes()).hexdigest()}  {p}\n" for p in paths))
    for alg in ("sha256", "sha512"):
        lines = (b / f"tagmanifest-{alg}.txt").read_text().splitlines()
        paths = [x.split("  ", 1)[1] for x in lines]
        (b / f"tagmanifest-{alg}.txt").write_text("".join(
            f"{hashlib.new(alg, (b / p).read_bytes()).hexdigest()}  {p}\n" for p in paths))


def test_onward_disclosure_to_defence_chains_back_to_the_stations(world, bag, tmp_path):
    child = tmp_path / "to-defence"
    keys2 = world.object_keys[:2]
    r = ok(run_dockd("disclose", "create", "--from-bag", bag, "--case", "2026-CR-0042",
                     "--recipient", "Defence Counsel", "--authority", "Rule 16 disclosure", "--key", world.prosecutor,
                     "--out", child, "--root", world.root_pub, *[a for k in keys2 for a in ("--clip", k)]))
    assert "2 clip(s)" in r.stdout and "recorded in no ledger" in r.stdout
    t = json.loads((child / "transfer.json").read_text())
    assert t["sender"]["name"] == "Pat Prosecutor" and [c["object_key"] for c in t["clips"]] == keys2
    assert t["parent"]["transfer_sha256"] == hashlib.sha256((bag / "transfer.json").read_bytes()).hexdigest()
    r = world.verify(child)
    assert r.returncode == 0, r.stdout
    assert "chain 1: data/parent signed by " + world.key_id(world.discloser) in r.stdout
    assert "2 station manifest(s) verified" in r.stdout
    assert subprocess.run([tool("bagit.py"), "--validate", str(child)], capture_output=True).returncode == 0
    # The parent's record swapped for an edited one (digests recomputed by the forger): the chain breaks.
    b = copy(child, tmp_path / "forged")
    p = b / "data" / "parent" / "transfer.json"
    p.write_text(p.read_text().replace("County Prosecutor", "County Prosecutor "))
    rehash(b)
    r = world.verify(b)
    assert r.returncode == 1 and "not the ones transfer.json names by digest" in r.stdout
    # Defence (recipient only) cannot disclose onward.
    r = run_dockd("disclose", "create", "--from-bag", child, "--case", "2026-CR-0042", "--recipient", "Press",
                  "--authority", "none", "--key", world.defence, "--out", tmp_path / "leak", "--root", world.root_pub)
    assert r.returncode == 1 and "not for role discloser" in r.stderr and not (tmp_path / "leak").exists()


def test_zip_output_verifies_and_hostile_zips_are_refused(world, tmp_path):
    import zipfile

    z = tmp_path / "2026-CR-0042.zip"
    r = ok(world.create(z, "--zip", clips=world.object_keys[2:]))
    assert z.is_file() and not list(tmp_path.glob(".*partial*"))
    names = zipfile.ZipFile(z).namelist()
    assert all(n.startswith("2026-CR-0042/") for n in names) and "2026-CR-0042/bagit.txt" in names
    r = world.verify(z)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([tool("bdbag"), "--validate", "full", str(z)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("b/bagit.txt", "BagIt-Version: 1.0\n")
        zf.writestr("b/../../escape.txt", "x")
    r = world.verify(evil)
    assert r.returncode == 1 and "not a plain regular file" in r.stderr
    assert not (tmp_path.parent / "escape.txt").exists()
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as zf:
        info = zipfile.ZipInfo("b/data/x")
        info.external_attr = (0o120777) << 16  # a symlink entry
        zf.writestr(info, "/etc/passwd")
    r = world.verify(link)
    assert r.returncode == 1 and "not a plain regular file" in r.stderr
    # Onward disclosure from a zipped bag: unpacked as hostile input beside the new bag, removed afterwards.
    od = tmp_path / "onward"
    od.mkdir()
    onward = ["disclose", "create", "--case", "2026-CR-0042", "--recipient", "Defence", "--authority", "Rule 16",
              "--key", world.prosecutor, "--root", world.root_pub]
    r = ok(run_dockd(*onward, "--from-bag", z, "--out", od / "child"))
    assert "1 clip(s)" in r.stdout and sorted(p.name for p in od.iterdir()) == ["child"]
    r = world.verify(od / "child")
    assert r.returncode == 0 and "chain 1: data/parent" in r.stdout, r.stdout
    r = run_dockd(*onward, "--from-bag", evil, "--out", od / "evil-child")
    assert r.returncode == 1 and "not a plain regular file" in r.stderr
    assert sorted(p.name for p in od.iterdir()) == ["child"] and not (tmp_path.parent / "escape.txt").exists()


@pytest.mark.parametrize("edit", [
    lambda t: t.update(recipient="just a string"),
    lambda t: t.update(clips=[{"object_key": 1, "path": [], "station": None, "manifests": "x", "audit": 7}]),
    lambda t: t.update(items=5),
    lambda t: t.update(parent={"transfer_sha256": None}),
    lambda t: t["sender"].update(key_id=["x"]),
])
def test_hostile_transfer_record_is_invalid_not_a_crash(world, bag, tmp_path, edit):
    import rfc8785

    b = copy(bag, tmp_path)
    t = json.loads((b / "transfer.json").read_text())
    edit(t)
    (b / "transfer.json").write_bytes(rfc8785.dumps(t))
    rehash(b)
    r = world.verify(b)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stdout + r.stderr
    assert "INVALID" in r.stdout


def _build_in_process(world, out: Path, before_commit, as_zip: bool = False):
    from dockd.agency.disclosure import create as mk
    from dockd.trust import log as trust
    from dockd.trust import store as trustlog

    prefix = world.cfg.storage.prefix
    raws = trustlog.read_storage(world.backend, prefix)
    state = trust.load(trustlog.load_public(world.root_pub), raws)
    req = mk.Request(case="2026-CR-0099", recipient="R", authority="A", object_keys=world.object_keys[2:], out=out,
                     created_at=mk.now_rfc3339(), as_zip=as_zip)
    src = mk.from_storage(world.backend, prefix, state, raws, req.object_keys)
    return mk.build(src, state, trustlog.load_signing_key(world.discloser), req, before_commit=before_commit)


@pytest.mark.parametrize("as_zip", [False, True])
def test_ledger_entry_only_for_a_complete_bag_and_bag_only_with_its_entry(world, tmp_path, monkeypatch, as_zip):
    from dockd.agency.disclosure import DisclosureFailed
    from dockd.agency.disclosure.writer import BagWriter

    # The ledger append fails: no bag appears and no temporary one is left.
    def refuse(*_a):
        raise DisclosureFailed("ledger unreachable")

    out = tmp_path / ("a.zip" if as_zip else "a")
    with pytest.raises(DisclosureFailed, match="ledger unreachable"):
        _build_in_process(world, out, refuse, as_zip)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # The entry is recorded, then the rename fails (a crash there): the bag the entry names is complete,
    # durable and valid under its temporary name, and the error says where.
    recorded = []
    (tmp_path / "judge").mkdir()

    def judge(p: Path):  # verify takes a zip by its name
        if as_zip:
            shutil.copyfile(p, tmp_path / "judge" / "j.zip")
            p = tmp_path / "judge" / "j.zip"
        return world.verify(p)

    def record(t, tbytes, tm):
        sealed = [p for p in tmp_path.iterdir() if p.name.startswith(".b")]
        assert len(sealed) == 1 and judge(sealed[0]).returncode == 0  # complete before it is recorded
        recorded.append(hashlib.sha256(tbytes).hexdigest())

    def crash(self):
        raise OSError("injected failure between ledger entry and rename")

    monkeypatch.setattr(BagWriter, "publish", crash)
    out = tmp_path / ("b.zip" if as_zip else "b")
    with pytest.raises(DisclosureFailed, match="complete and recorded") as e:
        _build_in_process(world, out, record, as_zip)
    sealed = [p for p in tmp_path.iterdir() if p.name.startswith(".b")]
    assert recorded and not out.exists() and len(sealed) == 1 and str(sealed[0]) in str(e.value)
    r = judge(sealed[0])
    assert r.returncode == 0, r.stdout + r.stderr
    t = (sealed[0] / "transfer.json").read_bytes() if not as_zip else None
    assert t is None or hashlib.sha256(t).hexdigest() == recorded[0]
    # A later run does not overwrite the sealed bag.
    monkeypatch.undo()
    if not as_zip:
        with pytest.raises(Exception, match="left from an earlier run"):
            _build_in_process(world, out, record, as_zip)
        assert (sealed[0] / "transfer.json").is_file()


def test_select_by_camera_and_time_from_the_verified_clip_index(world, tmp_path):
    from dockd.evidence import keys
    from tests.support.review import indexgen

    gen, prefix = indexgen(), world.cfg.storage.prefix
    key, _ = keys.load_or_create(world.cfg.data_dir)
    k0, k1, k2 = world.object_keys
    unplaced = k0.rsplit("/", 1)[0] + "/" + "f" * 64 + ".mp4"

    def line(k, start, offset=0.0):
        return gen.clip_line("st1", "CAM1", start, 60.0, 1, offset, object_key=k,
                             sha256=k.rsplit("/", 1)[1][:64])

    # k1 starts at 10:30 by the camera clock, which ran 2 minutes ahead: 10:28 station time.
    lines = [line(k0, "2025-06-01T10:00:00Z"), line(k1, "2025-06-01T10:30:00Z", 120.0),
             line(k2, "2025-06-01T12:00:00Z"), line(unplaced, None)]
    head, objs = gen.segment(prefix, key, "st1", 1, "2025-06-01", lines, [], None, "2025-06-01T23:00:00Z")
    for k, v in objs.items():
        world.backend.put_bytes(k, v, hashlib.sha256(v).hexdigest())
    out = tmp_path / "by-time"
    r = ok(world.create(out, "--camera", "CAM1", "--from", "2025-06-01T10:00:30Z", "--to", "2025-06-01T10:28:30",
                        clips=[]))
    assert "2 clip(s)" in r.stdout and "1 of its clips have no known start time" in r.stderr
    t = json.loads((out / "transfer.json").read_text())
    assert [c["object_key"] for c in t["clips"]] == [k0, k1]
    sel = json.loads((out / "data" / "selection.json").read_text())
    assert sel["selected"] == [k0, k1] and sel["unplaced"] == [unplaced] and sel["camera"] == "CAM1"
    assert sel["index_segments"][0][:2] == ["st1", 1]
    assert "data/selection.json" in {i["path"] for i in t["items"]}
    r = world.verify(out)
    assert r.returncode == 0, r.stdout
    # Nothing in the range; incomplete options; an index that fails its check (a head signed by another key).
    r = world.create(tmp_path / "none", "--camera", "CAM1", "--from", "2024-01-01T00:00:00Z", "--to",
                     "2024-01-02T00:00:00Z", clips=[])
    assert r.returncode == 1 and "holds no clip of camera CAM1" in r.stderr and not (tmp_path / "none").exists()
    r = world.create(tmp_path / "x", "--camera", "CAM1", "--from", "2025-06-01T10:00:00Z", clips=[])
    assert r.returncode == 2 and "go together" in r.stderr
    r = world.create(tmp_path / "x", "--camera", "CAM1", "--from", "yesterday", "--to", "now", clips=[])
    assert r.returncode == 2 and "not an RFC 3339 time" in r.stderr
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    forger = keys.StationKey(Ed25519PrivateKey.generate(), tmp_path / "forger")
    _, objs = gen.segment(prefix, forger, "st1", 2, "2025-06-02", [line(k2, "2025-06-02T10:00:00Z")], [], head,
                          "2025-06-02T23:00:00Z")
    for k, v in objs.items():
        world.backend.put_bytes(k, v, hashlib.sha256(v).hexdigest())
    r = world.create(tmp_path / "forged", "--camera", "CAM1", "--from", "2025-06-01T00:00:00Z", "--to",
                     "2025-06-03T00:00:00Z", clips=[])
    assert r.returncode == 1 and "clip index failed its check" in r.stderr and "st1 seq 2" in r.stderr, r.stderr


def test_select_by_incident_from_a_verified_completeness_report(world, tmp_path):
    import csv
    import io

    from dockd.agency.disclosure import create as mk
    from dockd.agency.review import justify, report, run
    from dockd.trust import log as trust
    from dockd.trust import store as trustlog

    prefix = world.cfg.storage.prefix
    reviewer = world.person("Rita Reviewer", "reviewer")
    world.publish()
    state = trust.load(trustlog.load_public(world.root_pub), trustlog.read_storage(world.backend, prefix))
    rkey = trustlog.load_signing_key(reviewer)
    now = mk.now_rfc3339()
    entry = justify.append(world.backend, prefix, state, rkey, incident="I-7", officer="O2", reason="battery",
                           note="battery log shows 0%", at=now, reason_codes=("battery",))
    k0, k1, k2 = world.object_keys
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(report.CSV_FIELDS)
    for inc, officer, outcome, seq, clips in (("I-7", "O1", "covered", "", f"{k0};{k1}"),
                                              ("I-7", "O2", "justified", str(entry["seq"]), ""),
                                              ("I-8", "O3", "covered", "", k2)):
        w.writerow([inc, officer, "U1", "THEFT", now, now, "CAM1", outcome, "10000", seq, "", "", clips, ""])
    csv_bytes, html = buf.getvalue().encode(), b"<!doctype html><title>r</title>\n"
    body = report.body(generated_at=now, as_of=now, period={"from": now, "to": now}, filters={}, policy={},
                       inputs={"justifications": [[entry["seq"], justify.digest(entry)]]}, summary={},
                       exceptions=[], csv_bytes=csv_bytes, rows=3, html_bytes=html, notes=[])
    rdir = tmp_path / "report"
    rdir.mkdir()
    (rdir / "report.csv").write_bytes(csv_bytes)
    (rdir / "report.html").write_bytes(html)
    (rdir / "report.json").write_text(json.dumps(run.sign(body, rkey)))
    out = tmp_path / "by-incident"
    r = ok(world.create(out, "--incident", "I-7", "--report", rdir, clips=[]))
    assert "2 clip(s)" in r.stdout and "2 row(s)" in r.stderr and "1 justification(s)" in r.stderr
    t = json.loads((out / "transfer.json").read_text())
    assert [c["object_key"] for c in t["clips"]] == [k0, k1]
    [rec] = list((out / "data" / "completeness").glob("I-7-*.json"))
    c = json.loads(rec.read_text())
    assert [(x["officer"], x["outcome"]) for x in c["rows"]] == [("O1", "covered"), ("O2", "justified")]
    assert c["report"]["report_json_sha256"] == hashlib.sha256((rdir / "report.json").read_bytes()).hexdigest()
    stored = b"".join(world.backend.iter_chunks(justify.entry_key(prefix, entry["seq"])))
    assert (out / "data" / "completeness" / "justifications" / f"{entry['seq']:08d}.json").read_bytes() == stored
    r = world.verify(out)
    assert r.returncode == 0, r.stdout
    # No such incident; options apart; a report whose CSV was edited after signing is refused.
    r = world.create(tmp_path / "n", "--incident", "I-9", "--report", rdir, clips=[])
    assert r.returncode == 1 and "no row for incident 'I-9'" in r.stderr
    r = world.create(tmp_path / "n", "--incident", "I-7", clips=[])
    assert r.returncode == 2 and "go together" in r.stderr
    (rdir / "report.csv").write_bytes(csv_bytes.replace(b"I-8", b"I-7"))
    r = world.create(tmp_path / "n", "--incident", "I-7", "--report", rdir, clips=[])
    assert r.returncode == 1 and "does not match the signed report" in r.stderr and not (tmp_path / "n").exists()


def _under_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """Run ``dockd ARGV`` with stderr on a pseudo-terminal and stdout on a pipe: (exit, stdout, the terminal's
    text with escape sequences removed)."""
    import pty
    import re
    import select

    from tests.support.cli import dockd_argv, dockd_env

    master, slave = pty.openpty()
    env = dockd_env({"COLUMNS": "160", "LINES": "40", "TERM": "xterm"})
    proc = subprocess.Popen([*dockd_argv(), *argv], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    try:
        while True:  # read until the child closes the terminal (EIO), so a full terminal never blocks it
            if select.select([master], [], [], 1.0)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen.extend(chunk)
            elif proc.poll() is not None:
                break
        out = proc.stdout.read().decode()
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
        os.close(master)
    return rc, out, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", seen.decode(errors="replace"))


def test_progress_bar_on_a_terminal_and_none_in_a_pipe(world, bag, tmp_path):
    """On a terminal stderr: a bar whose final state shows every clip verified and every byte, stdout the same one
    line as in a pipe; onward disclosure (--from-bag) shows the same bar. In a pipe: no bar, no escape codes."""
    out = tmp_path / "tty-bag"
    rc, stdout, screen = _under_a_terminal(
        ["--config", str(world.config), "disclose", "create", "--case", "2026-CR-0042", "--recipient", "R",
         "--authority", "A", "--key", str(world.discloser), "--out", str(out),
         *[a for k in world.object_keys for a in ("--clip", k)]])
    assert rc == 0, screen
    assert stdout.count("\n") == 1 and stdout.startswith(f"bag {out}: case 2026-CR-0042, 3 clip(s)"), stdout
    final = [x for x in screen.splitlines() if "clips" in x][-1]
    total = sum(c["size"] for c in json.loads((out / "transfer.json").read_text())["clips"])
    assert "done" in final and "3/3 clips" in final, screen
    assert f"{total / 1000:.1f}/{total / 1000:.1f} kB" in final, final  # rich's decimal units, kB here
    child = tmp_path / "tty-onward"
    rc, stdout, screen = _under_a_terminal(
        ["disclose", "create", "--from-bag", str(bag), "--case", "2026-CR-0042", "--recipient", "D",
         "--authority", "Rule 16", "--key", str(world.prosecutor), "--out", str(child), "--root",
         str(world.root_pub), "--clip", world.object_keys[0]])
    assert rc == 0, screen
    assert stdout.startswith(f"bag {child}: case 2026-CR-0042, 1 clip(s)") and stdout.count("\n") == 1, stdout
    assert "1/1 clips" in [x for x in screen.splitlines() if "clips" in x][-1], screen
    # --quiet: no bar at all on the terminal
    rc, stdout, screen = _under_a_terminal(
        ["disclose", "create", "--from-bag", str(bag), "--case", "2026-CR-0042", "--recipient", "D",
         "--authority", "Rule 16", "--key", str(world.prosecutor), "--out", str(tmp_path / "quiet"), "--root",
         str(world.root_pub), "--clip", world.object_keys[0], "--quiet"])
    assert rc == 0 and "clips" not in screen and stdout.startswith("bag "), screen
    # Not a terminal (captured, as in CI): stdout the one line, stderr without any escape code or bar.
    r = ok(world.create(tmp_path / "piped"))
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(f"bag {tmp_path / 'piped'}: "), r.stdout
    assert "\x1b" not in r.stderr and "\r" not in r.stderr and "clips" not in r.stderr, r.stderr
