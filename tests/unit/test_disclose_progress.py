"""The disclosure progress model (dockd.agency.disclosure.progress): events in, displayed counts out. Pure.

What it must never do: show more clips or bytes than there are, count a clip done before every file it
needs is verified (hashed, compared with its signed manifest, fsynced), count bytes of a file no resolved
manifest names, or go backwards."""

from __future__ import annotations

import pytest

from dockd.agency.disclosure import progress as pg
from dockd.agency.disclosure.progress import Phase, Planned, Resolved, Verified, Wrote

A = Resolved("k/a", (("data/clips/a.mp4", 100), ("data/clips/a.srt", 10)))
B = Resolved("k/b", (("data/clips/b.mp4", 50),))
C_SHARES = Resolved("k/c", (("data/clips/c.mp4", 30), ("data/clips/a.srt", 10)))  # a sidecar named twice

# (case, events, expected (clips_done, clips_total, bytes_done, bytes_total, bytes_final, phase))
CASES = [
    ("nothing yet", [Planned(2)], (0, 2, 0, 0, False, pg.RESOLVING)),
    ("nothing planned: no final total", [], (0, 0, 0, 0, False, pg.RESOLVING)),
    ("one resolved: total grows, not final", [Planned(2), A], (0, 2, 0, 110, False, pg.RESOLVING)),
    ("all resolved: total final", [Planned(2), A, B], (0, 2, 0, 160, True, pg.RESOLVING)),
    ("bytes written are shown, no clip is done", [Planned(2), A, B, Phase(pg.DOWNLOADING),
                                                   Wrote("data/clips/a.mp4", 60)], (0, 2, 60, 160, True,
                                                                                    pg.DOWNLOADING)),
    ("all bytes written but not verified: still not done", [Planned(2), A, B, Wrote("data/clips/a.mp4", 100),
                                                             Wrote("data/clips/a.srt", 10)],
     (0, 2, 110, 160, True, pg.RESOLVING)),
    ("clip file verified, sidecar not: clip not done", [Planned(2), A, B, Verified("data/clips/a.mp4")],
     (0, 2, 100, 160, True, pg.RESOLVING)),
    ("clip and sidecar verified: done", [Planned(2), A, B, Verified("data/clips/a.mp4"),
                                         Verified("data/clips/a.srt")], (1, 2, 110, 160, True, pg.RESOLVING)),
    ("more bytes than signed are capped at the signed size", [Planned(1), B, Wrote("data/clips/b.mp4", 40),
                                                               Wrote("data/clips/b.mp4", 40)],
     (0, 1, 50, 50, True, pg.RESOLVING)),
    ("bytes of an unknown file are not counted", [Planned(1), B, Wrote("data/clips/x.mp4", 999),
                                                   Verified("data/clips/x.mp4")], (0, 1, 0, 50, True, pg.RESOLVING)),
    ("verified before resolved (cannot happen) is not counted", [Planned(1), Verified("data/clips/b.mp4"), B],
     (0, 1, 0, 50, True, pg.RESOLVING)),
    ("a late Wrote after Verified adds nothing", [Planned(1), B, Verified("data/clips/b.mp4"),
                                                   Wrote("data/clips/b.mp4", 50)], (1, 1, 50, 50, True,
                                                                                    pg.RESOLVING)),
    ("a file shared by two clips counts once in bytes", [Planned(2), A, C_SHARES], (0, 2, 0, 140, True,
                                                                                      pg.RESOLVING)),
    ("a shared file verified once serves both clips", [Planned(2), A, C_SHARES, Verified("data/clips/a.srt"),
                                                        Verified("data/clips/c.mp4")],
     (1, 2, 40, 140, True, pg.RESOLVING)),
    ("a clip resolved twice counts once", [Planned(1), B, B, Verified("data/clips/b.mp4"),
                                            Verified("data/clips/b.mp4")], (1, 1, 50, 50, True, pg.RESOLVING)),
    ("a clip whose files were verified for an earlier clip is done at once",
     [Planned(2), A, Verified("data/clips/a.srt"), Resolved("k/d", (("data/clips/a.srt", 10),))],
     (1, 2, 10, 110, True, pg.RESOLVING)),
    ("phases only move forward", [Planned(1), B, Phase(pg.SIGNING), Phase(pg.DOWNLOADING)],
     (0, 1, 0, 50, True, pg.SIGNING)),
    ("an unknown phase is ignored", [Planned(1), Phase("exploding")], (0, 1, 0, 0, False, pg.RESOLVING)),
    ("resolved beyond planned raises the clip total", [Planned(1), A, B], (0, 2, 0, 160, True, pg.RESOLVING)),
    ("the whole run", [Planned(2), Phase(pg.RESOLVING), A, Phase(pg.DOWNLOADING), B, Wrote("data/clips/a.mp4", 100),
                       Verified("data/clips/a.mp4"), Wrote("data/clips/a.srt", 10), Verified("data/clips/a.srt"),
                       Wrote("data/clips/b.mp4", 50), Verified("data/clips/b.mp4"), Phase(pg.TAGS),
                       Phase(pg.SIGNING), Phase(pg.SEALING), Phase(pg.LEDGER), Phase(pg.DONE)],
     (2, 2, 160, 160, True, pg.DONE)),
]


@pytest.mark.parametrize("case,events,want", CASES, ids=[c[0] for c in CASES])
def test_events_to_view(case, events, want):
    m = pg.Model()
    prev = m.view()
    for e in events:
        m.apply(e)
        v = m.view()
        # at every step: within totals, never backwards
        assert 0 <= v.clips_done <= v.clips_total and 0 <= v.bytes_done <= v.bytes_total, (case, e, v)
        assert v.clips_done >= prev.clips_done and v.bytes_done >= prev.bytes_done, (case, e, v)
        assert v.clips_total >= prev.clips_total and v.bytes_total >= prev.bytes_total, (case, e, v)
        assert pg.PHASES.index(v.phase) >= pg.PHASES.index(prev.phase), (case, e, v)
        prev = v
    v = m.view()
    assert (v.clips_done, v.clips_total, v.bytes_done, v.bytes_total, v.bytes_final, v.phase) == want


@pytest.mark.parametrize("events,label", [
    ([Planned(2), A], "resolving manifests"),
    ([Planned(2), A, Wrote("data/clips/a.mp4", 1)], "resolving manifests, downloading"),
    ([Planned(2), A, B, Phase(pg.DOWNLOADING), Wrote("data/clips/a.mp4", 1)], "downloading and hashing"),
    ([Planned(1), B, Phase(pg.SEALING)], "sealing (fsync)"),
])
def test_label_says_what_is_going_on(events, label):
    m = pg.Model()
    for e in events:
        m.apply(e)
    assert m.view().label == label


def test_onward_starts_with_the_parent_check():
    m = pg.Model(pg.PARENT)
    assert m.view().label == "verifying the parent bag"
    m.apply(Phase(pg.DOWNLOADING))
    assert m.view().phase == pg.DOWNLOADING


@pytest.mark.parametrize("done,total,elapsed,want", [
    (0, 100, 5.0, (None, None)),
    (50, 100, 0.0, (None, None)),
    (50, 100, 5.0, (10.0, 5.0)),
    (100, 100, 5.0, (20.0, 0.0)),
])
def test_rate_and_eta(done, total, elapsed, want):
    assert pg.rate_eta(done, total, elapsed) == want


def test_plain_line_is_plain_and_honest():
    m = pg.Model()
    for e in [Planned(2), A, Wrote("data/clips/a.mp4", 100)]:
        m.apply(e)
    s = pg.line(m.view(), 10.0)
    assert s.isprintable() and "\x1b" not in s
    # total not final (one clip unresolved): the total says so, and no time left is promised
    assert "0/2 clips verified" in s and "MB/s" in s and "0.0/0.0+ MB" in s and "left" not in s
    m.apply(B)
    assert "left" in pg.line(m.view(), 10.0)


def test_download_reports_each_file_verified_as_it_completes(tmp_path):
    """create._download reports ``Verified`` for a file as soon as it is checked and fsynced, while other
    files still download (not all at the end): clip b's bytes are held back until clip a was reported
    verified, which would time out if reports came only once every download had finished."""
    import hashlib
    import threading

    from dockd.agency.disclosure import collect
    from dockd.agency.disclosure import create as mk
    from dockd.agency.disclosure.writer import BagWriter

    data = {"st/c/2025/06/01/01/a.mp4": b"a" * 5000, "st/c/2025/06/01/01/b.mp4": b"b" * 7000}
    a_verified = threading.Event()
    events: list[pg.Event] = []
    lock = threading.Lock()

    def sink(e: pg.Event) -> None:
        with lock:
            events.append(e)
        if e == Verified("data/clips/st/c/2025/06/01/01/a.mp4"):
            a_verified.set()

    def chunks(name: str):
        if name.endswith("b.mp4"):
            assert a_verified.wait(30), "a was not reported verified while b was still downloading"
        yield data[name]

    def clip(rel: str) -> collect.ClipSource:
        m = {"clip": {"sha256": hashlib.sha256(data[rel]).hexdigest(), "size": len(data[rel])}}
        return collect.ClipSource("ev/" + rel, rel, "st", "c", m, [], [])

    src = mk.Source([clip(r) for r in data], [], [], chunks, "")
    w = BagWriter(tmp_path / "bag")
    got = mk._download(src, w, sink)
    assert sorted(x.path for x in got) == ["data/clips/" + r for r in sorted(data)]
    m = pg.Model()
    for e in events:
        m.apply(e)
    v = m.view()
    assert (v.clips_done, v.clips_total, v.bytes_done, v.bytes_total) == (2, 2, 12000, 12000)
    # b's bytes were reported written only after a was verified
    first_b = next(i for i, e in enumerate(events) if isinstance(e, Wrote) and e.path.endswith("b.mp4"))
    assert events.index(Verified("data/clips/st/c/2025/06/01/01/a.mp4")) < first_b


def test_cli_display_off_a_terminal_is_plain_lines_at_most_every_period(monkeypatch, capsys):
    """Off a terminal the CLI's display prints no bar and no escape code, never on stdout: a plain line when
    the period has passed (here made 0: one per event), nothing for a run shorter than the period."""
    from dockd.cli import disclose as cli

    run = [Planned(1), B, Phase(pg.DOWNLOADING), Wrote("data/clips/b.mp4", 50), Verified("data/clips/b.mp4"),
           Phase(pg.DONE)]
    with cli._Display(onward=False) as show:  # the default period (10 s): this run is shorter
        for e in run:
            show(e)
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(cli, "PLAIN_EVERY_S", 0.0)
    with cli._Display(onward=False) as show:
        for e in run:
            show(e)
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == len(run)
    assert all(x.startswith("disclose: ") and x.isprintable() for x in lines), lines
    assert lines[-1].startswith("disclose: done: 1/1 clips verified, 0.0/0.0 MB"), lines
