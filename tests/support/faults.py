"""Fault injection by wrappers (borg style): a wrapper around a real module or file object that
fails chosen calls, counted per function name, and passes everything else through.

    fos = FailingOS(os, fail={"write": {3}})       # the 3rd os.write raises EIO
    fos = FailingOS(os, fail={"fsync": 2})         # the 2nd os.fsync raises EIO

Hand the wrapper to the code under test through a parameter it takes; where the code offers no such
seam the tests install it as the module's ``os`` (see the docstring of each such test)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from typing import Any


def _calls(spec: int | Iterable[int]) -> set[int]:
    return {spec} if isinstance(spec, int) else set(spec)


class FailingOS:
    """Wraps ``real`` (normally the ``os`` module): the Nth call of a function named in ``fail``
    (N counted from 1 per name) raises ``OSError(err)`` after ``on_fail()``; ``calls[name]`` counts
    every call of a wrapped name, failed or not. Every other attribute is the real one."""

    def __init__(self, real: Any = os, fail: dict[str, int | Iterable[int]] | None = None, *,
                 err: int = errno.EIO, on_fail: Callable[[], object] | None = None):
        self._real = real
        self._fail = {name: _calls(n) for name, n in (fail or {}).items()}
        self._err = err
        self._on_fail = on_fail
        self.calls: dict[str, int] = dict.fromkeys(self._fail, 0)

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._real, name)
        if name not in self._fail:
            return real

        def wrapper(*a: Any, **k: Any) -> Any:
            self.calls[name] += 1
            if self.calls[name] in self._fail[name]:
                if self._on_fail is not None:
                    self._on_fail()
                raise OSError(self._err, os.strerror(self._err))
            return real(*a, **k)

        return wrapper


class FailingFile:
    """Wraps a file object: the Nth call of a method named in ``fail`` raises ``OSError(err)``;
    everything else (and the context manager protocol) is the real file's."""

    def __init__(self, real: Any, fail: dict[str, int | Iterable[int]], *, err: int = errno.EIO):
        self._real = real
        self._os = FailingOS(real, fail, err=err)
        self.calls = self._os.calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._os, name)

    def __enter__(self) -> FailingFile:
        self._real.__enter__()
        return self

    def __exit__(self, *exc: object) -> object:
        return self._real.__exit__(*exc)
