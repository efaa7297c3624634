"""What central storage holds about one clip, read and checked before anything of it enters a bag.

* The clip is named by its object key (``{prefix}/{station}/{camera}/{YYYY}/{MM}/{DD}/{sha256}{ext}``,
  :mod:`dockd.core.naming`); every segment must be plain text (keys become bag paths).
* Its signed manifest (``{key}.manifest.json``, plus any ``{key}.{digest16}.manifest.json`` of a second
  offload of the same bytes) must verify with a key the trust log enrolled *for that station* at the
  manifest's ``offloaded_at`` (a station key swapped for another station's is refused).
* Its audit lines: the station's exported day segments (``{prefix}/{station}/_audit/{day}.jsonl`` with the
  signed ``.head.json``) from the offload day for :data:`AUDIT_DAYS` days; for a day not finished yet (no
  day segment), the day's part segments (``{day}.part-{first_seq:012d}.jsonl``), chained part to part.
  Each segment is checked link by link up to its signed head; the rows concerning the clip are those whose
  detail names its object key or SHA-256, and every row of the station-local clip ids found so. Rows not
  exported yet are simply absent (the transfer says how many rows were found; it never claims more).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dockd.agency.disclosure import DisclosureFailed
from dockd.core import ijson, naming
from dockd.core.errors import ManifestInvalid
from dockd.evidence import manifest as mf
from dockd.storage.base import Backend, StoreFailure
from dockd.trust.log import TrustState

AUDIT_DAYS = 7  # uploads and wipes follow an offload within days; a later row is not looked for
MAX_SEGMENT = 64 << 20  # one station's audit rows of one day
_SEG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_NAME = re.compile(r"^([0-9a-f]{64})(\.[a-z0-9]{1,8})?$")


@dataclass
class ClipSource:
    object_key: str
    rel: str  # the key below the storage prefix: the clip's path under data/clips/
    station: str
    camera: str
    manifest: dict[str, Any]
    manifests: list[tuple[str, bytes]]  # (key below prefix, stored bytes), the primary first
    sidecars: list[tuple[str, str, int]]  # (key below prefix, sha256, size)
    station_key_id: str = ""


@dataclass
class Segment:
    station: str
    day: str  # the file stem in storage and in the bag: the day, or ``{day}.part-{first_seq:012d}``
    lines: bytes
    head: bytes
    key_id: str
    clip_seqs: dict[str, list[int]] = field(default_factory=dict)  # object key -> seqs of its rows


def split_key(prefix: str, key: str) -> str:
    """``key`` below ``prefix``; DisclosureFailed unless it has the form of a dockd clip object key."""
    pre = prefix.strip("/") + "/" if prefix.strip("/") else ""
    if not key.startswith(pre):
        raise DisclosureFailed(f"object key {key!r} is not under the storage prefix {prefix!r}")
    rel = key[len(pre):]
    parts = rel.split("/")
    if len(parts) != 6 or not all(_SEG.fullmatch(p) for p in parts) or not _NAME.fullmatch(parts[5]):
        raise DisclosureFailed(f"{key!r} is not a clip object key "
                               "({station}/{camera}/YYYY/MM/DD/{sha256}{ext} below the prefix)")
    return rel


def _read(backend: Backend, key: str, limit: int) -> bytes | None:
    try:
        return backend.read_small(key, limit)
    except StoreFailure as e:
        raise DisclosureFailed(f"reading {key}: {e}") from None


def _station_key_ok(state: TrustState, m: dict[str, Any], station: str) -> str:
    """The manifest's signing key id if it was enrolled for ``station`` when it signed; else raise."""
    v = state.verify_signed(m, "station", "offloaded_at")
    if not v.ok:
        raise DisclosureFailed(f"manifest of {station}: {v.reason}")
    kid = m["signature"]["key_id"]
    if not any(e.subject.get("name") == station for e in state.enrolments.get(kid, [])):
        raise DisclosureFailed(f"manifest names station {station!r} but is signed by key {kid}, enrolled for "
                               "another station (swapped key)")
    return kid


def resolve(backend: Backend, prefix: str, object_key: str, state: TrustState,
            listed: list[str] | None = None) -> ClipSource:
    """The clip ``object_key`` with its verified manifest(s) and sidecar names; DisclosureFailed otherwise.
    ``listed``: the keys starting with ``object_key + "."`` if the caller listed the clip's directory already
    (one listing for many clips of a camera-day); else they are listed here."""
    rel = split_key(prefix, object_key)
    station, camera, name = rel.split("/")[0], rel.split("/")[1], rel.split("/")[5]
    pre = object_key[: len(object_key) - len(rel)]
    manifests: list[tuple[str, bytes]] = []
    mkey = naming.manifest_key(object_key)
    raw = _read(backend, mkey, mf.MAX_BYTES)
    if raw is None:
        raise DisclosureFailed(f"no signed manifest {mkey} in storage (not a clip dockd uploaded?)")
    manifests.append((mkey[len(pre):], raw))
    try:
        found = listed if listed is not None else list(backend.list_keys(object_key + "."))
    except StoreFailure as e:
        raise DisclosureFailed(f"listing {object_key}: {e}") from None
    extra = sorted(k for k in found if k.startswith(object_key + ".") and k.endswith(naming.MANIFEST_SUFFIX)
                   and k != mkey)
    for k in extra[:16]:
        split_key(prefix, k.rsplit(".", 3)[0])  # same clip key; the name itself is checked as a bag path later
        data = _read(backend, k, mf.MAX_BYTES)
        if data is not None:
            manifests.append((k[len(pre):], data))
    try:
        m = mf.parse(raw, mkey)
        mf.check(m)
    except ManifestInvalid as e:
        raise DisclosureFailed(str(e)) from None
    if m.get("station") != station or m["clip"]["sha256"] != _NAME.fullmatch(name).group(1):  # type: ignore[union-attr]
        raise DisclosureFailed(f"manifest {mkey} describes another clip or station than its key names")
    kid = _station_key_ok(state, m, station)
    sidecars = []
    for s in m.get("sidecars") or []:
        if not isinstance(s, dict) or not isinstance(s.get("sha256"), str) or type(s.get("size")) is not int:
            raise DisclosureFailed(f"manifest {mkey}: malformed sidecar entry")
        sk = naming.sidecar_key(object_key, s["sha256"], str(s.get("path", "")))
        sidecars.append((split_sidecar(prefix, sk), s["sha256"], s["size"]))
    return ClipSource(object_key, rel, station, camera, m, manifests, sidecars, kid)


def split_sidecar(prefix: str, key: str) -> str:
    pre = prefix.strip("/") + "/" if prefix.strip("/") else ""
    rel = key[len(pre):]
    parts = rel.split("/")
    if not key.startswith(pre) or len(parts) != 6 or not all(_SEG.fullmatch(p) for p in parts):
        raise DisclosureFailed(f"sidecar key {key!r} is not plain")
    return rel


def checked_stream(chunks: Iterator[bytes], size: int, what: str) -> Iterator[bytes]:
    """Pass ``chunks`` through, refusing more than ``size`` bytes as they arrive (a bounded download)."""
    n = 0
    for c in chunks:
        n += len(c)
        if n > size:
            raise DisclosureFailed(f"{what}: storage returned more than the {size} bytes its manifest names")
        yield c


def _days(offloaded_at: str) -> list[str]:
    t = datetime.strptime(offloaded_at[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    return [(t + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(AUDIT_DAYS)]


def _concerns(row: dict[str, Any], key: str, sha: str) -> bool:
    d = row.get("detail")
    return isinstance(d, dict) and (d.get("object_key") == key or d.get("sha256") == sha)


_ROW_KEYS = frozenset({"seq", "at", "event", "camera", "clip", "detail", "prev_hash", "hash"})


def check_segment(station: str, lines: bytes, head_raw: bytes, state: TrustState) -> tuple[dict[str, Any] | None,
                                                                                         list[dict[str, Any]], str]:
    """An exported day segment against its signed head, the head against the trust log (a key enrolled for
    ``station``), every row linked to the previous one up to the head's last hash. Both inputs hostile.
    Returns (head, rows, "") or (None, [], why)."""
    import hashlib

    from dockd.core import audit as chain

    try:
        head = mf.parse(head_raw, "segment head")
    except ManifestInvalid as e:
        return None, [], str(e)
    need = ("station", "sha256", "prev_hash_of_first", "first_seq", "last_hash", "signature")
    if not isinstance(head, dict) or not all(k in head for k in need) or head["station"] != station:
        return None, [], "head is not an audit segment head of this station"
    sig = head["signature"]
    kid = sig.get("key_id") if isinstance(sig, dict) else None
    if not isinstance(kid, str) or not any(e.subject.get("name") == station for e in state.enrolments.get(kid, [])):
        return None, [], f"head signed by key {kid!r}, not a key enrolled for station {station}"
    pub = state.public_key(kid)
    try:
        mf.check_signature(head, pub)  # type: ignore[arg-type]  # enrolled above, so never None
    except ManifestInvalid:
        return None, [], "head signature does not verify"
    if hashlib.sha256(lines).hexdigest() != head["sha256"]:
        return None, [], "segment bytes do not match the head's sha256"
    try:
        rows = segment_rows(lines)
    except (ijson.Invalid, UnicodeDecodeError) as e:
        return None, [], f"segment row is not strict JSON: {e}"
    if not rows or not all(isinstance(r, dict) and _ROW_KEYS <= r.keys() for r in rows):
        return None, [], "segment rows are not audit rows"
    v = state.check(kid, "station", rows[-1].get("at"))
    if not v.ok:
        return None, [], f"head: {v.reason}"
    bad = chain.first_bad(rows, start_prev=head["prev_hash_of_first"], start_seq=head["first_seq"])
    if bad:
        return None, [], f"chain broken at seq {bad[0]}: {bad[1]}"
    if rows[-1]["hash"] != head["last_hash"]:
        return None, [], "last hash differs from the head"
    return head, rows, ""


def rows_about(rows: list[dict[str, Any]], key: str, sha: str) -> list[int]:
    """Seqs of the rows about the clip ``key``: naming its key or SHA-256, and every row of the station-local
    clip ids those rows carry."""
    ids = {r["clip"] for r in rows if _concerns(r, key, sha) and r.get("clip") is not None}
    return [r["seq"] for r in rows if _concerns(r, key, sha) or (r.get("clip") is not None and r["clip"] in ids)]


def audit_segments(backend: Backend, prefix: str, clips: list[ClipSource], state: TrustState) -> list[Segment]:
    """The checked segments holding rows about ``clips``, each with the seqs of those rows per clip: a day's
    segment where storage has it, else the day's part segments (the current day's rows the station exported
    so far, :mod:`dockd.station.auditparts`). A segment that fails its check, or parts that do not chain,
    are refused (DisclosureFailed): storage was tampered with."""
    pre = prefix.strip("/")
    wanted: dict[tuple[str, str], list[ClipSource]] = {}
    for c in clips:
        for day in _days(str(c.manifest.get("offloaded_at", ""))):
            wanted.setdefault((c.station, day), []).append(c)
    out = []
    for (station, day), cs in sorted(wanted.items()):
        base = "/".join(p for p in (pre, station, "_audit", day) if p)
        lines = _read(backend, base + ".jsonl", MAX_SEGMENT)
        if lines is None:
            checked = day_parts(backend, base, station, day, state)
        else:
            head_raw = _read(backend, base + ".head.json", mf.MAX_BYTES)
            if head_raw is None:
                raise DisclosureFailed(f"{base}.jsonl has no signed head {base}.head.json")
            head, rows, why = check_segment(station, lines, head_raw, state)
            if head is None:
                raise DisclosureFailed(f"audit segment {base}.jsonl: {why}")
            checked = [(day, lines, head_raw, head, rows)]
        # the rows about a clip are found in the whole day (a clip id named in one part, its rows in the next)
        every = [r for x in checked for r in x[4]]
        about = {c.object_key: set(rows_about(every, c.object_key, c.manifest["clip"]["sha256"])) for c in cs}
        for stem, seg_lines, head_raw, head, rows in checked:
            own = {r["seq"] for r in rows}
            seqs = {k: sorted(v & own) for k, v in about.items() if v & own}
            if seqs:
                out.append(Segment(station, stem, seg_lines, head_raw, head["signature"]["key_id"], seqs))
    return out


_PART = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})\.part-([0-9]{12})\.(jsonl|head\.json)$")
MAX_PARTS = 10_000  # one day's parts (every 15 minutes: 96)


def day_parts(backend: Backend, base: str, station: str, day: str, state: TrustState) -> list[
        tuple[str, bytes, bytes, dict[str, Any], list[dict[str, Any]]]]:
    """The day's part segments under ``base`` (``{base}.part-{first_seq:012d}.jsonl`` + ``.head.json``),
    each checked like a day segment and all chained in first-seq order: a part starts at the seq after the
    previous part's last and its ``prev_hash_of_first`` is that part's ``last_hash``; a gap or fork, a body
    without head (but the newest: its head may be on its way), a head without body, is DisclosureFailed
    naming the objects. Returns ``[(stem, lines, head bytes, head, rows)]``, empty if there are none."""
    names: dict[int, set[str]] = {}
    want = base + ".part-"
    try:  # the directory from the day's first part on (a backend lists by directory), in key order
        for k in backend.list_keys(base.rsplit("/", 1)[0] + "/", start_after=want):
            if not k.startswith(want):
                break
            m = _PART.fullmatch(k.rsplit("/", 1)[-1])
            if m is None or m.group(1) != day:
                raise DisclosureFailed(f"{k}: not an audit part segment name")
            names.setdefault(int(m.group(2)), set()).add(m.group(3))
            if len(names) > MAX_PARTS:
                raise DisclosureFailed(f"{base}.part-*: more than {MAX_PARTS} parts")
    except StoreFailure as e:
        raise DisclosureFailed(f"listing {base}.part-: {e}") from None
    out: list[tuple[str, bytes, bytes, dict[str, Any], list[dict[str, Any]]]] = []
    order = sorted(names)
    for i, first in enumerate(order):
        stem = f"{day}.part-{first:012d}"
        key = f"{base}.part-{first:012d}"
        if names[first] == {"jsonl"} and i == len(order) - 1:
            break  # the newest part's head is not in storage yet: the rows it holds are not vouched for
        if names[first] != {"jsonl", "head.json"}:
            missing = ".head.json" if "head.json" not in names[first] else ".jsonl"
            raise DisclosureFailed(f"audit part {key}: {key}{missing} is missing")
        lines = _read(backend, key + ".jsonl", MAX_SEGMENT)
        head_raw = _read(backend, key + ".head.json", mf.MAX_BYTES)
        if lines is None or head_raw is None:
            raise DisclosureFailed(f"audit part {key}: gone since it was listed")
        head, rows, why = check_segment(station, lines, head_raw, state)
        if head is None:
            raise DisclosureFailed(f"audit part {key}.jsonl: {why}")
        if head.get("part") is not True or head.get("day") != day or head["first_seq"] != first:
            raise DisclosureFailed(f"audit part {key}.jsonl: its head is not the head of this part "
                                   f"(part, day or first seq differ)")
        if out:
            prev_stem, prev_rows = out[-1][0], out[-1][4]  # checked: its rows end at its head's last hash
            if rows[0]["seq"] != prev_rows[-1]["seq"] + 1 or head["prev_hash_of_first"] != prev_rows[-1]["hash"]:
                raise DisclosureFailed(f"audit parts {base.rsplit('/', 1)[0]}/{prev_stem}.jsonl and {key}.jsonl do "
                                       "not chain (a part missing between them, or a fork)")
        out.append((stem, lines, head_raw, head, rows))
    return out


def segment_rows(lines: bytes) -> list[dict[str, Any]]:
    return [ijson.loads(x) for x in lines.decode("utf-8").splitlines() if x.strip()]


def list_shared(backend: Backend, object_keys: list[str], at_least: int = 4) -> dict[str, list[str]]:
    """For clips that share a directory (camera-day) with at least ``at_least - 1`` others: one listing of that
    directory instead of one per clip. Returns object key -> the keys starting with it and ``.``; clips not
    covered are absent (``resolve`` lists them itself)."""
    by_dir: dict[str, list[str]] = {}
    for k in object_keys:
        if "/" in k:
            by_dir.setdefault(k.rsplit("/", 1)[0] + "/", []).append(k)
    out: dict[str, list[str]] = {}
    for d, ks in by_dir.items():
        if len(ks) < at_least:
            continue
        try:
            keys = sorted(backend.list_keys(d))
        except StoreFailure as e:
            raise DisclosureFailed(f"listing {d}: {e}") from None
        by_sha: dict[str, list[str]] = {}
        for k in ks:
            out[k] = []
            by_sha.setdefault(k[len(d):][:64], []).append(k)
        for k in keys:
            for clip in by_sha.get(k[len(d):][:64], ()):
                if k.startswith(clip + "."):
                    out[clip].append(k)
    return out
