"""Every name dockd gives to evidence: object keys, sidecar and manifest keys, staging files. No I/O.

**Core, no I/O.** Names are decided here and only here; adapters (the offloader,
the uploader, the wipe's staging pruning, the storage backends) call these
functions and never spell a name themselves.

* Objects are content-addressed: ``{prefix}/{station}/{camera}/{YYYY}/{MM}/{DD}/{sha256}{ext}``,
  the date from the clip's mtime in UTC (:func:`dockd.core.timefmt.date_parts`).
* A sidecar sits in its clip's directory under its own hash: ``{clip dir}/{its sha256}{ext}``.
* The signed manifest sits beside the clip: ``{key}.manifest.json``; a second clip with the same
  bytes (same key) puts its manifest beside it under its digest: ``{key}.{digest[:16]}.manifest.json``.
* Staging files are named by clip id only, never from a camera's file name:
  ``{id:010d}.clip`` (and ``.clip.tmp`` while copied), ``{id:010d}.side{n}``, ``{id:010d}.manifest.json``.
"""

from __future__ import annotations

import re

from dockd.core import timefmt

MANIFEST_SUFFIX = ".manifest.json"
STAGING_DIR = "staging"  # under the data dir: the verified copies, named by clip id
_EXT = re.compile(r"(\.[A-Za-z0-9]{1,8})$")


def safe_ext(path: str) -> str:
    """The extension, lower-cased, only if it is short and plain ASCII; else empty (names are untrusted)."""
    m = _EXT.search(path.rsplit("/", 1)[-1])
    return m.group(1).lower() if m else ""


def object_key(prefix: str, station: str, serial: str, mtime_ns: int, sha256: str, ext: str) -> str:
    """``{prefix}/{station}/{serial}/{YYYY}/{MM}/{DD}/{sha256}{ext}``, date from the clip's mtime in UTC."""
    parts = [prefix] if prefix else []
    parts += [station, serial, *timefmt.date_parts(mtime_ns), f"{sha256}{ext}"]
    return "/".join(parts)


def station_prefix(prefix: str, station: str) -> str:
    """The key prefix under which one station writes (``{prefix}/{station}/``)."""
    return "/".join([p for p in (prefix, station) if p]) + "/"


def sidecar_key(clip_key: str, sha256: str, path: str) -> str:
    """A sidecar's key: its clip's directory, its own SHA-256, the safe extension of its camera ``path``."""
    return f"{clip_key.rsplit('/', 1)[0]}/{sha256}{safe_ext(path)}"


def manifest_key(clip_key: str, digest: str | None = None) -> str:
    """The signed manifest's key beside its clip (``{key}.manifest.json``); with ``digest`` (the
    manifest's SHA-256), the key for a second manifest of the same bytes (``{key}.{digest[:16]}.manifest.json``)."""
    return f"{clip_key}.{digest[:16]}{MANIFEST_SUFFIX}" if digest else f"{clip_key}{MANIFEST_SUFFIX}"


def staged_clip_name(clip_id: int) -> str:
    """The staged copy of clip ``clip_id``: ``{id:010d}.clip``."""
    return f"{clip_id:010d}.clip"


def staged_sidecar_name(clip_id: int, n: int) -> str:
    """The staged copy of the ``n``-th sidecar of clip ``clip_id``: ``{id:010d}.side{n}``."""
    return f"{clip_id:010d}.side{n}"


def staged_manifest_name(clip_id: int) -> str:
    """The signed manifest of clip ``clip_id`` in staging: ``{id:010d}.manifest.json``."""
    return f"{clip_id:010d}{MANIFEST_SUFFIX}"
