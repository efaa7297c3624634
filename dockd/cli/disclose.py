"""``dockd disclose create|verify``: signed disclosure bags (issue #16; :mod:`dockd.agency.disclosure`).

``create`` reads central storage ([storage] of the config) and the trust log there, pinned by
``--root`` or ``[trust] root_pubkey``; ``verify`` needs nothing but the bag and the pinned root.
Exit codes: 0 ok / valid, 1 failed / invalid (every reason printed), 2 usage or configuration.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from dockd.agency.disclosure import DisclosureFailed
from dockd.core.errors import EXIT_FAILED, UsageError
from dockd.core.textsafe import printable

CASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _text(opt: str, value: str) -> str:
    from dockd.agency.disclosure import bagfmt

    try:
        return bagfmt.clean_value(value)
    except bagfmt.BagFormatError:
        raise UsageError(f"{opt} must be one line of printable text (1 to 4000 characters)") from None


def register(main: click.Group) -> None:
    @main.group()
    def disclose() -> None:
        """Hand clips over to prosecutors and defence as signed, offline-verifiable BagIt bags."""

    _register_create(disclose)
    _register_verify(disclose)
    _register_ledger(disclose)


def _register_create(disclose: click.Group) -> None:
    from dockd.cli.main import pass_ctx
    from dockd.cli.trust import _root_pub

    @disclose.command("create")
    @click.option("--case", required=True, help="Case number (letters, digits, . _ -; at most 64).")
    @click.option("--recipient", required=True, help="Who receives the bag (person or office), as printed.")
    @click.option("--authority", required=True, help="Court order, discovery request number, ...")
    @click.option("--clip", "clips", multiple=True, metavar="OBJECT_KEY", help="A clip's object key (repeatable).")
    @click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="The discloser's private key (enrolled for role discloser).")
    @click.option("--out", required=True, type=click.Path(path_type=Path), help="The bag directory to create.")
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path),
                  help="The agency root public key (default: [trust] root_pubkey).")
    @click.option("--from-bag", "parent", type=click.Path(path_type=Path),
                  help="Onward disclosure: take the clips (all, or those named by --clip) from this received bag.")
    @click.option("--trust", "tdir", type=click.Path(file_okay=False, path_type=Path),
                  help="With --from-bag: a newer trust directory than the one the parent bag carries.")
    @click.option("--zip", "as_zip", is_flag=True, help="Write the bag as one zip file at --out (e.g. CASE.zip).")
    @click.option("--camera", help="Take the clips of this camera (serial) recorded between --from and --to, "
                                   "per the verified clip index.")
    @click.option("--from", "t_from", metavar="TIME", help="With --camera: RFC 3339 (a time without zone is UTC).")
    @click.option("--to", "t_to", metavar="TIME", help="With --camera: RFC 3339 (a time without zone is UTC).")
    @click.option("--index-cache", type=click.Path(file_okay=False, path_type=Path),
                  help="With --camera: the completeness review's index cache to update and reuse (default: "
                       "a temporary one).")
    @click.option("--incident", help="Take the clips a signed completeness report matched to this incident "
                                     "(with --report), with its rows and justifications.")
    @click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
                  help="With --incident: the directory of a `dockd review report` (report.json, .csv, .html).")
    @click.option("--quiet", "-q", is_flag=True, help="No progress display on stderr (a bar on a terminal, "
                                                      "else a line every 10 s).")
    @pass_ctx
    def disclose_create(c, case: str, recipient: str, authority: str, clips: tuple[str, ...], key_file: Path,
                        out: Path, root_pem: Path | None, parent: Path | None, tdir: Path | None,
                        as_zip: bool, camera: str | None, t_from: str | None, t_to: str | None,
                        index_cache: Path | None, incident: str | None, report_dir: Path | None,
                        quiet: bool) -> None:
        """Build a signed BagIt bag of the named clips from central storage (or, with --from-bag, from a bag
        received earlier, chained to it). The bag is recorded in the case ledger once complete, then put in place."""
        from dockd.agency.disclosure import create as mk
        from dockd.trust import store as trustlog

        if not CASE.fullmatch(case):
            raise UsageError("--case must be 1 to 64 letters, digits, '.', '_' or '-' (it names the case ledger)")
        by_time = _time_range(camera, t_from, t_to, parent)
        if (incident is None) != (report_dir is None):
            raise UsageError("--incident and --report go together")
        if incident is not None and parent is not None:
            raise UsageError("--incident selects from central storage, not from a bag (--from-bag)")
        by_incident = (incident, report_dir) if incident is not None else None
        if not clips and parent is None and by_time is None and by_incident is None:
            raise UsageError("name at least one clip with --clip OBJECT_KEY, --camera with --from and --to, or "
                             "--incident with --report (or take a whole bag with --from-bag)")
        req = mk.Request(case=case, recipient=_text("--recipient", recipient),
                         authority=_text("--authority", authority), object_keys=list(clips), out=out,
                         created_at=mk.now_rfc3339(), as_zip=as_zip)
        root = _root_pub(c, root_pem)
        key = trustlog.load_signing_key(key_file)
        with contextlib.ExitStack() as stack:
            if parent is not None and parent.name.endswith(".zip") and parent.is_file() and not parent.is_symlink():
                from dockd.agency.disclosure.ziparchive import Unpacked

                # unpacked as hostile input (as verify does), beside the new bag: a case may be tens of GB
                parent = stack.enter_context(Unpacked(parent, out.resolve().parent))
            show = None if quiet else stack.enter_context(_Display(parent is not None))
            t, led = _create(c, req, root, key, parent, tdir, by_time, index_cache, by_incident, out, show)
        click.echo(printable(f"bag {out}: case {case}, {len(t['clips'])} clip(s), {len(t['items'])} payload files, "
                             f"signed by {t['sender']['key_id']} ({t['sender']['name']}) for {recipient}"
                             + ("" if led is not None else "; recorded in no ledger (no [storage] configured)")))


def _create(c, req, root, key, parent, tdir, by_time, index_cache, by_incident, out: Path, show=None):
    """Build the bag and record it (see create.build for the order); returns (transfer, ledger or None).
    ``show``: the progress display (None: --quiet)."""
    from dockd.agency.disclosure import create as mk
    from dockd.agency.disclosure import ledger

    backend, prefix, src, state = _source(c, root, parent, tdir, req, by_time, index_cache, by_incident)
    led = ledger.read(backend, prefix, req.case, state) if backend is not None else None
    req.previous = led.last_transfer() if led is not None else None

    def record(t: dict, tbytes: bytes, tagmanifest: bytes) -> None:
        # Written once the bag is complete and fsynced under its temporary name, before it is renamed
        # into place: a bag never exists under its name without its record, and a record never names a
        # bag that was not made (a crash in between leaves the complete bag under the temporary name).
        if led is not None:
            ledger.append(backend, prefix, led, ledger.transfer_entry(t, tbytes, tagmanifest, out.name), key)

    t = mk.build(src, state, key, req, progress=show, before_commit=record)
    return t, led


PLAIN_EVERY_S = 10.0  # stderr not a terminal (CI, a pipe, a log): one plain line at most this often


class _Display:
    """Renders :mod:`dockd.agency.disclosure.progress` events on stderr (stdout is never touched): on a
    terminal a ``rich`` bar (phase, bytes, clips verified, rate, time left) with its final state left on
    screen; otherwise no escape codes and no bar, only a plain line (``progress.line``) at most every
    :data:`PLAIN_EVERY_S` seconds, none for a shorter run. Events come from several threads: one lock."""

    def __init__(self, onward: bool):
        from dockd.agency.disclosure import progress as pg

        self._pg = pg
        self.model = pg.Model(pg.PARENT if onward else pg.RESOLVING)
        self._lock = threading.Lock()
        self._t0 = self._last = time.monotonic()
        self._bar: Any = None  # rich.progress.Progress, imported only for a terminal
        self._task: Any = None

    def __enter__(self) -> _Display:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[clips]}"),
                                 DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), refresh_per_second=4, redirect_stdout=False)
            self._bar.start()
            self._task = self._bar.add_task("", total=None, clips="")
            self._draw()
        return self

    def __call__(self, e) -> None:
        with self._lock:
            self.model.apply(e)
            if self._bar is not None:
                self._draw()
            elif time.monotonic() - self._last >= PLAIN_EVERY_S:
                self._last = time.monotonic()
                click.echo(self._pg.line(self.model.view(), self._last - self._t0), err=True)

    def _draw(self) -> None:
        v = self.model.view()
        self._bar.update(self._task, description=v.label, completed=v.bytes_done,
                         total=v.bytes_total if v.bytes_final else None,
                         clips=f"{v.clips_done}/{v.clips_total} clips")

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            with self._lock:
                self._draw()
                self._bar.stop()  # the last state stays on screen, above the result line (or the error)


def _time_range(camera: str | None, t_from: str | None, t_to: str | None, parent: Path | None):
    """(camera, from_ns, to_ns, from, to) for --camera/--from/--to, None without them; UsageError if partial."""
    if camera is None and t_from is None and t_to is None:
        return None
    if camera is None or t_from is None or t_to is None:
        raise UsageError("--camera, --from and --to go together")
    if parent is not None:
        raise UsageError("--camera selects from central storage, not from a bag (--from-bag)")
    from zoneinfo import ZoneInfo

    from dockd.agency.review.inputs import parse_time

    ns = []
    for opt, v in (("--from", t_from), ("--to", t_to)):
        try:
            ns.append(parse_time(v, ZoneInfo("UTC")))
        except ValueError:
            raise UsageError(f"{opt}: {printable(v)!r} is not an RFC 3339 time (e.g. 2026-03-01T10:00:00Z)") from None
    if ns[1] < ns[0]:
        raise UsageError("--to is before --from")
    return camera, ns[0], ns[1], t_from, t_to


def _source(c, root, parent: Path | None, tdir: Path | None, req, by_time=None, index_cache: Path | None = None,
            by_incident=None):
    """(backend, prefix, source, trust state): storage from the config; with --from-bag the parent bag, and
    storage (for the ledger) only if a config was named. ``by_time``: the clips of a camera in a time range
    (:mod:`dockd.agency.disclosure.select`) are added to ``req.object_keys``; ``by_incident`` (incident, report
    directory): the clips the report matched to it (:mod:`dockd.agency.disclosure.incident`), likewise."""
    from dockd.agency.disclosure import create as mk
    from dockd.storage import open_backend
    from dockd.trust import log as trust
    from dockd.trust import store as trustlog

    if parent is not None:
        from dockd.agency.disclosure import onward

        raws = trustlog.read_dir(tdir) if tdir is not None else None
        src, state = onward.from_bag(parent, root, raws, req.object_keys)
        if c.config_path is None or c.cfg.storage is None:
            return None, "", src, state
        return open_backend(c.cfg.storage), c.cfg.storage.prefix, src, state
    if tdir is not None:
        raise UsageError("--trust goes with --from-bag (from storage, the trust log in storage is used)")
    if c.cfg.storage is None:
        raise UsageError(f"no [storage] section in {c.cfg.path}: disclosure reads clips from central storage")
    backend, prefix = open_backend(c.cfg.storage), c.cfg.storage.prefix
    raws = trustlog.read_storage(backend, prefix)
    state = trust.load(root, raws)
    sel = None
    if by_time is not None:
        from dockd.agency.disclosure import select

        cam, from_ns, to_ns, from_text, to_text = by_time
        sel = select.by_camera(backend, prefix, state, cam, from_ns, to_ns, from_text, to_text, cache_dir=index_cache)
        if not sel.object_keys and not req.object_keys:
            raise DisclosureFailed(f"the verified clip index holds no clip of camera {printable(by_time[0])} "
                                   f"recorded between {by_time[3]} and {by_time[4]}"
                                   + (f" ({len(sel.record['unplaced'])} of its clips have no known start time)"
                                      if sel.record["unplaced"] else ""))
        req.object_keys = list(dict.fromkeys(req.object_keys + sel.object_keys))
        click.echo(printable(f"camera {by_time[0]}: {len(sel.object_keys)} clip(s) recorded in the range per the "
                             f"verified clip index; {len(sel.record['unplaced'])} of its clips have no known start "
                             "time and were not taken"), err=True)
    inc = None
    if by_incident is not None:
        from dockd.agency.disclosure import incident

        inc = incident.from_report(backend, prefix, state, by_incident[1], by_incident[0])
        req.object_keys = list(dict.fromkeys(req.object_keys + inc.object_keys))
        click.echo(printable(f"incident {by_incident[0]}: {inc.rows} row(s) of the verified completeness report, "
                             f"{len(inc.object_keys)} clip(s), {len(inc.files) - 1} justification(s)"), err=True)
    src = mk.from_storage(backend, prefix, state, raws, req.object_keys)
    if inc is not None:
        src.extra.update(inc.files)
    if sel is not None:
        from dockd.agency.disclosure.select import SELECTION_FILE

        src.extra[SELECTION_FILE] = sel.payload()
    return backend, prefix, src, state


def _register_verify(disclose: click.Group) -> None:
    from dockd.cli.main import pass_ctx
    from dockd.cli.trust import _root_pub

    @disclose.command("verify")
    @click.argument("bag", type=click.Path(path_type=Path))
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path),
                  help="The agency root public key, obtained separately (default: [trust] root_pubkey).")
    @click.option("--trust", "tdir", type=click.Path(file_okay=False, path_type=Path),
                  help="Judge by this (newer) trust directory instead of the log the bag carries.")
    @click.option("--json", "as_json", is_flag=True)
    @pass_ctx
    def disclose_verify(c, bag: Path, root_pem: Path | None, tdir: Path | None, as_json: bool) -> None:
        """Check a bag offline: fixity, completeness, profile, signatures and enrolments, station manifests,
        audit chains. Exit 0 valid, 1 invalid (every reason listed)."""
        from dockd.agency.disclosure import verify as vf
        from dockd.trust import store as trustlog

        root = _root_pub(c, root_pem)
        raws = trustlog.read_dir(tdir) if tdir is not None else None
        if bag.name.endswith(".zip") and bag.is_file() and not bag.is_symlink():
            from dockd.agency.disclosure.ziparchive import Unpacked

            with Unpacked(bag) as d:
                r = vf.verify(d, root, raws)
            r.bag = str(bag)
        else:
            r = vf.verify(bag, root, raws)
        if as_json:
            click.echo(json.dumps(r.as_json(), indent=2, sort_keys=True, ensure_ascii=True))
        else:
            for line in r.checked:
                click.echo(printable(f"ok: {line}"))
            for line in r.reasons:
                click.echo(printable(f"INVALID: {line}"))
            click.echo(printable(f"{bag}: {'valid' if r.ok else f'INVALID ({len(r.reasons)} reasons)'}"))
        sys.exit(0 if r.ok else EXIT_FAILED)



def _register_ledger(disclose: click.Group) -> None:
    from dockd.cli.main import pass_ctx
    from dockd.cli.trust import _root_pub

    def _agency(c, root_pem: Path | None):
        from dockd.storage import open_backend
        from dockd.trust import log as trust
        from dockd.trust import store as trustlog

        if c.cfg.storage is None:
            raise UsageError(f"no [storage] section in {c.cfg.path}: the disclosure ledger is in central storage")
        backend, prefix = open_backend(c.cfg.storage), c.cfg.storage.prefix
        return backend, prefix, trust.load(_root_pub(c, root_pem), trustlog.read_storage(backend, prefix))

    @disclose.command("ledger")
    @click.option("--case", required=True)
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--json", "as_json", is_flag=True)
    @pass_ctx
    def disclose_ledger(c, case: str, root_pem: Path | None, as_json: bool) -> None:
        """What was disclosed in CASE, to whom, when, under which authority, and whether it was acknowledged
        (the ledger is checked link by link first: exit 1 if it was tampered with)."""
        from dockd.agency.disclosure import ledger

        if not CASE.fullmatch(case):
            raise UsageError("--case must be 1 to 64 letters, digits, '.', '_' or '-'")
        backend, prefix, state = _agency(c, root_pem)
        led = ledger.read(backend, prefix, case, state)
        rows = led.rows()
        if as_json:
            click.echo(json.dumps({"case": case, "transfers": rows, "signer_invalid": led.flags}, indent=2,
                                  sort_keys=True, ensure_ascii=True))
        else:
            click.echo(f"case {case}: {len(rows)} disclosure(s), ledger chain intact")
            for r in rows:
                a = r["acknowledged"]
                click.echo(printable(f"{r['seq']:>4} {r['at']} {r['sender']['name']} -> {r['recipient']['name']} "
                                     f"under {r['authority']}: {r['clips']} clip(s), transfer "
                                     f"{r['transfer_sha256'][:16]} "
                                     + (f"acknowledged {a['at']} by {a['by']}" if a else "NOT acknowledged")))
            for seq, why in sorted(led.flags.items()):
                click.echo(printable(f"INVALID SIGNER: entry {seq}: {why}"))
        sys.exit(EXIT_FAILED if led.flags else 0)

    @disclose.command("receipt")
    @click.argument("bag", type=click.Path(path_type=Path))
    @click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="The recipient's private key (enrolled for role recipient).")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the receipt here.")
    def disclose_receipt(bag: Path, key_file: Path, out: Path | None) -> None:
        """Sign a receipt for BAG (its transfer record and tag manifest by digest), for the sender to record."""
        from dockd.agency.disclosure import create as mk
        from dockd.agency.disclosure import ledger
        from dockd.evidence import manifest as mf
        from dockd.trust import store as trustlog

        r = ledger.receipt_for(bag, trustlog.load_signing_key(key_file), mk.now_rfc3339())
        if out is not None:
            trustlog.write_new(out, mf.dumps(r))
        click.echo(mf.dumps(r).decode().rstrip())

    @disclose.command("ack")
    @click.argument("receipt", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="A discloser's private key: it signs the ledger entry.")
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path))
    @pass_ctx
    def disclose_ack(c, receipt: Path, key_file: Path, root_pem: Path | None) -> None:
        """Record a recipient's receipt in the case ledger (refused for a bag the ledger does not record)."""
        from dockd.agency.disclosure import create as mk
        from dockd.agency.disclosure import ledger
        from dockd.trust import store as trustlog

        backend, prefix, state = _agency(c, root_pem)
        r = ledger.check_receipt(trustlog.read_limited(receipt, ledger.MAX_ENTRY), state)
        e = ledger.ack(backend, prefix, r, state, trustlog.load_signing_key(key_file), mk.now_rfc3339())
        click.echo(printable(f"case {r['case']}: receipt of transfer {r['transfer_sha256'][:16]} by "
                             f"{r['signature']['key_id']} recorded as ledger entry {e['seq']}"))
