"""``dockd camera SERIAL [--json]``: one camera's continuity across docks (README "Continuity at the dock").

Reads the camera's ``camera_facts`` row and its newest ``--docks`` dock records (schema v3; never
its clip history). Every value that came from a camera (paths, device ids) is shown through
:mod:`dockd.core.textsafe` (``render.text``), never as markup.
"""

from __future__ import annotations

from typing import Any

import click

from dockd.core.errors import NotFound
from dockd.core.timefmt import rfc3339

MAX_DOCKS = 1000


def camera_dict(q: Any, serial: str, docks: int) -> dict[str, Any]:
    """The stable ``dockd camera --json`` object; NotFound if the station never saw ``serial``."""
    cam = q.camera(serial)
    facts = q.camera_facts(serial)
    if cam is None and facts is None:
        raise NotFound("camera", serial)
    facts = facts or {}
    recent = q.camera_docks(serial, limit=docks)
    anomalies = [{**a, "docked_at": d.get("docked_at")} for d in recent for a in (d.get("anomalies") or [])
                 if isinstance(a, dict)]
    return {
        "camera": serial,
        "state": cam.state if cam else None,
        "docked": bool(cam.docked) if cam else False,
        "bay": cam.bay if cam else None,
        "profile": facts.get("profile") if facts.get("profile") is not None else (cam.profile if cam else None),
        "device_id": facts.get("device_id"),
        "docks_total": facts.get("docks", 0),
        "last_docked_at": rfc3339(facts.get("last_docked_at")),
        "last_seq": facts.get("last_seq"),
        "newest_clip_at": rfc3339(facts.get("newest_started_at")),
        "clock": {"camera_offset_s": facts.get("last_offset_s"), "estimated_at": rfc3339(facts.get("last_offset_at")),
                  "meaning": "camera clock minus station clock, from the end of the newest clip first seen at "
                             "that dock (a lower bound: the camera sat undocked after it stopped recording)"},
        "open_anomalies": facts.get("open_anomalies", 0),
        "anomalies_total": facts.get("anomalies_total", 0),
        "docks": recent,
        "anomalies": anomalies,
    }


def _facts(a: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in a.items() if k not in ("kind", "camera", "docked_at"))


def print_camera(d: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from dockd.cli.render import _console, text

    con = _console()
    off = d["clock"]["camera_offset_s"]
    lines = [f"camera {d['camera']}: state {d['state'] or '-'}, profile {d['profile'] or '-'}, "
             f"device id {d['device_id'] or '-'}",
             f"docks: {d['docks_total']} (last {d['last_docked_at'] or '-'}); highest clip number seen: "
             f"{d['last_seq'] if d['last_seq'] is not None else '-'}; newest clip (camera clock): "
             f"{d['newest_clip_at'] or '-'}",
             "camera clock: " + ("unknown" if off is None else f"{off:+.1f} s vs station (a lower bound), estimated at "
                                 f"the dock of {d['clock']['estimated_at']}")]
    for line in lines:
        con.print(text(line))
    con.print(text(f"anomalies: {d['open_anomalies']} at the last dock, {d['anomalies_total']} in all",
                   "bold yellow" if d["open_anomalies"] else None))
    t = Table(title=Text(f"last {len(d['docks'])} docks"), title_justify="left")
    for col in ("docked at", "bay", "on card", "new", "numbers", "offset s", "anomalies"):
        t.add_column(col, overflow="fold")
    for k in d["docks"]:
        rng = "-" if k.get("seq_min") is None else f"{k['seq_min']}..{k['seq_max']}"
        kinds = ", ".join(sorted({str(a.get("kind")) for a in k.get("anomalies") or [] if isinstance(a, dict)}))
        t.add_row(text(k.get("docked_at")), text(k.get("bay") or "-"), text(k.get("clips_on_card")),
                  text(k.get("clips_new")), text(rng), text(k.get("camera_offset_s")), text(kinds or "-"))
    con.print(t)
    for a in d["anomalies"]:
        con.print(text(f"{a.get('docked_at')}  {a.get('kind')}: {_facts(a)}"))


def register(main: click.Group, pass_ctx: Any, emit_json: Any) -> None:
    @main.command("camera")
    @click.argument("serial")
    @click.option("--docks", type=click.IntRange(1, MAX_DOCKS), default=20, show_default=True,
                  help="How many of the newest docks to show.")
    @click.option("--json", "as_json", is_flag=True)
    @pass_ctx
    def camera_cmd(c: Any, serial: str, docks: int, as_json: bool) -> None:
        """One camera across docks: dock history, clip numbers, anomalies, clock facts."""
        d = camera_dict(c.reader(must_exist=True), serial, docks)
        if as_json:
            emit_json(d)
        else:
            print_camera(d)
