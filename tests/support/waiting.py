"""The one polling helper: wait for a condition with a deadline (tests never assert timings)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout: float, what: str, *, interval: float = 0.02) -> T:
    """Call ``pred`` until it returns something truthy and return that; raise TimeoutError(``what``)
    once ``timeout`` seconds have passed without it."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(interval)
