"""``dockd index export`` and ``dockd index verify``: the signed clip index in storage (docs/clip-index.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from dockd.core.errors import EXIT_FAILED, StorageError, StorageNotConfigured, UsageError
from dockd.core.textsafe import json_text, printable


def register(main: click.Group, pass_ctx) -> None:
    @main.group("index")
    def index_grp() -> None:
        """The signed clip index in storage: one line per clip uploaded and per dock, per station and day."""

    @index_grp.command("export")
    @pass_ctx
    def index_export(c) -> None:
        """Upload every index segment due now, the current day's included (e.g. before decommissioning)."""
        from dockd.cli import logs
        from dockd.evidence import keys
        from dockd.station import clipindex
        from dockd.storage import open_backend
        from dockd.storage.base import StoreFailure

        cfg = c.cfg
        if cfg.storage is None:
            raise StorageNotConfigured(cfg.path)
        logs.configure("warning")
        q = c.queue(must_exist=True)
        key = keys.load(cfg.data_dir)
        try:
            done = clipindex.export(q, open_backend(cfg.storage), key, cfg.station.id, cfg.storage.prefix,
                                    _now(), interval_s=cfg.index.interval_s, force=True)
        except StoreFailure as e:
            raise StorageError(f"{e}; what was planned is uploaded by the next export") from None
        last = clipindex.segments(q)
        tail = f"; last segment {last[-1]['seq']} covers audit rows up to {last[-1]['audit_to']}" if last else ""
        click.echo(f"{len(done)} index segments exported{tail}")

    @index_grp.command("verify")
    @click.option("--station", help="The station whose index to check (default: this one).")
    @click.option("--trust", "trust_src", metavar="DIR|storage",
                  help="Each head's key must be enrolled for `station` (this station's name) at the head's time.")
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path),
                  help="With --trust: the agency root public key to pin (default: [trust] root_pubkey).")
    @click.option("--pubkey", type=click.Path(dir_okay=False, path_type=Path),
                  help="The station's public key PEM (default: this station's keys, current and retired).")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object: segments, lines, problems.")
    @pass_ctx
    def index_verify(c, station: str | None, trust_src: str | None, root_pem: Path | None, pubkey: Path | None,
                     as_json: bool) -> None:
        """Check a station's index in storage: the chain of signed heads and every body. Exit 0 intact, 1 not."""
        from dockd.evidence.clipindex import verify_chain
        from dockd.storage import open_backend
        from dockd.storage.base import StoreFailure
        from dockd.storage.indexstore import read_station

        if trust_src and pubkey:
            raise UsageError("--pubkey and --trust exclude each other: with --trust the key comes from the trust log")
        cfg = c.cfg
        if cfg.storage is None:
            raise StorageNotConfigured(cfg.path)
        st = station or cfg.station.id
        resolver = _resolver(c, st, trust_src, root_pem, pubkey)
        backend = open_backend(cfg.storage)
        n = clips = docks = 0
        try:
            check = verify_chain(st, read_station(backend, cfg.storage.prefix, st), resolver,
                                 prefix=cfg.storage.prefix)
            for seg in check:
                n, clips, docks = n + 1, clips + seg.head["clips"]["lines"], docks + seg.head["docks"]["lines"]
        except StoreFailure as e:
            raise StorageError(str(e)) from None
        # Nothing found vouches for nothing: "intact" needs at least one verified head (a mistyped
        # --station must not pass).
        ok = check.ok and check.last is not None
        if as_json:
            click.echo(json_text(json.dumps({
                "station": st, "ok": ok, "segments_verified": n, "clips": clips, "docks": docks,
                "last": {"seq": check.last[0], "head_hash": check.last[1]} if check.last else None,
                "problems": [{"seq": p.seq, "reason": p.reason, "chain_broken": p.chain} for p in check.problems],
            }, sort_keys=True, ensure_ascii=False)))
        elif check.last is None and not check.problems:
            click.echo(f"no clip index segments of station {printable(st)} in storage")
        else:
            for p in check.problems:
                click.echo(printable(str(p)))
            click.echo(f"clip index of station {printable(st)} {'intact' if ok else 'NOT intact'}: {n} segments "
                       f"verified ({clips} clips, {docks} docks)")
        if not ok:
            sys.exit(EXIT_FAILED)


def _now() -> float:
    import time

    return time.time()


def _resolver(c, station: str, trust_src: str | None, root_pem: Path | None, pubkey: Path | None):
    if trust_src:
        from dockd.cli.trust import trust_state

        return trust_state(c, trust_src, root_pem)
    from dockd.evidence import keys as keys_mod

    if pubkey is not None:
        from dockd.evidence.localfile import read_regular

        pem = read_regular(pubkey, 64 << 10)
        if pem is None:
            raise UsageError(f"{pubkey}: larger than 64 KiB, not a PEM public key")
        return keys_mod.load_public_pem(pem)
    if station != c.cfg.station.id:
        raise UsageError(f"--station {station}: give --pubkey or --trust (this station holds only its own keys)")
    from dockd.trust.store import known_public_keys

    return known_public_keys(c.cfg.data_dir)
