"""Property-based fuzzing of the command line (issue #10 item 7).

Random argument lists drawn from the real command and option names plus hostile values, and random
config files, must each end with exit code 0, 1 or 2, no traceback, no "internal error", a one-line
``dockd: error:`` for a usage error, and no hang. Runs in-process through click's CliRunner (with an
alarm as the hang guard) for speed; the cases that hang or read without bound when broken also run
as real processes under a timeout and a memory limit.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

import pytest
import structlog
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockd.cli import main as cli
from tests.support.cli import run_dockd
from tests.support.uploads import station_config

HANG_S = 20


class Hang(BaseException):
    """Raised by the alarm: a BaseException so that dockd's own last-resort handler cannot swallow it."""


class _Entry:
    """Lets CliRunner drive the real console entry point (``cli.entry``: error mapping and exit codes)."""

    name = "dockd"

    def main(self, args=(), prog_name=None, **_extra):
        saved = sys.argv
        sys.argv = ["dockd", *args]
        try:
            cli.entry()
        finally:
            sys.argv = saved


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A station with one imported clip, and hostile things to name on the command line."""
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    cfg = station_config(root / "dockd.toml", data_dir=data, offload={"reserve_free_mb": 0})
    card = root / "card" / "DCIM" / "100[" / "x].MP4"
    card.parent.mkdir(parents=True)
    card.write_bytes(b"clip bytes")
    (card.parent / "b\x1b[2J.MP4").write_bytes(b"other clip")
    r = run_dockd("import", root / "card", "--camera", "CAM1", config=cfg)
    assert r.returncode == 0, r
    pem = run_dockd("keys", "show", "--pem", config=cfg, text=False).stdout
    (root / "pub.pem").write_bytes(pem)
    os.mkfifo(root / "fifo")
    (root / "big").write_bytes(b"x" * (2 << 20))
    (root / "link").symlink_to(root / "card")
    (root / "garbage.json").write_bytes(b"\xff\xfe{[")
    paths = [str(p) for p in (root / "fifo", root / "big", root / "link", root / "card", data, root,
                              data / "staging" / "0000000001.manifest.json", data / "staging" / "0000000001.clip",
                              root / "pub.pem", root / "garbage.json", root / "missing", cfg)] + ["/dev/null"]
    return {"root": root, "cfg": cfg, "paths": paths}


HOSTILE = ["0", "1", "2", "-1", "9" * 20, "-" + "9" * 20, str(2**63), str(2**63 - 1), "1e3", "abc", "", " ", "-",
           "--", "[red]x[/red]", "x\x1b[2J\x07", "\u202eevil", "a\nb", "bad\udcff", "A" * 5000, "%s%n{}", "CAM1",
           "../../etc", "staged", "failed", "bogus", "2026-11-21T00:00:00Z", "2026-13-45T99:99:99Z", "yesterday"]
COMMANDS = {
    "queue": ["--state", "--camera", "--limit", "--json"],
    "show": ["--json"],
    "status": ["--json"],
    "audit": ["--camera", "--clip", "--since", "--json", "--verify"],
    "replay": ["--all-failed", "--camera"],
    "verify": ["--all", "--remote", "--deep", "--json"],
    "doctor": ["--json"],
    "import": ["--camera", "--json"],
    "keys": ["show", "--pem"],
    "manifest": ["verify", "--clip", "--pubkey"],
}
OPTIONS = sorted({o for opts in COMMANDS.values() for o in opts} | {"--help", "--version", "--config", "-h"})


@st.composite
def argv(draw, paths: list[str]) -> list[str]:
    value = st.sampled_from(HOSTILE + paths) | st.text(max_size=12)
    token = st.sampled_from(OPTIONS) | value
    args: list[str] = []
    if draw(st.booleans()):
        args += ["--config", draw(st.sampled_from(paths))]
    cmd = draw(st.sampled_from(sorted(COMMANDS)) | value)
    args.append(cmd)
    own = st.sampled_from(COMMANDS.get(cmd, OPTIONS))
    args += draw(st.lists(own | token | value, max_size=6))
    # NUL cannot occur in a real argv; --watch and `run` never return by design (covered elsewhere)
    return [a.replace("\x00", "") for a in args if a not in ("--watch", "run")]


def invoke(args: list[str], env: dict[str, str | None]):
    def alarm(_signum, _frame):
        raise Hang(f"dockd {args!r} still running after {HANG_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_S)
    try:
        return CliRunner().invoke(_Entry(), args, env=env, catch_exceptions=True)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        structlog.reset_defaults()  # `import` pointed the loggers at this run's captured stderr


def check(result, args) -> None:
    out, err = result.stdout, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception, err)
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, err)
    assert "Traceback" not in out + err, (args, err)
    assert "internal error" not in out + err, (args, err)
    if result.exit_code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("dockd: error: "), (args, err)
        assert len(lines[0]) < 1500, (args, len(lines[0]))
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in out + err, (args, raw)


@settings(max_examples=250, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_command_lines(world, data):
    args = data.draw(argv(world["paths"]))
    check(invoke(args, {"DOCKD_CONFIG": str(world["cfg"]), "DOCKD_DEBUG": None}), args)


# ---------------------------------------------------------------- random config files

SECTIONS = {
    "station": ["id", "data_dir"],
    "storage": ["url", "endpoint_url", "region", "multipart_threshold_mb", "part_size_mb", "concurrency",
                "part_concurrency", "object_lock_days", "legal_hold", "verify_after_upload", "timeout_s",
                "conditional_writes"],
    "upload": ["max_attempts", "backoff_initial_s", "backoff_max_s", "bandwidth_limit_mbps", "lease_s"],
    "sources": ["udev", "watch_dirs", "drop_privileges"],
    "offload": ["clip_globs", "sidecar_globs", "wipe", "wipe_check", "verify", "max_file_size_gb", "max_depth",
                "max_entries", "reserve_free_mb", "parallel_cameras", "keep_staged_hours", "buffer_kb"],
    "hooks": ["on_state", "timeout_s"],
    "metrics": ["listen"],
    "bogus": ["x"],
}


def toml_value(depth: int = 0) -> st.SearchStrategy[str]:
    scalar = st.one_of(
        st.sampled_from(HOSTILE + ["s3://b/p", "file:///x", "after-upload", "127.0.0.1:1"]).map(json.dumps),
        st.text(max_size=20).map(json.dumps),
        st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
        st.sampled_from(["true", "false", "inf", "-inf", "nan", "1.5", "-0.0", "1e308", "0"]),
        st.sampled_from(["'unterminated", "[1, 'a', {}]", "{ a = 1 }", "1979-05-27"]),
        st.just('"' + "B" * 200_000 + '"'),  # must never come back as a 200 kB error line
    )
    if depth >= 1:
        return scalar
    return scalar | st.lists(toml_value(depth + 1), max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")


@st.composite
def config_text(draw, data_dir: str) -> str:
    out = []
    # usually a valid [station] first, so the later sections are reached (loading stops at the first error)
    valid_station = draw(st.integers(0, 4)) > 0
    if valid_station:
        out.append(f'[station]\nid = "st"\ndata_dir = {json.dumps(data_dir)}')
    sections = [x for x in sorted(SECTIONS) if not (valid_station and x == "station")]
    for sec in draw(st.lists(st.sampled_from(sections), max_size=4, unique=True)):
        out.append(f"[{sec}]")
        if sec == "station":
            # only data dirs inside the test's own tree: a fuzzed config must not write elsewhere
            out.append("data_dir = " + json.dumps(draw(st.sampled_from([data_dir, data_dir + "/sub", "relative"]))))
        for key in draw(st.lists(st.sampled_from(SECTIONS[sec] + ["unknown"]), max_size=4, unique=True)):
            if sec == "station" and key == "data_dir":
                continue
            out.append(f"{key} = {draw(toml_value())}")
    if draw(st.booleans()):
        out.append('[[camera]]\nname = "c"\nmatch = { ID_MODEL_ID = ' + draw(toml_value()) + " }")
    text = "\n".join(out) + "\n"
    if draw(st.integers(0, 9)) == 0:  # now and then, damage it
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["\x00", "\udcff", "[[", "=", '"""', "\x1b"])) + text[cut:]
    return text


@settings(max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_config_files(world, data):
    root = world["root"]
    text = data.draw(config_text(str(root / "fuzzdata")))
    p = root / "fuzz.toml"
    p.write_bytes(text.encode("utf-8", "surrogateescape"))
    # read commands only: none of them reaches storage or the network
    args = ["--config", str(p), *data.draw(st.sampled_from([["status"], ["queue", "--json"], ["show", "1"],
                                                             ["audit"], ["keys", "show"]]))]
    check(invoke(args, {"DOCKD_CONFIG": None, "DOCKD_DEBUG": None}), args)


# ---------------------------------------------------------------- real processes for the hang cases


def _limited() -> None:
    # a regression that reads /dev/zero must fail, not eat the machine
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("args", [
    ["--config", "{fifo}", "status"],
    ["--config", "/dev/zero", "queue"],
    ["manifest", "verify", "{fifo}"],
    ["manifest", "verify", "/dev/zero"],
    ["manifest", "verify", "{manifest}", "--pubkey", "/dev/zero"],
    ["manifest", "verify", "{manifest}", "--pubkey", "{pem}", "--clip", "{fifo}"],
    ["manifest", "verify", "{manifest}", "--pubkey", "{pem}", "--clip", "/dev/zero"],
])
def test_no_hang_in_a_real_process(world, args):
    root = world["root"]
    names = {"fifo": root / "fifo", "manifest": root / "data" / "staging" / "0000000001.manifest.json",
             "pem": root / "pub.pem"}
    args = [a.format(**names) for a in args]
    r = run_dockd(*args, env={"DOCKD_CONFIG": str(world["cfg"])}, preexec_fn=_limited)
    assert r.returncode == 2, r
    assert r.stderr.startswith("dockd: error: ") and "not a regular file" in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1
