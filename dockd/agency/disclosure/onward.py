"""Onward disclosure (``dockd disclose create --from-bag PARENT``): a prosecutor passes all or part of a bag
they received to defence, signed by their own key and chained to the parent transfer.

The parent bag is verified in full first (against the pinned root); nothing is taken from a bag that
fails. The child carries, besides the chosen clips with their manifests, sidecars, audit segments and the
trust log, the parent's signed records under ``data/parent/``: ``transfer.json``, ``transfer.json.sig``,
``tagmanifest-sha256.txt`` and its ``.sig``, and the grandparent's under ``data/parent/parent/`` and so on,
so that ``verify`` of the child walks the chain back to the police disclosure and from there to the
stations that signed each clip's manifest. ``transfer.json``'s ``parent`` names the parent's digests.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dockd.agency.disclosure import DisclosureFailed, collect
from dockd.agency.disclosure import verify as vf
from dockd.agency.disclosure.create import CHUNK, Source
from dockd.evidence import manifest as mf
from dockd.evidence.localfile import open_regular, read_regular
from dockd.trust import log as trust

RECORDS = ("transfer.json", "transfer.json.sig", "tagmanifest-sha256.txt", "tagmanifest-sha256.txt.sig")
MAX_CHAIN = 16


def _read(bag: Path, rel: str, limit: int = vf.MAX_TAG) -> bytes:
    data = read_regular(bag / rel, limit)
    if data is None:
        raise DisclosureFailed(f"{bag}/{rel}: too large")
    return data


def _clip(bag: Path, c: dict[str, Any]) -> collect.ClipSource:
    rel = c["path"][len("data/clips/"):]
    manifests = [(p[len("data/clips/"):], _read(bag, p, mf.MAX_BYTES)) for p in c["manifests"]]
    m = mf.parse(manifests[0][1], c["manifests"][0])
    pre = c["object_key"][: len(c["object_key"]) - len(rel)]
    from dockd.core import naming

    sidecars = [(collect.split_sidecar(pre, naming.sidecar_key(c["object_key"], s["sha256"], str(s.get("path", "")))),
                 s["sha256"], s["size"]) for s in m.get("sidecars") or []]
    return collect.ClipSource(c["object_key"], rel, c["station"], c["camera"], m, manifests, sidecars,
                              c.get("station_key_id", ""))


def from_bag(parent: Path, root_pub: Any, trust_raws: list[bytes] | None, object_keys: list[str]) -> tuple[
        Source, trust.TrustState]:
    """The chosen clips of ``parent`` (all if ``object_keys`` is empty), after verifying it in full."""
    parent = Path(parent)
    r = vf.verify(parent, root_pub, trust_raws)
    if not r.ok:
        raise DisclosureFailed(f"parent bag {parent} is not valid ({len(r.reasons)} reasons; first: {r.reasons[0]}); "
                               "run `dockd disclose verify` on it")
    pt = r.transfer or {}
    by_key = {c["object_key"]: c for c in pt["clips"]}
    missing = [k for k in object_keys if k not in by_key]
    if missing:
        raise DisclosureFailed(f"the parent bag holds no clip {missing[0]!r}")
    chosen = [by_key[k] for k in (dict.fromkeys(object_keys) if object_keys else by_key)]
    clips = [_clip(parent, c) for c in chosen]
    segs: dict[str, collect.Segment] = {}
    for c in chosen:
        for a in c["audit"]:
            p = a["segment"]
            if p not in segs:
                station, day = p.split("/")[2], p.split("/")[3][: -len(".jsonl")]
                head = _read(parent, p[: -len(".jsonl")] + ".head.json", mf.MAX_BYTES)
                segs[p] = collect.Segment(station, day, _read(parent, p, collect.MAX_SEGMENT), head,
                                          mf.parse(head, p)["signature"]["key_id"])
            segs[p].clip_seqs[c["object_key"]] = a["seqs"]
    raws = trust_raws if trust_raws is not None else [
        _read(parent, f"data/trust/log/{i:08d}.json", trust.MAX_STATEMENT)
        for i in range(len([f for f in os.listdir(parent / "data" / "trust" / "log")]))]
    extra = {f"data/parent/{n}": _read(parent, n) for n in RECORDS}
    for depth in range(1, MAX_CHAIN):
        d = "/".join(["data"] + ["parent"] * depth)
        if not (parent / d / "transfer.json").is_file():
            break
        for n in RECORDS:
            extra[f"data/parent/{d[len('data/'):]}/{n}"] = _read(parent, f"{d}/{n}")
    tbytes = extra["data/parent/transfer.json"]
    link = {"case": pt["case"], "sender": pt["sender"], "recipient": pt["recipient"],
            "transfer_sha256": hashlib.sha256(tbytes).hexdigest(),
            "tagmanifest_sha256": hashlib.sha256(extra["data/parent/tagmanifest-sha256.txt"]).hexdigest()}

    def chunks(name: str) -> Iterator[bytes]:
        fd = open_regular(parent / name)
        try:
            while b := os.read(fd, CHUNK):
                yield b
        finally:
            os.close(fd)

    state = trust.load(root_pub, raws)
    return Source(clips, list(segs.values()), raws, chunks, "data/clips/", extra, link), state
