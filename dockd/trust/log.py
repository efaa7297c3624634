"""The agency's trust log and the one verifier every check uses (core: no I/O).

Model (after TUF's root of trust, X.509 CRLs and Sigstore's append-only log):

* The agency has one offline **root** key (Ed25519). Every verifier *pins* its
  public key; nothing else is trusted by default.
* The root signs **statements**, kept as one append-only, hash-chained log
  (``_trust/log/00000000.json``, ``00000001.json``, ...). Each statement is a
  JSON object ``{"type": "dockd.trust/1", "kind", "seq", "prev", "issued_at",
  ..., "signature"}``; the signature is the root's Ed25519 signature over the
  RFC 8785 (JCS) form of the statement without ``signature`` (the manifest
  scheme), and ``prev`` is the SHA-256 hex of the JCS form of the whole
  previous statement (signature included; ``null`` for seq 0). Removing,
  inserting, editing or reordering a statement breaks a signature, a ``seq``
  or a ``prev``.
* Kinds: ``root`` (seq 0 only: agency name, root key id and public key),
  ``enrol`` (a key's public key, subject, roles, ``valid_from``/``valid_until``,
  the digest of the request it answers, and for a rotation the key it
  ``supersedes``), ``revoke`` (key id, ``from`` time, reason).
* :func:`TrustState.check` answers "was key K enrolled for role R at time T,
  and not revoked?". T always comes from the signed object being checked
  (a manifest's ``offloaded_at``, an audit head's ``at``), never from the
  verifier's clock. Revocation is by time like a CRL entry: signatures made
  at or after ``from`` are invalid, earlier ones stay valid. A rotation
  (``supersedes``) ends the old key's validity where the new key's begins.

Parsing is strict (size bound, duplicate members refused) and lives in
:func:`loads` so it can be swapped for the project's I-JSON loader.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dockd.core.errors import KeyError_, TrustInvalid
from dockd.core.roles import ROLES, SUBJECT_KINDS  # noqa: F401 - re-exported
from dockd.core.timefmt import time_ns  # re-exported: signed times are parsed in one place
from dockd.evidence import keys

TYPE = "dockd.trust/1"
REQUEST_TYPE = "dockd.enrol-request/1"
KINDS = ("root", "enrol", "revoke")
MAX_STATEMENT = 64 << 10  # bytes; a statement holds one PEM key and a few names
MAX_NAME = 200
_KEY_ID = re.compile(r"^ed25519:[0-9a-f]{16}$")


# ---------------------------------------------------------------- parsing and forms


def loads(data: bytes, what: str = "statement", limit: int = MAX_STATEMENT) -> Any:
    """Strict JSON: at most ``limit`` bytes, UTF-8, no duplicate members, no NaN/Infinity. Raises TrustInvalid."""
    if len(data) > limit:
        raise TrustInvalid(f"{what} is {len(data)} bytes, more than the {limit} allowed")

    def pairs(items):
        d = {}
        for k, v in items:
            if k in d:
                raise ValueError(f"duplicate member {k!r}")
            d[k] = v
        return d

    def bad_constant(c):
        raise ValueError(f"{c} is not JSON")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=pairs, parse_constant=bad_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TrustInvalid(f"{what} is not valid JSON: {e}") from None


def canonical(obj: dict[str, Any]) -> bytes:
    """JCS of the whole object (what the next statement's ``prev`` hashes)."""
    return rfc8785.dumps(obj)


def signed_body(obj: dict[str, Any]) -> bytes:
    """JCS of the object without ``signature`` (what a signature covers)."""
    return rfc8785.dumps({k: v for k, v in obj.items() if k != "signature"})


def digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(obj)).hexdigest()


def parse_time_arg(text: str) -> str:
    """A time from the command line (``2027-01-31`` or RFC 3339 with ``Z`` or an offset) in the signed form."""
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            dt = datetime.fromisoformat(text + "T00:00:00+00:00")
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from None
    if dt.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z for UTC")
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _name(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_NAME and v.isprintable() and v.strip() == v


def _sig_ok(pub: Ed25519PublicKey, obj: dict[str, Any]) -> bool:
    sig = obj.get("signature")
    if not isinstance(sig, dict) or sig.get("alg") != "Ed25519" or not isinstance(sig.get("value"), str):
        return False
    return keys.verify(pub, signed_body(obj), sig["value"])


def _public(pem: Any) -> Ed25519PublicKey:
    if not isinstance(pem, str):
        raise TrustInvalid("public_key is not a PEM string")
    try:
        return keys.load_public_pem(pem.encode("ascii"))
    except (KeyError_, UnicodeEncodeError) as e:
        raise TrustInvalid(f"public_key: {e}") from None


# ---------------------------------------------------------------- enrolment requests


def check_request(req: Any) -> tuple[Ed25519PublicKey, dict[str, Any]]:
    """Check an enrolment request's form and proof of possession; return (public key, request).

    A request is signed by the key it asks to enrol (``signature``). A rotation
    request also carries ``previous_key_id`` and ``continuity``: the old key's
    signature over the request without ``signature`` and ``continuity``; the
    root checks that against the old key's enrolment (:meth:`TrustState.check_continuity`).
    """
    if not isinstance(req, dict) or req.get("type") != REQUEST_TYPE:
        raise TrustInvalid(f"not an enrolment request (type must be {REQUEST_TYPE!r})")
    pub = _public(req.get("public_key"))
    kid = keys.key_id_of(pub)
    if req.get("key_id") != kid:
        raise TrustInvalid(f"request names key {req.get('key_id')!r} but its public key is {kid}")
    subj = req.get("subject")
    if not isinstance(subj, dict) or set(subj) != {"kind", "name"} or subj["kind"] not in SUBJECT_KINDS \
            or not _name(subj["name"]):
        raise TrustInvalid("request subject must be {kind: station|office|person, name: printable text}")
    try:
        time_ns(req.get("requested_at"))
    except ValueError as e:
        raise TrustInvalid(f"request requested_at: {e}") from None
    if not _sig_ok(pub, req):
        raise TrustInvalid("request signature does not verify with its own key (no proof of possession)")
    if ("previous_key_id" in req) != ("continuity" in req):
        raise TrustInvalid("a rotation request needs both previous_key_id and continuity")
    return pub, req


def continuity_body(req: dict[str, Any]) -> bytes:
    """What the old key signs in a rotation: the request without ``signature`` and ``continuity``."""
    return rfc8785.dumps({k: v for k, v in req.items() if k not in ("signature", "continuity")})


# ---------------------------------------------------------------- the state machine


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class Enrolment:
    seq: int
    key_id: str
    public: Ed25519PublicKey
    subject: dict[str, str]
    roles: tuple[str, ...]
    valid_from: str
    valid_until: str
    supersedes: str | None


@dataclass(frozen=True)
class Revocation:
    seq: int
    key_id: str
    from_: str
    reason: str


@dataclass
class TrustState:
    """What a verified trust log says. Build it with :func:`load`; it never changes afterwards."""

    root_key_id: str
    agency: str
    head_seq: int
    head_digest: str
    statements: list[dict[str, Any]]
    enrolments: dict[str, list[Enrolment]] = field(default_factory=dict)
    revocations: dict[str, Revocation] = field(default_factory=dict)
    superseded: dict[str, str] = field(default_factory=dict)  # old key id -> time the new key took over

    def public_key(self, key_id: str) -> Ed25519PublicKey | None:
        e = self.enrolments.get(key_id)
        return e[0].public if e else None

    def check(self, key_id: str, role: str, at: object) -> Verdict:
        """Was ``key_id`` enrolled for ``role`` at ``at`` (a time taken from the signed object), and not revoked?

        ``at`` is whatever the signed object holds there: anything but an RFC 3339 UTC time is refused."""
        try:
            t = time_ns(at)
        except ValueError as err:
            return Verdict(False, f"no usable signing time: {err}")
        ens = self.enrolments.get(key_id)
        if not ens:
            return Verdict(False, f"key {key_id} is not enrolled by {self.agency} (unknown key)")
        mine = [e for e in ens if role in e.roles]
        if not mine:
            have = sorted({r for e in ens for r in e.roles})
            return Verdict(False, f"key {key_id} is enrolled for {', '.join(have)}, not for role {role}")
        rv = self.revocations.get(key_id)
        if rv is not None and t >= time_ns(rv.from_):
            return Verdict(False, f"key {key_id} was revoked from {rv.from_} ({rv.reason}); signed at {at}")
        sup = self.superseded.get(key_id)
        if sup is not None and t >= time_ns(sup):
            return Verdict(False, f"key {key_id} was rotated out from {sup}; signed at {at}")
        for e in mine:
            if time_ns(e.valid_from) <= t < time_ns(e.valid_until):
                return Verdict(True, f"key {key_id} enrolled as {e.subject['kind']} {e.subject['name']!r} for "
                                     f"{role} from {e.valid_from} until {e.valid_until} (trust log seq {e.seq})")
        if all(t < time_ns(e.valid_from) for e in mine):
            first = min(mine, key=lambda e: time_ns(e.valid_from))
            return Verdict(False, f"key {key_id} was not yet enrolled for {role} at {at} (from {first.valid_from})")
        last = max(mine, key=lambda e: time_ns(e.valid_until))
        return Verdict(False, f"enrolment of key {key_id} for {role} expired at {last.valid_until}; signed at {at}")

    def verify_signed(self, obj: Any, role: str, at_member: str) -> Verdict:
        """The one check of a signed dockd object (manifest, audit head, ...): the signature verifies with
        the key the trust log enrolled under the object's ``signature.key_id``, and that key was valid for
        ``role`` at the object's own ``at_member`` time."""
        if not isinstance(obj, dict):
            return Verdict(False, "not a JSON object")
        sig = obj.get("signature")
        if not isinstance(sig, dict) or not isinstance(sig.get("key_id"), str):
            return Verdict(False, "missing or malformed signature member")
        kid = sig["key_id"]
        pub = self.public_key(kid)
        if pub is None:
            return Verdict(False, f"key {kid} is not enrolled by {self.agency} (unknown key)")
        if not _sig_ok(pub, obj):
            return Verdict(False, f"signature does not verify with enrolled key {kid} (altered or forged)")
        return self.check(kid, role, obj.get(at_member))

    def check_continuity(self, req: dict[str, Any]) -> str:
        """For a rotation request: the old key must be enrolled, not revoked at ``requested_at``, and its
        signature over the request must verify. Returns the old key id; raises TrustInvalid."""
        old = req["previous_key_id"]
        pub = self.public_key(old) if isinstance(old, str) else None
        if pub is None:
            raise TrustInvalid(f"rotation: previous key {old!r} is not enrolled; enrol the new key as a fresh request")
        rv = self.revocations.get(old)
        if rv is not None and time_ns(req["requested_at"]) >= time_ns(rv.from_):
            raise TrustInvalid(f"rotation: previous key {old} was revoked from {rv.from_}; "
                               "its signature proves nothing")
        c = req["continuity"]
        if not isinstance(c, dict) or c.get("key_id") != old or not isinstance(c.get("value"), str) \
                or not keys.verify(pub, continuity_body(req), c["value"]):
            raise TrustInvalid(f"rotation: continuity signature by previous key {old} does not verify")
        return old


def _need(st: dict[str, Any], names: Iterable[str]) -> None:
    missing = [n for n in names if n not in st]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")


def load(root_pub: Ed25519PublicKey, statements: Sequence[bytes]) -> TrustState:
    """Verify a whole trust log against the pinned root key; raise TrustInvalid naming the first bad seq."""
    root_id = keys.key_id_of(root_pub)
    if not statements:
        raise TrustInvalid("trust log is empty (it starts with the root statement, seq 0)")
    state: TrustState | None = None
    prev: str | None = None
    last_issued = 0
    for i, raw in enumerate(statements):
        try:
            st = loads(raw, f"trust statement {i}")
            if not isinstance(st, dict) or st.get("type") != TYPE:
                raise ValueError(f"not a trust statement (type must be {TYPE!r})")
            if type(st.get("seq")) is not int or st["seq"] != i:
                raise ValueError(f"has seq {st.get('seq')!r} where {i} was expected (removed or reordered)")
            if st.get("prev") != prev:
                raise ValueError("prev does not match the previous statement's digest (removed, reordered or altered)")
            sig = st.get("signature")
            if not isinstance(sig, dict) or sig.get("key_id") != root_id:
                raise ValueError(f"not signed by the pinned root {root_id}")
            if not _sig_ok(root_pub, st):
                raise ValueError(f"root signature does not verify (altered, or not signed by {root_id})")
            issued = time_ns(st.get("issued_at"))
            if issued < last_issued:
                raise ValueError("issued_at goes back in time")
            last_issued = issued
            kind = st.get("kind")
            if (i == 0) != (kind == "root"):
                raise ValueError("the root statement must be seq 0, and only seq 0")
            if kind == "root":
                state = _root(st, root_id)
            elif kind == "enrol":
                assert state is not None
                _enrol(state, st)
            elif kind == "revoke":
                assert state is not None
                _revoke(state, st, i)
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, TrustInvalid) as e:
            msg = e.message() if isinstance(e, TrustInvalid) else str(e)
            raise TrustInvalid(f"trust log seq {i}: {msg}") from None
        assert state is not None
        state.statements.append(st)
        prev = digest(st)
        state.head_seq, state.head_digest = i, prev
    assert state is not None
    return state


def to_portable(state: TrustState) -> tuple[str, list[bytes]]:
    """What another process needs to rebuild ``state`` with :func:`from_portable`: the root key the log pins
    (its root statement's, which :func:`load` checked against the pinned key) and the statements as bytes."""
    return state.statements[0]["public_key"], [canonical(st) for st in state.statements]


def from_portable(root_pem: str, raws: list[bytes]) -> TrustState:
    """The trust state from :func:`to_portable`'s output, verified again (:func:`load`)."""
    return load(_public(root_pem), raws)


def _root(st: dict[str, Any], root_id: str) -> TrustState:
    """The state a root statement (seq 0, signature already checked) starts."""
    _need(st, ("agency", "root_key_id", "public_key"))
    if not _name(st["agency"]):
        raise ValueError("agency must be printable text")
    if st["root_key_id"] != root_id or keys.key_id_of(_public(st["public_key"])) != root_id:
        raise ValueError(f"names a root key other than the pinned {root_id}")
    return TrustState(root_key_id=root_id, agency=st["agency"], head_seq=0, head_digest="", statements=[])


def _revoke(state: TrustState, st: dict[str, Any], seq: int) -> None:
    _need(st, ("key_id", "from", "reason"))
    kid = st["key_id"]
    if kid not in state.enrolments:
        raise ValueError(f"revokes {kid!r}, which is not enrolled")
    if kid in state.revocations:
        raise ValueError(f"revokes {kid} a second time")
    time_ns(st["from"])
    if not isinstance(st["reason"], str) or len(st["reason"]) > 1000:
        raise ValueError("reason must be text of at most 1000 characters")
    state.revocations[kid] = Revocation(seq, kid, st["from"], st["reason"])


def _enrol(state: TrustState, st: dict[str, Any]) -> None:
    _need(st, ("key_id", "public_key", "subject", "roles", "valid_from", "valid_until", "request_sha256"))
    pub = _public(st["public_key"])
    kid = keys.key_id_of(pub)
    if st["key_id"] != kid:
        raise ValueError(f"names key {st['key_id']!r} but its public key is {kid}")
    if kid == state.root_key_id:
        raise ValueError("enrols the root key itself (the root signs statements only)")
    subj = st["subject"]
    if not isinstance(subj, dict) or set(subj) != {"kind", "name"} or subj["kind"] not in SUBJECT_KINDS \
            or not _name(subj["name"]):
        raise ValueError("subject must be {kind: station|office|person, name: printable text}")
    roles = st["roles"]
    if not isinstance(roles, list) or not roles or any(r not in ROLES for r in roles) or len(set(roles)) != len(roles):
        raise ValueError(f"roles must be a non-empty list of {', '.join(ROLES)}")
    if time_ns(st["valid_from"]) >= time_ns(st["valid_until"]):
        raise ValueError("valid_from is not before valid_until")
    if kid in state.revocations:
        raise ValueError(f"enrols {kid}, which was revoked")
    sup = st.get("supersedes")
    if sup is not None:
        if sup not in state.enrolments:
            raise ValueError(f"supersedes {sup!r}, which is not enrolled")
        state.superseded.setdefault(sup, st["valid_from"])
    state.enrolments.setdefault(kid, []).append(
        Enrolment(st["seq"], kid, pub, dict(subj), tuple(roles), st["valid_from"], st["valid_until"], sup))


# ---------------------------------------------------------------- making statements (root side)


def sign_statement(body: dict[str, Any], root_private, prev: dict[str, Any] | None) -> dict[str, Any]:
    """Complete ``body`` (kind and its members) into the next statement after ``prev`` and sign it."""
    st = dict(body)
    st["type"] = TYPE
    st["seq"] = 0 if prev is None else prev["seq"] + 1
    st["prev"] = None if prev is None else digest(prev)
    pub = root_private.public_key()
    value = base64.b64encode(root_private.sign(signed_body(st))).decode("ascii")
    st["signature"] = {"alg": "Ed25519", "key_id": keys.key_id_of(pub), "value": value}
    return st


def root_statement(agency: str, root_private, issued_at: str) -> dict[str, Any]:
    pub = root_private.public_key()
    return sign_statement({"kind": "root", "agency": agency, "root_key_id": keys.key_id_of(pub),
                           "public_key": keys.public_pem(pub), "issued_at": issued_at}, root_private, None)


def enrol_statement(state: TrustState, req: dict[str, Any], roles: Sequence[str], valid_from: str | None,
                    valid_until: str, issued_at: str, root_private) -> dict[str, Any]:
    """The root's answer to a checked request. ``valid_from`` defaults to the request's ``requested_at`` so
    what the key signed between its creation and its enrolment becomes verifiable once enrolled."""
    pub, req = check_request(req)
    sup = state.check_continuity(req) if "previous_key_id" in req else None
    kid = keys.key_id_of(pub)
    if kid in state.revocations:
        raise TrustInvalid(f"key {kid} was revoked; it cannot be enrolled again")
    bad = [r for r in roles if r not in ROLES]
    if not roles or bad:
        raise TrustInvalid(f"role must be one of {', '.join(ROLES)}")
    body = {"kind": "enrol", "key_id": kid, "public_key": req["public_key"], "subject": req["subject"],
            "roles": sorted(set(roles)), "valid_from": valid_from or req["requested_at"],
            "valid_until": valid_until, "request_sha256": digest(req), "issued_at": issued_at}
    if sup is not None:
        body["supersedes"] = sup
    return _checked_next(state, body, root_private)


def revoke_statement(state: TrustState, key_id: str, from_: str, reason: str, issued_at: str,
                     root_private) -> dict[str, Any]:
    return _checked_next(state, {"kind": "revoke", "key_id": key_id, "from": from_, "reason": reason,
                                 "issued_at": issued_at}, root_private)


def _checked_next(state: TrustState, body: dict[str, Any], root_private) -> dict[str, Any]:
    """Sign the next statement and prove the extended log still verifies (never append what a verifier
    would refuse)."""
    if keys.key_id_of(root_private.public_key()) != state.root_key_id:
        raise TrustInvalid(f"this root key is not the log's root {state.root_key_id}")
    st = sign_statement(body, root_private, state.statements[-1])
    load(root_private.public_key(), [canonical(s) for s in state.statements] + [canonical(st)])
    return st
