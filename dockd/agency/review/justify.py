"""The reviewers' justification log: why video is missing, signed, hash-chained, append-only, in storage.

    {prefix}/_review/justifications/{seq:08d}.json     seq from 1, no gaps

Each entry ``{"type": "dockd.review-justification/1", "seq", "prev", "incident", "officer", "reason",
"note", "supersedes", "at", "signature"}`` is signed (manifest scheme) by a key the trust log enrols as
``reviewer`` at ``at``; ``prev`` is the SHA-256 of the JCS form of the whole previous entry (null for seq 1).
Entries are written with a conditional create and never edited: a correction is a new entry that
``supersedes`` the earlier one for the same (incident, officer). Reading checks every entry; the first bad one
(and everything after it) is reported and left out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import rfc8785

from dockd.agency.review import match
from dockd.core import ijson
from dockd.core.errors import DockdError, StorageError, UsageError
from dockd.core.textsafe import printable
from dockd.evidence import manifest as mf
from dockd.evidence.keys import StationKey
from dockd.storage.base import Backend, ErrorClass, StoreFailure
from dockd.trust.log import TrustState

TYPE = "dockd.review-justification/1"
MAX_ENTRY = 64 << 10
MAX_NOTE = 2000
MAX_ENTRIES = 10_000_000


class JustificationRefused(DockdError):
    """justification refused: {}"""


def entry_key(prefix: str, seq: int) -> str:
    return "/".join(p for p in (prefix, "_review", "justifications", f"{seq:08d}.json") if p)


def digest(entry: dict[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(entry)).hexdigest()


@dataclass
class Log:
    entries: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def for_match(self, state: TrustState, upto: int | None = None) -> list[match.Justification]:
        out = []
        for e in self.entries:
            if upto is not None and e["seq"] > upto:
                break
            kid = e["signature"]["key_id"]
            ens = state.enrolments.get(kid) or []
            who = f"{ens[0].subject.get('name')} ({kid})" if ens else kid
            out.append(match.Justification(e["seq"], e["incident"], e["officer"], e["reason"], e["note"], who,
                                           e["at"], e.get("supersedes")))
        return out


def _check(e: Any, seq: int, prev: str | None, state: TrustState) -> None:
    if not isinstance(e, dict) or e.get("type") != TYPE or e.get("seq") != seq:
        raise ValueError(f"not justification entry {seq}")
    for k in ("incident", "officer", "reason", "note", "at"):
        if not isinstance(e.get(k), str):
            raise ValueError(f"member {k} missing")
    sup = e.get("supersedes")
    if sup is not None and (type(sup) is not int or not 0 < sup < seq):
        raise ValueError("supersedes is not an earlier entry")
    if e.get("prev") != prev:
        raise ValueError("chain broken: prev is not the digest of the previous entry")
    v = state.verify_signed(e, "reviewer", "at")
    if not v.ok:
        raise ValueError(f"signature: {v.reason}")


def read_log(backend: Backend, prefix: str, state: TrustState) -> Log:
    """Every entry in storage, checked, in seq order (see the module docstring)."""
    log = Log()
    prev: str | None = None
    seq = 1
    try:
        while seq <= MAX_ENTRIES:
            raw = backend.read_small(entry_key(prefix, seq), MAX_ENTRY)
            if raw is None:
                if backend.read_small(entry_key(prefix, seq + 1), MAX_ENTRY) is not None:
                    log.problems.append(f"justification {seq}: missing from storage (later entries exist); "
                                        "it and later entries left out")
                break
            try:
                e = ijson.loads(raw, max_bytes=MAX_ENTRY)
                _check(e, seq, prev, state)
            except (ijson.Invalid, ValueError) as err:
                log.problems.append(f"justification {seq}: {printable(err)}; it and later entries left out")
                break
            log.entries.append(e)
            prev = digest(e)
            seq += 1
    except StoreFailure as err:
        raise StorageError(f"reading the justification log: {err}") from None
    return log


def append(backend: Backend, prefix: str, state: TrustState, key: StationKey, *, incident: str, officer: str,
           reason: str, note: str, at: str, reason_codes: tuple[str, ...]) -> dict[str, Any]:
    """Sign and append one entry (superseding the standing one for the same incident and officer, if any).
    Refused (exit 1) if the key is not enrolled as reviewer at ``at``, or if the log in storage is damaged."""
    if reason not in reason_codes:
        raise UsageError(f"--reason {printable(reason)}: not a reason code of [review] reason_codes "
                         f"({', '.join(reason_codes)})")
    for name, text, limit in (("INCIDENT", incident, 200), ("--officer", officer, 200), ("--note", note, MAX_NOTE)):
        if not text.strip() or len(text) > limit or not text.isprintable():
            raise UsageError(f"{name}: must be printable text of 1 to {limit} characters")
    for _attempt in range(5):
        log = read_log(backend, prefix, state)
        if log.problems:
            raise JustificationRefused(f"the log in storage is damaged ({log.problems[0]}); nothing appended")
        seq = len(log.entries) + 1
        standing = [e["seq"] for e in log.entries if e["incident"] == incident and e["officer"] == officer]
        body = {"type": TYPE, "seq": seq, "prev": digest(log.entries[-1]) if log.entries else None,
                "incident": incident, "officer": officer, "reason": reason, "note": note,
                "supersedes": standing[-1] if standing else None, "at": at}
        entry = mf.sign(body, key)
        v = state.verify_signed(entry, "reviewer", "at")
        if not v.ok:
            raise JustificationRefused(v.reason)
        data = (json.dumps(entry, sort_keys=True, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
        try:
            backend.put_bytes(entry_key(prefix, seq), data, hashlib.sha256(data).hexdigest())
            return entry
        except StoreFailure as err:
            if err.cls is not ErrorClass.CONFLICT:
                raise StorageError(f"writing {entry_key(prefix, seq)}: {err}") from None
            # another reviewer appended seq first: read again and chain after theirs
    raise JustificationRefused("the log kept changing under us (5 attempts); try again")
