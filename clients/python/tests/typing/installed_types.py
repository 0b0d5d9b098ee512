"""Type-checked only (mypy --strict), in a fresh virtualenv with nothing but the package:
the calls a user makes have the real message types, not Any. Without the stub packages
the package depends on (types-grpcio, types-protobuf), these assertions fail."""

from typing import Any, assert_type

from google.protobuf import struct_pb2

import agentry
from agentry import AsyncClient, Client, execution_pb2 as ex, registry_pb2 as reg


def blocking(client: Client) -> None:
    assert_type(client.registry.GetInstance(reg.GetInstanceRequest(name="n")), reg.Instance)
    assert_type(client.execution.GetRun(ex.GetRunRequest(name="n")), ex.Run)
    assert_type(client.start_run("i", "hello"), ex.Run)
    assert_type(client.wait_run("r"), ex.Run)
    for event in client.stream_run_events("r"):
        assert_type(event, ex.RunEvent)
    assert_type(client.context_data("c"), Any)


async def asynchronous(client: AsyncClient) -> None:
    assert_type(await client.execution.GetRun(ex.GetRunRequest(name="n")), ex.Run)
    assert_type(await client.start_run("i", "hello"), ex.Run)
    async for event in client.stream_run_events("r"):
        assert_type(event, ex.RunEvent)


def values() -> None:
    assert_type(agentry.to_struct({"a": 1}), struct_pb2.Struct)
    assert_type(agentry.to_python(agentry.to_struct({"a": 1})), dict[str, Any])
    assert_type(reg.Agent().default_config, struct_pb2.Struct)


def errors(error: agentry.AgentryError) -> None:
    assert_type(error.reason, str)
    assert_type(error.field_violations, list[agentry.FieldViolation])
