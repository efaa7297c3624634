"""The per-case disclosure ledger in central storage, the recipient's receipt, and its acknowledgement.

* Entries live at ``{prefix}/_disclosure/{case}/ledger/{seq:08d}.json``, written with conditional PUTs
  (never overwritten: two disclosures racing for one seq make the second fail, never fork the ledger).
* Each entry is signed by a key enrolled for ``discloser`` (the manifest scheme: JCS minus ``signature``,
  Ed25519) and chained: ``prev`` is the SHA-256 of the JCS form of the whole previous entry (``null`` for
  seq 0). Reordering, editing or removing an entry in the middle breaks a ``seq``, a ``prev`` or a
  signature; removing entries from the end is found by a probe past the end (a later entry after a gap)
  and, for the last entries, only against a bag or receipt that names them (``previous`` in transfer.json).
* ``kind: transfer`` records one bag (transfer.json's and tagmanifest-sha256.txt's digests, recipient,
  authority); ``kind: ack`` embeds the recipient's signed receipt for one of them.
* A receipt is ``{"type": "dockd.disclosure-receipt/1", "case", "transfer_sha256", "tagmanifest_sha256",
  "received_at", "signature"}`` signed by a key enrolled for ``recipient``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785

from dockd.agency.disclosure import DisclosureFailed
from dockd.core import ijson
from dockd.core.errors import ManifestInvalid
from dockd.evidence import keys
from dockd.evidence import manifest as mf
from dockd.evidence.localfile import read_regular
from dockd.storage.base import Backend, ErrorClass, StoreFailure
from dockd.trust.log import TrustState

LEDGER_TYPE = "dockd.disclosure-ledger/1"
RECEIPT_TYPE = "dockd.disclosure-receipt/1"
MAX_ENTRIES = 100_000
MAX_ENTRY = 1 << 20


def entry_key(prefix: str, case: str, seq: int) -> str:
    return "/".join(p for p in (prefix.strip("/"), "_disclosure", case, "ledger", f"{seq:08d}.json") if p)


def entry_digest(entry: dict[str, Any]) -> str:
    return hashlib.sha256(rfc8785.dumps(entry)).hexdigest()


@dataclass
class Ledger:
    case: str
    entries: list[dict[str, Any]]
    # seq -> why its signer was not a valid discloser when it signed (revoked or expired later, backdated):
    # the entry stays in the chain (its signature verifies), flagged wherever it is shown.
    flags: dict[int, str] = field(default_factory=dict)

    def last_transfer(self) -> str | None:
        ts = [e["transfer_sha256"] for e in self.entries if e["kind"] == "transfer"]
        return ts[-1] if ts else None

    def rows(self) -> list[dict[str, Any]]:
        """One row per transfer, with whether (and when, by whom) it was acknowledged."""
        acks = {e["transfer_sha256"]: e for e in self.entries if e["kind"] == "ack"}
        out = []
        for e in self.entries:
            if e["kind"] != "transfer":
                continue
            a = acks.get(e["transfer_sha256"])
            out.append({"seq": e["seq"], "at": e["at"], "signer_invalid": self.flags.get(e["seq"]),
                        "recipient": e["recipient"], "authority": e["authority"],
                        "sender": e["sender"], "clips": e["clips"], "transfer_sha256": e["transfer_sha256"],
                        "tagmanifest_sha256": e["tagmanifest_sha256"], "parent": e.get("parent"), "bag": e["bag"],
                        "acknowledged": None if a is None else {"at": a["receipt"]["received_at"],
                                                                 "by": a["receipt"]["signature"]["key_id"]}})
        return out


def check_chain(case: str, entries: list[dict[str, Any]], state: TrustState) -> dict[int, str]:
    """Raise DisclosureFailed naming the first entry that is out of order, unchained, altered, or signed by a
    key the trust log does not enrol. Returns the entries whose signer was not a valid discloser at their
    ``at`` (seq -> reason): a key revoked afterwards with a backdated ``from`` must not block the case."""
    prev, flags = None, {}
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or e.get("type") != LEDGER_TYPE or e.get("case") != case:
            raise DisclosureFailed(f"ledger of case {case}: entry {i} is not an entry of this ledger")
        if e.get("seq") != i:
            raise DisclosureFailed(f"ledger of case {case}: entry {i} has seq {e.get('seq')!r} (reordered)")
        if e.get("prev") != prev:
            raise DisclosureFailed(f"ledger of case {case}: entry {i} does not chain to entry {i - 1} "
                                   "(removed, inserted, reordered or altered)")
        sig = e.get("signature")
        kid = sig.get("key_id") if isinstance(sig, dict) else None
        pub = state.public_key(kid) if isinstance(kid, str) else None
        try:
            if pub is None:
                raise ManifestInvalid(f"signed by key {kid!r}, which the trust log does not enrol")
            mf.check_signature(e, pub)
        except ManifestInvalid as err:
            raise DisclosureFailed(f"ledger of case {case}: entry {i}: {err.message()} (altered or forged)") from None
        v = state.check(kid, "discloser", e.get("at"))  # type: ignore[arg-type]  # a str: pub was found by it
        if not v.ok:
            flags[i] = v.reason
        if e.get("kind") not in ("transfer", "ack"):
            raise DisclosureFailed(f"ledger of case {case}: entry {i} has an unknown kind")
        prev = entry_digest(e)
    return flags


def read(backend: Backend, prefix: str, case: str, state: TrustState) -> Ledger:
    """The case's ledger, checked link by link (an empty one if the case has none yet)."""
    raws: list[bytes] = []
    try:
        while len(raws) < MAX_ENTRIES:
            data = backend.read_small(entry_key(prefix, case, len(raws)), MAX_ENTRY)
            if data is None:
                break
            raws.append(data)
        if backend.read_small(entry_key(prefix, case, len(raws) + 1), MAX_ENTRY) is not None:
            raise DisclosureFailed(f"ledger of case {case}: entry {len(raws)} is missing (removed?)")
    except StoreFailure as e:
        raise DisclosureFailed(f"reading the ledger of case {case}: {e}") from None
    try:
        entries = [ijson.loads(r, max_bytes=MAX_ENTRY) for r in raws]
    except ijson.Invalid as e:
        raise DisclosureFailed(f"ledger of case {case}: an entry is not strict JSON ({e})") from None
    return Ledger(case, entries, check_chain(case, entries, state))


def append(backend: Backend, prefix: str, ledger: Ledger, body: dict[str, Any], key: keys.StationKey) -> dict:
    """Sign and store the next entry (conditional write: a concurrent append makes this one fail)."""
    seq = len(ledger.entries)
    e = mf.sign({"type": LEDGER_TYPE, "case": ledger.case, "seq": seq,
                 "prev": entry_digest(ledger.entries[-1]) if ledger.entries else None, **body}, key)
    data = mf.dumps(e)
    try:
        backend.put_bytes(entry_key(prefix, ledger.case, seq), data, hashlib.sha256(data).hexdigest())
    except StoreFailure as err:
        if err.cls is ErrorClass.CONFLICT:
            raise DisclosureFailed(f"ledger of case {ledger.case}: entry {seq} was written by someone else "
                                   "meanwhile; nothing recorded, run again") from None
        raise DisclosureFailed(f"recording in the ledger of case {ledger.case}: {err}") from None
    ledger.entries.append(e)
    return e


def transfer_entry(transfer: dict[str, Any], tbytes: bytes, tagmanifest: bytes, bag_name: str) -> dict[str, Any]:
    return {"kind": "transfer", "at": transfer["created_at"], "transfer_sha256": hashlib.sha256(tbytes).hexdigest(),
            "tagmanifest_sha256": hashlib.sha256(tagmanifest).hexdigest(), "recipient": transfer["recipient"],
            "authority": transfer["authority"], "sender": transfer["sender"], "clips": len(transfer["clips"]),
            "bag": bag_name, "parent": transfer.get("parent")}


def receipt_for(bag: Path, key: keys.StationKey, received_at: str) -> dict[str, Any]:
    """The recipient's signed receipt naming the bag's transfer record and tag manifest by digest."""
    out = {"type": RECEIPT_TYPE, "received_at": received_at}
    for name, member in (("transfer.json", "transfer_sha256"), ("tagmanifest-sha256.txt", "tagmanifest_sha256")):
        data = read_regular(Path(bag) / name, 64 << 20)
        if data is None:
            raise DisclosureFailed(f"{bag}/{name}: larger than any dockd bag's")
        out[member] = hashlib.sha256(data).hexdigest()
        if name == "transfer.json":
            try:
                t = ijson.loads(data, max_bytes=64 << 20)
            except ijson.Invalid as e:
                raise DisclosureFailed(f"{bag}/transfer.json: {e}") from None
            if not isinstance(t, dict) or not isinstance(t.get("case"), str):
                raise DisclosureFailed(f"{bag}/transfer.json names no case")
            out["case"] = t["case"]
    return mf.sign(out, key)


def check_receipt(raw: bytes, state: TrustState) -> dict[str, Any]:
    try:
        r = mf.parse(raw, "receipt")
    except ManifestInvalid as e:
        raise DisclosureFailed(e.message()) from None
    need = ("type", "case", "transfer_sha256", "tagmanifest_sha256", "received_at", "signature")
    if not isinstance(r, dict) or r.get("type") != RECEIPT_TYPE or not all(k in r for k in need):
        raise DisclosureFailed(f"not a {RECEIPT_TYPE}")
    v = state.verify_signed(r, "recipient", "received_at")
    if not v.ok:
        raise DisclosureFailed(f"receipt: {v.reason}")
    return r


def ack(backend: Backend, prefix: str, receipt: dict[str, Any], state: TrustState, key: keys.StationKey,
        at: str) -> dict[str, Any]:
    """Record ``receipt`` (checked) against the transfer it names; refused for a bag this case never sent."""
    case = receipt["case"]
    if not isinstance(case, str) or "/" in case or case in ("", ".", ".."):
        raise DisclosureFailed("receipt names no usable case")
    led = read(backend, prefix, case, state)
    match = [e for e in led.entries if e["kind"] == "transfer" and e["transfer_sha256"] == receipt["transfer_sha256"]
             and e["tagmanifest_sha256"] == receipt["tagmanifest_sha256"]]
    if not match:
        raise DisclosureFailed(f"receipt names a bag that the ledger of case {case} does not record "
                               "(a receipt for another bag)")
    if any(e["kind"] == "ack" and e["transfer_sha256"] == receipt["transfer_sha256"] for e in led.entries):
        raise DisclosureFailed("this transfer was acknowledged already")
    return append(backend, prefix, led, {"kind": "ack", "at": at, "transfer_sha256": receipt["transfer_sha256"],
                                         "receipt": receipt}, key)
