"""Fixtures: a real `agentry serve` on SQLite for the session, a tenant per test module.

The server binary is ``$AGENTRY_BIN`` or ``target/debug/agentry`` of the repository
(``scripts/test`` builds it when missing). Every test makes its own agents, instances
and sessions, so tests never lease each other's runs.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentry import Client
from agentry.v1 import common_pb2, registry_pb2 as reg

REPO = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Server:
    target: str
    root_key: str


@dataclass(frozen=True)
class Tenant:
    """A workspace with one project and a key per role."""

    target: str
    workspace: str
    project: str
    admin_key: str
    developer_key: str
    reader_key: str
    worker_key: str

    def client(self, key: str | None = None) -> Client:
        return Client(self.target, key or self.developer_key)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = Path(os.environ.get("AGENTRY_BIN", REPO / "target/debug/agentry"))
    if not binary.exists():
        pytest.fail(f"no server binary at {binary}: build it (cargo build -p agentry-server --bin agentry) or set AGENTRY_BIN")
    root_key = secrets.token_hex(24)
    target = f"127.0.0.1:{_free_port()}"
    with tempfile.TemporaryDirectory(prefix="agentry-py-") as tmp:
        log = open(Path(tmp) / "server.log", "wb")
        env = {**os.environ, "AGENTRY_ROOT_KEY": root_key, "AGENTRY_REAPER_INTERVAL_SECS": "1"}
        proc = subprocess.Popen(
            [str(binary), "serve", "--listen", target, "--database-url", f"sqlite://{tmp}/a.db"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_serving(binary, target, proc)
            yield Server(target, root_key)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            if proc.returncode not in (0, -15):
                print((Path(tmp) / "server.log").read_text()[-4000:])


def _wait_serving(binary: Path, target: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"agentry serve exited with {proc.returncode}")
        ok = subprocess.run([str(binary), "health", "--addr", target], capture_output=True)
        if ok.returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail("agentry serve did not become SERVING within 30 s")


def _key(root: Client, workspace: str, role: common_pb2.Role.ValueType) -> str:
    response = root.registry.CreateApiKey(
        reg.CreateApiKeyRequest(parent=workspace, api_key=reg.ApiKey(display_name="test", role=role))
    )
    return response.secret


@pytest.fixture(scope="module")
def tenant(server: Server) -> Iterator[Tenant]:
    workspace_id = f"py-{uuid.uuid4().hex[:8]}"
    with Client(server.target, server.root_key) as root:
        ws = root.registry.CreateWorkspace(reg.CreateWorkspaceRequest(workspace_id=workspace_id))
        project = root.registry.CreateProject(reg.CreateProjectRequest(parent=ws.name, project_id="web"))
        yield Tenant(
            target=server.target,
            workspace=ws.name,
            project=project.name,
            admin_key=_key(root, ws.name, common_pb2.ROLE_ADMIN),
            developer_key=_key(root, ws.name, common_pb2.ROLE_DEVELOPER),
            reader_key=_key(root, ws.name, common_pb2.ROLE_READER),
            worker_key=_key(root, ws.name, common_pb2.ROLE_WORKER),
        )
