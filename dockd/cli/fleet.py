"""``dockd fleet stations|cameras|backlog|report``: the agency's one view of every station and camera.

Reads the stations' signed heartbeats from ``[storage]`` (:mod:`dockd.agency.fleet.reader`), checks each
against the trust log (``--trust storage`` by default, pinned to ``[trust] root_pubkey`` or ``--root``) and
classifies them (:mod:`dockd.agency.fleet.classify`). Exit 0 when every station is up, 1 when any is
stale, unhealthy, untrusted or silent (so cron and monitoring can act on it), 2 for usage errors.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dockd.agency.fleet import classify
from dockd.core.errors import EXIT_FAILED, UsageError
from dockd.core.textsafe import printable
from dockd.core.timefmt import rfc3339

STYLE = {classify.UP: "green", classify.STALE: "yellow", classify.UNHEALTHY: "red",
         classify.UNTRUSTED: "bold red", classify.SILENT: "yellow"}


def text(value: object, style: str | None = None) -> Text:
    """Foreign text for a table cell, literally (as ``cli.render.text``, without importing the station side:
    the agency's command starts faster without SQLAlchemy)."""
    return Text("" if value is None else printable(value), style=style or "")


def _duration(opt: str, text: str) -> float:
    try:
        return classify.duration(text)
    except ValueError as e:
        raise UsageError(f"{opt}: {e}") from None


def snapshot(c, trust_src: str, root_pem: Path | None, cache: Path | None, now: float | None = None) -> dict[str, Any]:
    from dockd.agency.fleet.reader import Reader  # here: `dockd --help` need not load storage and cryptography

    """One read of the fleet: ``{"at", "verdicts", "states", "thresholds"}``."""
    from dockd.cli.trust import trust_state
    from dockd.storage import open_backend

    cfg = c.cfg
    if cfg.storage is None:
        raise UsageError(f"dockd fleet reads the heartbeats from storage: no [storage] section in {cfg.path}")
    state = trust_state(c, trust_src, root_pem)
    now = time.time() if now is None else now
    reader = Reader(open_backend(cfg.storage), cfg.storage.prefix, state, cache=cache, now=now,
                    lookback_days=cfg.fleet.lookback_days)
    states = reader.read()
    t = classify.Thresholds.from_config(cfg.fleet)
    verdicts = [classify.station(s.station, s.heartbeat, s.problem, now, t) for s in states]
    return {"at": now, "verdicts": verdicts, "states": states, "thresholds": t}


def stations_json(snap: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for v in snap["verdicts"]:
        h = v.heartbeat or {}
        out.append({"station": v.station, "status": v.status, "reasons": list(v.reasons),
                    "heartbeat_at": h.get("at"), "age_s": None if v.age_s is None else round(v.age_s, 3),
                    "seq": h.get("seq"), "key_id": (h.get("signature") or {}).get("key_id"),
                    "software": h.get("software"), "free_bytes": h.get("free_bytes"), "queue": h.get("queue"),
                    "pending": classify.pending(h) if h else None,
                    "oldest_pending_s": classify.oldest_pending_s(h, snap["at"]) if h else None,
                    "cameras": len(h.get("cameras") or []) + int(h.get("cameras_not_listed") or 0) if h else None,
                    "alarms": [a.get("kind") for a in h.get("alarms") or []]})
    return out


def _age(s: float | None) -> str:
    return "-" if s is None else classify.human_age(s)


def stations_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title=f"{len(rows)} stations")
    for col in ("station", "status", "last heartbeat", "pending", "oldest", "cameras", "reasons"):
        t.add_column(col)
    for r in rows:
        t.add_row(text(r["station"]), text(r["status"], STYLE.get(r["status"])), text(_age(r["age_s"])),
                  text("-" if r["pending"] is None else r["pending"]), text(_age(r["oldest_pending_s"])),
                  text("-" if r["cameras"] is None else r["cameras"]), text("; ".join(r["reasons"])))
    return t


def cameras_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title=f"{len(rows)} cameras")
    for col in ("camera", "station", "bay", "state", "last dock", "ago", "anomalies"):
        t.add_column(col)
    for r in rows:
        t.add_row(text(r["serial"]), text(r["station"]), text(r["bay"] or "-"), text(r["state"]),
                  text(r["last_dock"] or "-"), text(_age(r["since_dock_s"])), text("; ".join(r["anomalies"])))
    return t


def backlog_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title=f"{len(rows)} stations with a backlog")
    for col in ("station", "pending", "oldest not uploaded", "heartbeat"):
        t.add_column(col)
    for r in rows:
        t.add_row(text(r["station"]), text(r["pending"]), text(_age(r["oldest_pending_s"])), text(r["heartbeat_at"]))
    return t


def _show(c, opts: dict[str, Any], build, as_json: bool, watch: bool, interval: float = 10.0) -> None:
    from dockd.cli.main import emit_json

    def once() -> tuple[Any, Any, bool]:
        snap = snapshot(c, opts["trust_src"], opts["root_pem"], opts["cache"])
        rows, table = build(snap)
        return rows, table, all(v.status == classify.UP for v in snap["verdicts"])

    if not watch:
        rows, table, ok = once()
        if as_json:
            emit_json(rows)
        else:
            (Console() if sys.stdout.isatty() else Console(width=160)).print(table)
        if not ok:
            sys.exit(EXIT_FAILED)
        return
    stop = threading.Event()  # Ctrl-C between two reads, never inside one (see render.watch)
    old = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with Live(refresh_per_second=1, screen=False) as live:
            while not stop.is_set():
                _rows, table, _ok = once()
                live.update(Group(table, f"updated {rfc3339(time.time())}; Ctrl-C to leave"))
                stop.wait(interval)
    finally:
        signal.signal(signal.SIGINT, old)


def _common(f):
    f = click.option("--json", "as_json", is_flag=True, help="Print JSON only.")(f)
    f = click.option("--watch", is_flag=True, help="Live view, read again every 10 seconds (Ctrl-C to leave).")(f)
    f = click.option("--trust", "trust_src", metavar="DIR|storage", default="storage", show_default=True,
                     help="Where the agency trust log is.")(f)
    f = click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path),
                     help="The agency root public key to pin (default: [trust] root_pubkey).")(f)
    f = click.option("--cache", type=click.Path(dir_okay=False, path_type=Path),
                     help="What was verified last time (default: ~/.cache/dockd/fleet-*.json).")(f)
    return click.option("--no-cache", is_flag=True, help="Read everything again, keep no cache.")(f)


def _opts(c, trust_src: str, root_pem: Path | None, cache: Path | None, no_cache: bool) -> dict[str, Any]:
    from dockd.agency.fleet.reader import default_cache

    if no_cache:
        cache = None
    elif cache is None:
        st = c.cfg.storage
        cache = default_cache(st.url, st.endpoint_url) if st else None
    return {"trust_src": trust_src, "root_pem": root_pem, "cache": cache}


@click.group()
def fleet() -> None:
    """The agency's view of every station and camera, from their signed heartbeats in storage."""


@fleet.command("stations")
@_common
@click.pass_obj
def stations_cmd(c, as_json: bool, watch: bool, trust_src: str, root_pem: Path | None, cache: Path | None,
                 no_cache: bool) -> None:
    """Every station: up, stale, unhealthy, untrusted or silent, and why (exit 1 unless all are up)."""
    def build(snap):
        rows = stations_json(snap)
        return rows, stations_table(rows)

    _show(c, _opts(c, trust_src, root_pem, cache, no_cache), build, as_json, watch)


@fleet.command("cameras")
@click.option("--not-docked", "not_docked", metavar="AGE", help="Only cameras not docked for longer than AGE (3d).")
@click.option("--anomalies", is_flag=True, help="Only cameras with open anomalies.")
@_common
@click.pass_obj
def cameras_cmd(c, not_docked: str | None, anomalies: bool, as_json: bool, watch: bool, trust_src: str,
                root_pem: Path | None, cache: Path | None, no_cache: bool) -> None:
    """Every camera in a trusted heartbeat: where it last docked, how long ago, its open anomalies."""
    age = _duration("--not-docked", not_docked) if not_docked else None

    def build(snap):
        rows = classify.cameras(snap["verdicts"], snap["at"])
        if age is not None:
            rows = classify.not_docked(rows, age)
        if anomalies:
            rows = [r for r in rows if r["anomalies"]]
        return rows, cameras_table(rows)

    _show(c, _opts(c, trust_src, root_pem, cache, no_cache), build, as_json, watch)


@fleet.command("backlog")
@click.option("--older-than", "older_than", metavar="AGE", help="Clip age (default: [fleet] backlog_hours).")
@_common
@click.pass_obj
def backlog_cmd(c, older_than: str | None, as_json: bool, watch: bool, trust_src: str, root_pem: Path | None,
                cache: Path | None, no_cache: bool) -> None:
    """Stations holding clips not uploaded for longer than AGE."""
    limit = _duration("--older-than", older_than) if older_than else c.cfg.fleet.backlog_hours * 3600

    def build(snap):
        rows = classify.backlog(snap["verdicts"], snap["at"], limit)
        return rows, backlog_table(rows)

    _show(c, _opts(c, trust_src, root_pem, cache, no_cache), build, as_json, watch)


@fleet.command("report")
@click.option("--html", "html_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write a self-contained HTML page here (never overwrites an existing file).")
@click.option("--trust", "trust_src", metavar="DIR|storage", default="storage", show_default=True)
@click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-cache", is_flag=True)
@click.pass_obj
def report_cmd(c, html_file: Path, trust_src: str, root_pem: Path | None, cache: Path | None,
               no_cache: bool) -> None:
    """A page for a supervisor's laptop: every station and camera, backlog over time, anomalies."""
    from dockd.agency.fleet.report import render
    from dockd.evidence.durable import create_new

    opts = _opts(c, trust_src, root_pem, cache, no_cache)
    snap = snapshot(c, opts["trust_src"], opts["root_pem"], opts["cache"])
    page = render(stations_json(snap), classify.cameras(snap["verdicts"], snap["at"]),
                  {s.station: s.history for s in snap["states"]}, snap["at"])
    if not create_new(html_file, page.encode("utf-8")):
        raise UsageError(f"{html_file}: exists; choose a new file name")
    click.echo(f"wrote {html_file}")
