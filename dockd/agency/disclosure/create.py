"""``dockd disclose create``: a signed BagIt 1.0 bag of clips from central storage.

Layout (every name below ``data/`` is plain text; see :mod:`.bagfmt`)::

    bagit.txt  bag-info.txt  manifest-sha256.txt  manifest-sha512.txt
    transfer.json            (RFC 8785 bytes: who, to whom, under which authority, every item's digest)
    case.jsonld              (CASE 1.5 / UCO: the custody as linked data)
    VERIFY.txt               (the offline check with sha256sum, openssl and jq)
    discloser.pub.pem        (the signer's public key, also in the trust log)
    tagmanifest-sha256.txt  tagmanifest-sha512.txt   (every file above)
    tagmanifest-sha256.txt.sig  transfer.json.sig     (raw Ed25519 by the discloser: the only unlisted files)
    data/clips/{station}/{camera}/{YYYY}/{MM}/{DD}/{sha256}{ext}   (+ .manifest.json, sidecars)
    data/audit/{station}/{day}.jsonl  + .head.json                 (whole exported day segments)
    data/trust/log/{seq:08d}.json                                   (the agency trust log, root-signed)

Every clip is streamed from storage into the bag in bounded chunks, hashed (SHA-256, SHA-512) as it
arrives, and compared with its signed manifest; any mismatch fails the whole bag, which only appears
under its name once complete (:class:`.writer.BagWriter`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785

from dockd import __version__
from dockd.agency.disclosure import DisclosureFailed, bagfmt, casegraph, collect
from dockd.agency.disclosure import progress as pg
from dockd.agency.disclosure.writer import BagWriter, Written
from dockd.core.errors import UsageError
from dockd.evidence import keys
from dockd.storage.base import Backend, StoreFailure
from dockd.trust.log import TrustState

TRANSFER_TYPE = "dockd.transfer/1"
PROFILE_ID = "https://github.com/dockd/dockd/blob/main/dockd/agency/disclosure/dockd-bagit-profile.json"
PARALLEL = 8  # concurrent downloads: enough to fill a LAN link, bounded memory (one chunk each)
CHUNK = 1 << 20
SIG_FILES = ("tagmanifest-sha256.txt.sig", "transfer.json.sig")


@dataclass
class Request:
    case: str
    recipient: str
    authority: str
    object_keys: list[str]
    out: Path
    created_at: str
    previous: str | None = None  # sha256 of the case ledger's last transfer (None: the first)
    as_zip: bool = False  # write one zip file at ``out`` instead of a directory


@dataclass
class Source:
    """Where a bag's contents come from: central storage, or (onward disclosure) a verified parent bag."""

    clips: list[collect.ClipSource]
    segments: list[collect.Segment]
    trust_raws: list[bytes]
    chunks: Callable[[str], Iterator[bytes]]  # a clip's or sidecar's bytes by source name, streamed
    src_prefix: str  # source name of a clip = src_prefix + its path below data/clips/
    extra: dict[str, bytes] = field(default_factory=dict)  # further payload files (the parent's records)
    parent: dict[str, Any] | None = None
    # From storage, clips are resolved (manifest read and checked) while earlier ones download: the keys,
    # how to resolve one, and how to find the audit segments of all; ``clips``/``segments`` filled by build.
    lazy: tuple[list[str], Callable[[str], collect.ClipSource],
                Callable[[list[collect.ClipSource]], list[collect.Segment]]] | None = None


def from_storage(backend: Backend, prefix: str, state: TrustState, trust_raws: list[bytes],
                 object_keys: list[str]) -> Source:
    """Clips from central storage. Nothing is read here but one listing per camera-day holding several of
    them: each clip's manifest is read and checked by :func:`build`, in parallel with the downloads of the
    clips resolved before it (a clip's bytes are only fetched once its manifest has verified)."""
    keys = list(dict.fromkeys(object_keys))
    listed = collect.list_shared(backend, keys)  # one listing per camera-day instead of one per clip
    pre = prefix.strip("/") + "/" if prefix.strip("/") else ""

    def chunks(key: str) -> Iterator[bytes]:
        try:
            yield from backend.iter_chunks(key, CHUNK)
        except StoreFailure as e:
            raise DisclosureFailed(f"downloading {key}: {e}") from None

    return Source([], [], trust_raws, chunks, pre,
                  lazy=(keys, lambda k: collect.resolve(backend, prefix, k, state, listed.get(k)),
                        lambda clips: collect.audit_segments(backend, prefix, clips, state) if clips else []))


def _ignore(_e: pg.Event) -> None:
    pass


def _reported(chunks: Iterator[bytes], rel: str, emit: pg.Sink) -> Iterator[bytes]:
    """Pass ``chunks`` through; report each one's length once the writer asks for the next, i.e. after it
    hashed and wrote it (never on receipt)."""
    for c in chunks:
        yield c
        emit(pg.Wrote(rel, len(c)))


def _fetch(src: Source, w: BagWriter, name: str, rel: str, sha256: str, size: int,
           emit: pg.Sink = _ignore) -> Written:
    """Stream ``name`` into ``rel``; the bytes must be exactly the ``size``/``sha256`` the manifest signed."""
    try:
        # fsynced here, by the download thread (measured: a serial fsync pass at the end cost 0.55 s of a
        # 1 GB bag's 4.5 s; here it overlaps the other downloads)
        got = w.write_stream(rel, _reported(collect.checked_stream(src.chunks(name), size, name), rel, emit),
                             sync=True, direct=True)
    except BaseException:
        w.discard(rel)
        raise
    if got.size != size or got.sha256 != sha256:
        w.discard(rel)
        raise DisclosureFailed(f"{name}: holds {got.size} bytes with sha256 {got.sha256}, its signed "
                               f"manifest says {size} bytes with sha256 {sha256}; not disclosed")
    return got


def _jobs(src: Source, c: collect.ClipSource) -> list[tuple[str, str, str, int]]:
    """(source name, bag path, sha256, size) of a clip and its sidecars, as its signed manifest names them."""
    return [(src.src_prefix + c.rel, f"data/clips/{c.rel}", c.manifest["clip"]["sha256"], c.manifest["clip"]["size"])
            ] + [(src.src_prefix + k, f"data/clips/{k}", sha, size) for k, sha, size in c.sidecars]


def _raise_first(f: Future[Any], pending: set[Future[Any]]) -> None:
    """If ``f`` failed: cancel what has not started and raise its exception."""
    exc = f.exception()
    if exc is not None:
        for g in pending:
            g.cancel()
        raise exc


def _resolved(c: collect.ClipSource, src: Source) -> pg.Resolved:
    return pg.Resolved(c.object_key, tuple((rel, size) for _, rel, _, size in _jobs(src, c)))


def _download(src: Source, w: BagWriter, emit: pg.Sink) -> list[Written]:
    """Every clip and sidecar, ``PARALLEL`` at a time (for a lazy source: each clip resolved first, in a pool
    of its own, its downloads started as soon as it is; then the audit segments of all). Fills ``src.clips``
    and ``src.segments`` in the order asked for. The first failure cancels the rest and is raised.
    ``emit`` hears ``Resolved`` per clip, ``Wrote`` (from the download threads) and ``Verified`` per file
    once its future returned: checked against the manifest and fsynced."""
    out: list[Written] = []
    seen: set[tuple[str, str, str, int]] = set()
    keys, resolve, segments = src.lazy if src.lazy is not None else ([], None, None)
    resolved: dict[str, collect.ClipSource] = {}
    with ThreadPoolExecutor(2 * PARALLEL) as rpool, ThreadPoolExecutor(PARALLEL) as dpool:
        kinds: dict[Future[Any], tuple[str, str]] = {}  # future -> ("fetch"|"segments"|"clip", object key)
        fresh: list[Future[Any]] = []

        def submit(f: Future[Any], kind: tuple[str, str]) -> None:
            kinds[f] = kind
            fresh.append(f)

        def fetch(c: collect.ClipSource) -> None:
            for j in _jobs(src, c):
                if j not in seen:
                    seen.add(j)
                    submit(dpool.submit(_fetch, src, w, *j, emit), ("fetch", ""))

        if resolve is None:
            for c in src.clips:
                emit(_resolved(c, src))
                fetch(c)
        else:
            for k in keys:
                submit(rpool.submit(resolve, k), ("clip", k))
        pending: set[Future[Any]] = set()
        while fresh or pending:
            pending |= set(fresh)
            fresh.clear()
            # FIRST_COMPLETED, not FIRST_EXCEPTION (which waits for all of them unless one fails): each
            # resolved clip starts its downloads, and each verified file is reported, as soon as it is
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                _raise_first(f, pending)
                kind, key = kinds.pop(f)
                if kind == "fetch":
                    out.append(f.result())
                    emit(pg.Verified(f.result().path))
                elif kind == "segments":
                    src.segments = f.result()
                else:
                    resolved[key] = f.result()
                    emit(_resolved(f.result(), src))
                    fetch(f.result())
                    if len(resolved) == len(keys) and segments is not None:
                        src.clips = [resolved[k] for k in keys]
                        submit(rpool.submit(segments, src.clips), ("segments", ""))
    return out


def _write_records(src: Source, w: BagWriter, payload: dict[str, Written]) -> None:
    """The payload files held in memory: the extra files, the clips' manifests, audit segments, trust log."""
    for rel, data in sorted(src.extra.items()):
        payload[rel] = w.write_bytes(rel, data)
    for c in src.clips:
        for k, raw in c.manifests:
            payload[f"data/clips/{k}"] = w.write_bytes(f"data/clips/{k}", raw)
    for s in src.segments:
        base = f"data/audit/{s.station}/{s.day}"
        payload[base + ".jsonl"] = w.write_bytes(base + ".jsonl", s.lines)
        payload[base + ".head.json"] = w.write_bytes(base + ".head.json", s.head)
    for i, raw in enumerate(src.trust_raws):
        payload[f"data/trust/log/{i:08d}.json"] = w.write_bytes(f"data/trust/log/{i:08d}.json", raw)


def _bag_info(req: Request, state: TrustState, discloser: str, n_clips: int, oxum: tuple[int, int]) -> bytes:
    return bagfmt.bag_info_text([
        ("Source-Organization", state.agency),
        ("Contact-Name", discloser),
        ("External-Identifier", req.case),
        ("External-Description", f"Disclosure of {n_clips} body-worn camera clip(s) in case {req.case} to "
                                 f"{req.recipient} under {req.authority}"),
        ("Bagging-Date", req.created_at[:10]),
        ("Payload-Oxum", f"{oxum[0]}.{oxum[1]}"),
        ("BagIt-Profile-Identifier", PROFILE_ID),
        ("Case-Number", req.case),
        ("Recipient", req.recipient),
        ("Authority", req.authority),
        ("Disclosed-By", discloser),
        ("Clip-Count", str(n_clips)),
        ("Bag-Software-Agent", f"dockd {__version__}"),
    ])


def transfer_body(req: Request, discloser: keys.StationKey, discloser_name: str, state: TrustState,
                  clips: list[collect.ClipSource], segs: list[collect.Segment],
                  payload: dict[str, Written]) -> dict[str, Any]:
    return {
        "type": TRANSFER_TYPE,
        "case": req.case,
        "created_at": req.created_at,
        "sender": {"key_id": discloser.key_id, "name": discloser_name, "agency": state.agency},
        "recipient": {"name": req.recipient},
        "authority": req.authority,
        "previous": req.previous,
        "trust": {"root_key_id": state.root_key_id, "head_seq": state.head_seq, "head_digest": state.head_digest},
        "clips": [{"object_key": c.object_key, "path": f"data/clips/{c.rel}", "station": c.station,
                   "camera": c.camera, "sha256": c.manifest["clip"]["sha256"], "size": c.manifest["clip"]["size"],
                   "offloaded_at": c.manifest.get("offloaded_at"), "station_key_id": c.station_key_id,
                   "manifests": [f"data/clips/{k}" for k, _ in c.manifests],
                   "sidecars": [f"data/clips/{k}" for k, _, _ in c.sidecars],
                   "audit": [{"segment": f"data/audit/{s.station}/{s.day}.jsonl", "seqs": s.clip_seqs[c.object_key]}
                             for s in segs if c.object_key in s.clip_seqs]}
                  for c in clips],
        "items": [{"path": p, "sha256": w.sha256, "sha512": w.sha512, "size": w.size}
                  for p, w in sorted(payload.items())],
        "software": f"dockd {__version__}",
    }


def build(src: Source, state: TrustState, discloser: keys.StationKey, req: Request,
          progress: pg.Sink | None = None,
          before_commit: Callable[[dict[str, Any], bytes, bytes], None] | None = None) -> dict[str, Any]:
    """Build the bag at ``req.out``; returns the transfer.

    Order of the steps, and what a crash (or failure) between them leaves:

    1. every file written under the temporary name and the bag sealed there (all fsynced; a zip is written
       as a fsynced hidden file beside ``req.out``). Failure or crash before the end of this step: no bag,
       nothing recorded (a failure removes the temporary bag; a crash leaves an incomplete hidden one).
    2. ``before_commit(transfer, transfer_bytes, tagmanifest_bytes)``: the ledger entry. Failure: the
       sealed bag is removed, nothing recorded, nothing disclosed.
    3. the sealed bag renamed to ``req.out``. A crash or failure between 2 and 3 leaves a ledger entry
       whose bag is complete, valid and durable under its temporary name (``.{name}.partial-{pid}`` or
       ``.{name}.zip-partial-{pid}``): the entry never names a bag that does not exist; the operator
       renames it into place (a failure says so and where), and the next run refuses to overwrite it.

    So a bag appears under its name only once it is recorded, and a record exists only for a complete bag.
    ``progress`` hears the events of :mod:`.progress` (``Wrote`` from the download threads)."""
    v = state.check(discloser.key_id, "discloser", req.created_at)
    if not v.ok:
        raise DisclosureFailed(f"signing key: {v.reason}")
    name = state.enrolments[discloser.key_id][0].subject["name"]
    asked = src.lazy[0] if src.lazy is not None else src.clips
    if not asked:
        raise DisclosureFailed("no clips selected")
    emit = progress or _ignore

    def phase(name: str) -> None:
        emit(pg.Phase(name))

    # --zip reads every file back to zip it: there, clip bytes stay in the page cache (no O_DIRECT) so that a
    # bag that fits in memory is not read from the disk again
    w = BagWriter(req.out, direct=not req.as_zip)
    try:
        emit(pg.Planned(len(asked)))
        phase(pg.RESOLVING if src.lazy is not None else pg.DOWNLOADING)
        payload = {x.path: x for x in _download(src, w, emit)}
        phase(pg.TAGS)
        clips, segs = src.clips, src.segments
        _write_records(src, w, payload)
        tags: dict[str, Written] = {}

        def tag(rel: str, data: bytes) -> None:
            tags[rel] = w.write_bytes(rel, data)

        tag("bagit.txt", bagfmt.BAGIT_TXT)
        for alg in bagfmt.ALGS:
            tag(f"manifest-{alg}.txt", bagfmt.manifest_text({p: getattr(x, alg) for p, x in payload.items()}))
        transfer = transfer_body(req, discloser, name, state, clips, segs, payload)
        transfer["parent"] = src.parent
        tbytes = rfc8785.dumps(transfer)
        tag("transfer.json", tbytes)
        tag("discloser.pub.pem", keys.public_pem(discloser.public).encode())
        tag("case.jsonld", casegraph.dumps(transfer, tbytes))
        from dockd.agency.disclosure.verifytxt import verify_txt

        tag("VERIFY.txt", verify_txt(transfer))
        oxum = (sum(x.size for x in payload.values()), len(payload))
        tag("bag-info.txt", _bag_info(req, state, name, len(clips), oxum))
        for alg in bagfmt.ALGS:
            tm = bagfmt.manifest_text({p: getattr(x, alg) for p, x in tags.items()})
            w.write_bytes(f"tagmanifest-{alg}.txt", tm)
            if alg == "sha256":
                tm256 = tm
        phase(pg.SIGNING)
        w.write_bytes("tagmanifest-sha256.txt.sig", discloser.private.sign(tm256))
        w.write_bytes("transfer.json.sig", discloser.private.sign(tbytes))
        phase(pg.SEALING)
        sealed = w.seal(req.as_zip)
        if before_commit is not None:
            phase(pg.LEDGER)
            before_commit(transfer, tbytes, tm256)
    except BaseException:
        w.abort()
        raise
    try:
        w.publish()
    except (OSError, UsageError) as e:
        raise DisclosureFailed(f"the bag is complete and recorded, but could not be put in place ({e}); it is "
                               f"at {sealed}: rename it to {req.out}") from None
    phase(pg.DONE)
    return transfer


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
