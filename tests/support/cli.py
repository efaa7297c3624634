"""The one way tests run the ``dockd`` command: the real console entry in a subprocess, bounded by a
timeout, with the caller's environment minus ``DOCKD_CONFIG``/``DOCKD_DEBUG`` (a test says which config
it means) and minus systemd's notify/watchdog variables (a test's dockd never talks to the runner's
systemd)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def dockd_argv() -> list[str]:
    """argv[0:] that starts the installed ``dockd`` entry point (the venv's script, else the same entry
    through this interpreter). For a daemon a test starts with Popen and stops itself."""
    exe = Path(sys.executable).with_name("dockd")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from dockd.cli.main import entry; sys.argv[0] = 'dockd'; entry()"]


_DROP = ("DOCKD_CONFIG", "DOCKD_DEBUG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def dockd_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without DOCKD_CONFIG, DOCKD_DEBUG and systemd's NOTIFY_SOCKET,
    WATCHDOG_USEC, WATCHDOG_PID, updated with ``env``."""
    e = {k: v for k, v in os.environ.items() if k not in _DROP}
    e.update(env or {})
    return e


def one_line_error(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Assert that ``r`` failed the documented way: exit ``code``, no traceback, one stderr line
    ``dockd: error: ...`` holding every needle. Returns that line."""
    assert r.returncode == code, r
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("dockd: error: "), lines
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def run_dockd(*args: str | os.PathLike, config: str | os.PathLike | None = None, input: str | bytes | None = None,
              timeout: float = 60, env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
              text: bool = True, errors: str | None = None,
              preexec_fn: Callable[[], object] | None = None) -> subprocess.CompletedProcess:
    """Run ``dockd [--config CONFIG] ARGS...`` to completion and return its CompletedProcess (stdout and
    stderr captured, str unless ``text=False``). stdin is ``input`` or /dev/null; a run longer than
    ``timeout`` seconds raises subprocess.TimeoutExpired (a hang fails the test, not the suite)."""
    argv = dockd_argv()
    if config is not None:
        argv += ["--config", str(config)]
    argv += [str(a) for a in args]
    kw: dict = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run(argv, capture_output=True, text=text, errors=errors, env=dockd_env(env), cwd=cwd,
                          timeout=timeout, preexec_fn=preexec_fn, **kw)


def run_with(cfg: str | os.PathLike, *args: str | os.PathLike, **kw: object) -> subprocess.CompletedProcess:
    """``dockd --config CFG ARGS...``: :func:`run_dockd` in the short form the command-line tests use."""
    return run_dockd(*args, config=cfg, **kw)  # type: ignore[arg-type]
