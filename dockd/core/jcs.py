"""RFC 8785 (JCS) canonical JSON, fast for the values dockd writes.

For a value made only of dicts with string keys below U+D800, lists, strings, booleans, null and
integers within +-(2**53 - 1), the RFC 8785 form is exactly what the C-accelerated ``json.dumps``
produces with sorted keys, no whitespace and no ASCII escaping: keys of those code points sort the
same by UTF-16 code units (RFC 8785) as by code points (Python); strings escape the same (``\\"``,
``\\\\``, ``\\b\\f\\n\\r\\t``, other controls as lowercase ``\\u00xx``); integers print the same. Anything
else (floats, larger integers, other keys, lone surrogates) goes to the ``rfc8785`` package, which
also raises for what has no canonical form. Audit verification hashes every row of the log, so
this is what makes ``dockd audit --verify`` run at the speed of the disk rather than of a
pure-Python serialiser.
"""

from __future__ import annotations

import json
from typing import Any, cast

import rfc8785

_SAFE = 2**53 - 1
_encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
try:  # the C encoder built once (json.dumps builds one per call, which costs more than the encoding)
    from json.encoder import (  # type: ignore[attr-defined]  # CPython's C encoder: not in typeshed
        c_make_encoder,
        encode_basestring,
    )

    def _refuse(o: object) -> None:
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    _iter = c_make_encoder(None, _refuse, encode_basestring, None, ":", ",", True, False, False)

    def _dumps(o: object) -> str:
        return "".join(_iter(o, 0))
except ImportError:  # pragma: no cover - CPython always has it
    _dumps = _encoder.encode


def _plain(o: Any) -> bool:  # Any: the exact type() checks below are the narrowing
    """Only dicts with string keys, lists, strings, booleans, null and safe integers (keys not checked)."""
    t = type(o)
    if t is dict:
        for k, v in o.items():
            tv = type(v)
            if type(k) is not str:
                return False
            if tv is str or v is None or tv is bool:
                continue
            if tv is int:
                if not -_SAFE <= v <= _SAFE:
                    return False
            elif not _plain(v):
                return False
        return True
    if t is str or t is bool or o is None:
        return True
    if t is int:
        return bool(-_SAFE <= o <= _SAFE)
    if t is list:
        return all(_plain(v) for v in o)
    return False


def _bmp_keys(o: Any) -> bool:
    """Every dict key below U+D800 (where code point order is UTF-16 order)."""
    if type(o) is dict:
        return all((k.isascii() or max(k, default="") < "\ud800") and _bmp_keys(v) for k, v in o.items())
    if type(o) is list:
        return all(_bmp_keys(v) for v in o)
    return True


def dumps(obj: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``obj`` (same result as ``rfc8785.dumps``)."""
    if _plain(obj):
        text = _dumps(obj)
        if text.isascii():  # ASCII keys sort alike in both orders; nothing to encode but ASCII
            return text.encode("ascii")
        if _bmp_keys(obj):
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: let rfc8785 refuse it in its own words
                pass
    return rfc8785.dumps(cast(Any, obj))  # it refuses (TypeError) what it cannot encode
