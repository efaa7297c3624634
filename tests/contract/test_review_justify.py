"""The justification log in a real SeaweedFS: signed by a reviewer, hash-chained, append-only; a correction
supersedes; an altered, removed or forged entry is reported and it and later entries left out."""

from __future__ import annotations

import hashlib
import json

import pytest

from dockd.agency.review import justify
from dockd.config import StorageConfig
from dockd.core.errors import UsageError
from dockd.storage import open_backend
from tests.support.review import make_agency

CODES = ("battery", "malfunction")


@pytest.fixture
def world(tmp_path, s3env, bucket):
    a = make_agency(tmp_path, [], ["alice", "carol"])
    backend = open_backend(StorageConfig(url=f"s3://{bucket}/p", endpoint_url=s3env.endpoint_url))
    return a, backend


def add(a, backend, who="alice", incident="I1", officer="O1", reason="battery", at="2026-03-05T10:00:00Z"):
    return justify.append(backend, "p", a.state(), a.people[who][0], incident=incident, officer=officer,
                          reason=reason, note="n", at=at, reason_codes=CODES)


def test_chain_supersede_and_who(world):
    a, backend = world
    e1 = add(a, backend)
    e2 = add(a, backend, who="carol", incident="I2")
    e3 = add(a, backend, reason="malfunction")
    assert (e1["seq"], e1["prev"], e2["prev"], e3["supersedes"]) == (1, None, justify.digest(e1), 1)
    log = justify.read_log(backend, "p", a.state())
    assert log.problems == [] and [e["seq"] for e in log.entries] == [1, 2, 3]
    js = log.for_match(a.state())
    assert js[1].by.startswith("carol (ed25519:")
    assert [j.seq for j in log.for_match(a.state(), upto=2)] == [1, 2]
    with pytest.raises(UsageError, match="not a reason code"):
        add(a, backend, reason="lunch")


def test_altered_or_missing_entries_are_reported_and_left_out(world):
    a, backend = world
    for i in range(4):
        add(a, backend, incident=f"I{i}")
    key = justify.entry_key("p", 2)
    e = json.loads(backend.read_small(key, 1 << 16))
    e["note"] = "edited later"
    backend.delete(key)  # a bucket without Object Lock lets an administrator do this; the chain tells
    raw = json.dumps(e).encode()
    backend.put_bytes(key, raw, hashlib.sha256(raw).hexdigest())
    log = justify.read_log(backend, "p", a.state())
    assert [x["seq"] for x in log.entries] == [1]
    assert log.problems and log.problems[0].startswith("justification 2: signature: signature does not verify")
    with pytest.raises(justify.JustificationRefused, match="damaged"):
        add(a, backend)
    backend.delete(key)
    log = justify.read_log(backend, "p", a.state())
    assert [x["seq"] for x in log.entries] == [1] and "justification 2: missing from storage" in log.problems[0]
