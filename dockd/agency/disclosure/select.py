"""Choosing clips for a disclosure by camera and time range, from the verified clip index (docs/clip-index.md).

``dockd disclose create --camera SERIAL --from T --to T`` brings the review's local cache of the clip index
up to date (:func:`dockd.agency.review.index.fetch`: every segment's signed head checked against the trust
log, chained, bodies matched to their heads; nothing unverified is ever cached) and takes the clips of that
camera whose recording overlaps ``[from, to]`` in station time (the camera clock corrected by the offset the
station measured at the dock, as the completeness review places them):

* a clip with a start and a duration overlaps if ``start <= to`` and ``start + duration >= from``;
* a clip with a start but no known duration is taken if its start lies in the range;
* a clip with no known start cannot be placed: it is not taken, and the selection names it (``unplaced``),
  so the recipient and the operator see that the range may hold more than the bag.

If any segment of the index failed its check, the selection is refused: a clip of the camera could be in
the part of the index that was left out, and a bag must not look complete when it may not be.
The selection (criteria, the verified index segments it read, the clips taken and those unplaced) goes into
the bag as ``data/selection.json``, listed in the manifests and the transfer record like every payload file.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockd.agency.disclosure import DisclosureFailed
from dockd.core.textsafe import printable
from dockd.storage.base import Backend
from dockd.trust.log import TrustState

SELECTION_FILE = "data/selection.json"
MAX_CLIPS = 100_000


@dataclass
class Selection:
    object_keys: list[str]
    record: dict[str, Any]

    def payload(self) -> bytes:
        return (json.dumps(self.record, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def overlaps(start_ns: int, duration_ns: int | None, from_ns: int, to_ns: int) -> bool:
    """The rule of the module docstring for a clip with a known (station-time) start."""
    if duration_ns is None or duration_ns < 0:
        return from_ns <= start_ns <= to_ns
    return start_ns <= to_ns and start_ns + duration_ns >= from_ns


def by_camera(backend: Backend, prefix: str, state: TrustState, camera: str, from_ns: int, to_ns: int,
              from_text: str, to_text: str, cache_dir: Path | None = None) -> Selection:
    """The clips of ``camera`` in ``[from_ns, to_ns]`` per the verified index (see the module docstring).
    ``cache_dir``: the review's cache to update and reuse (default: a temporary one, read whole)."""
    from dockd.agency.review import index

    if to_ns < from_ns:
        raise DisclosureFailed("--to is before --from")
    with tempfile.TemporaryDirectory(prefix="dockd-select-") as tmp:
        cache = index.Cache(cache_dir if cache_dir is not None else Path(tmp))
        try:
            res = index.fetch(backend, prefix, state, cache)
            if res.problems:
                raise DisclosureFailed(f"the clip index failed its check ({len(res.problems)} problem(s); first: "
                                       f"{res.problems[0]}): a clip of {printable(camera)} could be in the part left "
                                       "out, so no selection by time is made")
            rows = cache.db.execute(
                "SELECT c.object_key, c.start_ns - coalesce(c.offset_ns, 0), c.duration_ns, c.start_ns IS NULL, "
                "c.station, c.seq FROM clips c WHERE c.camera = ? ORDER BY c.start_ns, c.object_key",
                (camera,)).fetchall()
            segs = {(st, seq): h for st, seq, h in cache.segments()}
        finally:
            cache.close()
    taken: dict[str, None] = {}
    unplaced: dict[str, None] = {}
    used: set[tuple[str, int]] = set()
    for key, start, dur, no_start, station, seq in rows:
        if no_start:
            unplaced[key] = None
            used.add((station, seq))
        elif overlaps(start, dur, from_ns, to_ns):
            taken[key] = None
            used.add((station, seq))
    if len(taken) > MAX_CLIPS:
        raise DisclosureFailed(f"{len(taken)} clips in the range: more than {MAX_CLIPS} in one bag; narrow it")
    record = {"type": "dockd.disclosure-selection/1", "by": "camera", "camera": camera,
              "from": from_text, "to": to_text, "clock": "station time (camera start minus its measured offset)",
              "index_segments": [[st, seq, segs[(st, seq)]] for st, seq in sorted(used)],
              "selected": list(taken), "unplaced": list(unplaced)}
    return Selection(list(taken), record)
