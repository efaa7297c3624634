"""The queue's schema: its tables, the hot-path indexes and the versioned migrations.

A station upgrades its queue in place: :data:`MIGRATIONS` is append-only, and
:meth:`dockd.queue.store.Queue.migrate` runs every step above the file's
``PRAGMA user_version``, each in its own transaction. :func:`refuse_foreign`
keeps the queue from opening (and so altering) another program's SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from dockd.queue.fileformat import refuse_foreign  # noqa: F401 - re-exported: its home is fileformat

SCHEMA_VERSION = 6

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


# Schema v3 (migration _v3): what the station knows about each camera across docks (dockd/core/continuity.py).
md3 = MetaData()

camera_facts = Table(  # one row per camera: the continuity step reads and writes only this camera's row
    "camera_facts",
    md3,
    Column("serial", String, primary_key=True),
    Column("device_id", String),
    Column("profile", String),
    Column("last_docked_at", Float),  # station clock
    Column("last_seq", Integer),  # highest sequence number seen (since the last wrap)
    Column("newest_started_at", Float),  # camera clock: newest clip start seen at the last dock
    Column("last_offset_s", Float),  # camera clock minus station clock, the latest estimate (a lower bound)
    Column("last_offset_at", Float),  # station clock: the dock that gave that estimate
    Column("docks", Integer, nullable=False),
    Column("open_anomalies", Integer, nullable=False),  # anomalies reported at the camera's last dock
    Column("anomalies_total", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_camera_facts_device_id", "device_id"),  # device_id_conflict: who else claims this id
)

camera_docks = Table(  # one row per dock: `dockd camera` reads the newest N of one camera (the unique index)
    "camera_docks",
    md3,
    Column("id", Integer, primary_key=True),
    Column("camera", String, nullable=False),
    Column("docked_at", Float, nullable=False),  # station clock (cameras.docked_at of that dock)
    Column("detail", Text, nullable=False),  # JSON: the camera.docked audit detail (dock facts, anomalies)
    UniqueConstraint("camera", "docked_at", name="uq_camera_dock"),
)

anomaly_counts = Table(  # per kind, for the Prometheus counter (bounded by the kinds)
    "anomaly_counts",
    md3,
    Column("kind", String, primary_key=True),
    Column("n", Integer, nullable=False),
)


def _v3(conn: Connection) -> None:
    """Per-camera continuity knowledge, dock records, anomaly counts (issue #14). New tables only."""
    md3.create_all(conn)


# Schema v4 (migration _v4, issue #14): the clip index's segments (dockd/station/clipindex.py).
md4 = MetaData()

index_segments = Table(
    "index_segments",
    md4,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # the segment's seq (1, 2, ... no gaps)
    Column("date", String, nullable=False),  # YYYY-MM-DD (UTC) of every audit row it covers
    Column("audit_from", Integer, nullable=False),  # covers audit rows audit_from < seq <= audit_to
    Column("audit_to", Integer, nullable=False),
    Column("head", LargeBinary, nullable=False),  # the signed head, exactly the bytes stored
    Column("head_hash", String, nullable=False),  # sha256 of its JCS form: the next head's prev
    Column("clips", LargeBinary),  # the bodies, kept until storage holds them (then NULL)
    Column("docks", LargeBinary),
    Column("planned_at", Float, nullable=False),
    Column("uploaded_at", Float),  # NULL: planned (committed) but not yet proven in storage
)


def _v4(conn: Connection) -> None:
    md4.create_all(conn)
    # the segments planned but not yet in storage (at most one, normally none): never the history
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_index_pending ON index_segments (seq) "
                         "WHERE uploaded_at IS NULL")


# Schema v5 (migration _v5, issue #12):
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


# Schema v6 (migration _v6, issue #16): the current day's audit part segments (dockd/station/auditparts.py).
md6 = MetaData()

audit_parts = Table(  # the parts of the current UTC day in storage; rows of earlier days are dropped
    "audit_parts",
    md6,
    Column("first_seq", Integer, primary_key=True, autoincrement=False),  # the part's object is named by it
    Column("day", String, nullable=False),  # YYYY-MM-DD (UTC) of every row it covers
    Column("last_seq", Integer, nullable=False),
    Column("last_hash", String, nullable=False),  # the next part's prev_hash_of_first
    Column("object_key", String, nullable=False),
    Column("at", Float, nullable=False),
)


def _v6(conn: Connection) -> None:
    """``audit_parts``: recorded after storage holds the part (head included). New table only."""
    md6.create_all(conn)


# Append-only: a station upgrades its queue in place by running every step
# above its PRAGMA user_version, each in its own transaction.
MIGRATIONS: list[tuple[int, Callable[[Connection], None]]] = [(1, _v1), (2, _v2), (3, _v3), (4, _v4), (5, _v5),
                                                             (6, _v6)]

