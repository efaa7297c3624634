"""Small helpers shared by tests: a bounded call (a hang fails the test instead of the
suite) and a scratch filesystem mounted for a test (root only)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def run_bounded(fn: Callable[[], Any], timeout: float, hang: str) -> Any:
    """Run ``fn`` in a thread; fail with ``hang`` if it has not returned after ``timeout`` s."""
    box: dict = {}

    def go() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            box["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), hang
    if "error" in box:
        raise box["error"]
    return box["result"]


@contextmanager
def mounted(fstype: str, options: str, mnt: Path) -> Iterator[Path]:
    """Mount a fresh ``fstype`` (tmpfs, ramfs) on the existing directory ``mnt`` for the
    duration; skip the test when not root or when this kernel refuses the mount."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to mount a {fstype}")
    if subprocess.run(["mount", "-t", fstype, "-o", options, fstype, str(mnt)]).returncode != 0:
        pytest.skip(f"cannot mount {fstype} here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
