"""BagIt 1.0 (RFC 8493) text formats for disclosure bags: writing and strict parsing. Pure: no I/O.

A bag is hostile input to ``dockd disclose verify``: every parser here is strict and bounded, and
refuses rather than repairs. Paths are confined to a plain subset of names (ASCII letters, digits,
``._-`` separated by ``/``, no ``.``/``..`` segment, no leading ``/``), which is also all that
``disclose create`` ever writes, so no percent-encoding is ever needed (RFC 8493 s. 2.1.3).
"""

from __future__ import annotations

import re

ALGS = ("sha256", "sha512")
HEX_LEN = {"sha256": 64, "sha512": 128}
BAGIT_TXT = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
MAX_PATH = 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class BagFormatError(ValueError):
    """A bag text file does not have the form this profile allows (message: the reason)."""


def safe_path(path: str) -> bool:
    """True if ``path`` is a relative bag path made only of plain segments (nothing to escape the bag)."""
    if not path or len(path) > MAX_PATH:
        return False
    return all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in path.split("/"))


def manifest_text(entries: dict[str, str]) -> bytes:
    """``{path: hexdigest}`` as a BagIt manifest (``digest  path`` lines, sorted by path; the form
    ``sha256sum -c`` reads)."""
    for p in entries:
        if not safe_path(p):
            raise BagFormatError(f"unsafe bag path {p!r}")
    return "".join(f"{entries[p]}  {p}\n" for p in sorted(entries)).encode("ascii")


def parse_manifest(data: bytes, alg: str, what: str) -> dict[str, str]:
    """A manifest's ``{path: hexdigest}``; BagFormatError on any line that is not ``<hex>  <safe path>``,
    a digest of the wrong length or case, or a path listed twice."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise BagFormatError(f"{what}: not ASCII") from None
    if text and not text.endswith("\n"):
        raise BagFormatError(f"{what}: last line not terminated")
    out: dict[str, str] = {}
    n = HEX_LEN[alg]
    for i, line in enumerate(text.splitlines(), 1):
        digest, sep, path = line.partition("  ")
        if not sep or len(digest) != n or not re.fullmatch(r"[0-9a-f]+", digest):
            raise BagFormatError(f"{what} line {i}: not '<{alg} hex>  <path>'")
        if not safe_path(path):
            raise BagFormatError(f"{what} line {i}: path not allowed in a dockd bag")
        if path in out:
            raise BagFormatError(f"{what} line {i}: {path} listed twice")
        out[path] = digest
    return out


def clean_value(value: str) -> str:
    """A bag-info value: one line of printable text (control and bidi characters refused)."""
    if _CONTROL.search(value) or not value.strip() or len(value) > 4000:
        raise BagFormatError("bag-info value must be one line of printable text (1 to 4000 characters)")
    return value


def bag_info_text(fields: list[tuple[str, str]]) -> bytes:
    """``Label: value`` lines in the given order (labels plain, values one printable line each)."""
    lines = []
    for label, value in fields:
        if not _LABEL.fullmatch(label):
            raise BagFormatError(f"bag-info label {label!r} not allowed")
        lines.append(f"{label}: {clean_value(value)}\n")
    return "".join(lines).encode("utf-8")


def parse_bag_info(data: bytes) -> list[tuple[str, str]]:
    """Strict ``bag-info.txt``: UTF-8, every line ``Label: value`` (no continuation lines: we never
    write them), printable values. Returns the pairs in order (a label may repeat, RFC 8493 s. 2.2.2)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BagFormatError("bag-info.txt: not UTF-8") from None
    if text.startswith("\ufeff"):
        raise BagFormatError("bag-info.txt: byte order mark")
    if text and not text.endswith("\n"):
        raise BagFormatError("bag-info.txt: last line not terminated")
    out = []
    for i, line in enumerate(text.split("\n")[:-1], 1):
        label, sep, value = line.partition(": ")
        if not sep or not _LABEL.fullmatch(label):
            raise BagFormatError(f"bag-info.txt line {i}: not 'Label: value'")
        try:
            out.append((label, clean_value(value)))
        except BagFormatError as e:
            raise BagFormatError(f"bag-info.txt line {i}: {e}") from None
    return out


def parse_bagit_txt(data: bytes) -> None:
    """The bag declaration must be exactly BagIt 1.0 in UTF-8 (what we write)."""
    if data != BAGIT_TXT:
        raise BagFormatError("bagit.txt is not 'BagIt-Version: 1.0' with UTF-8 tag files")
