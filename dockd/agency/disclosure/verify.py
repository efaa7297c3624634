"""``dockd disclose verify BAG``: everything a bag claims, checked offline with only the bag and the pinned
agency root key; every reason it fails is collected (nothing stops at the first).

The bag is hostile input: no symlink is followed and no FIFO or device opened (one found is a reason),
every path must be a plain bag path, tag files are read with a size bound and JSON is strict I-JSON
(:mod:`dockd.core.ijson`); ``transfer.json`` must be exactly its RFC 8785 form. Payload files are hashed
in one streaming pass (SHA-256 and SHA-512), never read whole.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature

from dockd.agency.disclosure import bagfmt, collect
from dockd.agency.disclosure.create import SIG_FILES, TRANSFER_TYPE
from dockd.core import ijson
from dockd.core.errors import KeyError_, ManifestInvalid, TrustInvalid, UsageError
from dockd.evidence import keys
from dockd.evidence import manifest as mf
from dockd.evidence.localfile import open_regular, read_regular
from dockd.trust import log as trust

MAX_FILES = 200_000
MAX_DEPTH = 16
MAX_TAG = 64 << 20  # manifests of ~200k files, a transfer record of thousands of clips
REQUIRED_TAGS = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest-sha512.txt", "transfer.json",
                 "VERIFY.txt", "discloser.pub.pem", "case.jsonld")
REQUIRED_INFO = ("Source-Organization", "Contact-Name", "External-Identifier", "Bagging-Date", "Payload-Oxum",
                 "BagIt-Profile-Identifier", "Case-Number", "Recipient", "Authority", "Disclosed-By")


@dataclass
class Report:
    bag: str
    reasons: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    transfer: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.reasons

    def as_json(self) -> dict[str, Any]:
        t = self.transfer or {}
        return {"bag": self.bag, "valid": self.ok, "reasons": self.reasons, "checked": self.checked,
                "case": t.get("case"), "sender": t.get("sender"), "recipient": t.get("recipient"),
                "clips": len(t.get("clips") or [])}


def _walk(bag: Path, r: Report) -> set[str]:
    """Every regular file below ``bag`` (relative paths); anything else found is a reason."""
    out: set[str] = set()
    stack = [("", 0)]
    while stack:
        rel, depth = stack.pop()
        if depth > MAX_DEPTH:
            r.reasons.append(f"{rel}: directories nested deeper than {MAX_DEPTH}")
            continue
        try:
            entries = list(os.scandir(bag / rel if rel else bag))
        except OSError as e:
            r.reasons.append(f"{rel or '.'}: {e.strerror or e}")
            continue
        for ent in entries:
            p = f"{rel}/{ent.name}" if rel else ent.name
            st = ent.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append((p, depth + 1))
            elif stat.S_ISREG(st.st_mode):
                if not bagfmt.safe_path(p):
                    r.reasons.append(f"{p!r}: a file name a dockd bag never holds")
                out.add(p)
            else:
                r.reasons.append(f"{p}: not a regular file or directory (symlink, FIFO or device; not followed)")
            if len(out) > MAX_FILES:
                raise UsageError(f"{bag}: more than {MAX_FILES} files; not a dockd bag")
    return out


def _read(bag: Path, rel: str, r: Report, limit: int = MAX_TAG) -> bytes | None:
    try:
        data = read_regular(bag / rel, limit)
    except UsageError as e:
        r.reasons.append(f"{rel}: {e.message()}")
        return None
    if data is None:
        r.reasons.append(f"{rel}: larger than {limit} bytes")
    return data


def _hash(bag: Path, rel: str) -> tuple[str, str, int]:
    fd = open_regular(bag / rel)
    h256, h512, n = hashlib.sha256(), hashlib.sha512(), 0
    try:
        while b := os.read(fd, 1 << 20):
            h256.update(b)
            h512.update(b)
            n += len(b)
    finally:
        os.close(fd)
    return h256.hexdigest(), h512.hexdigest(), n


def _manifests(bag: Path, files: set[str], r: Report, kind: str) -> dict[str, dict[str, str]]:
    out = {}
    for alg in bagfmt.ALGS:
        name = f"{kind}-{alg}.txt"
        if name not in files:
            r.reasons.append(f"{name} is missing (the dockd profile requires {kind}s in sha256 and sha512)")
            continue
        data = _read(bag, name, r)
        if data is None:
            continue
        try:
            out[alg] = bagfmt.parse_manifest(data, alg, name)
        except bagfmt.BagFormatError as e:
            r.reasons.append(str(e))
    return out


def check_payload(bag: Path, files: set[str], r: Report) -> dict[str, tuple[str, str, int]]:
    """Completeness and fixity of data/; returns path -> (sha256, sha512, size) as hashed."""
    mans = _manifests(bag, files, r, "manifest")
    data = {f for f in files if f.startswith("data/")}
    listed = set().union(*(m.keys() for m in mans.values())) if mans else set()
    for p in sorted(listed - data):
        r.reasons.append(f"{p}: listed in the payload manifest but missing from the bag")
    for p in sorted(data - listed):
        r.reasons.append(f"{p}: in the payload but listed in no manifest (extra file)")
    for p in sorted(listed - {x for x in listed if x.startswith("data/")}):
        r.reasons.append(f"{p}: payload manifest lists a path outside data/")
    got = {}
    for p in sorted(data & listed):
        got[p] = _hash(bag, p)
        for i, alg in enumerate(bagfmt.ALGS):
            want = mans.get(alg, {}).get(p)
            if want is None:
                r.reasons.append(f"{p}: not listed in manifest-{alg}.txt")
            elif want != got[p][i]:
                r.reasons.append(f"{p}: {alg} differs from manifest-{alg}.txt (altered)")
    r.checked.append(f"payload: {len(got)} files hashed (sha256, sha512)")
    return got


def check_tags(bag: Path, files: set[str], r: Report) -> None:
    mans = _manifests(bag, files, r, "tagmanifest")
    tagfiles = {f for f in files if not f.startswith("data/")}
    unlisted_ok = {"tagmanifest-sha256.txt", "tagmanifest-sha512.txt", *SIG_FILES}
    for alg, m in mans.items():
        for need in REQUIRED_TAGS:
            if need not in m:
                r.reasons.append(f"tagmanifest-{alg}.txt does not list {need}")
        for p, want in sorted(m.items()):
            if p not in tagfiles:
                r.reasons.append(f"{p}: listed in tagmanifest-{alg}.txt but missing")
                continue
            got = _hash(bag, p)[bagfmt.ALGS.index(alg)]
            if got != want:
                r.reasons.append(f"{p}: {alg} differs from tagmanifest-{alg}.txt (altered)")
    listed = set().union(*(m.keys() for m in mans.values())) if mans else set()
    for p in sorted(tagfiles - listed - unlisted_ok):
        r.reasons.append(f"{p}: a tag file listed in no tag manifest (extra file)")
    r.checked.append(f"tag files: {len(listed)} listed")


def check_info(bag: Path, files: set[str], payload: dict[str, tuple[str, str, int]], r: Report) -> None:
    raw = _read(bag, "bagit.txt", r, 1024) if "bagit.txt" in files else None
    if raw is None:
        r.reasons.append("bagit.txt is missing or unreadable")
    else:
        try:
            bagfmt.parse_bagit_txt(raw)
        except bagfmt.BagFormatError as e:
            r.reasons.append(str(e))
    raw = _read(bag, "bag-info.txt", r, 1 << 20) if "bag-info.txt" in files else None
    if raw is None:
        r.reasons.append("bag-info.txt is missing or unreadable")
        return
    try:
        info = dict(bagfmt.parse_bag_info(raw))
    except bagfmt.BagFormatError as e:
        r.reasons.append(str(e))
        return
    for k in REQUIRED_INFO:
        if k not in info:
            r.reasons.append(f"bag-info.txt lacks {k} (required by the dockd profile)")
    oxum = f"{sum(x[2] for x in payload.values())}.{len(payload)}"
    if info.get("Payload-Oxum") not in (None, oxum):
        r.reasons.append(f"bag-info.txt Payload-Oxum {info['Payload-Oxum']} differs from the payload ({oxum})")
    t = r.transfer or {}
    for k, v in (("Case-Number", t.get("case")), ("Recipient", (t.get("recipient") or {}).get("name")),
                 ("Authority", t.get("authority"))):
        if k in info and v is not None and info[k] != v:
            r.reasons.append(f"bag-info.txt {k} {info[k]!r} differs from the signed transfer record")


def _sig_ok(pub: Any, sig: bytes | None, data: bytes | None) -> bool:
    if sig is None or data is None:
        return False
    try:
        pub.verify(sig, data)
        return True
    except (InvalidSignature, ValueError):
        return False


def load_transfer(bag: Path, files: set[str], r: Report) -> bytes | None:
    raw = _read(bag, "transfer.json", r) if "transfer.json" in files else None
    if raw is None:
        r.reasons.append("transfer.json is missing or unreadable")
        return None
    try:
        t = ijson.loads(raw, max_bytes=MAX_TAG)
    except ijson.Invalid as e:
        r.reasons.append(f"transfer.json: {e}")
        return None
    if not isinstance(t, dict) or t.get("type") != TRANSFER_TYPE:
        r.reasons.append(f"transfer.json is not a {TRANSFER_TYPE} record")
        return None
    if rfc8785.dumps(t) != raw:
        r.reasons.append("transfer.json is not in its RFC 8785 canonical form")
    need = ("case", "created_at", "sender", "recipient", "authority", "clips", "items", "previous")
    missing = [k for k in need if k not in t]
    if missing or not isinstance(t.get("clips"), list) or not isinstance(t.get("items"), list) \
            or not isinstance(t.get("sender"), dict):
        r.reasons.append(f"transfer.json lacks or malforms {', '.join(missing) or 'clips/items/sender'}")
        return None
    r.transfer = t
    return raw


def check_signer(bag: Path, files: set[str], state: trust.TrustState, traw: bytes, r: Report) -> None:
    t = r.transfer or {}
    kid = t["sender"].get("key_id")
    pub = state.public_key(kid) if isinstance(kid, str) else None
    if pub is None:
        r.reasons.append(f"transfer signed by key {kid!r}, which the trust log does not enrol")
        return
    v = state.check(kid, "discloser", t.get("created_at"))
    if not v.ok:
        r.reasons.append(f"discloser: {v.reason}")
    pem = _read(bag, "discloser.pub.pem", r, 16 << 10) if "discloser.pub.pem" in files else None
    if pem is not None and pem != keys.public_pem(pub).encode():
        r.reasons.append("discloser.pub.pem is not the key the trust log enrolled for the sender")
    for name, data in (("tagmanifest-sha256.txt", _read(bag, "tagmanifest-sha256.txt", r)
                        if "tagmanifest-sha256.txt" in files else None), ("transfer.json", traw)):
        sig = _read(bag, name + ".sig", r, 1024) if name + ".sig" in files else None
        if not _sig_ok(pub, sig, data):
            r.reasons.append(f"{name}.sig: missing, or not the discloser's signature over {name}")
    if v.ok:
        r.checked.append(f"discloser: {v.reason}")


def check_items(payload: dict[str, tuple[str, str, int]], r: Report) -> None:
    t = r.transfer or {}
    items = {}
    for it in t["items"]:
        if isinstance(it, dict) and isinstance(it.get("path"), str):
            items[it["path"]] = (it.get("sha256"), it.get("sha512"), it.get("size"))
    if set(items) != set(payload):
        r.reasons.append(f"transfer.json items differ from the payload: {len(set(items) ^ set(payload))} path(s)")
    for p in sorted(set(items) & set(payload)):
        if items[p] != payload[p]:
            r.reasons.append(f"{p}: digest or size differs from transfer.json items")


def _json(bag: Path, rel: str, r: Report) -> Any:
    raw = _read(bag, rel, r, mf.MAX_BYTES)
    if raw is None:
        return None
    try:
        return mf.parse(raw, rel)
    except ManifestInvalid as e:
        r.reasons.append(e.message())
        return None


def check_clips(bag: Path, state: trust.TrustState, payload: dict[str, tuple[str, str, int]], r: Report) -> None:
    """Each clip's station manifest (signed by a key enrolled for that station when it signed), and the
    clip's and sidecars' digests as the manifest states them."""
    n = 0
    for c in (r.transfer or {})["clips"]:
        if not isinstance(c, dict) or not all(isinstance(c.get(k), str) for k in ("path", "station", "object_key")) \
                or not isinstance(c.get("manifests"), list) or not c["manifests"] \
                or not all(isinstance(x, str) and x in payload for x in c["manifests"]):
            r.reasons.append("transfer.json: a clip entry is malformed or names a manifest not in the payload")
            continue
        what = c["object_key"]
        m = _json(bag, c["manifests"][0], r)
        try:
            mf.check(m)
        except ManifestInvalid as e:
            r.reasons.append(f"{what}: {e.message()}")
            continue
        v = state.verify_signed(m, "station", "offloaded_at")
        if not v.ok:
            r.reasons.append(f"{what}: station manifest: {v.reason}")
            continue
        kid = m["signature"]["key_id"]
        if m.get("station") != c["station"] or not any(e.subject.get("name") == c["station"]
                                                       for e in state.enrolments.get(kid, [])):
            r.reasons.append(f"{what}: manifest signed by key {kid}, not enrolled for station {c['station']} "
                             "(swapped station key)")
            continue
        got = payload.get(c["path"])
        if got is None or got[0] != m["clip"]["sha256"] or got[2] != m["clip"]["size"]:
            r.reasons.append(f"{what}: the clip's bytes in the bag are not the ones its station manifest signed")
            continue
        for s in m.get("sidecars") or []:
            if not isinstance(s, dict) or not any(p.startswith("data/clips/") and v[0] == s.get("sha256")
                                                  for p, v in payload.items()):
                r.reasons.append(f"{what}: a sidecar its manifest names is not in the bag")
        n += 1
    r.checked.append(f"clips: {n} station manifest(s) verified against the trust log and the clip bytes")


def check_audit(bag: Path, files: set[str], state: trust.TrustState, r: Report) -> None:
    """Every audit segment in the bag against its signed head, link by link; every row the transfer names."""
    rows_by_seg: dict[str, set[int]] = {}
    for p in sorted(f for f in files if f.startswith("data/audit/") and f.endswith(".jsonl")):
        parts = p.split("/")
        head = p[: -len(".jsonl")] + ".head.json"
        lines, hraw = _read(bag, p, r, collect.MAX_SEGMENT), _read(bag, head, r, mf.MAX_BYTES)
        if len(parts) != 4 or lines is None or hraw is None:
            r.reasons.append(f"{p}: not an audit segment with its signed head")
            continue
        h, rows, why = collect.check_segment(parts[2], lines, hraw, state)
        if h is None:
            r.reasons.append(f"{p}: {why}")
            continue
        rows_by_seg[p] = {x["seq"] for x in rows}
    n = 0
    for c in (r.transfer or {})["clips"]:
        for a in (c.get("audit") or []) if isinstance(c, dict) else []:
            a = a if isinstance(a, dict) else {}
            seg, seqs = a.get("segment"), a.get("seqs")
            if seg not in rows_by_seg or not isinstance(seqs, list) or not set(seqs) <= rows_by_seg[seg]:
                r.reasons.append(f"{c.get('object_key')}: audit rows named in transfer.json are not in a verified "
                                 f"segment ({seg})")
            else:
                n += len(seqs)
    r.checked.append(f"audit: {len(rows_by_seg)} segment(s) chained to their signed heads; {n} custody row(s) found")


def trust_state(bag: Path, files: set[str], root_pub: Any, raws: list[bytes] | None, r: Report) -> Any:
    if raws is None:
        names = sorted(f for f in files if f.startswith("data/trust/log/"))
        if names != [f"data/trust/log/{i:08d}.json" for i in range(len(names))]:
            r.reasons.append("data/trust/log: statements missing or misnamed")
        raws = [x for x in (_read(bag, n, r, trust.MAX_STATEMENT) for n in names) if x is not None]
    try:
        state = trust.load(root_pub, raws)
    except (TrustInvalid, KeyError_) as e:
        r.reasons.append(f"trust log: {e.message()}")
        return None
    r.checked.append(f"trust log: {len(raws)} statements of {state.agency}, signed by the pinned root")
    return state


def verify(bag: Path, root_pub: Any, trust_raws: list[bytes] | None = None) -> Report:
    """Check the bag at ``bag`` (a directory, never a symlink). ``trust_raws``: a newer trust log to judge
    by (a revocation issued after the bag was made); default the log the bag carries."""
    bag = Path(bag)
    try:
        st = os.lstat(bag)
    except OSError as e:
        raise UsageError(f"{bag}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{bag}: not a directory (a symlink is not followed; unzip a zipped bag first)")
    r = Report(str(bag))
    files = _walk(bag, r)
    payload = check_payload(bag, files, r)
    check_tags(bag, files, r)
    traw = load_transfer(bag, files, r)
    _guard(r, "bag-info.txt", check_info, bag, files, payload, r)
    state = trust_state(bag, files, root_pub, trust_raws, r)
    if traw is not None and state is not None:
        _guard(r, "signer", check_signer, bag, files, state, traw, r)
        _guard(r, "items", check_items, payload, r)
        _guard(r, "clips", check_clips, bag, state, payload, r)
        _guard(r, "audit", check_audit, bag, files, state, r)
        _guard(r, "parent chain", check_parents, bag, files, state, r)
    if r.transfer is not None:
        _guard(r, "case.jsonld", check_case, bag, files, r)
    return r


def _guard(r: Report, what: str, check: Any, *args: Any) -> None:
    """Run one check; a transfer record whose members have unexpected types (hostile JSON that parsed) is a
    reason, never a traceback."""
    try:
        check(*args)
    except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
        r.reasons.append(f"{what}: transfer.json has a member of an unexpected form ({type(e).__name__})")


def check_parents(bag: Path, files: set[str], state: trust.TrustState, r: Report) -> None:
    """Onward disclosure: walk ``parent`` links back to the first (police) transfer. At each step the parent's
    records in ``data/parent/...`` must be the ones the child names by digest, signed by a discloser enrolled
    when they signed, and every clip of the child must be an item of the parent with the same digest."""
    child, d, n = r.transfer or {}, "data/parent", 0
    while isinstance(child.get("parent"), dict):
        link = child["parent"]
        recs = {k: _read(bag, f"{d}/{k}", r) if f"{d}/{k}" in files else None
                for k in ("transfer.json", "transfer.json.sig", "tagmanifest-sha256.txt", "tagmanifest-sha256.txt.sig")}
        if any(v is None for v in recs.values()):
            r.reasons.append(f"{d}: the parent transfer's signed records are missing")
            return
        if hashlib.sha256(recs["transfer.json"] or b"").hexdigest() != link.get("transfer_sha256") or \
                hashlib.sha256(recs["tagmanifest-sha256.txt"] or b"").hexdigest() != link.get("tagmanifest_sha256"):
            r.reasons.append(f"{d}: the parent records are not the ones transfer.json names by digest")
            return
        try:
            pt = ijson.loads(recs["transfer.json"] or b"", max_bytes=MAX_TAG)
        except ijson.Invalid as e:
            r.reasons.append(f"{d}/transfer.json: {e}")
            return
        kid = pt.get("sender", {}).get("key_id") if isinstance(pt, dict) else None
        pub = state.public_key(kid) if isinstance(kid, str) else None
        v = state.check(str(kid), "discloser", pt.get("created_at")) if pub is not None else None
        if v is None or not v.ok:
            r.reasons.append(f"{d}: parent transfer signer: {v.reason if v else f'key {kid!r} not enrolled'}")
        elif not (_sig_ok(pub, recs["transfer.json.sig"], recs["transfer.json"])
                  and _sig_ok(pub, recs["tagmanifest-sha256.txt.sig"], recs["tagmanifest-sha256.txt"])):
            r.reasons.append(f"{d}: the parent's signatures do not verify")
        items = {i.get("path"): i.get("sha256") for i in pt.get("items", []) if isinstance(i, dict)}
        for c in child.get("clips", []):
            if isinstance(c, dict) and items.get(c.get("path")) != c.get("sha256"):
                r.reasons.append(f"{c.get('object_key')}: not in the parent transfer with this digest")
        n += 1
        r.checked.append(f"chain {n}: {d} signed by {kid} on {pt.get('created_at')} "
                         f"for {(pt.get('recipient') or {}).get('name')!r}")
        child, d = pt, d + "/parent"
        if n > 16:
            r.reasons.append("parent chain longer than 16")
            return


def check_case(bag: Path, files: set[str], r: Report) -> None:
    """The CASE graph's shape as dockd writes it (its conformance to CASE 1.5 is ``case_validate``'s job)."""
    from dockd.agency.disclosure import casegraph

    raw = _read(bag, "case.jsonld", r) if "case.jsonld" in files else None
    if raw is None:
        r.reasons.append("case.jsonld is missing (required by the dockd profile)")
        return
    try:
        g = ijson.loads(raw, max_bytes=MAX_TAG)
    except ijson.Invalid as e:
        r.reasons.append(f"case.jsonld: {e}")
        return
    bad = casegraph.check_shape(g, r.transfer or {})
    r.reasons.extend(bad)
    if not bad:
        r.checked.append("case.jsonld: a CASE graph naming the case and every clip file")
