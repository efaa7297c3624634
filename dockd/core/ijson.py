"""The one strict JSON loader for signed (and other untrusted) JSON. Pure: no I/O.

Everything dockd reads back that carries or feeds a signature -- clip
manifests, signed audit heads, exported segment heads and rows, and later
trust statements -- goes through :func:`loads`. It accepts only I-JSON
(RFC 7493), so that what a verifier checks is exactly what any other
conforming parser would see:

* UTF-8 text, no byte order mark, no invalid sequences, no lone surrogates
  (also not as ``\\ud800`` escapes);
* no duplicate member names in any object (a forged first ``clip`` member
  before the genuine one must not be what one parser reads and another
  verifies);
* no ``NaN``/``Infinity`` and no number that overflows to infinity;
* integers within +-(2**53 - 1) (exactly representable everywhere);
* nesting at most ``max_depth`` deep, checked *before* parsing and without
  recursion (the stdlib parser recurses and would raise RecursionError on
  100,000 nested brackets);
* at most ``max_bytes`` of input.

Every violation raises :class:`Invalid` (a ``ValueError``) whose message is a
short reason fit for ``invalid: <reason>``; nothing else escapes.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

MAX_BYTES = 1 << 20  # 1 MiB: a manifest or head is a few KiB
MAX_DEPTH = 32
MAX_SAFE_INT = 2**53 - 1

# One linear pass: a string literal (its closing quote optional, so that an
# unterminated string consumes the rest instead of being rescanned from every
# later quote, which is quadratic) or a bracket. The parser checks strings
# properly later; here they only hide the brackets inside them.
_TOKEN = re.compile(r'"(?:[^"\\]+|\\.)*"?|[\[\]{}]', re.S)
# A lone surrogate can reach the parser only as an escape (the text is valid UTF-8 by then): \uD800-\uDFFF.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class Invalid(ValueError):
    """Not I-JSON; the message is the reason."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # C speed; a duplicate name makes the dict shorter than the list
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise Invalid(f"duplicate member name {json.dumps(k, ensure_ascii=True)[:80]}")
            seen.add(k)
    return out


def _constant(name: str) -> Any:
    raise Invalid(f"{name} is not a JSON number")


def _int(text: str) -> int:
    # Bound the digits first: int() of a 100,000-digit string is slow (and Python caps it).
    if len(text.lstrip("-")) > 16 or abs(int(text)) > MAX_SAFE_INT:
        raise Invalid(f"integer {text[:40]}{'...' if len(text) > 40 else ''} outside +-(2**53-1)")
    return int(text)


def _float(text: str) -> float:
    f = float(text)
    if not math.isfinite(f):
        raise Invalid(f"number {text[:40]} overflows a double")
    return f


# Built once (json.loads with hooks builds a decoder per call).
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant, parse_int=_int, parse_float=_float)


def depth(text: str) -> int:
    """Greatest bracket nesting of ``text`` (strings ignored), without recursion."""
    steps = (_DEPTH_STEP.get(m.group(), 0) for m in _TOKEN.finditer(text))
    return max(accumulate(steps, initial=0))


def _check_strings(value: Any) -> None:
    """Reject lone surrogates in any string or member name (iteratively: depth is bounded, but no recursion)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            texts = (v,)
        elif isinstance(v, dict):
            texts = tuple(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
            continue
        else:
            continue
        for s in texts:
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raise Invalid("string holds a lone surrogate (not valid Unicode)") from None


def loads(data: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data`` as I-JSON (RFC 7493) or raise :class:`Invalid` naming the reason."""
    if isinstance(data, str):
        if len(data) > max_bytes:  # characters <= bytes: a cheap first bound
            raise Invalid(f"larger than {max_bytes} bytes")
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise Invalid("not valid UTF-8 (lone surrogate)") from None
    else:
        raw = bytes(data)
    if len(raw) > max_bytes:
        raise Invalid(f"larger than {max_bytes} bytes")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise Invalid("starts with a byte order mark")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"not valid UTF-8 at byte {e.start}") from None
    # Fast paths that only skip a check which cannot fail: fewer opening brackets than max_depth (strings
    # included) cannot nest deeper; no surrogate escape in the text, no lone surrogate in the value.
    if text.count("[") + text.count("{") > max_depth:
        d = depth(text)
        if d > max_depth:
            raise Invalid(f"nested {d} deep (at most {max_depth})")
    try:
        value = _DECODER.decode(text)
    except Invalid:
        raise
    except RecursionError:  # cannot happen after the depth check; never let it escape
        raise Invalid(f"nested too deep (at most {max_depth})") from None
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise Invalid(f"not JSON ({e})") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value
