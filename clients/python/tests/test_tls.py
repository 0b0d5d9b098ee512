"""The clients and the Worker over TLS and mutual TLS, against a real `agentry serve`
started with `--tls-cert-file`/`--tls-key-file` (and `--tls-client-ca-file`).

Certificates come from scripts/gen-test-certs (openssl): a CA, a server certificate for
127.0.0.1, a client certificate, and a second CA with a client certificate of its own
that the server must refuse.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support import make_agent, running

import agentry
from agentry import TLS, Client, Message, TaskContext, Worker
from agentry.testing import AgentryServer
from agentry.v1 import registry_pb2 as reg

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    subprocess.run([str(REPO / "scripts/gen-test-certs"), str(directory)], check=True, capture_output=True)
    return directory


def _server_args(pki: Path, mutual: bool) -> list[str]:
    args = ["--tls-cert-file", str(pki / "server.pem"), "--tls-key-file", str(pki / "server-key.pem")]
    return [*args, "--tls-client-ca-file", str(pki / "ca.pem")] if mutual else args


@pytest.fixture(scope="module")
def tls_server(pki: Path) -> Iterator[AgentryServer]:
    with AgentryServer(args=_server_args(pki, mutual=False), tls=TLS(ca=pki / "ca.pem")) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(pki: Path) -> Iterator[AgentryServer]:
    client_tls = TLS(ca=pki / "ca.pem", cert=pki / "client.pem", key=pki / "client-key.pem")
    with AgentryServer(args=_server_args(pki, mutual=True), tls=client_tls) as server:
        yield server


def _list_workspaces(client: Client) -> int:
    return len(client.registry.ListWorkspaces(reg.ListWorkspacesRequest()).workspaces)


def test_a_client_trusting_the_server_ca_connects_over_tls(tls_server: AgentryServer, pki: Path) -> None:
    with Client(tls_server.target, tls_server.root_key, tls=TLS(ca=pki / "ca.pem")) as client:
        assert _list_workspaces(client) >= 0
    # The same, with the PEM given as bytes rather than a path.
    with Client(tls_server.target, tls_server.root_key, tls=TLS(ca=(pki / "ca.pem").read_bytes())) as client:
        assert _list_workspaces(client) >= 0


def test_tls_is_refused_without_the_right_ca_or_in_plaintext(tls_server: AgentryServer, pki: Path) -> None:
    strangers = TLS(ca=pki / "other-ca.pem")
    with Client(tls_server.target, tls_server.root_key, tls=strangers, timeout=5, retry=agentry.NO_RETRY) as client:
        with pytest.raises(agentry.Unavailable):
            _list_workspaces(client)
    with Client(tls_server.target, tls_server.root_key, timeout=5, retry=agentry.NO_RETRY) as plaintext:
        with pytest.raises(agentry.Unavailable):
            _list_workspaces(plaintext)


def test_mutual_tls_takes_the_client_certificate_and_refuses_others(mtls_server: AgentryServer, pki: Path) -> None:
    ca = pki / "ca.pem"
    with Client(mtls_server.target, mtls_server.root_key, tls=TLS(ca=ca, cert=pki / "client.pem", key=pki / "client-key.pem")) as client:
        assert _list_workspaces(client) >= 0
    refused = [
        TLS(ca=ca),  # no client certificate
        TLS(ca=ca, cert=pki / "other-client.pem", key=pki / "other-client-key.pem"),  # another CA's
    ]
    for tls in refused:
        with Client(mtls_server.target, mtls_server.root_key, tls=tls, timeout=5, retry=agentry.NO_RETRY) as client:
            with pytest.raises(agentry.Unavailable):
                _list_workspaces(client)


def test_a_worker_serves_a_run_over_mutual_tls(mtls_server: AgentryServer) -> None:
    tenant = mtls_server.tenant()
    agent = make_agent(tenant)

    async def answer(task: TaskContext) -> AsyncIterator[agentry.Step]:
        yield Message(f"over mTLS: {task.input[-1].content}")

    worker = Worker(tenant.target, tenant.worker_key, poll_wait=5, tls=mtls_server.tls)
    worker.register(agent.name, answer)
    with running(worker), tenant.client() as client:
        finished = client.wait_run(client.start_run(agent.instance, "hi", session=agent.session), timeout=60)
    assert [m.content for m in finished.output] == ["over mTLS: hi"]


def test_a_client_certificate_needs_its_key(pki: Path) -> None:
    with pytest.raises(ValueError):
        TLS(ca=pki / "ca.pem", cert=pki / "client.pem")
