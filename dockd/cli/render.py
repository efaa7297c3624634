"""Human-readable output of the read commands (rich tables), and the shape of ``status --json``."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from typing import TYPE_CHECKING

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dockd.config import Config
from dockd.core import clockfacts, mediafacts
from dockd.core.textsafe import printable
from dockd.core.timefmt import rfc3339
from dockd.queue.records import Clip
from dockd.station.runtime import DataDirLock
from dockd.station.status import read_status

if TYPE_CHECKING:  # the read commands pass either; neither is imported at run time (SQLAlchemy is slow to load)
    from dockd.queue.reads import QueueReader
    from dockd.queue.store import Queue


def text(value: object, style: str | None = None) -> Text:
    """A rich ``Text`` showing ``value`` literally (no markup, no emoji codes, controls escaped by
    :func:`dockd.core.textsafe.printable`): every string dockd did not write goes into a table this way."""
    return Text("" if value is None else printable(value), style=style or "")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def status_dict(cfg: Config, q: Queue | QueueReader) -> dict:
    """The stable ``dockd status --json`` object."""
    live = read_status(cfg.data_dir) or {}
    pid = DataDirLock(cfg.data_dir).holder()
    meters = live.get("meters", {}) if pid else {}
    cams = []
    facts = q.all_camera_facts()  # continuity (README "Continuity at the dock"): one row per camera
    for cam in q.cameras():
        prog = q.camera_progress(cam.serial)
        rate = meters.get("rate", {}).get(cam.serial, {})
        # Bytes moved so far in this dock: finished clips from the queue, plus the daemon's
        # live counters for clips still in flight (whichever is further along).
        live_bytes = {"offload": meters.get("offload_bytes", {}).get(cam.serial, 0),
                      "upload": meters.get("upload_bytes", {}).get(cam.serial, 0)}
        cams.append({
            "serial": cam.serial, "state": cam.state, "reason": cam.reason, "bay": cam.bay, "docked": bool(cam.docked),
            "vendor": cam.vendor, "model": cam.model, "profile": cam.profile, "source": cam.source,
            "docked_at": rfc3339(cam.docked_at), "updated_at": rfc3339(cam.updated_at), "progress": prog,
            "skipped": len(q.skips(cam.serial)),
            "rate_bytes_per_s": {"offload": rate.get("offload", 0.0), "upload": rate.get("upload", 0.0)},
            "bytes_done": {k: min(prog["found"]["bytes"], max(live_bytes[k], prog[stage]["bytes"]))
                           for k, stage in (("offload", "staged"), ("upload", "uploaded"))},
            "anomalies": (facts.get(cam.serial) or {}).get("open_anomalies", 0),  # at its last dock
        })
    try:
        free = shutil.disk_usage(cfg.data_dir).free
    except OSError:
        free = None
    oldest = q.oldest_pending()
    return {
        "station": cfg.station.id,
        "daemon": {"running": bool(pid), "pid": pid if pid and pid > 0 else None},
        "storage": {"url": cfg.storage.url if cfg.storage else None,
                    "endpoint_url": cfg.storage.endpoint_url if cfg.storage else None,
                    # as last seen by the running daemon (None when it is not running)
                    "reachable": (live.get("storage") or {}).get("reachable") if pid else None,
                    "checked_at": rfc3339((live.get("storage") or {}).get("checked_at")) if pid else None,
                    "error": (live.get("storage") or {}).get("error") if pid else None},
        "cameras": cams,
        "queue": q.counts(),
        "alarms": [{"kind": a["kind"], "message": a["message"], "at": rfc3339(a["at"])} for a in q.alarms()],
        "free_bytes": free,
        "oldest_pending_at": rfc3339(oldest),
        "oldest_pending_age_s": round(time.time() - oldest, 1) if oldest else None,
        "key": _key_status(cfg),
    }


def _key_status(cfg: Config) -> dict:
    """The station key and whether the agency's installed trust log enrols it (ingest goes on either way)."""
    from dockd.trust.store import station_status

    return station_status(cfg)


def _bar(done: int, total: int, rate: float, width: int = 20) -> Text:
    """A progress bar with bytes, rate and ETA for one stage of one camera."""
    if total <= 0:
        return Text("-")
    done = min(done, total)
    filled = int(width * done / total)
    eta = ""
    if rate > 0 and done < total:
        secs = int((total - done) / rate)
        eta = f" ETA {secs // 60}m{secs % 60:02d}s"
    t = Text("█" * filled, style="green")
    t.append("░" * (width - filled), style="grey50")
    t.append(f" {100 * done // total:3d}%\n{human_bytes(done)} / {human_bytes(total)}")
    if rate:
        t.append(f" {human_bytes(rate)}/s{eta}")
    return t


def _cameras_table(st: dict) -> Table:
    # Every value shown here came from a camera, the config or storage: render.text, never markup.
    t = Table(title=text(f"station {st['station']}"), title_justify="left")
    for col in ("bay", "camera", "state", "clips found/staged/uploaded/wiped", "offload", "upload", "note"):
        t.add_column(col, overflow="fold")
    for c in st["cameras"]:
        p = c["progress"]
        r = c["rate_bytes_per_s"]
        counts = " / ".join(str(p[k]["clips"]) for k in ("found", "staged", "uploaded", "wiped"))
        t.add_row(text(c["bay"] or "-"), text(c["serial"]), text(c["state"]), text(counts),
                  _bar(c["bytes_done"]["offload"], p["found"]["bytes"], r.get("offload", 0.0)),
                  _bar(c["bytes_done"]["upload"], p["found"]["bytes"], r.get("upload", 0.0)),
                  _note(c))
    return t


def _note(c: dict) -> Text:
    """The camera's reason, and a mark when its last dock reported anomalies (``dockd camera SERIAL``)."""
    n = c.get("anomalies") or 0
    t = text(c["reason"] or "")
    if n:
        t.append(f"{'; ' if c['reason'] else ''}{n} anomal{'y' if n == 1 else 'ies'} at last dock "
                 f"(dockd camera {printable(c['serial'])})", style="bold yellow")
    return t


def _summary(st: dict) -> Text:
    q = st["queue"]
    d = st["daemon"]
    line = "  ".join(f"{k} {v}" for k, v in q.items())
    txt = Text(f"daemon: {'running, pid ' + str(d['pid']) if d['running'] else 'not running'}\n")
    # Text.append never parses markup; printable() escapes the controls in what storage or config said.
    sto = st["storage"]
    seen = ""
    if sto["reachable"] is True:
        seen = f" (reachable, checked {printable(sto['checked_at'])})"
    elif sto["reachable"] is False:
        seen = f" (UNREACHABLE at {printable(sto['checked_at'])}: {printable(sto['error'])})"
    txt.append(f"storage: {printable(sto['url'] or 'not configured (nothing is wiped)')}{seen}\n")
    txt.append(f"queue: {line}\n")
    if st["free_bytes"] is not None:
        txt.append(f"free space: {human_bytes(st['free_bytes'])}\n")
    if st["oldest_pending_at"]:
        txt.append(f"oldest clip not yet uploaded: {printable(st['oldest_pending_at'])}\n")
    k = st.get("key")
    if k:
        txt.append(f"station key: {printable(k['detail'])}\n", style=None if k["enrolled"] else "yellow")
    for a in st["alarms"]:
        txt.append(f"ALARM {printable(a['kind'])}: {printable(a['message'])}\n", style="bold red")
    return txt


def _console() -> Console:
    """Wide enough for the tables when output goes to a file or a pipe."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=160)


def print_status(st: dict) -> None:
    con = _console()
    con.print(_cameras_table(st) if st["cameras"] else Text("no cameras seen yet"))
    con.print(_summary(st), end="")


def live_view(st: dict) -> Group:
    """What ``status --watch`` shows for one ``status_dict``: the bays table and the summary."""
    return Group(_cameras_table(st), _summary(st))


def watch(cfg: Config, q: Queue | QueueReader, interval: float = 1.0, *, once: bool = False) -> None:
    """The live ``status --watch`` view until Ctrl-C.

    Ctrl-C sets a flag that the loop checks between two reads: a KeyboardInterrupt raised inside a
    database read could leave a lock of the connection pool held, and the exit would then hang on it."""
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, lambda *_: stop.set()) if main else None
    try:
        with Live(refresh_per_second=4, screen=False) as live:
            while not stop.is_set():
                st = status_dict(cfg, q)
                live.update(live_view(st))
                if once:
                    return
                stop.wait(interval)
    finally:
        if main:
            signal.signal(signal.SIGINT, old)


def print_clips(clips: list[Clip]) -> None:
    t = Table()
    for col in ("id", "camera", "state", "size", "path", "sha256", "att", "last error"):
        t.add_column(col, overflow="fold")
    for c in clips:
        t.add_row(text(c.id), text(c.camera), text(c.state), text(human_bytes(c.size)), text(c.path),
                  text((c.sha256 or "")[:16]), text(c.attempts), text(c.last_error or ""))
    _console().print(t if clips else Text("no clips"))


def print_clip(d: dict) -> None:
    con = _console()
    t = Table(show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for k in ("id", "camera", "path", "state", "size", "mtime", "sha256", "object_key", "staged_path", "verify",
              "attempts", "last_error", "next_attempt_at", "staged_at", "uploaded_at", "wiped_at"):
        t.add_row(k, text(d.get(k)))
    if d.get("manifest"):
        t.add_row("signed by", text(d["manifest"]["signature"]["key_id"]))
    if d.get("media") is not None:
        t.add_row("media", text(mediafacts.summary(d["media"])))
    if d.get("station_clock") is not None:
        t.add_row("station clock", text(clockfacts.summary(d["station_clock"])))
    for sc in d.get("sidecars", []):
        t.add_row("sidecar", text(f"{sc['path']} {sc['sha256']}"))
    con.print(t)
    ev = Table(title="audit trail", title_justify="left")
    for col in ("seq", "at", "event", "detail"):
        ev.add_column(col, overflow="fold")
    for e in d["events"]:
        det = e["detail"]  # an altered row's detail comes back as its raw text: shown, never as markup
        ev.add_row(text(e["seq"]), text(e["at"]), text(e["event"]),
                   text(", ".join(f"{k}={v}" for k, v in det.items() if k not in ("from",)))
                   if isinstance(det, dict) else text(f"(not a JSON object: row altered) {det[:200]}"))
    con.print(ev)
    if d.get("skipped_on_camera"):
        sk = Table(title=text(f"skipped on camera {d['camera']}"), title_justify="left")
        sk.add_column("path", overflow="fold")
        sk.add_column("reason")
        for s in d["skipped_on_camera"]:
            sk.add_row(text(s["path"]), text(s["reason"]))
        con.print(sk)
