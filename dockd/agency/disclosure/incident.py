"""Choosing clips for a disclosure by incident, from a signed completeness report (``dockd review report``).

``dockd disclose create --incident ID --report DIR``:

1. the report is verified first, as ``dockd review verify`` does (:func:`dockd.agency.review.report.verify_dir`:
   signed by a key the trust log enrols as ``reviewer`` at its ``generated_at``; its CSV and HTML match the
   digests it signs); nothing is taken from a report that fails;
2. the incident's rows are the rows of the verified CSV whose ``incident`` is exactly ID (one per officer);
   the clips are those the rows name (``clips``: object keys the review matched), each then resolved and
   checked in storage like any other clip (signed manifest, station key);
3. each justification a row names (``justification_seq``) is read from the justification log in storage and
   must be the very entry the report used: its digest equal to the one the report's ``inputs.justifications``
   signs for that seq, and its own reviewer signature valid.

Into the bag go ``data/completeness/{ID-safe}.json`` (the incident's rows as the report has them, and the report's
identity: generated_at, period, signer, the SHA-256 of report.json and of report.csv) and each named entry,
byte for byte, as ``data/completeness/justifications/{seq:08d}.json`` (signed: checkable on its own). The whole
report is not put in the bag: it names other incidents, which this recipient is not owed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from dockd.agency.disclosure import DisclosureFailed
from dockd.core import ijson
from dockd.core.errors import ManifestInvalid
from dockd.core.textsafe import printable
from dockd.storage.base import Backend, StoreFailure
from dockd.trust.log import TrustState

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_ROWS = 10_000


@dataclass
class IncidentSelection:
    object_keys: list[str]
    files: dict[str, bytes]  # bag path -> bytes
    rows: int


def file_name(incident: str) -> str:
    """A plain bag file name for an incident id (anything else replaced; a digest keeps distinct ids apart)."""
    safe = _UNSAFE.sub("_", incident)[:64].lstrip(".") or "incident"
    return f"{safe}-{hashlib.sha256(incident.encode()).hexdigest()[:12]}.json"


def from_report(backend: Backend, prefix: str, state: TrustState, report_dir: Path, incident: str) -> IncidentSelection:
    """See the module docstring; DisclosureFailed naming the first thing that does not hold."""
    from dockd.agency.review.report import verify_dir

    try:
        rep, rep_raw, csv_bytes, _why = verify_dir(report_dir, state)
    except ManifestInvalid as e:
        raise DisclosureFailed(f"completeness report {printable(str(report_dir))}: {e.message()}; nothing taken "
                               "from it") from None
    rows = [r for r in csv.DictReader(io.StringIO(csv_bytes.decode("utf-8"), newline=""))
            if r.get("incident") == incident]
    if not rows:
        raise DisclosureFailed(f"the completeness report has no row for incident {printable(incident)!r}")
    if len(rows) > MAX_ROWS:
        raise DisclosureFailed(f"incident {printable(incident)!r}: more than {MAX_ROWS} rows")
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(k for k in (r.get("clips") or "").split(";") if k))
    used = {}
    for pair in rep.get("inputs", {}).get("justifications", []):
        if isinstance(pair, list) and len(pair) == 2 and type(pair[0]) is int and isinstance(pair[1], str):
            used[pair[0]] = pair[1]
    if not keys:
        raise DisclosureFailed(f"the completeness report matched no clip to incident {printable(incident)!r} "
                               f"(outcomes: {', '.join(sorted({r.get('outcome') or '?' for r in rows}))})")
    files: dict[str, bytes] = {}
    for r in rows:
        seq_text = r.get("justification_seq") or ""
        if seq_text:
            seq, raw = _justification(backend, prefix, state, seq_text, used)
            files[f"data/completeness/justifications/{seq:08d}.json"] = raw
    sig = rep["signature"]  # a dict: verify_dir checked it
    record = {"type": "dockd.disclosure-completeness/1", "incident": incident,
              "report": {"generated_at": rep.get("generated_at"), "as_of": rep.get("as_of"),
                         "period": rep.get("period"), "signed_by": sig.get("key_id"),
                         "report_json_sha256": hashlib.sha256(rep_raw).hexdigest(),
                         "report_csv_sha256": hashlib.sha256(csv_bytes).hexdigest()},
              "rows": rows, "clips": list(keys),
              "justifications": sorted(files)}
    files[f"data/completeness/{file_name(incident)}"] = (
        json.dumps(record, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()
    return IncidentSelection(list(keys), files, len(rows))


def _justification(backend: Backend, prefix: str, state: TrustState, seq_text: str,
                   used: dict[int, str]) -> tuple[int, bytes]:
    """(seq, stored bytes) of the justification entry a row names: the very entry the report used."""
    from dockd.agency.review import justify

    if not seq_text.isdigit() or int(seq_text) not in used:
        raise DisclosureFailed(f"incident row names justification {printable(seq_text)!r}, which the report's "
                               "inputs do not list")
    seq = int(seq_text)
    try:
        raw = backend.read_small(justify.entry_key(prefix.strip("/"), seq), justify.MAX_ENTRY)
    except StoreFailure as e:
        raise DisclosureFailed(f"reading justification {seq}: {e}") from None
    if raw is None:
        raise DisclosureFailed(f"justification {seq} is not in storage")
    try:
        entry = ijson.loads(raw, max_bytes=justify.MAX_ENTRY)
    except ijson.Invalid as e:
        raise DisclosureFailed(f"justification {seq}: {e}") from None
    if not isinstance(entry, dict) or justify.digest(entry) != used[seq]:
        raise DisclosureFailed(f"justification {seq} in storage is not the entry the report used (altered)")
    v = state.verify_signed(entry, "reviewer", "at")
    if not v.ok:
        raise DisclosureFailed(f"justification {seq}: {v.reason}")
    return seq, raw
