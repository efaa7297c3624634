"""dockd.jcs.dumps is byte-for-byte rfc8785.dumps, fast path or not (the audit chain depends on it)."""

from __future__ import annotations

import random

import pytest
import rfc8785

from dockd.core import jcs

EDGES = [
    {"b": 1, "a": [True, False, None], "": "x"},
    {"ctl": "".join(chr(i) for i in range(0x20)) + '"\\/\x7f\u2028\u2029', "é": "ü", "z": -(2**53 - 1)},
    {"\uffff": 1, "\U0001f600": 2, "\ue000": 3, "a": 4},  # UTF-16 order differs from code point order
    {"big": 2**53 - 1, "neg": -(2**53 - 1), "zero": 0},
    {"f": 1.0, "g": 1e21, "h": 0.1, "i": -0.0},  # floats: ES6 number form
    {"nested": {"k": [{"y": 1, "x": [1, "2", {"\u00e9": None}]}]}},
    [], {}, "plain", 5, True, None, ["\U0001f600", "\ud7ff"],
]


@pytest.mark.parametrize("obj", EDGES)
def test_same_bytes_as_rfc8785_on_edge_cases(obj):
    assert jcs.dumps(obj) == rfc8785.dumps(obj)


def _random(rng: random.Random, depth: int = 0):
    alphabet = ["a", "B", "0", " ", "\n", "\x01", '"', "\\", "é", "\u2028", "\ue000", "\uffff", "\U0001f600", "ß"]
    word = lambda: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))  # noqa: E731
    kind = rng.randint(0, 8 if depth < 3 else 5)
    if kind == 0:
        return rng.randint(-(2**53 - 1), 2**53 - 1)
    if kind == 1:
        return rng.random() * 10 ** rng.randint(-8, 25)
    if kind == 2:
        return word()
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.randint(-1000, 1000)
    if kind in (6, 7):
        return {word(): _random(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [_random(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def test_same_bytes_as_rfc8785_on_random_values():
    rng = random.Random(12)
    for _ in range(3000):
        obj = {"detail": _random(rng), "seq": rng.randint(1, 10**9)}
        assert jcs.dumps(obj) == rfc8785.dumps(obj), obj


@pytest.mark.parametrize("bad", [2**53, -(2**53), float("nan"), "\ud800", {"\ud800": 1}])
def test_refuses_what_rfc8785_refuses(bad):
    with pytest.raises(Exception) as theirs:
        rfc8785.dumps(bad)
    with pytest.raises(type(theirs.value)):
        jcs.dumps(bad)
