"""Reading one station's clip index from storage for :func:`dockd.evidence.clipindex.verify_chain`.

Bounded reads only (``read_small``): a head at most 64 KiB, a body at most the size its head declares
(and :data:`MAX_BODY`); anything bigger is handed on as missing, so the verifier leaves it out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from dockd.core import clipindex as ci
from dockd.evidence.clipindex import MAX_HEAD, StoredSegment
from dockd.storage.base import Backend, ErrorClass, StoreFailure

MAX_BODY = 256 << 20  # a day of a busy station is a few MiB


def head_seqs(backend: Backend, prefix: str, station: str) -> list[int]:
    """The seqs of the heads stored for ``station``, ascending (other names ignored)."""
    seqs = (ci.head_seq_of_key(k) for k in backend.list_keys(ci.heads_prefix(prefix, station)))
    return sorted(s for s in seqs if s is not None)


def _read(backend: Backend, key: str, limit: int) -> bytes | None:
    try:
        return backend.read_small(key, limit)
    except StoreFailure as e:
        if e.cls is ErrorClass.PERMANENT and e.code == "TooBig":
            return None
        raise


def _declared(head: bytes | None, member: str) -> tuple[str, int] | None:
    """(key, size) the head declares for a body, if it says so at all (it is checked afterwards)."""
    try:
        m = json.loads(head or b"")[member]
        key, size = m["key"], m["size"]
    except (ValueError, KeyError, TypeError):
        return None
    return (key, size) if isinstance(key, str) and type(size) is int and 0 <= size <= MAX_BODY else None


def read_station(backend: Backend, prefix: str, station: str, *, after_seq: int = 0) -> Iterator[StoredSegment]:
    """Every stored segment of ``station`` after ``after_seq``, in seq order, as found (lazily)."""
    for seq in head_seqs(backend, prefix, station):
        if seq <= after_seq:
            continue
        head = _read(backend, ci.head_key(prefix, station, seq), MAX_HEAD)
        bodies = []
        for member in ("clips", "docks"):
            d = _declared(head, member)
            bodies.append(None if d is None else _read(backend, d[0], d[1]))
        yield StoredSegment(seq, head, bodies[0], bodies[1])
