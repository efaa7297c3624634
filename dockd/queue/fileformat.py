"""What the queue file is, without the database layer: its name, the schema version this dockd
writes, and the check that keeps dockd from opening another program's SQLite file.

No SQLAlchemy here (nor in :mod:`dockd.queue.reads`): the read-only commands (``status``,
``queue``, ``show``) answer from the plain ``sqlite3`` module, so they start without paying
for the ORM's import (about 0.2 s, most of a command's time).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dockd.core.errors import NotAQueue

QUEUE_FILE = "queue.db"
# The last migration in dockd.queue.schema.MIGRATIONS (a unit test keeps the two equal).
LATEST_VERSION = 6


def queue_path(data_dir: Path) -> Path:
    """The queue database of the station whose data dir is ``data_dir`` (the one place it is named)."""
    return Path(data_dir) / QUEUE_FILE


def refuse_foreign(path: Path) -> None:
    """Raise NotAQueue if ``path`` is an SQLite database of another program; before SQLite opens it.

    Opening alone would change such a file (``journal_mode=WAL`` rewrites its header) and migrating
    would add our tables to it. A dockd queue has ``user_version`` >= 1 once migrated; at version 0
    it is a new file of at most one page (migration 1 writes its tables and the version in one
    transaction). Reads only the 100-byte header; anything that is not SQLite is left to SQLite to
    refuse.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not block us here
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return
        head, size = os.pread(fd, 100, 0), st.st_size
    finally:
        os.close(fd)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    user_version = int.from_bytes(head[60:64], "big")
    if user_version == 0 and size > page_size:
        raise NotAQueue(path, f"schema version 0 but {size} bytes of content")
