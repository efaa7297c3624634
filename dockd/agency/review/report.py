"""The review's outputs from one list of rows: the summary, the CSV of every row, the signed JSON report.

Every number is an integer (counts, basis points) so the signed JSON is exactly what ``jq -cjS`` prints
(the README recipe checks a report with openssl and jq only). Activation rate = rows with video (covered or
partial) over rows that require it (all but ``excluded`` and ``pending``); ``covered_rate_bp`` counts covered
rows only. Justified rows count as required without video, and are listed with their justification.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from dockd.agency.review.match import OUTCOMES, Row

TYPE = "dockd.review-report/1"
EXCEPTIONS = ("missing", "partial", "justified")
CSV_FIELDS = ["incident", "officer", "unit", "call_type", "window_from", "window_to", "cameras", "outcome",
              "coverage_bp", "justification_seq", "justification_reason", "justified_by", "clips", "facts"]


def _rate(with_video: int, covered: int, required: int) -> dict[str, int]:
    return {"with_video": with_video, "covered": covered, "required": required,
            "rate_bp": with_video * 10000 // required if required else 0,
            "covered_rate_bp": covered * 10000 // required if required else 0}


class Tally:
    """Counts per outcome, overall and by unit, officer and month (of the window start)."""

    def __init__(self) -> None:
        self.all: Counter[str] = Counter()
        self.by: dict[str, dict[str, Counter[str]]] = {"unit": defaultdict(Counter), "officer": defaultdict(Counter),
                                                      "month": defaultdict(Counter)}

    def add(self, r: Row, month: str) -> None:
        self.all[r.outcome] += 1
        self.by["unit"][r.unit][r.outcome] += 1
        self.by["officer"][r.officer][r.outcome] += 1
        self.by["month"][month][r.outcome] += 1

    @staticmethod
    def _one(c: Counter[str]) -> dict[str, Any]:
        with_video = c["covered"] + c["partial"]
        required = sum(c.values()) - c["excluded"] - c["pending"]
        return {"rows": sum(c.values()), "outcomes": {o: c[o] for o in OUTCOMES}, "activation": _rate(with_video,
                                                                                                       c["covered"],
                                                                                                       required)}

    def summary(self) -> dict[str, Any]:
        s = self._one(self.all)
        for k, groups in self.by.items():
            s[f"by_{k}"] = {name: self._one(c) for name, c in sorted(groups.items())}
        return s


def exception_entry(r: Row, fmt: Callable[[int], str]) -> dict[str, Any]:
    j = r.justification
    return {"incident": r.incident, "officer": r.officer, "unit": r.unit, "call_type": r.call_type,
            "window": [fmt(r.window_from_ns), fmt(r.window_to_ns)], "cameras": r.cameras, "outcome": r.outcome,
            "coverage_bp": r.coverage_bp, "clips": r.clips, "facts": r.facts,
            "justification": None if j is None else {"seq": j.seq, "reason": j.reason, "note": j.note, "by": j.by,
                                                     "at": j.at, "supersedes": j.supersedes}}


def csv_row(r: Row, fmt: Callable[[int], str]) -> list[str]:
    j = r.justification
    return [r.incident, r.officer, r.unit, r.call_type, fmt(r.window_from_ns), fmt(r.window_to_ns),
            ";".join(r.cameras), r.outcome, str(r.coverage_bp), str(j.seq) if j else "", j.reason if j else "",
            j.by if j else "", ";".join(r.clips), " | ".join(r.facts)]


def _csv_safe(v: str) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection): a leading =, +, -, @ gets a quote."""
    return "'" + v if v[:1] in ("=", "+", "-", "@", "\t", "\r") else v


def tabulate(rows: Iterable[Row], fmt: Callable[[int], str]) -> tuple[dict[str, Any], list[dict[str, Any]], bytes,
                                                                     int]:
    """(summary, exception list, CSV bytes, row count) in one pass over the rows."""
    t = Tally()
    exc: list[dict[str, Any]] = []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    n = 0
    for r in rows:
        n += 1
        t.add(r, fmt(r.window_from_ns)[:7])
        w.writerow([_csv_safe(x) for x in csv_row(r, fmt)])
        if r.outcome in EXCEPTIONS:
            exc.append(exception_entry(r, fmt))
    return t.summary(), exc, buf.getvalue().encode("utf-8"), n


def body(*, generated_at: str, as_of: str, period: dict[str, str], filters: dict[str, str | None],
         policy: dict[str, Any], inputs: dict[str, Any], summary: dict[str, Any], exceptions: list[dict[str, Any]],
         csv_bytes: bytes, rows: int, html_bytes: bytes, notes: list[str]) -> dict[str, Any]:
    """The report before signing: what it is about, exactly which inputs it used, and what it found."""
    return {"type": TYPE, "generated_at": generated_at, "as_of": as_of, "period": period, "filters": filters,
            "policy": policy, "inputs": inputs, "summary": summary, "exceptions": exceptions,
            "csv": {"file": "report.csv", "sha256": hashlib.sha256(csv_bytes).hexdigest(), "rows": rows},
            "html": {"file": "report.html", "sha256": hashlib.sha256(html_bytes).hexdigest()}, "notes": notes}


def verify_dir(report_dir: Any, state: Any) -> tuple[dict[str, Any], bytes, bytes, str]:
    """Check the report in ``report_dir`` (hostile): ``report.json`` strict JSON signed by a key the trust log
    enrols as ``reviewer`` at its ``generated_at``, and the CSV and HTML it names matching their signed digests.
    Returns (report, report.json's bytes, CSV bytes, the verdict's text); raises ManifestInvalid naming the first
    failure. (``dockd review verify`` and ``dockd disclose create --incident`` both use this.)"""
    from pathlib import Path

    from dockd.core import ijson
    from dockd.core.errors import ManifestInvalid
    from dockd.evidence.localfile import read_regular

    report_dir = Path(report_dir)
    raw = read_regular(report_dir / "report.json", 1 << 30)
    if raw is None:
        raise ManifestInvalid("report.json: larger than 1 GiB")
    try:
        rep = ijson.loads(raw, max_bytes=1 << 30)
    except ijson.Invalid as e:
        raise ManifestInvalid(f"report.json: {e}") from None
    v = state.verify_signed(rep, "reviewer", "generated_at")
    if not v.ok:
        raise ManifestInvalid(f"report.json: {v.reason}")
    got: dict[str, bytes] = {}
    for part in ("csv", "html"):
        data = read_regular(report_dir / rep[part]["file"], 1 << 30) or b""
        if hashlib.sha256(data).hexdigest() != rep[part]["sha256"]:
            raise ManifestInvalid(f"{rep[part]['file']}: does not match the signed report")
        got[part] = data
    return rep, raw, got["csv"], v.reason
