"""``dockd review fetch|justify|report|verify``: the completeness review, run centrally (issue #15).

Reads ``[storage]``, ``[trust] root_pubkey`` and ``[review]`` from the config (README "Completeness review").
The model is in :mod:`dockd.agency.review`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from dockd.core.errors import EXIT_FAILED, UsageError
from dockd.core.textsafe import printable

TRUST_OPT = click.option("--trust", "source", default="storage", show_default=True, metavar="storage|DIR",
                         help="Where the trust log is: central storage or a trust directory.")
ROOT_OPT = click.option("--root", "root_pem", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="The agency root public key (default: [trust] root_pubkey).")
CACHE_OPT = click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="The local index cache (default: [review] cache_dir).")
KEY_OPT = click.option("--key", "key_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                       help="The reviewer's signing key (default: [review] reviewer_key).")


def _now() -> str:
    from dockd.agency.review.run import fmt

    return fmt(time.time_ns())


def _time_ns(opt: str, text: str) -> int:
    from dockd.trust.log import parse_time_arg, time_ns

    try:
        return time_ns(parse_time_arg(text))
    except ValueError as e:
        raise UsageError(f"{opt}: {e}") from None


def _backend(c):
    from dockd.storage import open_backend

    if c.cfg.storage is None:
        raise UsageError(f"dockd review needs a [storage] section in {c.cfg.path}")
    return open_backend(c.cfg.storage), c.cfg.storage.prefix


def _key(c, key_file: Path | None):
    from dockd.trust.store import load_signing_key

    p = key_file or (Path(c.cfg.review.reviewer_key) if c.cfg.review.reviewer_key else None)
    if p is None:
        raise UsageError("no reviewer key: pass --key FILE or set [review] reviewer_key")
    return load_signing_key(p)


def _cache(c, cache_dir: Path | None):
    from dockd.agency.review.index import Cache

    return Cache(cache_dir or c.cfg.review.cache_dir)


def register(main: click.Group, pass_ctx, echo, emit_json) -> None:
    @main.group("review")
    def review_grp() -> None:
        """The completeness review: every incident, every officer on it, and whether the video exists."""

    @review_grp.command("fetch")
    @TRUST_OPT
    @ROOT_OPT
    @CACHE_OPT
    @click.option("--json", "as_json", is_flag=True, help="JSON output.")
    @pass_ctx
    def fetch_cmd(c, source: str, root_pem: Path | None, cache_dir: Path | None, as_json: bool) -> None:
        """Fetch the stations' new index segments, verify them, cache them. Exit 1 if any was left out."""
        from dockd.agency.review import index
        from dockd.cli.trust import trust_state

        state = trust_state(c, source, root_pem)
        backend, prefix = _backend(c)
        cache = _cache(c, cache_dir)
        t0 = time.monotonic()
        r = index.fetch(backend, prefix, state, cache, c.cfg.review.fetch_concurrency,
                        procs=c.cfg.review.fetch_procs, storage=c.cfg.storage)
        total = len(cache.segments())
        if as_json:
            emit_json({"new_segments": r.new_segments, "new_clips": r.new_clips, "segments": total,
                       "problems": r.problems, "seconds": round(time.monotonic() - t0, 3)})
        else:
            echo(f"fetched {r.new_segments} new segments ({r.new_clips} clips) in {time.monotonic() - t0:.1f} s; "
                 f"{total} segments cached")
            for p in r.problems:
                echo(f"LEFT OUT  {p}")
        sys.exit(EXIT_FAILED if r.problems else 0)

    @review_grp.command("justify")
    @click.argument("incident")
    @click.option("--officer", required=True, help="The officer's id, as in the CAD export.")
    @click.option("--reason", required=True, help="A reason code of [review] reason_codes.")
    @click.option("--note", required=True, help="Why the video is missing, in words.")
    @KEY_OPT
    @TRUST_OPT
    @ROOT_OPT
    @pass_ctx
    def justify_cmd(c, incident: str, officer: str, reason: str, note: str, key_file: Path | None, source: str,
                    root_pem: Path | None) -> None:
        """Record (signed, appended to the log in storage) why video is missing for INCIDENT and an officer."""
        from dockd.agency.review import justify
        from dockd.cli.trust import trust_state

        state = trust_state(c, source, root_pem)
        backend, prefix = _backend(c)
        e = justify.append(backend, prefix, state, _key(c, key_file), incident=incident, officer=officer,
                           reason=reason, note=note, at=_now(), reason_codes=c.cfg.review.reason_codes)
        sup = f", superseding entry {e['supersedes']}" if e["supersedes"] else ""
        echo(f"justification {e['seq']} recorded for incident {incident} officer {officer}: {reason}{sup}")

    @review_grp.command("report")
    @click.option("--from", "from_", required=True, help="First day (YYYY-MM-DD or RFC 3339), inclusive.")
    @click.option("--to", "to", required=True, help="End (YYYY-MM-DD or RFC 3339), exclusive.")
    @click.option("--roster", required=True, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--cad", required=True, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help="Directory for report.json (signed), report.csv and report.html.")
    @click.option("--unit", default=None, help="Only this unit.")
    @click.option("--officer", default=None, help="Only this officer.")
    @click.option("--now", "now", default=None, help="The review's 'now' for pending (default: now; a re-run "
                                                     "passes the report's as_of).")
    @click.option("--justifications-upto", "upto", type=click.IntRange(0, 2**53), default=None,
                  help="Use justification entries up to this seq (a re-run passes the report's last).")
    @click.option("--fetch/--no-fetch", default=True, show_default=True, help="Fetch new index segments first.")
    @KEY_OPT
    @TRUST_OPT
    @ROOT_OPT
    @CACHE_OPT
    @pass_ctx
    def report_cmd(c, from_: str, to: str, roster: Path, cad: Path, out: Path, unit: str | None,
                   officer: str | None, now: str | None, upto: int | None, fetch: bool, key_file: Path | None,
                   source: str, root_pem: Path | None, cache_dir: Path | None) -> None:
        """Match the CAD export against the index and write the signed report; print the summary."""
        from dockd.agency.review import index, justify, run
        from dockd.cli.trust import trust_state

        f_ns, t_ns = _time_ns("--from", from_), _time_ns("--to", to)
        if t_ns <= f_ns:
            raise UsageError("--to must be after --from")
        now_ns = _time_ns("--now", now) if now else time.time_ns()
        key = _key(c, key_file)
        state = trust_state(c, source, root_pem)
        backend, prefix = _backend(c)
        cache = _cache(c, cache_dir)
        problems = index.fetch(backend, prefix, state, cache, c.cfg.review.fetch_concurrency,
                               procs=c.cfg.review.fetch_procs, storage=c.cfg.storage).problems if fetch else []
        log = justify.read_log(backend, prefix, state)
        r = run.run(rc=c.cfg.review, state=state, cache=cache, log=log, key=key, roster=roster, cad=cad, out=out,
                    from_ns=f_ns, to_ns=t_ns, now_ns=now_ns, unit=unit, officer=officer, upto=upto,
                    fetch_problems=problems)
        _summary(echo, r.report, out)

    @review_grp.command("verify")
    @click.argument("report_dir", type=click.Path(file_okay=False, path_type=Path))
    @TRUST_OPT
    @ROOT_OPT
    @pass_ctx
    def verify_cmd(c, report_dir: Path, source: str, root_pem: Path | None) -> None:
        """Check a report: its reviewer signature (trust log) and the CSV and HTML it names."""
        from dockd.agency.review.report import verify_dir
        from dockd.cli.trust import trust_state

        _rep, _raw, _csv, why = verify_dir(report_dir, trust_state(c, source, root_pem))
        echo(f"report OK: {why}")


def _summary(echo, rep: dict, out: Path) -> None:
    from dockd.agency.review.htmlreport import pct

    s = rep["summary"]
    a = s["activation"]
    echo(f"completeness review {rep['period']['from']} .. {rep['period']['to']} (as of {rep['as_of']})")
    echo(f"activation rate {pct(a['rate_bp'])}: {a['with_video']} of {a['required']} rows that require video "
         f"have some (covered in full: {pct(a['covered_rate_bp'])}); {s['rows']} rows")
    echo("  " + "  ".join(f"{o} {n}" for o, n in s["outcomes"].items()))
    echo("per unit:")
    for u, v in s["by_unit"].items():
        echo(f"  {u or '(none)':<16} {pct(v['activation']['rate_bp']):>8}  {v['rows']} rows")
    worst = sorted(s["by_officer"].items(), key=lambda kv: kv[1]["activation"]["rate_bp"])[:10]
    echo("lowest officers:")
    for o, v in worst:
        echo(f"  {o:<16} {pct(v['activation']['rate_bp']):>8}  {v['rows']} rows")
    exc = rep["exceptions"]
    echo(f"exceptions: {len(exc)}" + (" (first 20)" if len(exc) > 20 else ""))
    for x in exc[:20]:
        j = x["justification"]
        why = f"{j['reason']} by {j['by']}" if j else "; ".join(x["facts"])[:120]
        echo(f"  {x['incident']:<14} {x['officer']:<10} {x['outcome']:<9} {pct(x['coverage_bp']):>8}  {why}")
    for n in rep["notes"][:20]:
        echo(f"note: {printable(n)}")
    echo(f"wrote {out / 'report.json'} (signed {rep['signature']['key_id']}), report.csv, report.html")

