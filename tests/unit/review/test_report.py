"""The report's pure parts: the tally, the CSV (formula cells defused), integers only in the signed body, and
the HTML escaping every string it did not write."""

from __future__ import annotations

import csv
import io

from dockd.agency.review import htmlreport, report
from dockd.agency.review.match import Justification, Row

NS = 10**9


def fmt(ns: int) -> str:
    return f"T{ns // NS}"


def row(outcome: str, unit="U1", officer="O1", cov=0, incident="I1", facts=(), j=None) -> Row:
    return Row(incident, officer, unit, "ALARM", 0, 600 * NS, ["C1"], cov, outcome, ["k/1"], j, list(facts))


ROWS = [row("covered", cov=10000), row("partial", cov=5000), row("missing", unit="U2", facts=["C1: seq_gap"]),
        row("excluded"), row("pending"),
        row("justified", j=Justification(3, "I1", "O1", "battery", "note", "alice (k)", "2026-01-01T00:00:00Z"))]


def test_tally_rates_and_exceptions():
    summary, exc, data, n = report.tabulate(ROWS, fmt)
    assert n == 6 and summary["outcomes"] == {"covered": 1, "partial": 1, "missing": 1, "justified": 1,
                                              "pending": 1, "excluded": 1}
    assert summary["activation"] == {"with_video": 2, "covered": 1, "required": 4, "rate_bp": 5000,
                                     "covered_rate_bp": 2500}
    assert summary["by_unit"]["U2"]["activation"]["rate_bp"] == 0
    assert [x["outcome"] for x in exc] == ["partial", "missing", "justified"]
    assert exc[2]["justification"]["seq"] == 3
    got = list(csv.DictReader(io.StringIO(data.decode())))
    assert len(got) == 6 and got[2]["facts"] == "C1: seq_gap"


def test_signed_body_holds_integers_only():
    summary, exc, data, n = report.tabulate(ROWS, fmt)
    b = report.body(generated_at="g", as_of="a", period={"from": "f", "to": "t"}, filters={"unit": None,
                    "officer": None}, policy={"covered_bp": 9000}, inputs={"index": {"segments": {}},
                                                                          "justifications": []},
                    summary=summary, exceptions=exc, csv_bytes=data, rows=n, html_bytes=b"", notes=[])

    def walk(v):
        assert not isinstance(v, float), v
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(b)


def test_csv_cells_that_a_spreadsheet_would_run_are_defused():
    _, _, data, _ = report.tabulate([row("missing", incident="=HYPERLINK(\"http://x\")")], fmt)
    assert "'=HYPERLINK" in data.decode()


def test_html_escapes_every_foreign_string():
    evil = '<script>alert(1)</script>"\u202e'
    rows = [row("missing", unit=evil, officer=evil, incident=evil, facts=[evil]),
            row("justified", j=Justification(1, "I", "O", evil, evil, evil, evil))]
    summary, exc, data, n = report.tabulate(rows, fmt)
    b = report.body(generated_at="g", as_of="a", period={"from": evil, "to": "t"}, filters={"unit": evil,
                    "officer": None}, policy={}, inputs={"index": {"segments": {"s": [[1, "h"]]}},
                                                         "justifications": []},
                    summary=summary, exceptions=exc, csv_bytes=data, rows=n, html_bytes=b"", notes=[evil])
    page = htmlreport.render(b).decode()
    assert "<script" not in page and "\u202e" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;\\u202e" in page
    assert 'content="default-src \'none\'' in page


def test_fast_time_format_equals_the_core_one():
    import random

    from dockd.agency.review.run import fmt as fast
    from dockd.core.timefmt import rfc3339_ns

    rnd = random.Random(1)
    for ns in [0, -1, 86_400 * NS - 1, *(rnd.randrange(-2**62, 2**62) for _ in range(2000))]:
        assert fast(ns) == rfc3339_ns(ns - ns % NS)[:19] + "Z", ns
