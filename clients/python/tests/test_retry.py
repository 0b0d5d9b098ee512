"""Retries against a scripted in-process server: UNAVAILABLE only, same request_id."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

import agentry
from agentry import AsyncClient, Client, RetryPolicy
from agentry.v1 import registry_pb2 as reg

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
