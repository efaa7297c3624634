"""``dockd disclose create|verify``: signed disclosure bags (issue #16; :mod:`dockd.agency.disclosure`).

``create`` reads central storage ([storage] of the config) and the trust log there, pinned by
``--root`` or ``[trust] root_pubkey``; ``verify`` needs nothing but the bag and the pinned root.
Exit codes: 0 ok / valid, 1 failed / invalid (every reason printed), 2 usage or configuration.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

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
    from dockd.cli.main import pass_ctx
    from dockd.cli.trust import _root_pub

    @main.group()
    def disclose() -> None:
        """Hand clips over to prosecutors and defence as signed, offline-verifiable BagIt bags."""

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
    @pass_ctx
    def disclose_create(c, case: str, recipient: str, authority: str, clips: tuple[str, ...], key_file: Path,
                        out: Path, root_pem: Path | None) -> None:
        """Build a signed BagIt bag of the named clips from central storage."""
        from dockd.agency.disclosure import create as mk
        from dockd.storage import open_backend
        from dockd.trust import log as trust
        from dockd.trust import store as trustlog

        if not CASE.fullmatch(case):
            raise UsageError("--case must be 1 to 64 letters, digits, '.', '_' or '-' (it names the case ledger)")
        if not clips:
            raise UsageError("name at least one clip with --clip OBJECT_KEY")
        req = mk.Request(case=case, recipient=_text("--recipient", recipient),
                         authority=_text("--authority", authority), object_keys=list(clips), out=out,
                         created_at=mk.now_rfc3339())
        root = _root_pub(c, root_pem)
        key = trustlog.load_signing_key(key_file)
        if c.cfg.storage is None:
            raise UsageError(f"no [storage] section in {c.cfg.path}: disclosure reads clips from central storage")
        backend, prefix = open_backend(c.cfg.storage), c.cfg.storage.prefix
        raws = trustlog.read_storage(backend, prefix)
        state = trust.load(root, raws)
        done = [0]

        def progress(n: int) -> None:
            done[0] += n
            if sys.stderr.isatty():
                click.echo(f"\r{done[0] >> 20} MiB downloaded and checked", err=True, nl=False)

        t = mk.build(backend, prefix, state, raws, key, req, progress=progress)
        if sys.stderr.isatty():
            click.echo("", err=True)
        click.echo(printable(f"bag {out}: case {case}, {len(t['clips'])} clip(s), {len(t['items'])} payload files, "
                             f"signed by {t['sender']['key_id']} ({t['sender']['name']}) for {recipient}"))

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
