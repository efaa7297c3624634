"""The BagIt text formats of disclosure bags, written and parsed strictly (pure; a table)."""

from __future__ import annotations

import pytest

from dockd.agency.disclosure import bagfmt

H = "a" * 64


@pytest.mark.parametrize("path,ok", [
    ("data/clips/st1/CAM1/2025/06/15/x.mp4", True), ("bag-info.txt", True),
    ("", False), ("/etc/passwd", False), ("data/../x", False), ("data/./x", False), ("data//x", False),
    ("data/.hidden", False), ("data/a b", False), ("data/x\n", False), ("data\\x", False), ("a" * 2000, False),
])
def test_safe_path(path, ok):
    assert bagfmt.safe_path(path) is ok


def test_manifest_round_trip_sorted():
    text = bagfmt.manifest_text({"data/b": H, "data/a": "b" * 64})
    assert text == f"{'b' * 64}  data/a\n{H}  data/b\n".encode()
    assert bagfmt.parse_manifest(text, "sha256", "m") == {"data/a": "b" * 64, "data/b": H}


@pytest.mark.parametrize("text,why", [
    (f"{H} data/a\n", "not '<sha256 hex>  <path>'"),
    (f"{H.upper()}  data/a\n", "not '<sha256 hex>  <path>'"),
    (f"{H[:-1]}  data/a\n", "not '<sha256 hex>  <path>'"),
    (f"{H}  ../a\n", "path not allowed"),
    (f"{H}  data/a\n{H}  data/a\n", "listed twice"),
    (f"{H}  data/a", "not terminated"),
    ("é\n", "not ASCII"),
])
def test_manifest_refused(text, why):
    with pytest.raises(bagfmt.BagFormatError, match=why):
        bagfmt.parse_manifest(text.encode(), "sha256", "m")


@pytest.mark.parametrize("data,why", [
    (b"Label value\n", "not 'Label: value'"),
    (b"Bad Label: v\n", "not 'Label: value'"),
    (b"A: v\n  continued\n", "not 'Label: value'"),
    (b"A: \x1b[2J\n", "printable"),
    (b"A: v\xe2\x80\xaeevil\n", "printable"),
    (b"A: v", "not terminated"),
    (b"\xef\xbb\xbfA: v\n", "byte order mark"),
    (b"A: \xff\n", "not UTF-8"),
])
def test_bag_info_refused(data, why):
    with pytest.raises(bagfmt.BagFormatError, match=why):
        bagfmt.parse_bag_info(data)


def test_bag_info_round_trip():
    fields = [("Source-Organization", "Metro Police"), ("Recipient", "County Prosecutor's Office")]
    assert bagfmt.parse_bag_info(bagfmt.bag_info_text(fields)) == fields
    with pytest.raises(bagfmt.BagFormatError):
        bagfmt.bag_info_text([("Recipient", "two\nlines")])
