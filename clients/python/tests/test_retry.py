"""Retries against a scripted in-process server: the client retries UNAVAILABLE only,
with one request_id; the worker retries its calls' transport failures, with one
request_id, and never reports them as a handler failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

import agentry
from agentry import AsyncClient, Client, RetryPolicy
from agentry.v1 import execution_pb2 as ex, registry_pb2 as reg
from google.protobuf import timestamp_pb2

FAST = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)


class Scripted:
    """Answers CreateProject with the next code of ``script`` (OK when it runs out)."""

    def __init__(self) -> None:
        self.script: list[grpc.StatusCode] = []
        self.seen: list[tuple[str, str]] = []  # (request_id, authorization)

    def create_project(self, request: reg.CreateProjectRequest, context: grpc.ServicerContext) -> reg.Project:
        self.seen.append((request.request_id, str(dict(context.invocation_metadata())["authorization"])))
        if self.script:
            context.abort(self.script.pop(0), "scripted")
        return reg.Project(name=f"{request.parent}/projects/{request.project_id}")


@pytest.fixture
def scripted() -> Iterator[tuple[str, Scripted]]:
    backend = Scripted()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(
        backend.create_project,
        request_deserializer=reg.CreateProjectRequest.FromString,
        response_serializer=reg.Project.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("agentry.v1.RegistryService", {"CreateProject": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", backend
    server.stop(None)


REQUEST = reg.CreateProjectRequest(parent="workspaces/w", project_id="p")


def test_unavailable_is_retried_with_one_request_id(scripted: tuple[str, Scripted]) -> None:
    target, backend = scripted
    backend.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    with Client(target, "k", retry=FAST) as client:
        project = client.registry.CreateProject(REQUEST)
    assert project.name == "workspaces/w/projects/p"
    assert len(backend.seen) == 3
    assert len({request_id for request_id, _ in backend.seen}) == 1 and backend.seen[0][0]
    assert {auth for _, auth in backend.seen} == {"Bearer k"}
    assert REQUEST.request_id == ""  # the caller's message is left alone


def test_other_codes_and_exhausted_retries_raise(scripted: tuple[str, Scripted]) -> None:
    target, backend = scripted
    with Client(target, "k", retry=FAST) as client:
        backend.script = [grpc.StatusCode.ABORTED]
        with pytest.raises(agentry.Aborted):
            client.registry.CreateProject(REQUEST)
        assert len(backend.seen) == 1

        backend.script = [grpc.StatusCode.UNAVAILABLE] * 3
        with pytest.raises(agentry.Unavailable):
            client.registry.CreateProject(REQUEST)
        assert len(backend.seen) == 4


async def test_the_async_client_retries_the_same_way(scripted: tuple[str, Scripted]) -> None:
    target, backend = scripted
    backend.script = [grpc.StatusCode.UNAVAILABLE]
    async with AsyncClient(target, "k", retry=FAST) as client:
        await client.registry.CreateProject(REQUEST)
        backend.script = [grpc.StatusCode.INTERNAL]
        with pytest.raises(agentry.errors.Internal):
            await client.registry.CreateProject(REQUEST)
    assert len(backend.seen) == 3
    assert backend.seen[0][0] == backend.seen[1][0] != backend.seen[2][0]


class ScriptedExecution:
    """A fake ExecutionService for one leased task, whose worker calls fail as scripted."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.polled = False
        self.failures: dict[str, list[grpc.StatusCode]] = {}
        self.seen: dict[str, list[str]] = {}  # method → request ids of its attempts

    def _record(self, method: str, request_id: str, context: grpc.ServicerContext) -> None:
        self.seen.setdefault(method, []).append(request_id)
        script = self.failures.get(method)
        if script:
            context.abort(script.pop(0), "scripted")

    def poll(self, request: ex.PollTaskRequest, context: grpc.ServicerContext) -> ex.PollTaskResponse:
        if self.polled:
            time.sleep(0.2)
            return ex.PollTaskResponse()
        self.polled = True
        expire = timestamp_pb2.Timestamp()
        expire.FromSeconds(int(time.time()) + 60)
        run = ex.Run(name="workspaces/w/projects/p/sessions/s/runs/r", agent=self.agent)
        return ex.PollTaskResponse(task=ex.Task(task_token="token", run=run, attempt=1, lease_expire_time=expire))

    def heartbeat(self, request: ex.HeartbeatTaskRequest, context: grpc.ServicerContext) -> ex.HeartbeatTaskResponse:
        time.sleep(min(request.wait.ToTimedelta().total_seconds(), 0.2))
        expire = timestamp_pb2.Timestamp()
        expire.FromSeconds(int(time.time()) + 60)
        return ex.HeartbeatTaskResponse(lease_expire_time=expire)

    def append(self, request: ex.AppendRunEventsRequest, context: grpc.ServicerContext) -> ex.AppendRunEventsResponse:
        self._record("AppendRunEvents", request.request_id, context)
        return ex.AppendRunEventsResponse(last_sequence=len(request.events))

    def complete(self, request: ex.CompleteTaskRequest, context: grpc.ServicerContext) -> ex.Run:
        self._record("CompleteTask", request.request_id, context)
        return ex.Run()

    def fail(self, request: ex.FailTaskRequest, context: grpc.ServicerContext) -> ex.Run:
        self._record("FailTask", request.request_id, context)
        return ex.Run()


def _serve_execution(backend: ScriptedExecution) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))

    def unary(fn: Any, request: Any, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=request.FromString, response_serializer=response.SerializeToString
        )

    handlers = {
        "PollTask": unary(backend.poll, ex.PollTaskRequest, ex.PollTaskResponse),
        "HeartbeatTask": unary(backend.heartbeat, ex.HeartbeatTaskRequest, ex.HeartbeatTaskResponse),
        "AppendRunEvents": unary(backend.append, ex.AppendRunEventsRequest, ex.AppendRunEventsResponse),
        "CompleteTask": unary(backend.complete, ex.CompleteTaskRequest, ex.Run),
        "FailTask": unary(backend.fail, ex.FailTaskRequest, ex.Run),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("agentry.v1.ExecutionService", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


async def test_worker_calls_are_retried_with_one_request_id_and_never_fail_the_run() -> None:
    agent = "workspaces/w/agents/a"
    backend = ScriptedExecution(agent)
    backend.failures = {
        "AppendRunEvents": [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED],
        "CompleteTask": [grpc.StatusCode.UNAVAILABLE] * 3,
    }
    server, target = _serve_execution(backend)
    done = asyncio.Event()

    async def handler(task: agentry.TaskContext) -> AsyncIterator[agentry.Step]:
        yield agentry.TextDelta("hello")
        yield agentry.Message("hello")
        done.set()

    worker = agentry.Worker(target, "k", poll_wait=1, heartbeat_wait=1)
    worker.register(agent, handler)
    serving = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(done.wait(), 10)
        deadline = time.monotonic() + 10
        while len(backend.seen.get("CompleteTask", [])) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(serving, 10)
        server.stop(None)

    appends, completes = backend.seen["AppendRunEvents"], backend.seen["CompleteTask"]
    assert len(appends) == 3 and len(set(appends)) == 1 and appends[0]
    assert len(completes) == 4 and len(set(completes)) == 1 and completes[0]
    assert "FailTask" not in backend.seen
