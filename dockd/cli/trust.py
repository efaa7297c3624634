"""``dockd trust ...`` (the agency root, on an offline machine) and ``dockd keys request|rotate|install``
(on a station). The model is in :mod:`dockd.trust.log`; files and storage in :mod:`dockd.trust.store`.

The root's commands need no config and no storage: they read and append to a
trust directory (``--dir``) and read the root key from ``--root-key``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dockd.core.errors import EXIT_FAILED, ManifestInvalid, TrustInvalid, UsageError
from dockd.core.roles import ROLES

if TYPE_CHECKING:  # imported where used: every dockd command loads this module, few need cryptography
    from dockd.trust import log as trust

MAX_MANIFEST = 16 << 20  # a manifest lists a clip and its sidecars; far below this


def _now() -> str:
    from dockd.core.timefmt import rfc3339

    now = rfc3339(time.time())
    assert now is not None  # rfc3339 gives None only for a None time
    return now


def _time(opt: str, text: str) -> str:
    from dockd.trust import log as trust

    try:
        return trust.parse_time_arg(text)
    except ValueError as e:
        raise UsageError(f"{opt}: {e}") from None


def _root_pub(c, root_pem: Path | None):
    from dockd.trust import store as trustlog

    if root_pem is None:
        root_pem = c.cfg.trust.root_pubkey
        if root_pem is None:
            raise UsageError("no pinned agency root: pass --root agency-root.pub.pem or set [trust] root_pubkey")
    return trustlog.load_public(root_pem)


def trust_state(c, source: str, root_pem: Path | None) -> trust.TrustState:
    """The one verifier, from ``--trust DIR|storage`` and the pinned root."""
    from dockd.trust import store as trustlog

    root = _root_pub(c, root_pem)
    backend, prefix = None, ""
    if source == "storage":
        from dockd.storage import open_backend

        if c.cfg.storage is None:
            raise UsageError(f"--trust storage: no [storage] section in {c.cfg.path}")
        backend, prefix = open_backend(c.cfg.storage), c.cfg.storage.prefix
    return trustlog.open_state(root, source, backend, prefix)


def manifest_verify_trusted(c, manifest_file: Path, clip_file: Path | None, pubkey: Path | None, source: str,
                            root_pem: Path | None) -> None:
    from dockd.evidence import manifest as mf
    from dockd.trust import log as trust
    from dockd.trust import store as trustlog

    if pubkey is not None:
        raise UsageError("--pubkey and --trust exclude each other: with --trust the key comes from the trust log")
    try:
        m = trust.loads(trustlog.read_limited(manifest_file, MAX_MANIFEST), str(manifest_file), MAX_MANIFEST)
    except OSError as e:
        raise UsageError(f"{manifest_file}: {e.strerror}") from None
    except TrustInvalid as e:
        raise ManifestInvalid(e.args[0]) from None
    mf.check(m)  # form only; the key comes from the trust log
    state = trust_state(c, source, root_pem)
    v = state.verify_signed(m, "station", "offloaded_at")
    if not v.ok:
        raise ManifestInvalid(v.reason)
    if clip_file is not None:
        try:
            mf.check_file_hash(m, str(clip_file))
        except OSError as e:
            raise UsageError(f"{clip_file}: {e.strerror}") from None
    what = f" and {clip_file} matches it" if clip_file else ""
    click.echo(f"valid: signed by {m['signature']['key_id']}{what} (sha256 {m['clip']['sha256']}); {v.reason}; "
               f"agency {state.agency!r}, root {state.root_key_id}, trust log head seq {state.head_seq}")


def _dir_state(d: Path, root_key) -> trust.TrustState:
    from dockd.trust import log as trust
    from dockd.trust import store as trustlog

    return trust.load(root_key.public_key(), trustlog.read_dir(d))


def register(main: click.Group, keys: click.Group) -> None:
    @main.group("trust")
    def trust_grp() -> None:
        """The agency trust root and its log of enrolments and revocations."""

    _register_root_holder(trust_grp)
    _register_verifier(trust_grp)
    _register_keys(keys)


def _register_root_holder(trust_grp: click.Group) -> None:
    """``trust init|enrol|revoke``: what the holder of the root private key runs (offline)."""

    @trust_grp.command("init")
    @click.option("--agency", required=True, help="The agency's name, as it appears in every verification.")
    @click.option("--root-key", "root_key", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="Where to create the root private key (offline media; mode 0600; never overwritten).")
    @click.option("--dir", "tdir", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help="The trust directory: root.pub.pem and log/ (public; publish it).")
    def trust_init(agency: str, root_key: Path, tdir: Path) -> None:
        """Create the agency root key and the trust log's first statement."""
        from dockd.evidence import keys as keys_mod
        from dockd.trust import log as trust
        from dockd.trust import store as trustlog

        if not trust._name(agency):
            raise UsageError(f"--agency {agency!r}: printable text of 1-{trust.MAX_NAME} characters")
        if (tdir / "log" / "00000000.json").exists():
            raise UsageError(f"{tdir} already holds a trust log")
        k = trustlog.create_private(root_key)
        tdir.mkdir(parents=True, exist_ok=True)
        pem = keys_mod.public_pem(k.public_key())
        trustlog.write_new(tdir / "root.pub.pem", pem.encode())
        st = trust.root_statement(agency, k, _now())
        trustlog.append_dir(tdir, st)
        click.echo(f"agency root {st['root_key_id']} for {agency!r}; private key {root_key} (keep it offline); "
                   f"public key {tdir / 'root.pub.pem'}; trust log {tdir / 'log'}")
        click.echo(pem.rstrip())

    @trust_grp.command("enrol")
    @click.argument("request", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--root-key", "root_key", required=True, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--dir", "tdir", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option("--role", "roles", required=True, multiple=True, type=click.Choice(ROLES),
                  help="What the key may sign (repeatable).")
    @click.option("--until", "until", required=True, help="End of validity (YYYY-MM-DD or RFC 3339).")
    @click.option("--from", "from_", help="Start of validity (default: when the key was requested).")
    def trust_enrol(request: Path, root_key: Path, tdir: Path, roles: tuple[str, ...], until: str,
                    from_: str | None) -> None:
        """Sign an enrolment request with the root and append it to the trust log."""
        from dockd.trust import log as trust
        from dockd.trust import store as trustlog

        k = trustlog.load_private(root_key)
        state = _dir_state(tdir, k)
        req = trustlog.read_json_file(request, "request")
        st = trust.enrol_statement(state, req, list(roles), _time("--from", from_) if from_ else None,
                                   _time("--until", until), _now(), k)
        p = trustlog.append_dir(tdir, st)
        rot = f", rotation of {st['supersedes']}" if "supersedes" in st else ""
        click.echo(f"enrolled {st['key_id']} ({st['subject']['kind']} {st['subject']['name']!r}) for "
                   f"{', '.join(st['roles'])} from {st['valid_from']} until {st['valid_until']}{rot}: {p}")

    @trust_grp.command("revoke")
    @click.argument("key_id")
    @click.option("--from", "from_", required=True, help="Signatures made at or after this time are invalid.")
    @click.option("--reason", required=True)
    @click.option("--root-key", "root_key", required=True, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--dir", "tdir", required=True, type=click.Path(file_okay=False, path_type=Path))
    def trust_revoke(key_id: str, from_: str, reason: str, root_key: Path, tdir: Path) -> None:
        """Revoke a key from a given time (earlier signatures stay valid)."""
        from dockd.trust import log as trust
        from dockd.trust import store as trustlog

        k = trustlog.load_private(root_key)
        state = _dir_state(tdir, k)
        if key_id not in state.enrolments:
            raise UsageError(f"{key_id}: not enrolled in {tdir}")
        st = trust.revoke_statement(state, key_id, _time("--from", from_), reason, _now(), k)
        p = trustlog.append_dir(tdir, st)
        click.echo(f"revoked {key_id} from {st['from']}: {p}")


def _register_verifier(trust_grp: click.Group) -> None:
    """``trust publish|show|root|check``: what reads and checks the trust log against the pinned root."""
    from dockd.cli.main import pass_ctx

    @trust_grp.command("publish")
    @click.argument("tdir", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path),
                  help="Root public key to check the log with (default: [trust] root_pubkey).")
    @pass_ctx
    def trust_publish(c, tdir: Path, root_pem: Path | None) -> None:
        """Upload a verified trust directory's statements to the trust area in storage (never overwriting)."""
        from dockd.storage import open_backend
        from dockd.trust import log as trust
        from dockd.trust import store as trustlog

        raws = trustlog.read_dir(tdir)
        state = trust.load(_root_pub(c, root_pem), raws)
        if c.cfg.storage is None:
            raise UsageError(f"no [storage] section in {c.cfg.path}")
        w, p = trustlog.publish(open_backend(c.cfg.storage), c.cfg.storage.prefix, raws)
        click.echo(f"trust log of {state.agency!r} published: {w} new, {p} already there "
                   f"(head seq {state.head_seq}, sha256 {state.head_digest})")

    @trust_grp.command("show")
    @click.option("--trust", "source", required=True, metavar="DIR|storage")
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--json", "as_json", is_flag=True)
    @pass_ctx
    def trust_show(c, source: str, root_pem: Path | None, as_json: bool) -> None:
        """Verify the whole trust log (exit 1 naming the first bad statement) and list it."""
        state = trust_state(c, source, root_pem)
        if as_json:
            click.echo(json.dumps({"agency": state.agency, "root_key_id": state.root_key_id,
                                   "head_seq": state.head_seq, "head_sha256": state.head_digest,
                                   "statements": [{k: v for k, v in s.items() if k != "signature"}
                                                  for s in state.statements]}, indent=2, sort_keys=True,
                                  ensure_ascii=False))
            return
        click.echo(f"agency {state.agency!r}, root {state.root_key_id}: trust log intact, "
                   f"{len(state.statements)} statements, head sha256 {state.head_digest}")
        for s in state.statements:
            if s["kind"] == "enrol":
                what = (f"{s['key_id']} {s['subject']['kind']} {json.dumps(s['subject']['name'])} "
                        f"roles={','.join(s['roles'])} {s['valid_from']} .. {s['valid_until']}"
                        + (f" supersedes {s['supersedes']}" if "supersedes" in s else ""))
            elif s["kind"] == "revoke":
                what = f"{s['key_id']} from {s['from']} reason {json.dumps(s['reason'])}"
            else:
                what = f"agency {json.dumps(s['agency'])} root {s['root_key_id']}"
            click.echo(f"{s['seq']:>6} {s['issued_at']} {s['kind']:<7} {what}")

    @trust_grp.command("root")
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path),
                  help="A root public key file (default: [trust] root_pubkey).")
    @click.option("--pem", is_flag=True, help="Also print the key as PEM.")
    @pass_ctx
    def trust_root(c, root_pem: Path | None, pem: bool) -> None:
        """Print the pinned agency root's key id (what the agency publishes for verifiers to compare)."""
        from dockd.evidence import keys as keys_mod

        pub = _root_pub(c, root_pem)
        click.echo(keys_mod.key_id_of(pub))
        if pem:
            click.echo(keys_mod.public_pem(pub).rstrip())

    @trust_grp.command("check")
    @click.argument("key_id")
    @click.option("--role", required=True, type=click.Choice(ROLES))
    @click.option("--at", "at", required=True, help="The signing time, as the signed object states it.")
    @click.option("--trust", "source", required=True, metavar="DIR|storage")
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path))
    @pass_ctx
    def trust_check(c, key_id: str, role: str, at: str, source: str, root_pem: Path | None) -> None:
        """Was KEY_ID enrolled for ROLE at AT, and not revoked? Exit 0 yes, 1 no."""
        v = trust_state(c, source, root_pem).check(key_id, role, _time("--at", at))
        click.echo(("valid: " if v.ok else "invalid: ") + v.reason)
        sys.exit(0 if v.ok else EXIT_FAILED)


def _register_keys(keys: click.Group) -> None:
    """``keys request|rotate|install``: this station's side of enrolment."""
    from dockd.cli.main import pass_ctx

    @keys.command("request")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write it to this file.")
    @pass_ctx
    def keys_request(c, out: Path | None) -> None:
        """Print this station key's enrolment request (signed by the key; after a rotation also by the old one).

        On a station not yet run, the station key is made first (as `dockd run` would)."""
        from dockd.trust import store as trustlog

        c.as_data_dir_owner()  # the key and request files stay the daemon user's
        req, p = trustlog.station_request(c.cfg.data_dir, c.cfg.station.id, _now())
        data = trustlog.dumps(req)
        if out is not None:
            trustlog.write_new(out, data)
        click.echo(data.decode().rstrip())

    @keys.command("new")
    @click.option("--kind", type=click.Choice(["person", "office"]), default="person", show_default=True)
    @click.option("--name", required=True, help="Who holds the key, as verifiers will read it.")
    @click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="Where to create the private key (mode 0600; never overwritten).")
    @click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the request here.")
    def keys_new(kind: str, name: str, key_file: Path, out: Path | None) -> None:
        """Make a key for a reviewer, discloser or recipient and print its enrolment request.

        The root holder enrols it with `dockd trust enrol REQUEST --role reviewer|discloser|recipient`."""
        from dockd.trust import store as trustlog

        req = trustlog.person_request(key_file, kind, name, _now())
        data = trustlog.dumps(req)
        if out is not None:
            trustlog.write_new(out, data)
        click.echo(data.decode().rstrip())

    @keys.command("rotate")
    @pass_ctx
    def keys_rotate(c) -> None:
        """Make a new station key; its enrolment request is signed by the old key. Stops nothing: run it
        while the daemon is stopped; the new key needs enrolment like any other."""
        from dockd.queue.store import Queue
        from dockd.station.runtime import DataDirLock
        from dockd.trust import store as trustlog

        cfg = c.cfg
        with DataDirLock(cfg.data_dir):
            q: Queue = c.queue()
            try:
                old, new, req = trustlog.rotate(cfg.data_dir, cfg.station.id, _now(), before_swap=lambda o, n: q.record(
                    "key.rotated", detail={"from": o, "to": n}))
            finally:
                q.close()
        click.echo(f"station key rotated: {old} -> {new}; old key kept as retired. Enrol the new key: "
                   f"`dockd keys request` prints the request (signed by both keys)")

    @keys.command("install")
    @click.argument("source", metavar="DIR|storage")
    @click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path))
    @pass_ctx
    def keys_install(c, source: str, root_pem: Path | None) -> None:
        """Install the agency trust log (and so this station's enrolment) from a directory or from storage."""
        from dockd.evidence import keys as keys_mod
        from dockd.trust import store as trustlog

        cfg = c.cfg
        root = _root_pub(c, root_pem)
        if source == "storage":
            from dockd.storage import open_backend

            if cfg.storage is None:
                raise UsageError(f"storage: no [storage] section in {cfg.path}")
            raws = trustlog.read_storage(open_backend(cfg.storage), cfg.storage.prefix)
        else:
            raws = trustlog.read_dir(Path(source))
        state = trustlog.install(cfg.data_dir, root, raws)
        kid = keys_mod.load(cfg.data_dir).key_id
        v = state.check(kid, "station", _now())
        click.echo(f"trust log of {state.agency!r} installed (head seq {state.head_seq}); "
                   + (v.reason if v.ok else f"this station's key is NOT enrolled: {v.reason}"))
        sys.exit(0 if v.ok else EXIT_FAILED)
