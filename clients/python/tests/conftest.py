"""Fixtures: a real `agentry serve` on SQLite for the session, a tenant per test module.

The server comes from :mod:`agentry.testing` (the same code users get for their own
tests); its binary is ``$AGENTRY_BIN``, by default ``target/debug/agentry`` of the
repository (``scripts/test`` builds it when missing). Every test makes its own agents,
instances and sessions, so tests never lease each other's runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentry.testing import AgentryServer, Tenant

REPO = Path(__file__).resolve().parents[3]

os.environ.setdefault("AGENTRY_BIN", str(REPO / "target/debug/agentry"))


@pytest.fixture(scope="module")
def tenant(agentry_server: AgentryServer) -> Tenant:
    return agentry_server.tenant(project_id="web")


@pytest.fixture
def own_server() -> Iterator[AgentryServer]:
    """A server of the test's own, for tests that stop and restart it."""
    with AgentryServer() as server:
        yield server
