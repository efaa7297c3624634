"""Progress of one disclosure build: the events :func:`.create.build` reports, and the pure model of what a
display may show from them. Nothing here draws, reads a clock or does I/O: the CLI renders (``rich`` on a
terminal, a plain line otherwise) and passes the time in.

Events (a build reports them to one callable; download threads report ``Wrote`` concurrently, so the
receiver serialises them):

* ``Planned(clips)``: how many clips were asked for, before anything is read.
* ``Resolved(clip, files)``: the clip's signed manifest verified; ``files`` = (bag path, size) of the clip
  and its sidecars, as the manifest signs them. A bag's byte total is the sum over resolved clips.
* ``Phase(name)``: a step of the build began (one of :data:`PHASES`; ``parent``, the check of the bag an
  onward disclosure takes its clips from, is reported by the CLI, which runs it before the build).
* ``Wrote(path, n)``: ``n`` more bytes of ``path`` were received, hashed and written -- not yet checked.
* ``Verified(path)``: ``path`` is complete: its size and SHA-256 equal what the manifest signs and it is
  fsynced. A clip counts as done only once every file it needs is verified.

What the model promises (table-tested in ``tests/unit/test_disclose_progress.py``): shown counts never
exceed their totals, never go down, bytes of a file never exceed its signed size, bytes of a file no
resolved clip names are not counted, and a clip is done only after ``Verified`` of all its files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PARENT, RESOLVING, DOWNLOADING, TAGS, SIGNING, SEALING, LEDGER, DONE = (
    "parent", "resolving", "downloading", "tag files", "signing", "sealing", "ledger", "done")
PHASES = (PARENT, RESOLVING, DOWNLOADING, TAGS, SIGNING, SEALING, LEDGER, DONE)
LABELS = {
    PARENT: "verifying the parent bag",
    RESOLVING: "resolving manifests",
    DOWNLOADING: "downloading and hashing",
    TAGS: "writing manifests and tag files",
    SIGNING: "signing",
    SEALING: "sealing (fsync)",
    LEDGER: "recording in the case ledger",
    DONE: "done",
}


@dataclass(frozen=True)
class Planned:
    clips: int


@dataclass(frozen=True)
class Resolved:
    clip: str
    files: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Phase:
    name: str


@dataclass(frozen=True)
class Wrote:
    path: str
    n: int


@dataclass(frozen=True)
class Verified:
    path: str


Event = Planned | Resolved | Phase | Wrote | Verified
Sink = Callable[[Event], None]


@dataclass(frozen=True)
class View:
    """What a display shows. ``bytes_final``: every clip is resolved, so ``bytes_total`` will not grow."""

    phase: str
    label: str
    clips_done: int
    clips_total: int
    clips_resolved: int
    bytes_done: int
    bytes_total: int
    bytes_final: bool


class Model:
    """Folds events into a :class:`View`. Not thread-safe: the caller serialises :meth:`apply`."""

    def __init__(self, phase: str = RESOLVING) -> None:
        self.phase = phase
        self.clips_total = 0
        self._size: dict[str, int] = {}  # bag path -> signed size, of files some resolved clip names
        self._wrote: dict[str, int] = {}
        self._verified: set[str] = set()
        self._pending: dict[str, set[str]] = {}  # clip -> its files not yet verified
        self._clips_of: dict[str, list[str]] = {}  # file -> the clips that need it
        self._done = 0
        self._bytes = 0
        self._total = 0

    def apply(self, e: Event) -> None:
        if isinstance(e, Planned):
            self.clips_total = max(self.clips_total, e.clips)
        elif isinstance(e, Resolved):
            self._resolved(e)
        elif isinstance(e, Phase):
            # phases only move forward: a late event from a download thread cannot move the display back
            if e.name in PHASES and PHASES.index(e.name) > PHASES.index(self.phase):
                self.phase = e.name
        elif isinstance(e, Wrote):
            size = self._size.get(e.path)
            if size is not None and e.path not in self._verified and e.n > 0:
                before = self._wrote.get(e.path, 0)
                after = min(size, before + e.n)
                self._wrote[e.path] = after
                self._bytes += after - before
        elif isinstance(e, Verified):
            self._file_verified(e.path)

    def _resolved(self, e: Resolved) -> None:
        if e.clip in self._pending:
            return
        self.clips_total = max(self.clips_total, len(self._pending) + 1)
        need: set[str] = set()
        for path, size in e.files:
            if path not in self._size:
                self._size[path] = max(0, size)
                self._total += self._size[path]
            self._clips_of.setdefault(path, []).append(e.clip)
            if path not in self._verified:
                need.add(path)
        self._pending[e.clip] = need
        if not need:
            self._done += 1

    def _file_verified(self, path: str) -> None:
        if path in self._verified or path not in self._size:
            return
        self._verified.add(path)
        self._bytes += self._size[path] - self._wrote.get(path, 0)
        self._wrote[path] = self._size[path]
        for clip in self._clips_of[path]:
            need = self._pending[clip]
            if path in need:
                need.discard(path)
                if not need:
                    self._done += 1

    def view(self) -> View:
        resolved = len(self._pending)
        label = LABELS[self.phase]
        if self.phase in (RESOLVING, DOWNLOADING):
            label = LABELS[DOWNLOADING] if resolved >= self.clips_total and self._bytes else (
                LABELS[RESOLVING] + (", downloading" if self._bytes else ""))
        return View(self.phase, label, self._done, self.clips_total, resolved, self._bytes,
                    self._total, 0 < self.clips_total <= resolved)


def rate_eta(bytes_done: int, bytes_total: int, elapsed_s: float) -> tuple[float | None, float | None]:
    """(bytes per second so far, seconds left at that rate); None where not yet meaningful."""
    if elapsed_s <= 0 or bytes_done <= 0:
        return None, None
    rate = bytes_done / elapsed_s
    return rate, max(0, bytes_total - bytes_done) / rate


def line(v: View, elapsed_s: float) -> str:
    """The plain one-line form (for a log, when stderr is not a terminal)."""
    mb = 1e6
    rate, eta = rate_eta(v.bytes_done, v.bytes_total, elapsed_s)
    total = f"{v.bytes_total / mb:.1f}" + ("" if v.bytes_final else "+")
    out = (f"disclose: {v.label}: {v.clips_done}/{v.clips_total} clips verified, "
           f"{v.bytes_done / mb:.1f}/{total} MB")
    if rate is not None:
        out += f", {rate / mb:.1f} MB/s"
    if eta is not None and v.bytes_final and v.phase in (RESOLVING, DOWNLOADING):
        out += f", about {eta:.0f} s left"
    return out
