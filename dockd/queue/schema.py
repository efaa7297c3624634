"""The queue's schema: its tables, the hot-path indexes and the versioned migrations.

A station upgrades its queue in place: :data:`MIGRATIONS` is append-only, and
:meth:`dockd.queue.store.Queue.migrate` runs every step above the file's
``PRAGMA user_version``, each in its own transaction. :func:`refuse_foreign`
keeps the queue from opening (and so altering) another program's SQLite file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import (
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from dockd.core.errors import NotAQueue

SCHEMA_VERSION = 5

md = MetaData()

cameras = Table(
    "cameras",
    md,
    Column("serial", String, primary_key=True),
    Column("vendor", String),
    Column("model", String),
    Column("profile", String),
    Column("bay", String),
    Column("source", String),  # "udev" or "watch" or "import"
    Column("state", String, nullable=False),
    Column("reason", String),
    Column("docked", Integer, nullable=False, default=0),
    Column("docked_at", Float),
    Column("updated_at", Float, nullable=False),
)

clips = Table(
    "clips",
    md,
    Column("id", Integer, primary_key=True),
    Column("camera", String, ForeignKey("cameras.serial"), nullable=False),
    Column("path", String, nullable=False),  # original path on the camera, relative, UTF-8
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("state", String, nullable=False),
    Column("sha256", String),
    Column("staged_path", String),
    Column("object_key", String),
    Column("manifest", Text),
    Column("verify_mode", String),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", String),
    Column("next_attempt_at", Float),
    Column("lease_owner", String),
    Column("lease_expires", Float),
    Column("upload_id", String),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("staged_at", Float),
    Column("uploaded_at", Float),
    Column("wiped_at", Float),
    UniqueConstraint("camera", "path", "size", "mtime_ns", name="uq_clip_identity"),
    Index("ix_clips_state", "state", "next_attempt_at"),
    Index("ix_clips_camera", "camera", "state"),
)

sidecars = Table(
    "sidecars",
    md,
    Column("clip_id", Integer, ForeignKey("clips.id"), primary_key=True),
    Column("path", String, primary_key=True),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("sha256", String, nullable=False),
    Column("staged_path", String),
    Column("wiped_at", Float),
)

parts = Table(
    "parts",
    md,
    Column("clip_id", Integer, ForeignKey("clips.id"), primary_key=True),
    Column("upload_id", String, primary_key=True),
    Column("part_number", Integer, primary_key=True),
    Column("size", Integer, nullable=False),
    Column("sha256_b64", String, nullable=False),
    Column("etag", String, nullable=False),
)

skips = Table(
    "skips",
    md,
    Column("id", Integer, primary_key=True),
    Column("camera", String, nullable=False),
    Column("path", String, nullable=False),  # escaped for display
    Column("reason", String, nullable=False),
    Column("at", Float, nullable=False),
    UniqueConstraint("camera", "path", "reason", name="uq_skip"),
)

alarms = Table(
    "alarms",
    md,
    Column("kind", String, primary_key=True),  # e.g. "clock", "conflict", "storage"
    Column("message", String, nullable=False),
    Column("at", Float, nullable=False),
)

audit_log = Table(
    "audit",
    md,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", String, nullable=False),  # RFC 3339 UTC
    Column("event", String, nullable=False),
    Column("camera", String),
    Column("clip", Integer),
    Column("detail", Text, nullable=False),  # JSON object
    Column("prev_hash", String, nullable=False),
    Column("hash", String, nullable=False),
    Index("ix_audit_clip", "clip"),
    Index("ix_audit_camera", "camera"),
)


audit_heads = Table(
    "audit_heads",
    md,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # last audit row covered
    Column("hash", String, nullable=False),
    Column("at", String, nullable=False),
    Column("statement", Text, nullable=False),  # signed JSON statement
)

audit_exports = Table(
    "audit_exports",
    md,
    Column("day", String, primary_key=True),  # YYYY-MM-DD (UTC)
    Column("first_seq", Integer, nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("object_key", String, nullable=False),
    Column("at", Float, nullable=False),
)


# Schema v2 (migration _v2): summary tables kept in the same transaction as the rows they summarise.
# Their own MetaData, so that _v1's create_all keeps creating exactly the v1 schema.
md2 = MetaData()

state_counts = Table(
    "state_counts",
    md2,
    Column("state", String, primary_key=True),
    Column("clips", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    md2,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # last compacted audit row
    Column("hash", String, nullable=False),  # its hash: the first kept row's prev_hash
    Column("at", String, nullable=False),
    Column("statement", Text, nullable=False),  # signed JSON statement (like a head)
)

# Indexes of the hot paths (v2). Each is named after the statement it serves.
_V2_INDEXES = (
    # camera_progress / camera_counts: one camera's clips by state, the wiped ones by wiped_at; covering
    "CREATE INDEX IF NOT EXISTS ix_clips_progress ON clips (camera, state, wiped_at, size)",
    # prune_staging and recovery: only clips that still have a staged copy
    "CREATE INDEX IF NOT EXISTS ix_clips_staged ON clips (uploaded_at) WHERE staged_path IS NOT NULL",
    # known_upload_ids: only clips with a multipart upload open
    "CREATE INDEX IF NOT EXISTS ix_clips_upload_id ON clips (upload_id) WHERE upload_id IS NOT NULL",
    # the last event of a kind (daemon start: the previous daemon.started); seq is the rowid, so included
    "CREATE INDEX IF NOT EXISTS ix_audit_event ON audit (event)",
)


def _v1(conn: Connection) -> None:
    md.create_all(conn)


def _v2(conn: Connection) -> None:
    """Summary tables and hot-path indexes: a station with years of history behaves like a new one.

    ``state_counts`` starts from one count over the clips (the only full scan, once, at upgrade);
    from then on every state change keeps it in step in its own transaction.
    """
    md2.create_all(conn)
    for ddl in _V2_INDEXES:
        conn.exec_driver_sql(ddl)
    conn.execute(state_counts.delete())
    conn.exec_driver_sql("INSERT INTO state_counts (state, clips, bytes) "
                         "SELECT state, count(*), coalesce(sum(size), 0) FROM clips GROUP BY state")


# Schema v5 (migration _v5; numbered 5 on its branch, renumbered by the integrator beside 3 and 4):
# the source re-reads the wipe gate relies on (dockd.core.sourceproof, dockd.queue.sourcechecks).
md5 = MetaData()

source_checks = Table(
    "source_checks",
    md5,
    Column("clip_id", Integer, ForeignKey(clips.c.id), primary_key=True),
    Column("path", String, primary_key=True),  # the clip's or a sidecar's path on the camera
    # the file's identity before and after the read (dev and ino as text: they may not fit in an SQLite integer)
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("ctime_ns", Integer, nullable=False),
    Column("dev", String, nullable=False),
    Column("ino", String, nullable=False),
    Column("sha256", String, nullable=False),  # what the bytes read hashed to (matched or not)
    Column("verified_at", Float, nullable=False),
)


def _v5(conn: Connection) -> None:
    """``source_checks``: one row per file re-read on the camera, deleted once the clip is wiped."""
    md5.create_all(conn)


# Append-only: a station upgrades its queue in place by running every step
# above its PRAGMA user_version, each in its own transaction.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [(1, _v1), (2, _v2), (5, _v5)]


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
