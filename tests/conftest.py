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
def bucket(seaweed: SeaweedServer) -> str:
    """A fresh, empty, uniquely named bucket (no Object Lock)."""
    return seaweed.create_bucket(unique_name("t"))


@pytest.fixture
def lock_bucket(seaweed: SeaweedServer) -> str:
    """A fresh bucket created with Object Lock enabled (hence versioned)."""
    return seaweed.create_bucket(unique_name("lock"), object_lock=True)
