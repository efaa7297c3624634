"""One review run: inputs, cached index, justification log -> rows -> report.json (signed), .csv, .html.

The report is signed with the reviewer's key (manifest scheme over RFC 8785) and names every input it used:
the SHA-256 of the roster and CAD files, each index segment (station, seq, head digest), each justification
entry (seq, digest) and the trust log head, so anyone with the same inputs re-runs it (``--now`` = the
report's ``as_of``, ``--justifications-upto`` = its last entry) and gets the same rows.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockd.agency.review import htmlreport, inputs, match, report
from dockd.agency.review.index import Cache
from dockd.agency.review.justify import Log
from dockd.agency.review.justify import digest as entry_digest
from dockd.config import ReviewConfig
from dockd.core import jcs
from dockd.core.errors import DockdError
from dockd.core.timefmt import rfc3339_ns
from dockd.evidence.durable import write_atomic
from dockd.evidence.keys import StationKey
from dockd.trust.log import TrustState


class ReportRefused(DockdError):
    """report not signed: {}"""


_DAYS: dict[int, str] = {}


def fmt(ns: int) -> str:
    """RFC 3339 to the second (what the report shows; windows and docks are not sub-second facts). A year's
    report formats a million times: the date part is computed once per day."""
    day, sec = divmod(ns // 1_000_000_000, 86400)
    d = _DAYS.get(day)
    if d is None:
        d = _DAYS[day] = rfc3339_ns(day * 86400 * 1_000_000_000)[:10]
    return f"{d}T{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}Z"


def policy_of(rc: ReviewConfig) -> match.Policy:
    return match.Policy(pre_roll_s=rc.pre_roll_s, post_roll_s=rc.post_roll_s, grace_s=rc.grace_hours * 3600,
                        covered_bp=int(round(rc.covered_percent * 100)), on_scene_weight=rc.on_scene_weight,
                        excluded_call_types=frozenset(rc.excluded_call_types), long_absence_days=rc.long_absence_days)


def policy_json(p: match.Policy, tz: str) -> dict[str, Any]:
    """The policy as integers and strings (see report's module docstring)."""
    return {"pre_roll_ms": int(p.pre_roll_s * 1000), "post_roll_ms": int(p.post_roll_s * 1000),
            "grace_ms": int(p.grace_s * 1000), "covered_bp": p.covered_bp,
            "on_scene_weight_milli": int(p.on_scene_weight * 1000),
            "long_absence_ms": int(p.long_absence_days * 86_400_000),
            "excluded_call_types": sorted(p.excluded_call_types), "timezone": tz}


def cad_columns(rc: ReviewConfig) -> inputs.CadColumns:
    return inputs.CadColumns(incident=rc.cad_incident, call_type=rc.cad_call_type, dispatched=rc.cad_dispatched,
                             arrived=rc.cad_arrived, cleared=rc.cad_cleared, officer=rc.cad_officer, unit=rc.cad_unit)


@dataclass
class Result:
    report: dict[str, Any]
    out: Path
    seconds: float


def _cameras_by_device(assignments: list[match.Assignment], cache: Cache, notes: list[str]) -> list[match.Assignment]:
    """Roster entries naming a camera by device id, translated to its serial when the index knows it."""
    devs = cache.device_ids()
    out = []
    for a in assignments:
        cams = devs.get(a.camera)
        if cams and len(cams) == 1:
            out.append(match.Assignment(next(iter(cams)), a.officer, a.from_ns, a.to_ns))
        else:
            if cams:
                notes.append(f"roster: device id {a.camera} names {len(cams)} cameras ({', '.join(sorted(cams))}); "
                             "used as a serial")
            out.append(a)
    return out


def run(*, rc: ReviewConfig, state: TrustState, cache: Cache, log: Log, key: StationKey, roster: Path, cad: Path,
        out: Path, from_ns: int, to_ns: int, now_ns: int, unit: str | None = None, officer: str | None = None,
        upto: int | None = None, fetch_problems: list[str] | None = None) -> Result:
    t0 = time.monotonic()
    tz = inputs.zone(rc.cad_timezone)
    assignments, roster_units, roster_in = inputs.load_roster(roster, tz)
    incidents, cad_in = inputs.load_cad(cad, cad_columns(rc), tz)
    notes = [*roster_in.notes, *cad_in.notes, *log.problems, *(fetch_problems or [])]
    assignments = _cameras_by_device(assignments, cache, notes)
    chosen = []
    for inc in incidents:
        if not from_ns <= inc.dispatched_ns < to_ns or (officer and inc.officer != officer):
            continue
        if not inc.unit and inc.officer in roster_units:
            inc = match.Incident(inc.incident, inc.officer, inc.call_type, inc.dispatched_ns, inc.arrived_ns,
                                 inc.cleared_ns, roster_units[inc.officer], inc.line)
        if unit and inc.unit != unit:
            continue
        chosen.append(inc)
    policy = policy_of(rc)
    used = [e for e in log.entries if upto is None or e["seq"] <= upto]
    justs = match.effective_justifications(log.for_match(state, upto))
    lo = from_ns - int(policy.pre_roll_s * match.NS) - match.DAY_NS
    hi = max([to_ns, *(i.cleared_ns for i in chosen)]) + int(policy.post_roll_s * match.NS) + match.DAY_NS
    clips = cache.clips_between(lo, hi)
    docks = cache.docks_by_camera()
    rows = match.review(chosen, assignments, clips, docks, justs, policy, now_ns, fmt)
    summary, exceptions, csv_bytes, n = report.tabulate(rows, fmt)
    del clips, rows
    segs: dict[str, list[list[Any]]] = defaultdict(list)
    for station, seq, h in cache.segments():
        segs[station].append([seq, h])
    generated = fmt(time.time_ns())
    body = report.body(
        generated_at=generated, as_of=fmt(now_ns), period={"from": fmt(from_ns), "to": fmt(to_ns)},
        filters={"unit": unit, "officer": officer}, policy=policy_json(policy, rc.cad_timezone),
        inputs={"roster": {"file": roster.name, "sha256": roster_in.sha256},
                "cad": {"file": cad.name, "sha256": cad_in.sha256},
                "index": {"segments": dict(segs)},
                "justifications": [[e["seq"], entry_digest(e)] for e in used],
                "trust": {"root_key_id": state.root_key_id, "head_seq": state.head_seq,
                          "head_digest": state.head_digest}},
        summary=summary, exceptions=exceptions, csv_bytes=csv_bytes, rows=n, html_bytes=b"", notes=notes)
    html_bytes = htmlreport.render(body)
    body["html"]["sha256"] = hashlib.sha256(html_bytes).hexdigest()
    signed = sign(body, key)
    # the key must be a reviewer's at the report's own time (the signature is the manifest scheme's, over the
    # same JCS bytes rfc8785 gives: tests/unit/test_jcs.py; `dockd review verify` re-checks it in full)
    v = state.check(key.key_id, "reviewer", generated)
    if not v.ok:
        raise ReportRefused(v.reason)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.csv", csv_bytes)
    write_atomic(out / "report.html", html_bytes)
    # one line (the C encoder: a year's report is tens of MiB; `jq .` shows it indented)
    write_atomic(out / "report.json", (json.dumps(signed, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
    return Result(signed, out, time.monotonic() - t0)


def sign(body: dict[str, Any], key: StationKey) -> dict[str, Any]:
    """The manifest scheme (Ed25519 over JCS of the body without ``signature``), with the fast JCS encoder
    (byte-equal to rfc8785 for plain values, tests/unit/test_jcs.py): a year's report is tens of MiB."""
    b = {k: v for k, v in body.items() if k != "signature"}
    b["signature"] = {"alg": "Ed25519", "key_id": key.key_id, "value": key.sign(jcs.dumps({k: v for k, v in b.items()
                                                                                        if k != "signature"}))}
    return b
