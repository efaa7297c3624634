"""Signed manifests: round trip, tampering, wrong key, openssl interop, canonical form, `dockd manifest verify`."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockd.core.errors import ManifestInvalid
from dockd.evidence import keys
from dockd.evidence import manifest as mf
from tests.support.cli import run_dockd

OPENSSL = shutil.which("openssl")
CLIP = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    k, created = keys.load_or_create(tmp_path_factory.mktemp("station"))
    assert created
    return k


@pytest.fixture(scope="module")
def other_key(tmp_path_factory):
    return keys.load_or_create(tmp_path_factory.mktemp("other"))[0]


def body(clip: bytes = CLIP) -> dict:
    return mf.build(sha256=hashlib.sha256(clip).hexdigest(), size=len(clip), path="DCIM/100AXON/VID_0001.MP4",
                    mtime="2026-03-01T08:15:00.123456789Z",
                    camera={"serial": "X81234567", "vendor": "Axon", "model": "Body 3", "bay": "4"},
                    station_id="precinct7-dock1", offloaded_at="2026-03-01T09:00:00.000Z", verify="reread",
                    sidecars=[{"path": "DCIM/100AXON/VID_0001.GPS", "size": 12, "sha256": "ab" * 32,
                               "mtime": "2026-03-01T08:15:00.000000000Z"}],
                    dockd_version="0.1.0")


def test_key_file_and_id(key, tmp_path):
    assert key.path.stat().st_mode & 0o777 == 0o600
    assert key.key_id.startswith("ed25519:") and len(key.key_id) == len("ed25519:") + 16
    # the id is recomputable from the public PEM alone
    pem = keys.public_pem(key.public).encode()
    der = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    assert key.key_id == "ed25519:" + hashlib.sha256(der).hexdigest()[:16]
    assert keys.key_id_of(keys.load_public_pem(pem)) == key.key_id
    again, created = keys.load_or_create(key.path.parent.parent)
    assert not created and again.key_id == key.key_id  # never regenerated


def test_sign_verify_round_trip(key):
    m = mf.sign(body(), key)
    assert m["signature"]["alg"] == "Ed25519" and m["signature"]["key_id"] == key.key_id
    assert m["format"] == "dockd.manifest/1"
    mf.check(m, key.public)
    # file form, parsed back, verifies too
    mf.check(json.loads(mf.dumps(m)), key.public)
    # signing an already-signed manifest replaces, not nests, the signature
    assert mf.sign(m, key)["signature"] == m["signature"]


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))
    else:
        yield prefix


def _altered(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, str):
        return v + "x" if v else "x"
    return "x"


SIGNED = None


@pytest.mark.parametrize("field", [p for p in _paths(body())], ids=lambda p: ".".join(map(str, p)))
def test_tampering_any_field_fails(key, field):
    m = mf.sign(body(), key)
    t = copy.deepcopy(m)
    node = t
    for k in field[:-1]:
        node = node[k]
    node[field[-1]] = _altered(node[field[-1]])
    with pytest.raises(ManifestInvalid, match="does not verify"):
        mf.check(t, key.public)


@pytest.mark.parametrize("change", ["add_member", "remove_member", "drop_sidecar", "sig_value", "sig_key_id",
                                    "sig_alg", "no_sig", "not_object", "no_clip"])
def test_structural_tampering_fails(key, change):
    m = copy.deepcopy(mf.sign(body(), key))
    if change == "add_member":
        m["note"] = "added later"
    elif change == "remove_member":
        del m["offloaded_at"]
    elif change == "drop_sidecar":
        m["sidecars"] = []
    elif change == "sig_value":
        raw = bytearray(base64.b64decode(m["signature"]["value"]))
        raw[0] ^= 1
        m["signature"]["value"] = base64.b64encode(bytes(raw)).decode()
    elif change == "sig_key_id":
        m["signature"]["key_id"] = "ed25519:0000000000000000"
    elif change == "sig_alg":
        m["signature"]["alg"] = "RS256"
    elif change == "no_sig":
        del m["signature"]
    elif change == "not_object":
        m = [m]
    elif change == "no_clip":
        del m["clip"]
    with pytest.raises(ManifestInvalid):
        mf.check(m, key.public)


def test_wrong_key_fails(key, other_key):
    m = mf.sign(body(), key)
    with pytest.raises(ManifestInvalid, match="signed by key"):
        mf.check(m, other_key.public)
    # a forger who also rewrites key_id still fails the signature
    m2 = copy.deepcopy(m)
    m2["signature"]["key_id"] = other_key.key_id
    with pytest.raises(ManifestInvalid, match="does not verify"):
        mf.check(m2, other_key.public)
    # the garbage-signature case does not crash
    m3 = copy.deepcopy(m)
    m3["signature"]["value"] = "not base64!!"
    with pytest.raises(ManifestInvalid):
        mf.check(m3, key.public)


def test_check_file_hash(key, tmp_path):
    m = mf.sign(body(), key)
    f = tmp_path / "clip.mp4"
    f.write_bytes(CLIP)
    mf.check_file_hash(m, str(f))
    f.write_bytes(CLIP[:-1] + bytes([CLIP[-1] ^ 1]))
    with pytest.raises(ManifestInvalid, match="sha256"):
        mf.check_file_hash(m, str(f))
    f.write_bytes(CLIP + b"\x00")
    with pytest.raises(ManifestInvalid, match="size"):
        mf.check_file_hash(m, str(f))


# ------------------------------------------------------------------ openssl interop


def write_for_openssl(tmp_path: Path, key, m: dict) -> tuple[Path, Path, Path]:
    pub = tmp_path / "pub.pem"
    pub.write_text(keys.public_pem(key.public))
    bodyf = tmp_path / "body.jcs"
    bodyf.write_bytes(mf.canonical_body(m))
    sig = tmp_path / "sig.bin"
    sig.write_bytes(base64.b64decode(m["signature"]["value"]))
    return pub, bodyf, sig


def openssl_verify(pub: Path, bodyf: Path, sig: Path) -> subprocess.CompletedProcess:
    return subprocess.run([OPENSSL, "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", str(pub), "-in",
                           str(bodyf), "-sigfile", str(sig)], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
def test_openssl_verifies_the_signature(key, tmp_path):
    m = mf.sign(body(), key)
    # start from the file form: a third party only has the manifest file
    from_file = json.loads(mf.dumps(m))
    pub, bodyf, sig = write_for_openssl(tmp_path, key, from_file)
    # the body is exactly JCS of the manifest minus `signature`
    assert bodyf.read_bytes() == rfc8785.dumps({k: v for k, v in from_file.items() if k != "signature"})
    r = openssl_verify(pub, bodyf, sig)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout, r


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
def test_openssl_rejects_a_tampered_body(key, tmp_path):
    m = mf.sign(body(), key)
    pub, bodyf, sig = write_for_openssl(tmp_path, key, m)
    needle = f'"size":{len(CLIP)}'.encode()
    assert needle in bodyf.read_bytes()
    bodyf.write_bytes(bodyf.read_bytes().replace(needle, f'"size":{len(CLIP) + 1}'.encode()))
    assert bodyf.read_bytes() != mf.canonical_body(m)
    r = openssl_verify(pub, bodyf, sig)
    assert r.returncode != 0 and "Signature Verified Successfully" not in r.stdout


# ------------------------------------------------------------------ canonical form (property tests)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=5)), max_leaves=20)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@given(json_objects, st.sampled_from([None, 0, 1, 4, "\t"]), st.booleans(), st.booleans(), st.randoms())
@settings(max_examples=200, deadline=None)
def test_property_jcs_is_independent_of_layout_and_key_order(obj, indent, sort_keys, ascii_, rnd):
    canonical = rfc8785.dumps(obj)

    def shuffled(v):
        if isinstance(v, dict):
            items = list(v.items())
            rnd.shuffle(items)
            return {k: shuffled(x) for k, x in items}
        if isinstance(v, list):
            return [shuffled(x) for x in v]
        return v

    text = json.dumps(shuffled(obj), indent=indent, sort_keys=sort_keys, ensure_ascii=ascii_)
    again = json.loads(text)
    assert rfc8785.dumps(again) == canonical
    assert mf.canonical_body(again) == canonical  # no `signature` member: the whole object


@given(json_objects, st.sampled_from([None, 2, "  "]), st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_signature_stable_across_reserialisation(key, extra, indent, sort_keys):
    b = body()
    b["extra"] = extra
    m = mf.sign(b, key)
    text = json.dumps(m, indent=indent, sort_keys=sort_keys, ensure_ascii=not sort_keys)
    back = json.loads(text)
    mf.check(back, key.public)  # still verifies after any re-serialisation
    assert mf.canonical_body(back) == mf.canonical_body(m)
    # and re-signing the parsed copy yields the identical signature (Ed25519 is deterministic)
    assert mf.sign(back, key)["signature"] == m["signature"]


# ------------------------------------------------------------------ `dockd manifest verify`


def run_verify(*args: str) -> subprocess.CompletedProcess:
    return run_dockd("manifest", "verify", *args)


@pytest.fixture
def files(key, tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(CLIP)
    man = tmp_path / "clip.manifest.json"
    man.write_bytes(mf.dumps(mf.sign(body(), key)))
    pub = tmp_path / "station.pub.pem"
    pub.write_text(keys.public_pem(key.public))
    return man, clip, pub


def assert_invalid(r: subprocess.CompletedProcess, needle: str, code: int = 1) -> None:
    assert r.returncode == code, r
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dockd: error: ") and needle in lines[0], r.stderr


def test_cli_valid(files, key):
    man, clip, pub = files
    r = run_verify(str(man), "--clip", str(clip), "--pubkey", str(pub))
    assert r.returncode == 0, r
    assert r.stdout.startswith("valid: signed by " + key.key_id) and hashlib.sha256(CLIP).hexdigest() in r.stdout
    assert run_verify(str(man), "--pubkey", str(pub)).returncode == 0


def test_cli_altered_clip(files):
    man, clip, pub = files
    clip.write_bytes(CLIP[:100] + bytes([CLIP[100] ^ 0xFF]) + CLIP[101:])
    assert_invalid(run_verify(str(man), "--clip", str(clip), "--pubkey", str(pub)), "does not match manifest sha256")
    clip.write_bytes(CLIP[:-5])
    assert_invalid(run_verify(str(man), "--clip", str(clip), "--pubkey", str(pub)), "does not match manifest size")


def test_cli_altered_manifest(files):
    man, clip, pub = files
    m = json.loads(man.read_bytes())
    m["camera"]["serial"] = "SOMEONE-ELSE"
    man.write_text(json.dumps(m))
    assert_invalid(run_verify(str(man), "--clip", str(clip), "--pubkey", str(pub)), "signature does not verify")


def test_cli_altered_hash_in_manifest_to_match_altered_clip(files):
    """Changing the clip and the manifest's hash to match it is caught by the signature."""
    man, clip, pub = files
    forged = CLIP + b"edit"
    clip.write_bytes(forged)
    m = json.loads(man.read_bytes())
    m["clip"].update(sha256=hashlib.sha256(forged).hexdigest(), size=len(forged))
    man.write_text(json.dumps(m))
    assert_invalid(run_verify(str(man), "--clip", str(clip), "--pubkey", str(pub)), "signature does not verify")


def test_cli_wrong_key_and_bad_inputs(files, other_key, tmp_path):
    man, clip, pub = files
    other = tmp_path / "other.pem"
    other.write_text(keys.public_pem(other_key.public))
    assert_invalid(run_verify(str(man), "--pubkey", str(other)), "signed by key")
    notjson = tmp_path / "x.json"
    notjson.write_text("{nope")
    assert_invalid(run_verify(str(notjson), "--pubkey", str(pub)), "not JSON")
    notpem = tmp_path / "x.pem"
    notpem.write_text("hello")
    assert_invalid(run_verify(str(man), "--pubkey", str(notpem)), "not a PEM public key")
    assert_invalid(run_verify(str(tmp_path / "missing.json"), "--pubkey", str(pub)), "missing.json", code=2)
    assert_invalid(run_verify(str(man), "--clip", str(tmp_path / "gone.mp4"), "--pubkey", str(pub)), "gone.mp4",
                   code=2)


def test_readme_recipe_with_jq_and_openssl_verifies_a_real_manifest(tmp_path):
    """The README's 'checking evidence without dockd' commands, run verbatim on a manifest dockd wrote."""
    import shutil as _sh
    import subprocess as _sp

    from dockd.evidence import keys as _keys
    from dockd.evidence import manifest as _mf

    if not (_sh.which("jq") and _sh.which("openssl")):
        pytest.skip("jq or openssl missing")
    key, _ = _keys.load_or_create(tmp_path / "data")
    clip = tmp_path / "1.clip"
    clip.write_bytes(b"\x00\x01 not really a video \xff" * 1000)
    body = _mf.build(sha256=hashlib.sha256(clip.read_bytes()).hexdigest(), size=clip.stat().st_size,
                     path="DCIM/100MEDIA/CLIP0001.MP4", mtime="2026-11-21T05:36:59.245614815Z",
                     camera={"serial": "BWC-0001", "vendor": "Axon"}, station_id="st-1",
                     offloaded_at="2026-11-21T05:37:00.449Z", verify="reread",
                     sidecars=[{"path": "DCIM/100MEDIA/CLIP0001.GPS", "size": 3, "sha256": "ab" * 32,
                                "mtime": "2026-11-21T05:36:59Z"}], dockd_version="0.1.0")
    (tmp_path / "1.manifest.json").write_bytes(_mf.dumps(_mf.sign(body, key)))
    (tmp_path / "station.pub.pem").write_text(_keys.public_pem(key.public))
    script = """set -e
jq -cjS 'del(.signature)' 1.manifest.json > body.jcs
jq -r .signature.value 1.manifest.json | base64 -d > sig.bin
openssl pkeyutl -verify -rawin -pubin -inkey station.pub.pem -in body.jcs -sigfile sig.bin
test "$(sha256sum 1.clip | cut -d' ' -f1)" = "$(jq -r .clip.sha256 1.manifest.json)"
"""
    r = _sp.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout, r.stdout + r.stderr
    # and a one-byte change to the manifest is caught by the same recipe
    m = json.loads((tmp_path / "1.manifest.json").read_text())
    m["camera"]["serial"] = "BWC-0002"
    (tmp_path / "1.manifest.json").write_text(json.dumps(m))
    r = _sp.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0
