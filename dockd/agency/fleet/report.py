"""``dockd fleet report --html``: one self-contained page (inline CSS and SVG, no script, no external asset).

Every string that came from a heartbeat (station names, serials, bays, alarm messages) is shown through
:func:`dockd.core.textsafe.printable` and then ``html.escape`` (quotes too), never as markup. The numbers
carry ``data-*`` attributes with the same values ``--json`` prints, so a test can compare what a browser
rendered with the JSON.
"""

from __future__ import annotations

from html import escape
from typing import Any

from dockd.agency.fleet import classify
from dockd.core.textsafe import printable
from dockd.core.timefmt import rfc3339

COLOURS = {classify.UP: "#1a7f37", classify.STALE: "#9a6700", classify.UNHEALTHY: "#cf222e",
           classify.UNTRUSTED: "#82071e", classify.SILENT: "#6e7781"}
CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #d0d7de;padding:.25em .6em;text-align:left}
th{background:#f6f8fa}.status{font-weight:bold;color:#fff;border-radius:4px;padding:0 .4em;white-space:nowrap}
td:first-child{white-space:nowrap}
.tiles span{display:inline-block;margin-right:1em;font-size:1.2em}"""


def e(value: object) -> str:
    """Foreign text as inert HTML: controls escaped visibly, then <, >, &, quotes escaped."""
    return escape(printable("" if value is None else value), quote=True)


def _age(s: float | None) -> str:
    return "-" if s is None else classify.human_age(s)


def _backlog_svg(history: dict[str, list[list[Any]]], width: int = 640, height: int = 160) -> str:
    """The fleet's clips pending over time: the sum over stations of each station's newest known count at
    each point in time where any station reported."""
    points: list[tuple[float, str, int]] = []
    for name, hist in history.items():
        for at, n, _old in hist:
            t = classify.seconds(at)
            if t is not None and isinstance(n, int):
                points.append((t, name, n))
    if len(points) < 2:
        return '<p id="backlog-none">Not enough heartbeats read yet for a backlog over time.</p>'
    points.sort()
    latest: dict[str, int] = {}
    series = []
    for t, name, n in points:
        latest[name] = n
        series.append((t, sum(latest.values())))
    t0, t1 = series[0][0], series[-1][0]
    top = max(1, max(v for _t, v in series))
    span = max(1.0, t1 - t0)
    xy = " ".join(f"{(t - t0) / span * (width - 40) + 30:.1f},{height - 20 - v / top * (height - 40):.1f}"
                  for t, v in series)
    return (f'<svg id="backlog" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'role="img" aria-label="clips pending over time">'
            f'<rect width="{width}" height="{height}" fill="#f6f8fa"/>'
            f'<polyline fill="none" stroke="#0969da" stroke-width="2" points="{xy}"/>'
            f'<text x="30" y="14" font-size="11">max {top} pending</text>'
            f'<text x="30" y="{height - 4}" font-size="11">{e(rfc3339(t0))}</text>'
            f'<text x="{width - 10}" y="{height - 4}" font-size="11" text-anchor="end">{e(rfc3339(t1))}</text>'
            '</svg>')


def render(stations: list[dict[str, Any]], cameras: list[dict[str, Any]], history: dict[str, list[list[Any]]],
           now: float) -> str:
    """The page for these rows (the same rows ``fleet stations --json`` and ``fleet cameras --json`` print)."""
    counts = {s: sum(1 for r in stations if r["status"] == s) for s in classify.STATUSES}
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
           f"<title>dockd fleet report {e(rfc3339(now))}</title><style>{CSS}</style></head><body>",
           f"<h1>dockd fleet report</h1><p>Read at {e(rfc3339(now))} from signed heartbeats; only heartbeats "
           "that verified against the agency trust log are shown as facts.</p><div class=\"tiles\">"]
    for s in classify.STATUSES:
        out.append(f'<span>{e(s)}: <b id="count-{e(s)}" data-n="{counts[s]}">{counts[s]}</b></span>')
    out.append(f'<span>cameras: <b id="count-cameras" data-n="{len(cameras)}">{len(cameras)}</b></span></div>')
    out.append("<h2>Stations</h2><table id=\"stations\"><tr><th>station</th><th>status</th><th>last heartbeat</th>"
               "<th>pending</th><th>oldest not uploaded</th><th>cameras</th><th>why</th></tr>")
    for r in stations:
        colour = COLOURS.get(r["status"], "#000")
        out.append(f'<tr data-station="{e(r["station"])}" data-status="{e(r["status"])}" '
                   f'data-pending="{e(r["pending"])}"><td>{e(r["station"])}</td>'
                   f'<td><span class="status" style="background:{colour}">{e(r["status"])}</span></td>'
                   f'<td>{e(_age(r["age_s"]))}</td><td>{e("-" if r["pending"] is None else r["pending"])}</td>'
                   f'<td>{e(_age(r["oldest_pending_s"]))}</td>'
                   f'<td>{e("-" if r["cameras"] is None else r["cameras"])}</td>'
                   f'<td>{"<br>".join(e(x) for x in r["reasons"])}</td></tr>')
    out.append("</table><h2>Backlog over time</h2>")
    out.append(_backlog_svg(history))
    anomalous = [c for c in cameras if c["anomalies"]]
    out.append(f'<h2>Anomalies</h2><p id="anomalies" data-n="{len(anomalous)}">{len(anomalous)} cameras with '
               "open anomalies</p><ul>")
    out.extend(f"<li>{e(c['serial'])} ({e(c['station'])}): {e('; '.join(c['anomalies']))}</li>" for c in anomalous)
    out.append("</ul><h2>Cameras</h2><table id=\"cameras\"><tr><th>camera</th><th>station</th><th>bay</th>"
               "<th>state</th><th>last dock</th><th>ago</th></tr>")
    for c in cameras:
        out.append(f'<tr data-camera="{e(c["serial"])}"><td>{e(c["serial"])}</td><td>{e(c["station"])}</td>'
                   f'<td>{e(c["bay"] or "-")}</td><td>{e(c["state"])}</td><td>{e(c["last_dock"] or "-")}</td>'
                   f'<td>{e(_age(c["since_dock_s"]))}</td></tr>')
    out.append("</table></body></html>\n")
    return "\n".join(out)
