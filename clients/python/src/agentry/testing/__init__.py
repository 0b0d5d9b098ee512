"""A real ``agentry serve`` for tests: a process on a free port and a temporary SQLite file.

Tests of code that uses Agentry are most useful against the real server: its leases,
event log and errors are what production sees. :class:`AgentryServer` starts one (the
binary named by ``$AGENTRY_BIN``, else ``agentry`` on the ``PATH``), waits until its
health check answers SERVING, and can stop and restart it on the same port and database
to test how code rides out a restart. :meth:`AgentryServer.tenant` makes a workspace with
a project and an API key per role, and :func:`running_worker` serves a
:class:`~agentry.Worker` in a background thread while a blocking test drives runs.

With pytest, the fixtures of :mod:`agentry.testing.plugin` (loaded automatically once
this package is installed) give each test session one server::

    def test_my_agent(agentry_tenant):
        with agentry_tenant.client() as client:
            ...

Nothing here needs pytest; the module works in scripts as well.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import grpc

from ..client import AsyncClient, Client
from ..tls import TLS
from ..v1 import common_pb2, registry_pb2 as reg
from ..worker import Worker

__all__ = ["AgentryServer", "Tenant", "ServerError", "find_binary", "running_worker"]

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_SERVING = b"\x08\x01"  # HealthCheckResponse{status: SERVING}, encoded


class ServerError(RuntimeError):
    """The server binary is missing, or the process did not come up (its log is attached)."""


def find_binary(binary: str | os.PathLike[str] | None = None) -> Path:
    """The server binary: ``binary``, else ``$AGENTRY_BIN``, else ``agentry`` on the ``PATH``."""
    named = binary or os.environ.get("AGENTRY_BIN")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ServerError(f"no agentry binary at {path}")
        return path
    found = shutil.which("agentry")
    if found is None:
        raise ServerError("no agentry binary: set AGENTRY_BIN or put `agentry` on the PATH")
    return Path(found)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Tenant:
    """A workspace with one project and an API key per role, on a running server."""

    target: str
    workspace: str
    project: str
    admin_key: str
    developer_key: str
    reader_key: str
    worker_key: str
    tls: TLS | None = None

    def client(self, key: str | None = None, **options: object) -> Client:
        """A :class:`Client` with ``key`` (the developer key by default)."""
        return Client(self.target, key or self.developer_key, tls=self.tls, **options)  # type: ignore[arg-type]

    def async_client(self, key: str | None = None, **options: object) -> AsyncClient:
        """An :class:`AsyncClient` with ``key`` (the developer key by default)."""
        return AsyncClient(self.target, key or self.developer_key, tls=self.tls, **options)  # type: ignore[arg-type]


class AgentryServer:
    """One ``agentry serve`` process.

    Args:
        binary: the server binary (see :func:`find_binary`).
        database_url: the database; by default a SQLite file in a temporary directory
            that lives as long as this object.
        port: the port on 127.0.0.1; a free one by default. It stays the same across
            :meth:`restart`.
        root_key: the root API key (``AGENTRY_ROOT_KEY``); random by default.
        args: more ``serve`` flags (``--tls-cert-file …``).
        env: more environment variables for the process.
        tls: how clients reach it when ``args`` turn TLS on.
        start_timeout: seconds to wait for SERVING.

    Use it as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        binary: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        port: int | None = None,
        root_key: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        tls: TLS | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.binary = find_binary(binary)
        self._dir = tempfile.TemporaryDirectory(prefix="agentry-test-")
        self.directory = Path(self._dir.name)
        self.database_url = database_url or f"sqlite://{self.directory / 'agentry.db'}"
        self.port = port or _free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.root_key = root_key or f"agk_test_{secrets.token_hex(20)}"
        self.args = list(args)
        self.env = dict(env or {})
        self.tls = tls
        self.start_timeout = start_timeout
        self.log_path = self.directory / "server.log"
        self._process: subprocess.Popen[bytes] | None = None

    # The process.

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> AgentryServer:
        """Starts the process and waits until it answers SERVING."""
        if self.running:
            raise ServerError("the server is already running")
        env = {
            **os.environ,
            "AGENTRY_ROOT_KEY": self.root_key,
            "AGENTRY_REAPER_INTERVAL_SECS": "1",
            **self.env,
        }
        command = [
            str(self.binary),
            "serve",
            "--listen",
            self.target,
            "--database-url",
            self.database_url,
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_serving()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Sends ``sig`` (SIGTERM: drain and exit; SIGKILL: die) and waits for the exit."""
        process = self._process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        return process.returncode

    def restart(self, downtime: float = 0.0, sig: int = signal.SIGTERM) -> None:
        """Stops the server, waits ``downtime`` seconds and starts it again (same port,
        same database)."""
        self.stop(sig)
        time.sleep(downtime)
        self.start()

    def close(self) -> None:
        """Stops the server and deletes the temporary directory (its database and log)."""
        self.stop()
        self._dir.cleanup()

    def log(self) -> str:
        """What the server printed so far (all starts)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> AgentryServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ServerError(
                    f"agentry serve exited with {self._process.returncode}:\n{self.log()[-4000:]}"
                )
            if self._serving():
                return
            time.sleep(0.05)
        raise ServerError(f"agentry serve was not SERVING within {self.start_timeout} s:\n{self.log()[-4000:]}")

    def _serving(self) -> bool:
        if self.tls is None:
            channel = grpc.insecure_channel(self.target)
        else:
            channel = grpc.secure_channel(self.target, self.tls.credentials())
        with channel:
            check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(_HEALTH_CHECK)
            try:
                answer: bytes = check(b"", timeout=1.0)
            except grpc.RpcError:
                return False
        return answer == _SERVING

    # Tenants.

    def client(self, key: str | None = None, **options: object) -> Client:
        """A :class:`Client` with ``key`` (the root key by default)."""
        return Client(self.target, key or self.root_key, tls=self.tls, **options)  # type: ignore[arg-type]

    def async_client(self, key: str | None = None, **options: object) -> AsyncClient:
        """An :class:`AsyncClient` with ``key`` (the root key by default)."""
        return AsyncClient(self.target, key or self.root_key, tls=self.tls, **options)  # type: ignore[arg-type]

    def tenant(self, workspace_id: str | None = None, project_id: str = "default") -> Tenant:
        """A new workspace (``workspace_id``, random by default) with a project and a key
        for each of ADMIN, DEVELOPER, READER and WORKER."""
        workspace_id = workspace_id or f"test-{uuid.uuid4().hex[:10]}"
        with self.client() as root:
            workspace = root.registry.CreateWorkspace(reg.CreateWorkspaceRequest(workspace_id=workspace_id))
            project = root.registry.CreateProject(
                reg.CreateProjectRequest(parent=workspace.name, project_id=project_id)
            )

            def key(role: common_pb2.Role.ValueType) -> str:
                made = root.registry.CreateApiKey(
                    reg.CreateApiKeyRequest(
                        parent=workspace.name,
                        api_key=reg.ApiKey(display_name=common_pb2.Role.Name(role).lower(), role=role),
                    )
                )
                return made.secret

            return Tenant(
                target=self.target,
                workspace=workspace.name,
                project=project.name,
                admin_key=key(common_pb2.ROLE_ADMIN),
                developer_key=key(common_pb2.ROLE_DEVELOPER),
                reader_key=key(common_pb2.ROLE_READER),
                worker_key=key(common_pb2.ROLE_WORKER),
                tls=self.tls,
            )


@contextmanager
def running_worker(worker: Worker, stop_timeout: float = 30.0) -> Iterator[Worker]:
    """Runs ``worker`` on an event loop of its own in a thread; on exit, stops it
    gracefully (running handlers finish) and re-raises what :meth:`Worker.run` raised."""
    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            loop.run_until_complete(worker.run())
        except BaseException as e:  # surfaced to the caller below
            failure.append(e)
        finally:
            loop.close()

    thread = threading.Thread(target=serve, name="agentry-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(worker.stop)
        thread.join(timeout=stop_timeout)
        if thread.is_alive():
            raise RuntimeError(f"the worker did not stop within {stop_timeout} s")
    if failure:
        raise failure[0]
