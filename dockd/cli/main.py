"""The ``dockd`` command line.

Read commands print readable tables, or with ``--json`` only JSON. Exit codes:
0 ok, 1 a check or job failed, 2 usage or configuration error. Errors are
one line on stderr (``dockd: error: ...``), never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from pathlib import Path

import click

from dockd import __version__
from dockd import config as config_mod
from dockd.core.errors import EXIT_FAILED, DockdError, NotFound, QueueUnreadable, UsageError
from dockd.core.lifecycle import CameraState, ClipEvent, ClipState
from dockd.core.textsafe import json_text, one_line, printable

# Clip ids and counts end up in SQLite, whose integers are 64-bit signed: anything larger is a usage error
# (exit 2) at parse time, not an OverflowError deep in a query.
SQLITE_MAX_INT = 2**63 - 1
CLIP_ID = click.IntRange(1, SQLITE_MAX_INT)
COUNT = click.IntRange(1, SQLITE_MAX_INT)

# The queue this process opened, for naming it when SQLite fails later (a truncated copy opens fine and
# only fails at the first query).
_queue_in_use: Path | None = None


def emit_json(obj: object) -> None:
    # json.dumps escapes C0 controls in strings, but with ensure_ascii=False leaves DEL, C1, bidi
    # overrides and lone surrogates raw: json_text escapes those too (the same JSON value).
    click.echo(json_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)))


def echo(line: str) -> None:
    """One plain output line holding text from a camera, config or storage: shown literally."""
    click.echo(printable(line))


class Ctx:
    def __init__(self, config_path: str | None):
        self.config_path = config_path
        self._cfg: config_mod.Config | None = None  # loaded on first use: --help needs no config

    @property
    def cfg(self) -> config_mod.Config:
        if self._cfg is None:
            self._cfg = config_mod.load(self.config_path)
        return self._cfg

    def as_data_dir_owner(self) -> None:
        """Root on a station acts on the data dir as the daemon's user ([sources] user), so files stay its."""
        if self.cfg.sources.drop_privileges:
            from dockd.camera.privileges import become_data_dir_owner

            become_data_dir_owner(self.cfg.data_dir, self.cfg.sources.user)

    def queue(self, *, must_exist: bool = False):
        from dockd.queue.store import Queue

        return Queue(self._checked_queue_path(must_exist))

    def reader(self, *, must_exist: bool = False):
        """The queue for a read-only command: opened read-only without SQLAlchemy when its schema is one
        this dockd reads (:class:`dockd.queue.reads.QueueReader`), else through :meth:`queue`, which
        creates, migrates or refuses it exactly as a writing command would."""
        from dockd.queue import fileformat, reads

        p = self._checked_queue_path(must_exist)
        if p.exists():
            fileformat.refuse_foreign(p)
            r = reads.QueueReader(p)
            if r.schema_version() == fileformat.LATEST_VERSION:  # older: Queue migrates it first
                return r
            r.close()
        return self.queue(must_exist=must_exist)

    def _checked_queue_path(self, must_exist: bool) -> Path:
        """The queue file's path once it is known to be a regular file (or absent) in a writable data dir."""
        from dockd.queue.fileformat import queue_path

        global _queue_in_use

        self.as_data_dir_owner()
        p = queue_path(self.cfg.data_dir)
        _queue_in_use = p
        try:
            st = p.lstat()
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise QueueUnreadable(p, e.strerror) from None
        if st is None:
            if must_exist:
                raise UsageError(f"no queue at {p}: dockd has not run on this data dir yet")
            try:
                p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as e:
                raise QueueUnreadable(p, f"cannot create data dir: {e.strerror}") from None
        elif not stat.S_ISREG(st.st_mode):
            # SQLite would open a FIFO (and block) or follow a symlink: only a regular file is a queue.
            raise QueueUnreadable(p, "not a regular file")
        # WAL mode needs to create queue.db-wal and -shm beside it, even to read.
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise QueueUnreadable(p, f"data dir {p.parent} is not writable (read-only file system or permissions)")
        return p


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar=None,
              help="Config file (default: $DOCKD_CONFIG, else /etc/dockd/dockd.toml).")
@click.version_option(__version__, prog_name="dockd")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """dockd: evidence-grade ingest for body-worn-camera docking stations.

    Copies every clip off a docked camera with its SHA-256 and a signed
    manifest, uploads it to central storage, proves the bytes arrived, and
    only then wipes it from the camera. On the agency's side: the trust log
    (trust, keys), the completeness review (review), disclosure packages for
    prosecutors and defence (disclose) and the fleet view (fleet).
    """
    ctx.obj = Ctx(config_path)


# ---------------------------------------------------------------- daemon


@main.command()
@click.option("--drain", is_flag=True,
              help="Process what is docked and queued, then exit (0 ok, 1 if something failed).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@pass_ctx
def run(c: Ctx, drain: bool, log_level: str) -> None:
    """Run the daemon (the systemd service runs this)."""
    from dockd.cli import logs
    from dockd.station.daemon import Daemon

    cfg = c.cfg
    logs.configure(log_level, stream=sys.stdout)
    d = Daemon(cfg, drain=drain)

    def _stop(signum, _frame):
        d.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.exit(d.run())


@main.command("import")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--camera", "serial", required=True, help="Serial of the camera the directory came from.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_ctx
def import_(c: Ctx, directory: Path, serial: str, as_json: bool) -> None:
    """Offload a directory (e.g. a card reader) without running the daemon."""
    from dockd.cli import logs
    from dockd.core.events import CameraInfo, valid_serial
    from dockd.evidence import keys
    from dockd.station.offloader import Offloader
    from dockd.station.runtime import DataDirLock

    if not valid_serial(serial):
        raise UsageError(f"--camera {serial!r}: a serial is 1-64 letters, digits, '.', '_' or '-'")
    # Every refusal comes before the first write (lock, queue, key, audit event).
    if directory.is_symlink():
        # The volume walk never follows a symlink (O_NOFOLLOW), so it would fail half-way: refuse now.
        raise UsageError(f"{directory}: is a symbolic link; name the directory it points to")
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory")
    cfg = c.cfg
    src, data = directory.resolve(), cfg.data_dir.resolve()
    if src == data or data in src.parents or src in data.parents:
        # Offloading the station's own staging area (or a tree holding it) would import evidence into itself.
        raise UsageError(f"{directory}: is, or is inside or contains, the data dir {cfg.data_dir}; refused")
    logs.configure("warning")
    c.as_data_dir_owner()
    with DataDirLock(cfg.data_dir):
        q = c.queue()
        key, created = keys.load_or_create(cfg.data_dir)
        if created:
            q.record("key.created", detail={"key_id": key.key_id})
        off = Offloader(cfg, q, key)
        off.recover()
        if not q.camera(serial):
            q.dock_camera(serial, source="import", record=False)  # camera.docked: by the offload, with facts
        q.record("import.started", camera=serial, detail={"directory": str(directory.resolve())})
        s = off.offload(CameraInfo(serial=serial, source="import"), directory)
        q.record("import.finished", camera=serial, detail=s.to_json())
        q.set_camera_state(serial, CameraState.HOLDING if s.staged or s.already else CameraState.READY, "imported")
    if as_json:
        emit_json(s.to_json())
    else:
        rate = s.bytes / s.seconds / 1e6 if s.seconds else 0
        echo(f"camera {serial}: {s.staged} staged, {s.already} already offloaded, {s.quarantined} quarantined, "
             f"{s.aborted} aborted, {len(s.skipped)} skipped; {s.bytes} bytes in {s.seconds:.2f} s "
             f"({rate:.1f} MB/s)")
        for sk in s.skipped:
            echo(f"  skipped {sk['path']}: {sk['reason']}")
        for e in s.errors:
            echo(f"  error {e}")
    if s.quarantined or s.aborted:
        sys.exit(EXIT_FAILED)


# ---------------------------------------------------------------- read commands


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--watch", is_flag=True, help="Live view, refreshed every second (Ctrl-C to leave).")
@pass_ctx
def status(c: Ctx, as_json: bool, watch: bool) -> None:
    """Bays, cameras, queue counts, alarms."""
    from dockd.cli import render

    cfg = c.cfg
    q = c.reader()
    if watch:
        render.watch(cfg, q)
        return
    st = render.status_dict(cfg, q)
    if as_json:
        emit_json(st)
    else:
        render.print_status(st)


@main.command("queue")
@click.option("--state", type=click.Choice([str(s) for s in ClipState]), help="Only clips in this state.")
@click.option("--camera", help="Only clips of this camera serial.")
@click.option("--limit", type=COUNT, help="At most this many clips.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def queue_cmd(c: Ctx, state: str | None, camera: str | None, limit: int | None, as_json: bool) -> None:
    """List clips in the queue."""
    from dockd.cli import render

    clips = c.reader().clips(state=state, camera=camera, limit=limit)
    if as_json:
        emit_json([x.to_json() for x in clips])
    else:
        render.print_clips(clips)


@main.command()
@click.argument("clip_id", type=CLIP_ID)
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def show(c: Ctx, clip_id: int, as_json: bool) -> None:
    """Everything about one clip: state, hashes, manifest, audit trail."""
    from dockd.cli import render

    q = c.reader(must_exist=True)
    clip = q.clip(clip_id)
    d = clip.to_json()
    d["manifest"] = json.loads(clip.manifest) if clip.manifest else None
    for k in ("media", "station_clock"):  # signed facts about the file and the station clock (in the manifest)
        d[k] = d["manifest"].get(k) if isinstance(d["manifest"], dict) else None
    d["sidecars"] = [{k: v for k, v in sc.items() if k != "clip_id"} for sc in q.sidecars(clip_id)]
    d["skipped_on_camera"] = q.skips(clip.camera)
    d["events"] = [{k: r[k] for k in ("seq", "at", "event", "detail")} for r in q.audit_rows(clip=clip_id)]
    if as_json:
        emit_json(d)
    else:
        render.print_clip(d)


@main.command()
@click.option("--camera", help="Only events of this camera.")
@click.option("--clip", "clip_id", type=CLIP_ID, help="Only events of this clip.")
@click.option("--since", help="Only events at or after this RFC 3339 time (e.g. 2026-11-21T00:00:00Z).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one event each, with their hashes.")
@click.option("--verify", "verify_chain", is_flag=True, help="Recompute the hash chain; exit 1 at the first bad row.")
@click.option("--remote", is_flag=True,
              help="With --verify: also compare the chain with the signed anchors in storage (catches a cut tail).")
@click.option("--trust", "trust_src", metavar="DIR|storage",
              help="With --verify: each signed head's key must be enrolled for `station` at the head's time.")
@click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path),
              help="The agency root public key to pin (default: [trust] root_pubkey).")
@pass_ctx
def audit(c: Ctx, camera: str | None, clip_id: int | None, since: str | None, as_json: bool,
          verify_chain: bool, remote: bool, trust_src: str | None, root_pem: Path | None) -> None:
    """The hash-chained audit log."""
    if remote and not verify_chain:
        raise UsageError("--remote goes with --verify")
    q = c.queue(must_exist=True)
    if verify_chain:
        from dockd.cli.trust import trust_state
        from dockd.station.auditlog import check_heads
        from dockd.trust.store import known_public_keys

        n, bad = q.verify_audit()
        if bad:
            echo(f"audit chain BROKEN at seq {bad[0]}: {bad[1]} ({n} rows checked)")
            sys.exit(EXIT_FAILED)
        heads = q.audit_head_count()
        if heads:
            badh = check_heads(q, known_public_keys(c.cfg.data_dir),
                               trust_state(c, trust_src, root_pem) if trust_src else None)
            if badh:
                echo(f"audit chain BROKEN at seq {badh[0]}: {badh[1]}")
                sys.exit(EXIT_FAILED)
        if not remote:
            click.echo(f"audit chain intact: {n} rows, {heads} signed heads verified")
            return
        _audit_remote(c, q, n, heads)
        return
    rows = q.audit_rows(camera=camera, clip=clip_id, since=since)
    for r in rows:
        if as_json:
            click.echo(json_text(json.dumps(r, sort_keys=True, ensure_ascii=False)))
        else:
            who = " ".join(x for x in (f"camera={r['camera']}" if r["camera"] else "",
                                       f"clip={r['clip']}" if r["clip"] is not None else "") if x)
            echo(f"{r['seq']:>6} {r['at']} {r['event']:<24} {who} {json.dumps(r['detail'], sort_keys=True)}")


def _audit_remote(c: Ctx, q, n: int, n_heads: int) -> None:
    """The local chain (already intact) against the anchors in storage; exit 1 on TRUNCATED or BROKEN."""
    from dockd.core.errors import StorageError, StorageNotConfigured
    from dockd.evidence import keys as keys_mod
    from dockd.station import anchors
    from dockd.storage import open_backend
    from dockd.storage.base import StoreFailure

    cfg = c.cfg
    if cfg.storage is None:
        raise StorageNotConfigured(cfg.path)
    try:
        got = anchors.collect(open_backend(cfg.storage), cfg.storage.prefix, cfg.station.id,
                              keys_mod.load(cfg.data_dir).public)
    except StoreFailure as e:
        raise StorageError(str(e)) from None
    last_seq, _ = q.last_audit()
    bad = anchors.compare(last_seq, q.audit_hashes_at(a.seq for a in got.anchors), got.anchors)
    if bad:
        click.echo(f"audit chain {bad[0]} at seq {bad[1]}: {bad[2]}")
        sys.exit(EXIT_FAILED)
    newest = max((a.seq for a in got.anchors), default=0)
    ignored = f"; {got.ignored} objects ignored (not signed by this station's key)" if got.ignored else ""
    click.echo(f"audit chain intact: {n} rows, {n_heads} signed heads verified, {len(got.anchors)} anchors in "
               f"storage agree (newest seq {newest}; rows after it are not anchored yet){ignored}")


# ---------------------------------------------------------------- keys and manifests


@main.group()
def keys() -> None:
    """The station's Ed25519 signing key."""


@keys.command("show")
@click.option("--pem", is_flag=True, help="Print the public key as PEM (SubjectPublicKeyInfo).")
@pass_ctx
def keys_show(c: Ctx, pem: bool) -> None:
    """Print the key id (or the public key)."""
    from dockd.evidence import keys as keys_mod

    k = keys_mod.load(c.cfg.data_dir)
    click.echo(keys_mod.public_pem(k.public).rstrip() if pem else k.key_id)


@main.group()
def manifest() -> None:
    """Signed clip manifests."""


@manifest.command("verify")
@click.argument("manifest_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--clip", "clip_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also check this file's size and SHA-256 against the manifest.")
@click.option("--pubkey", type=click.Path(dir_okay=False, path_type=Path),
              help="Station public key PEM (default: this station's key, if a config is readable).")
@click.option("--trust", "trust_src", metavar="DIR|storage",
              help="Check against the agency trust log instead: the signing key must have been enrolled for "
                   "`station` and not revoked at the manifest's offloaded_at.")
@click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path),
              help="With --trust: the agency root public key to pin (default: [trust] root_pubkey).")
@pass_ctx
def manifest_verify(c: Ctx, manifest_file: Path, clip_file: Path | None, pubkey: Path | None,
                    trust_src: str | None, root_pem: Path | None) -> None:
    """Check a manifest's signature (and a clip against it). Exit 0 valid, 1 invalid."""
    if trust_src is not None:
        from dockd.cli.trust import manifest_verify_trusted

        return manifest_verify_trusted(c, manifest_file, clip_file, pubkey, trust_src, root_pem)
    from dockd.evidence import keys as keys_mod
    from dockd.evidence import manifest as mf
    from dockd.evidence.localfile import read_regular

    m = mf.read(str(manifest_file))  # regular file, <= 1 MiB, strict I-JSON (no duplicate names, ...)
    if pubkey is not None:
        pem = read_regular(pubkey, 64 << 10)
        if pem is None:
            raise UsageError(f"{pubkey}: larger than 64 KiB, not a PEM public key")
        pub = keys_mod.load_public_pem(pem)
    else:
        pub = keys_mod.load(c.cfg.data_dir).public
    mf.check(m, pub)
    if clip_file is not None:
        try:
            mf.check_file_hash(m, str(clip_file))  # regular files only: a FIFO or /dev/zero is refused
        except OSError as e:
            raise UsageError(f"{clip_file}: {e.strerror}") from None
    what = f" and {clip_file} matches it" if clip_file else ""
    echo(f"valid: signed by {m['signature']['key_id']}{what} (sha256 {m['clip']['sha256']})")


# ---------------------------------------------------------------- technician commands


@main.command()
@click.argument("clip_ids", type=CLIP_ID, nargs=-1)
@click.option("--all-failed", is_flag=True, help="Every failed clip.")
@click.option("--camera", help="Failed clips of this camera.")
@pass_ctx
def replay(c: Ctx, clip_ids: tuple[int, ...], all_failed: bool, camera: str | None) -> None:
    """Put failed clips back in the upload queue."""
    q = c.queue(must_exist=True)
    if not (clip_ids or all_failed or camera):
        raise UsageError("name clip ids, or use --all-failed or --camera SERIAL")
    targets = q.clips(ids=list(clip_ids)) if clip_ids else q.clips(state=ClipState.FAILED, camera=camera)
    missing = set(clip_ids) - {x.id for x in targets}
    if missing:
        raise NotFound("clip", ", ".join(map(str, sorted(missing))))
    bad = 0
    for clip in targets:
        if clip.state is not ClipState.FAILED:
            echo(f"clip {clip.id}: is {clip.state}, not failed; left alone")
            bad += 1
            continue
        q.transition(clip.id, ClipEvent.REPLAY, attempts=0, next_attempt_at=None,
                     detail={"by": os.environ.get("SUDO_USER") or os.environ.get("USER") or "?",
                             "previous_error": clip.last_error})
        echo(f"clip {clip.id}: replayed (was: {clip.last_error})")
    if not targets:
        click.echo("nothing to replay")
    sys.exit(EXIT_FAILED if bad else 0)


@main.command()
@click.argument("clip_ids", type=CLIP_ID, nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every clip that has a staged copy or an object.")
@click.option("--remote", is_flag=True, help="Also check central storage (HEAD with checksum).")
@click.option("--deep", is_flag=True, help="With --remote: download each object and hash it.")
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def verify(c: Ctx, clip_ids: tuple[int, ...], all_: bool, remote: bool, deep: bool, as_json: bool) -> None:
    """Re-hash staged copies (and check stored objects). Exit 1 and a list on any mismatch."""
    from dockd.cli.verify import verify_clips

    if not (clip_ids or all_):
        raise UsageError("name clip ids or use --all")
    q = c.queue(must_exist=True)
    results = verify_clips(c.cfg, q, list(clip_ids) or None, remote=remote or deep, deep=deep)
    bad = [r for r in results if not r["ok"]]
    if as_json:
        emit_json(results)
    else:
        for r in results:
            echo(f"clip {r['id']}: {'ok' if r['ok'] else 'MISMATCH'}  " + "; ".join(r["checks"]))
        click.echo(f"{len(results)} checked, {len(bad)} mismatched")
    sys.exit(EXIT_FAILED if bad else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@pass_ctx
def doctor(c: Ctx, as_json: bool) -> None:
    """Check this station's set-up, one line per check. Exit 1 if any check fails."""
    from dockd.cli.doctor import run_checks

    results = run_checks(c.config_path)
    if as_json:
        emit_json(results)
    else:
        for r in results:
            echo(f"{'PASS' if r['ok'] else 'FAIL'}  {r['check']:<14} {r['detail']}"
                       + ("" if r["ok"] else f"  -> {r['fix']}"))
    sys.exit(0 if all(r["ok"] for r in results) else EXIT_FAILED)


# ---------------------------------------------------------------- the other command groups
# Each module registers its commands on `main`; each imports its heavy libraries inside its commands, so
# that `dockd --help` and the read commands stay fast (tests/unit/test_queue_reader.py checks it).
from dockd.cli import camera as cli_camera  # noqa: E402 - `dockd camera SERIAL`: continuity at the dock
from dockd.cli import disclose as cli_disclose  # noqa: E402 - `dockd disclose ...`: packages for prosecutors
from dockd.cli import fleet as cli_fleet  # noqa: E402 - `dockd fleet ...`: every station from its heartbeats
from dockd.cli import index as cli_index  # noqa: E402 - `dockd index export|verify`: the signed clip index
from dockd.cli import review as cli_review  # noqa: E402 - `dockd review ...`: the completeness review
from dockd.cli import trust as cli_trust  # noqa: E402 - `dockd trust ...` and the key enrolment commands

cli_trust.register(main, keys)
cli_camera.register(main, pass_ctx, emit_json)
cli_index.register(main, pass_ctx)
cli_review.register(main, pass_ctx, echo, emit_json)
cli_disclose.register(main)
main.add_command(cli_fleet.fleet)


def entry() -> None:
    """Console entry point: one-line errors with their exit codes, never a traceback."""
    try:
        main.main(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("dockd: aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.UsageError as e:
        cmd = e.ctx.command_path if e.ctx else "dockd"
        # click quotes the offending argument: it may be megabytes long or hold terminal escapes
        msg = one_line(" ".join(e.format_message().split()))
        click.echo(f"dockd: error: {msg} (see `{cmd} --help`)", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"dockd: error: {one_line(' '.join(e.format_message().split()))}", err=True)
        sys.exit(e.exit_code)
    except DockdError as e:
        click.echo(f"dockd: error: {e.message()}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILED)
    except Exception as e:  # noqa: BLE001 - last resort: one line, and the traceback only on request
        if os.environ.get("DOCKD_DEBUG"):
            raise
        known = _known_failure(e)
        if known is not None:
            click.echo(f"dockd: error: {known.message()}", err=True)
            sys.exit(known.exit_code)
        click.echo(f"dockd: internal error: {one_line(f'{type(e).__name__}: {e}')} "
                   "(set DOCKD_DEBUG=1 for a traceback)", err=True)
        sys.exit(EXIT_FAILED)


def _known_failure(e: Exception) -> DockdError | None:
    """The operator-facing error for a failure of the environment rather than of dockd.

    SQLite errors mean the queue file is damaged, truncated, not ours or not writable (a corrupt
    page may only be met at the first query that reads it); an OSError names a file the system
    refused. Both are one line and exit 1.
    """
    import sqlite3

    from dockd.queue.fileformat import QUEUE_FILE

    orig = getattr(e, "orig", None)  # sqlalchemy wraps the DB-API error
    if isinstance(orig, sqlite3.Error) or isinstance(e, sqlite3.Error):
        return QueueUnreadable(_queue_in_use or QUEUE_FILE, orig if isinstance(orig, sqlite3.Error) else e)
    if isinstance(e, OSError):
        where = e.filename if e.filename is not None else "dockd"
        return DockdError(f"{where}: {e.strerror or e}")
    return None
