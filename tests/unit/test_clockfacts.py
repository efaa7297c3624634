"""Station clock facts: the pure reading of adjtimex values (a table), and one real call on this machine."""

from __future__ import annotations

import pytest

from dockd.core import clockfacts as cf
from dockd.evidence import stationclock

# (adjtimex return value, status word, esterror, maxerror) -> (synchronised, est_error_us, max_error_us)
TABLE = [
    ((cf.TIME_OK, 0x2001, 1_200, 45_000), (True, 1_200, 45_000)),  # PLL + NANO, synced by chrony/ntpd
    ((cf.TIME_INS, 0x0011, 500, 9_000), (True, 500, 9_000)),  # leap second pending: still synchronised
    ((cf.TIME_WAIT, 0x0001, 10, 100), (True, 10, 100)),  # just after a leap second
    ((cf.TIME_ERROR, 0x0001, 1_000, 16_000_000), (False, 1_000, 16_000_000)),  # kernel says: error
    ((cf.TIME_OK, 0x0040, 16_000_000, 16_000_000), (False, 16_000_000, 16_000_000)),  # STA_UNSYNC
    ((cf.TIME_ERROR, 0x0041, 16_000_000, 16_000_000), (False, 16_000_000, 16_000_000)),  # both (boot, no NTP)
    ((cf.TIME_OK, 0x2000, -5, 1 << 63), (True, None, None)),  # nonsense numbers are not facts
    ((-1, 0, 0, 0), (False, 0, 0)),  # the call failed
]


@pytest.mark.parametrize(("given", "want"), TABLE, ids=[f"{g[0]}-{g[1]:#06x}" for g, _ in TABLE])
def test_interpretation_table(given, want):
    f = cf.facts(*given)
    assert (f["synchronised"], f["est_error_us"], f["max_error_us"]) == want
    assert f["status"] == given[1] and f["source"] == "adjtimex"


def test_unavailable_never_claims_synchronisation():
    u = cf.unavailable()
    assert u == {"synchronised": False, "est_error_us": None, "max_error_us": None, "status": -1,
                 "source": "unavailable"}
    assert "unavailable" in cf.summary(u)


def test_summary_lines():
    assert cf.summary(cf.facts(cf.TIME_OK, 0x2001, 7, 80)).startswith("synchronised, est. error 7 us (max 80 us)")
    assert cf.summary(cf.facts(cf.TIME_ERROR, 0x41, 7, 80)).startswith("NOT synchronised")
    assert cf.summary(None) == "not recorded"


def test_real_adjtimex_call_on_this_machine():
    f = stationclock.read()
    assert f["source"] == "adjtimex"  # Linux: the call is always there for a read (modes = 0)
    assert isinstance(f["synchronised"], bool) and isinstance(f["status"], int)
    assert f["max_error_us"] is None or 0 <= f["max_error_us"] <= 1 << 40
    assert f["synchronised"] == cf.synchronised(0, f["status"]) or not f["synchronised"]


def test_unavailable_when_the_call_fails(monkeypatch):
    monkeypatch.setattr(stationclock, "_fn", lambda: (lambda _tx: -1))
    assert stationclock.read() == cf.unavailable()
