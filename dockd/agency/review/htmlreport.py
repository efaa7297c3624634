"""The self-contained HTML report: no external asset, no script (a Content-Security-Policy forbids both),
inline SVG charts, every string escaped, every number taken from the same summary the signed JSON holds.

Numbers carry ``data-k`` attributes naming where they come from in the JSON (tests/e2e/test_review_html.py
renders the page in Debian's chromium and compares them).
"""

from __future__ import annotations

from html import escape
from typing import Any

from dockd.core.textsafe import printable

MAX_EXCEPTIONS_SHOWN = 5000  # the page stays openable; the CSV and the JSON hold them all

CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#eee}
.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px;word-break:break-all}
.missing{background:#fdd}.partial{background:#ffe9c7}.justified{background:#e7f0ff}h2{margin-top:1.5em}"""


def e(v: object) -> str:
    """Text someone else wrote, safe in HTML text and attribute values."""
    return escape(printable(v), quote=True)


def pct(bp: int) -> str:
    return f"{bp // 100}.{bp % 100:02d}%"


def _bars(items: list[tuple[str, int, str]], title: str) -> str:
    """A horizontal bar chart (inline SVG) of (label, rate in basis points, data key)."""
    h = 22 * len(items) + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{h}" role="img" aria-label="{e(title)}">']
    for i, (label, bp, key) in enumerate(items):
        y = 20 + 22 * i
        w = bp * 500 // 10000
        out.append(f'<text x="0" y="{y + 14}" font-size="12">{e(label)[:40]}</text>'
                   f'<rect x="200" y="{y}" width="{w}" height="16" fill="#3a7bd5"/>'
                   f'<text x="{205 + w}" y="{y + 13}" font-size="12" data-k="{e(key)}">{pct(bp)}</text>')
    out.append("</svg>")
    return "".join(out)


def _group_table(name: str, groups: dict[str, Any], key: str) -> str:
    head = "".join(f"<th>{o}</th>" for o in ("rows", "covered", "partial", "missing", "justified", "pending",
                                              "excluded", "activation"))
    rows = []
    for g, s in groups.items():
        cells = [f'<td class="n">{s["rows"]}</td>']
        cells += [f'<td class="n">{s["outcomes"][o]}</td>' for o in ("covered", "partial", "missing", "justified",
                                                                      "pending", "excluded")]
        cells.append(f'<td class="n" data-k="{key}.{e(g)}.rate_bp" data-bp="{s["activation"]["rate_bp"]}">'
                     f'{pct(s["activation"]["rate_bp"])}</td>')
        rows.append(f"<tr><td>{e(g) or '(none)'}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>{name}</th>{head}</tr>{''.join(rows)}</table>"


def render(report: dict[str, Any]) -> bytes:
    """The page for the report body ``report`` (everything but its html member and signature)."""
    s = report["summary"]
    p = report["period"]
    months = [(m, v["activation"]["rate_bp"], f"month.{m}") for m, v in s["by_month"].items()]
    units = [(u or "(none)", v["activation"]["rate_bp"], f"unit.{u}") for u, v in s["by_unit"].items()]
    outcome_rows = "".join(f'<tr><td>{o}</td><td class="n" data-k="outcomes.{o}">{n}</td></tr>'
                           for o, n in s["outcomes"].items())
    exc = report["exceptions"]
    ex_rows = []
    for x in exc[:MAX_EXCEPTIONS_SHOWN]:
        j = x["justification"]
        just = "" if j is None else f"{e(j['reason'])}: {e(j['note'])}<br><small>{e(j['by'])}, {e(j['at'])}</small>"
        clips = "<br>".join(f"<code>{e(k)}</code>" for k in x["clips"][:20])
        facts = "<br>".join(e(f) for f in x["facts"])
        ex_rows.append(f'<tr class="{e(x["outcome"])}"><td>{e(x["incident"])}</td><td>{e(x["officer"])}</td>'
                       f'<td>{e(x["unit"])}</td><td>{e(x["call_type"])}</td><td>{e(x["window"][0])}<br>'
                       f'{e(x["window"][1])}</td><td>{e(x["outcome"])}</td><td class="n">{pct(x["coverage_bp"])}</td>'
                       f"<td>{just}</td><td>{facts}</td><td>{clips}</td></tr>")
    shown = (f"<p>Showing the first {MAX_EXCEPTIONS_SHOWN} of {len(exc)}; report.csv and report.json hold them all.</p>"
             if len(exc) > MAX_EXCEPTIONS_SHOWN else "")
    segs = sum(len(v) for v in report["inputs"]["index"]["segments"].values())
    notes = "".join(f"<li>{e(n)}</li>" for n in report["notes"])
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>Completeness review {e(p['from'])} to {e(p['to'])}</title><style>{CSS}</style></head><body>
<h1>Completeness review</h1>
<p>Incidents dispatched from {e(p['from'])} to {e(p['to'])}; as of {e(report['as_of'])}; generated
{e(report['generated_at'])}. Unit: {e(report['filters']['unit'] or 'all')}; officer:
{e(report['filters']['officer'] or 'all')}. Index segments used: <span data-k="segments">{segs}</span>;
justification entries: <span data-k="justifications">{len(report['inputs']['justifications'])}</span>.
The signed report.json is the record; this page shows the same numbers.</p>
<h2>Activation rate</h2>
<p><b data-k="activation.rate_bp" data-bp="{s['activation']['rate_bp']}">{pct(s['activation']['rate_bp'])}</b>
(<span data-k="activation.with_video">{s['activation']['with_video']}</span> of
<span data-k="activation.required">{s['activation']['required']}</span> incident-officer rows that require video;
<span data-k="rows">{s['rows']}</span> rows in all)</p>
<table><tr><th>outcome</th><th>rows</th></tr>{outcome_rows}</table>
<h2>Activation rate over time</h2>{_bars(months, "activation rate per month")}
<h2>Activation rate per unit</h2>{_bars(units, "activation rate per unit")}
{_group_table("unit", s["by_unit"], "unit")}
<h2>Per officer</h2>{_group_table("officer", s["by_officer"], "officer")}
<h2>Exceptions (<span data-k="exceptions">{len(exc)}</span>)</h2>{shown}
<table><tr><th>incident</th><th>officer</th><th>unit</th><th>call type</th><th>window</th><th>outcome</th>
<th>coverage</th><th>justification</th><th>facts</th><th>clips</th></tr>{''.join(ex_rows)}</table>
<h2>Notes</h2><ul>{notes}</ul>
</body></html>
"""
    return page.encode("utf-8")
