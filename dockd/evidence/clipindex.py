"""Verifying a station's clip index (docs/clip-index.md): the chain of signed heads and their bodies.

Pure with respect to storage: the caller reads the objects (``dockd.storage.indexstore.read_station``
does it from a backend) and hands the bytes here, so the agency side, the station's ``dockd index
verify`` and a test all run the same check. Usage::

    from dockd.evidence.clipindex import verify_chain, StoredSegment

    check = verify_chain("st-01", stored_segments, trust_state)   # or a public key, or {key_id: key}
    for seg in check:                 # VerifiedSegment, in seq order
        for line in seg.clip_lines(): ...
    if check.broken: print(check.broken)          # the first break of the chain (nothing after it)
    for p in check.problems: ...                  # every segment left out, with its reason

Line helpers :func:`parse_clip_line` / :func:`parse_dock_line` (strict I-JSON) come from
:mod:`dockd.core.clipindex`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dockd.core import clipindex as ci
from dockd.core import ijson
from dockd.core.clipindex import parse_clip_line as parse_clip_line
from dockd.core.clipindex import parse_dock_line as parse_dock_line
from dockd.evidence import keys
from dockd.evidence import manifest as mf

MAX_HEAD = 64 << 10  # a head is under 2 KiB


class Verdict(Protocol):
    ok: bool
    reason: str


class TrustLike(Protocol):
    """What :class:`dockd.trust.log.TrustState` offers (the evidence layer does not import the trust layer)."""

    enrolments: dict[str, list[Any]]

    def verify_signed(self, obj: Any, role: str, at_member: str) -> Any: ...


@dataclass(frozen=True)
class StoredSegment:
    """What storage holds for one segment: ``seq`` as its head's key names it, and the bytes found
    (None: no such object)."""

    seq: int
    head: bytes | None
    clips: bytes | None
    docks: bytes | None


@dataclass(frozen=True)
class VerifiedSegment:
    station: str
    seq: int
    date: str
    head: dict[str, Any]
    head_hash: str  # sha256 of the JCS of the head: the next head's prev
    clips: bytes
    docks: bytes
    # The lines as the check parsed them (strictly, every one): reading a segment parses it once.
    parsed_clips: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    parsed_docks: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    def clip_lines(self) -> list[dict[str, Any]]:
        """The clip lines, strictly parsed (callers may not mutate them: they are shared)."""
        if self.parsed_clips is not None:
            return self.parsed_clips
        return [parse_clip_line(x) for x in lines(self.clips)]

    def dock_lines(self) -> list[dict[str, Any]]:
        if self.parsed_docks is not None:
            return self.parsed_docks
        return [parse_dock_line(x) for x in lines(self.docks)]


def lines(data: bytes) -> list[bytes]:
    """A body's LF-terminated lines (only LF separates them: a CR is part of a line, and refused by JSON)."""
    return data[:-1].split(b"\n") if data else []


@dataclass(frozen=True)
class Problem:
    """A segment left out: ``chain`` True if the chain is broken there (nothing after it is trusted)."""

    station: str
    seq: int
    reason: str
    chain: bool

    def __str__(self) -> str:
        what = "chain broken" if self.chain else "segment left out"
        return f"station {self.station} segment {self.seq}: {what}: {self.reason}"


@dataclass
class ChainCheck:
    """Iterate for the verified segments; afterwards ``problems``, ``broken`` and ``last`` say the rest."""

    _it: Iterator[VerifiedSegment]
    problems: list[Problem] = field(default_factory=list)
    last: tuple[int, str] | None = None  # (seq, head hash) of the last head verified: resume from here

    def __iter__(self) -> Iterator[VerifiedSegment]:
        return self._it

    def __next__(self) -> VerifiedSegment:
        return next(self._it)

    @property
    def broken(self) -> Problem | None:
        return next((p for p in self.problems if p.chain), None)

    @property
    def ok(self) -> bool:
        return not self.problems


def head_hash(head: dict[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(head)).hexdigest()


def _signed_by(head: dict[str, Any], station: str,
               resolver: TrustLike | Ed25519PublicKey | dict[str, Ed25519PublicKey]) -> str | None:
    """None if the head's signature verifies with the resolver's key for this station; else why not."""
    sig = head.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("key_id"), str) \
            or not isinstance(sig.get("value"), str):
        return "missing or malformed signature member"
    if not isinstance(resolver, dict | Ed25519PublicKey):  # a TrustState
        v = resolver.verify_signed(head, "station", "at")
        if not v.ok:
            return v.reason
        # enrolled as a station, yes; but as this one? (a station's key must not vouch for another's index)
        names = {e.subject.get("name") for e in resolver.enrolments.get(sig["key_id"], [])
                 if "station" in e.roles}
        if station not in names:
            return f"key {sig['key_id']} is enrolled for another station ({', '.join(sorted(map(str, names)))})"
        return None
    pubs = resolver if isinstance(resolver, dict) else {keys.key_id_of(resolver): resolver}
    pub = pubs.get(sig["key_id"])
    if pub is None:
        return f"signed by key {sig['key_id']}, not one of this station's keys"
    if not keys.verify(pub, mf.canonical_body(head), sig["value"]):
        return "signature does not verify (head altered or forged)"
    return None


_HEAD_TYPES: dict[str, type] = {"station": str, "seq": int, "date": str, "audit_from": int, "audit_to": int,
                                "clips": dict, "docks": dict, "at": str}


def _form(head: Any) -> str | None:
    if not isinstance(head, dict) or head.get("type") != ci.HEAD_TYPE:
        return f"not a {ci.HEAD_TYPE} head"
    for k, t in _HEAD_TYPES.items():
        if isinstance(head.get(k), bool) or not isinstance(head.get(k), t):
            return f"head member {k} missing or not a {t.__name__}"
    for b in ("clips", "docks"):
        m = head[b]
        if not (isinstance(m.get("key"), str) and isinstance(m.get("sha256"), str)
                and type(m.get("size")) is int and type(m.get("lines")) is int):
            return f"head member {b} malformed"
    if head.get("prev") is not None and not isinstance(head.get("prev"), str):
        return "head member prev is neither null nor a hash"
    return None


def _body(what: str, data: bytes | None, m: dict[str, Any], key: str, prefix: str | None, parse: Any,
          out: list[dict[str, Any]]) -> str | None:
    """None if the body is the head's and every line parses (the parsed lines are appended to ``out``);
    else why not."""
    # The layout's key; under ``prefix`` when the caller knows it, else under any prefix (a copy).
    if prefix is not None:
        ok = m["key"] == "/".join(p for p in (prefix.strip("/"), key) if p)
    else:
        ok = m["key"] == key or m["key"].endswith("/" + key)
    if not ok:
        return f"{what} key {m['key']!r} is not the layout's ({key!r})"
    if data is None:
        return f"{what} body missing or bigger than the head says ({m['key']})"
    if len(data) != m["size"] or hashlib.sha256(data).hexdigest() != m["sha256"]:
        return f"{what} body does not match the head (sha256/size: altered or replaced)"
    if data.count(b"\n") != m["lines"] or (data and not data.endswith(b"\n")):
        return f"{what} body has not {m['lines']} LF-terminated lines"
    for i, line in enumerate(lines(data), 1):
        try:
            out.append(parse(line))
        except (ijson.Invalid, UnicodeDecodeError) as e:
            return f"{what} line {i}: {e}"
    return None


def verify_chain(station: str, stored: Iterable[StoredSegment],
                 resolver: TrustLike | Ed25519PublicKey | dict[str, Ed25519PublicKey], *, prefix: str | None = None,
                 after: tuple[int, str] | None = None) -> ChainCheck:
    """Check one station's segments, given in seq order, and yield those that verify.

    The contract (docs/clip-index.md): each head is strict I-JSON of type ``dockd.index-head/1`` for
    ``station``, stored under its own seq; seqs run 1, 2, ... with no gap (or on from ``after`` =
    ``(seq, head_hash)`` of a head verified earlier); seq 1 has ``prev`` null, every other the SHA-256
    of the JCS of the previous head; ``audit_from`` equals the previous ``audit_to``; the signature
    verifies with ``resolver``: a :class:`dockd.trust.log.TrustState` (the key enrolled for role
    ``station``, for this station's name, at the head's ``at``), one public key, or keys by key id.
    A failure there breaks the chain: it is recorded (``check.broken``) and nothing after it is
    yielded. Then both bodies must be at the layout's keys (under ``prefix``) with the head's sha256,
    size and line count (the keys end in the layout's; with ``prefix``, exactly under it), every line a
    strict clip/dock line; a failure there leaves only that segment
    out (``check.problems``, ``chain`` False): the chain of heads goes on.
    Never raises on hostile input."""
    check = ChainCheck(iter(()))
    check._it = _walk(station, stored, resolver, prefix, after, check)
    return check


def _walk(station: str, stored: Iterable[StoredSegment], resolver: Any, prefix: str | None,
          after: tuple[int, str] | None, check: ChainCheck) -> Iterator[VerifiedSegment]:
    want, prev_hash, prev_to = (after[0] + 1, after[1], None) if after else (1, None, None)

    def broken(seq: int, why: str) -> None:
        check.problems.append(Problem(station, seq, why, True))

    for s in stored:
        if s.head is None:
            return broken(s.seq, "head missing")
        try:
            head = ijson.loads(s.head, max_bytes=MAX_HEAD)
        except ijson.Invalid as e:
            return broken(s.seq, f"head is not strict JSON ({e})")
        why = _form(head)
        if why is None and head["station"] != station:
            why = f"head is of station {head['station']!r}"
        if why is None and head["seq"] != s.seq:
            why = f"head of seq {head['seq']} stored as seq {s.seq}"
        if why is not None:
            return broken(s.seq, why)
        if s.seq != want:
            return broken(s.seq, f"gap: segment {want} missing" if s.seq > want
                          else f"out of order: segment {s.seq} after {want - 1}")
        if head.get("prev") != prev_hash:
            return broken(s.seq, "prev does not match the previous head (chain reordered or a head replaced)"
                          if prev_hash else "prev is not null but this is the first segment")
        if prev_to is not None and head["audit_from"] != prev_to:
            return broken(s.seq, f"audit range starts at {head['audit_from']}, previous ended at {prev_to}")
        why = _signed_by(head, station, resolver)
        if why is not None:
            return broken(s.seq, f"head signature: {why}")
        h = head_hash(head)
        want, prev_hash, prev_to = want + 1, h, head["audit_to"]
        check.last = (s.seq, h)
        date, seq = head["date"], s.seq
        pc: list[dict[str, Any]] = []
        pd: list[dict[str, Any]] = []
        why = (_body("clips", s.clips, head["clips"], ci.clips_key("", station, date, seq), prefix, parse_clip_line,
                     pc)
               or _body("docks", s.docks, head["docks"], ci.docks_key("", station, date, seq), prefix,
                        parse_dock_line, pd))
        if why is not None:
            check.problems.append(Problem(station, seq, why, False))
            continue
        yield VerifiedSegment(station, seq, date, head, h, s.clips or b"", s.docks or b"", pc, pd)
