"""Audit chain anchors held by central storage: truncation of the local chain becomes detectable.

The audit log and its signed heads live in the station's own database, so
someone who can write that database can cut the chain's tail (rows and heads)
and the local check still says "intact". Two kinds of signed statements leave
the station and carry the chain head at the time they were made:

* every clip manifest has ``audit: {"seq", "hash"}`` (the head when the clip
  was staged), uploaded beside the clip at ``{key}.manifest.json``;
* every exported day segment's head (``_audit/{day}.head.json``) has
  ``last_seq``/``last_hash`` and ``prev_hash_of_first`` (the hash at
  ``first_seq - 1``).

:func:`collect` reads those from storage (keeping only statements whose
signature verifies with the station key) and :func:`compare` (pure) checks
the local chain against them: an anchor beyond the local chain's end is
``TRUNCATED``, an anchor whose hash differs from the local row's is
``BROKEN``. Not detectable: a cut after the newest anchor that reached
storage (rows written since the last clip was staged or day exported).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dockd.core.errors import ManifestInvalid
from dockd.evidence import manifest as mf
from dockd.storage.base import StoreFailure, station_prefix

MAX_STATEMENT = mf.MAX_BYTES


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    where: str  # the object key that vouches for it


@dataclass
class Collected:
    anchors: list[Anchor]
    statements: int = 0  # signed statements read (manifests and segment heads)
    ignored: int = 0  # objects that are not statements signed by this station's key


def _is_hash(h: object) -> bool:
    return isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)


def from_statement(st: object, key: str) -> list[Anchor]:
    """The anchors a verified manifest or segment head carries (pure)."""
    if not isinstance(st, dict):
        return []
    if st.get("type") == "dockd.audit-segment/1":
        out = []
        first, last = st.get("first_seq"), st.get("last_seq")
        if type(last) is int and last >= 1 and _is_hash(st.get("last_hash")):
            out.append(Anchor(last, st["last_hash"], key))
        if type(first) is int and first > 1 and _is_hash(st.get("prev_hash_of_first")):
            out.append(Anchor(first - 1, st["prev_hash_of_first"], key))
        return out
    a = mf.audit_anchor(st)
    return [Anchor(a[0], a[1], key)] if a and _is_hash(a[1]) else []


def collect(backend, prefix: str, station: str, pub) -> Collected:
    """Every anchor in storage under this station's prefix whose statement verifies with ``pub``."""
    base = station_prefix(prefix, station)
    out = Collected(anchors=[])
    for key in backend.list_keys(base):
        if not (key.endswith(".manifest.json") or (key.startswith(base + "_audit/") and key.endswith(".head.json"))):
            continue
        try:
            raw = backend.read_small(key, MAX_STATEMENT)  # larger than that: StoreFailure, ignored below
            if raw is None:
                raise ManifestInvalid(f"{key}: gone since it was listed")
            st = mf.parse(raw, key)
            mf.check_signature(st, pub)
        except (ManifestInvalid, StoreFailure):
            out.ignored += 1
            continue
        out.statements += 1
        out.anchors.extend(from_statement(st, key))
    return out


def compare(last_seq: int, local: Mapping[int, str], anchors: Iterable[Anchor]) -> tuple[str, int, str] | None:
    """First problem by seq: ``("TRUNCATED" | "BROKEN", seq, reason)``, or None if every anchor agrees.

    ``last_seq`` is the local chain's last seq; ``local`` maps the anchors'
    seqs to the local rows' hashes (missing: no such row). A truncation names
    the newest anchor beyond the local end: how far storage proves the chain went."""
    ordered = sorted(anchors, key=lambda a: a.seq)
    for a in ordered:
        if a.seq > last_seq:
            newest = ordered[-1]
            return ("TRUNCATED", last_seq + 1,
                    f"the local chain ends at seq {last_seq}, but storage holds the station's signed anchor "
                    f"for seq {newest.seq} in {newest.where} (rows deleted from the end)")
        h = local.get(a.seq)
        if h is None:
            return "BROKEN", a.seq, f"no local row at seq {a.seq}, anchored in {a.where}"
        if h != a.hash:
            return "BROKEN", a.seq, f"local hash differs from the station's signed anchor in {a.where}"
    return None
