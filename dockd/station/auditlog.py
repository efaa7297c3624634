"""Custody records leaving the station: signed chain heads and daily audit segments.

* Every ``sign_interval`` the daemon signs the audit chain's head (last seq
  and hash) with the station key: a statement
  ``{"station", "seq", "hash", "at", "signature"}`` (JCS, Ed25519, like
  manifests). Anyone with the public key can check that the chain they hold
  extends a head the station vouched for.
* Each finished UTC day's rows are exported as JSON lines (exactly the
  ``dockd audit --json`` form) to ``{prefix}/{station}/_audit/{YYYY-MM-DD}.jsonl``
  with ``{...}.head.json``: the day's first/last seq, the hash the segment
  chains from, its last hash, and the station's signature.

Checking a segment offline: recompute each row's hash with
:func:`dockd.core.audit.link` (SHA-256 over the previous hash and the JCS of the
row content) from ``prev_hash_of_first``, compare with ``last_hash``, verify
the head's signature with ``openssl pkeyutl -verify -rawin``.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime

import structlog

from dockd.core import audit as chain
from dockd.core import ijson
from dockd.core.errors import ManifestInvalid
from dockd.evidence import manifest as mf
from dockd.evidence.keys import StationKey
from dockd.queue.store import Queue, rfc3339
from dockd.storage.base import Backend

log = structlog.get_logger("dockd.audit")


def signed_head(queue: Queue, key: StationKey, station: str, now: float) -> dict | None:
    """Sign the current chain head unless it was signed already; return the statement."""
    seq, h = queue.last_audit()
    last = queue.last_audit_head()
    if seq == 0 or (last is not None and last["seq"] == seq):
        return None
    at = rfc3339(now)
    st = mf.sign({"type": "dockd.audit-head/1", "station": station, "seq": seq, "hash": h, "at": at}, key)
    queue.add_audit_head(seq, h, at, json.dumps(st, sort_keys=True))
    return st


def segment_body(rows: list[dict]) -> bytes:
    """A day's segment as exported: one ``dockd audit --json`` line per row."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in rows).encode()


def signed_segment(rows: list[dict], station: str, day: str, key: StationKey, *, part: bool = False
                   ) -> tuple[bytes, bytes]:
    """A segment's body and signed head bytes (``dockd.audit-segment/1``; ``part``: a part of a day not
    finished yet, :mod:`dockd.station.auditparts`). The same rows always give the same bytes."""
    body = segment_body(rows)
    head = {"type": "dockd.audit-segment/1", "station": station, "day": day,
            "first_seq": rows[0]["seq"], "last_seq": rows[-1]["seq"],
            "prev_hash_of_first": rows[0]["prev_hash"], "last_hash": rows[-1]["hash"],
            "sha256": hashlib.sha256(body).hexdigest(), "rows": len(rows)}
    if part:
        head["part"] = True
    return body, mf.dumps(mf.sign(head, key))


def export_days(queue: Queue, backend: Backend, key: StationKey, station: str, prefix: str,
                now: float | None = None) -> list[str]:
    """Upload every finished day's audit segment that has not been exported yet."""
    t = time.time() if now is None else now
    today = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")
    done = queue.audit_exported_days()
    # Days are exported in order, so only rows after the last exported one can belong to a day not yet
    # exported: the cost is the unexported days' rows (normally one day's), never the whole log.
    by_day: dict[str, list[dict]] = {}
    for r in queue.iter_audit(after_seq=queue.last_exported_seq()):
        if r["at"][:10] >= today:
            continue
        by_day.setdefault(r["at"][:10], []).append(r)
    exported = []
    for day in sorted(by_day):
        if day >= today or day in done:
            continue
        seg = by_day[day]
        body, hb = signed_segment(seg, station, day, key)
        base = "/".join(p for p in (prefix, station, "_audit", day) if p)
        backend.put_bytes(base + ".jsonl", body, hashlib.sha256(body).hexdigest())
        backend.put_bytes(base + ".head.json", hb, hashlib.sha256(hb).hexdigest())
        queue.mark_audit_exported(day, seg[0]["seq"], seg[-1]["seq"], base + ".jsonl", now=t)
        log.info("audit segment exported", day=day, rows=len(seg), key=base + ".jsonl")
        exported.append(day)
    return exported


_ROW_KEYS = frozenset({"seq", "at", "event", "camera", "clip", "detail", "prev_hash", "hash"})


def check_segment(lines: bytes, head: dict, pub) -> tuple[bool, str]:
    """Offline check of an exported segment against its signed head (both hostile input: never raises)."""
    try:
        mf.check_signature(head, pub)
    except ManifestInvalid:
        return False, "head signature does not verify"
    if not all(k in head for k in ("sha256", "prev_hash_of_first", "first_seq", "last_hash")):
        return False, "head lacks a member of an audit segment head"
    if hashlib.sha256(lines).hexdigest() != head["sha256"]:
        return False, "segment bytes do not match the head's sha256"
    try:
        rows = [ijson.loads(x) for x in lines.decode("utf-8").splitlines() if x.strip()]
    except (ijson.Invalid, UnicodeDecodeError) as e:
        return False, f"segment row is not strict JSON: {e}"
    if not rows or not all(isinstance(r, dict) and _ROW_KEYS <= r.keys() for r in rows):
        return False, "segment rows are not audit rows"
    bad = chain.first_bad(rows, start_prev=head["prev_hash_of_first"], start_seq=head["first_seq"])
    if bad:
        return False, f"chain broken at seq {bad[0]}: {bad[1]}"
    if rows[-1]["hash"] != head["last_hash"]:
        return False, "last hash differs from the head"
    return True, f"{len(rows)} rows intact"


def _keys_by_id(pub) -> dict:
    """``pub`` (one station public key, or a dict of them by key id) as a dict by key id."""
    from dockd.evidence import keys

    return pub if isinstance(pub, dict) else {keys.key_id_of(pub): pub}


def _signed(raw: str, what: str, pubs: dict) -> tuple[dict | None, str | None]:
    """The statement parsed strictly and its signature checked with one of ``pubs``: (st, None) or (None, why)."""
    from dockd.evidence import keys

    try:
        st = mf.parse(raw, what)
    except ManifestInvalid as e:
        return None, f"{what} is not strict JSON ({e})"
    if not isinstance(st, dict) or not isinstance(st.get("signature"), dict):
        return None, f"{what} is not a signed statement"
    sig = st["signature"]
    k = pubs.get(sig.get("key_id"))
    if k is None:
        return None, f"{what} names key {sig.get('key_id')!r}, not one of this station's keys"
    if not keys.verify(k, mf.canonical_body(st), sig.get("value", "")):
        return None, f"{what} does not verify with the station key"
    return st, None


def check_since_last_head(queue: Queue, pub) -> tuple[int, tuple[int, str] | None]:
    """The daemon's start-up check, bounded by the work since the newest signed head, not by history.

    The newest signed head must verify with a station key and match the chain row at its seq; the rows
    after it must chain from it. Rows the head covers were checked when it was signed; all of them are
    rechecked by ``dockd audit --verify`` (run it on a schedule), whose cost grows with the log. With no
    head yet, the chain is checked from its start (or from the retention checkpoint): a young log.
    Returns ``(rows checked, first bad (seq, reason) or None)``."""
    h = queue.last_audit_head()
    cp = queue.audit_checkpoint()
    if h is None or (cp is not None and h["seq"] <= cp["seq"]):
        return queue.verify_audit()
    st, why = _signed(h["statement"], "signed head", _keys_by_id(pub))
    if st is None:
        return 0, (h["seq"], why or "")
    if st.get("seq") != h["seq"] or st.get("hash") != h["hash"]:
        return 0, (h["seq"], "signed head statement differs from its row")
    at = queue.audit_hashes_at([h["seq"]]).get(h["seq"])
    if at is None:
        return 0, (h["seq"], "the chain ends before a head the station signed (rows deleted from the end)")
    if at != h["hash"]:
        return 0, (h["seq"], "chain hash at this seq differs from the signed head")
    return queue.verify_audit(after_head=(h["seq"], h["hash"]))


def check_heads(queue: Queue, pub, verifier=None) -> tuple[int, str] | None:
    """Every signed head must verify and match the chain at its seq; catches a truncated tail.

    ``pub`` is the station's public key, or a dict of its keys by key id (heads
    signed before a rotation verify with the retired key). With ``verifier``
    (a :class:`dockd.trust.log.TrustState`) each head must also be signed by a key
    the agency had enrolled for ``station`` at the head's own ``at``.
    Returns ``(seq, reason)`` for the first bad head, or None.
    """

    pubs = _keys_by_id(pub)
    cp_seq = -1
    for cp in queue.audit_checkpoints():
        st, why = _signed(cp["statement"], "audit checkpoint", pubs)
        if st is None:
            return cp["seq"], why or ""
        if st.get("seq") != cp["seq"] or st.get("hash") != cp["hash"]:
            return cp["seq"], "audit checkpoint statement differs from its row"
        cp_seq = cp["seq"]
    for h in queue.iter_audit_heads():
        st, why = _signed(h["statement"], "signed head", pubs)
        if st is None:
            return h["seq"], why or ""
        if verifier is not None:
            v = verifier.verify_signed(st, "station", "at")
            if not v.ok:
                return h["seq"], f"signed head: {v.reason}"
        if st.get("seq") != h["seq"] or st.get("hash") != h["hash"]:
            return h["seq"], "signed head statement differs from its row"
        at = h["chain_hash"]
        if at is None and h["seq"] <= cp_seq:  # compacted: the head vouches for rows proven from storage
            continue
        if at is None:
            return h["seq"], "the chain ends before a head the station signed (rows deleted from the end)"
        if at != h["hash"]:
            return h["seq"], "chain hash at this seq differs from the signed head"
    return None
