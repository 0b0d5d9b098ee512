"""pytest fixtures for tests against a real Agentry server.

Installed with the package as a pytest plugin (entry point ``agentry``), so the fixtures
are there in any pytest run once ``agentry-client`` is installed; a fixture starts its
server only when a test asks for it.

- ``agentry_server``: one :class:`~agentry.testing.AgentryServer` per test session, on a
  temporary SQLite file (binary: ``$AGENTRY_BIN``, else ``agentry`` on the ``PATH``).
- ``agentry_tenant``: a fresh workspace on it for each test, with a project and a key per
  role (:class:`~agentry.testing.Tenant`), so tests never see each other's runs.

::

    def test_an_agent_answers(agentry_tenant):
        with agentry_tenant.client() as client:
            ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import AgentryServer, ServerError, Tenant

__all__ = ["agentry_server", "agentry_tenant"]


@pytest.fixture(scope="session")
def agentry_server() -> Iterator[AgentryServer]:
    """A real ``agentry serve`` for the test session (a temporary SQLite database)."""
    try:
        server = AgentryServer()
        server.start()
    except ServerError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def agentry_tenant(agentry_server: AgentryServer) -> Tenant:
    """A new workspace on the session's server, with a project and a key per role."""
    return agentry_server.tenant()
