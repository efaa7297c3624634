"""Shared pytest fixtures for dockd's tests.

Storage: ``seaweed`` is one real SeaweedFS S3 server (``weed mini`` on
127.0.0.1, free ports) for the whole session; ``bucket`` / ``lock_bucket``
give each test a fresh, uniquely named bucket on it.  Add further fixtures
below, grouped by topic.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

# Make ``tests.support`` importable however pytest is invoked
# (``pytest`` puts tests/ on sys.path, ``python -m pytest`` the repo root).
_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.support.seaweed import SeaweedServer  # noqa: E402
from tests.support.wipe_gate_helpers import bench  # noqa: E402,F401 - a fixture: registered here for every tier


def unique_name(prefix: str = "t") -> str:
    """A valid, unique S3 bucket name."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


# --- storage (SeaweedFS) -----------------------------------------------------


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """A started SeaweedServer shared by the session (stopped at the end)."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> SeaweedServer:
    """``seaweed`` with its credentials in this process's environment, for the backend's standard
    boto3 chain (as the daemon gets them); no AWS profile."""
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return seaweed


@pytest.fixture
def own_seaweed(tmp_path_factory: pytest.TempPathFactory):
    """A SeaweedServer of one test's own, started and stopped with it: for a test that kills and
    restarts the server (the session ``seaweed`` is shared and must stay up). Its credentials are not
    in the environment: use ``own_seaweed.env()``."""
    server = SeaweedServer(tmp_path_factory.mktemp("weed-own"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(seaweed: SeaweedServer) -> str:
    """A fresh, empty, uniquely named bucket (no Object Lock)."""
    return seaweed.create_bucket(unique_name("t"))


@pytest.fixture
def lock_bucket(seaweed: SeaweedServer) -> str:
    """A fresh bucket created with Object Lock enabled (hence versioned)."""
    return seaweed.create_bucket(unique_name("lock"), object_lock=True)
