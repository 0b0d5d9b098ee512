"""Requests the clients' convenience methods send, built once for the sync and the
asyncio client: plain Python values in, proto messages out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

from google.protobuf import duration_pb2

from .structs import to_value
from .v1 import context_pb2 as ctx, execution_pb2 as ex

RunInput = Union[str, ex.Message, Sequence[Union[str, ex.Message]]]
"""A run's input: a user message's text, a ``Message``, or a list of either."""

JsonPatch = Union[ctx.JsonPatch, Sequence[Union[ctx.JsonPatchOperation, Mapping[str, Any]]]]
"""RFC 6902 operations: a ``JsonPatch`` or a list of ``{"op", "path", "value"/"from"}`` dicts."""


class _Unset:
    """Marks an argument not given (``None`` is a JSON value)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def project_of(instance: str) -> str:
    """``workspaces/{w}/projects/{p}`` of ``workspaces/{w}/projects/{p}/instances/{i}``."""
    project, sep, rest = instance.partition("/instances/")
    if not sep or not rest or "/" in rest:
        raise ValueError(f"expected workspaces/{{w}}/projects/{{p}}/instances/{{i}}, got {instance!r}")
    return project


def messages(input: RunInput) -> list[ex.Message]:
    items = [input] if isinstance(input, (str, ex.Message)) else list(input)
    return [ex.Message(role=ex.MESSAGE_ROLE_USER, content=m) if isinstance(m, str) else m for m in items]


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def create_session(instance: str) -> ex.CreateSessionRequest:
    return ex.CreateSessionRequest(parent=project_of(instance), session=ex.Session(instance=instance))


def create_run(
    session: str,
    input: RunInput,
    *,
    autonomy_level: ex.AutonomyLevel.ValueType,
    timeout: float | None,
    retry_policy: ex.RetryPolicy | None,
    multitask_strategy: ex.MultitaskStrategy.ValueType,
    contexts: Sequence[str],
    labels: Mapping[str, str] | None,
    request_id: str,
) -> ex.CreateRunRequest:
    run = ex.Run(
        input=messages(input),
        autonomy_level=autonomy_level,
        retry_policy=retry_policy,
        multitask_strategy=multitask_strategy,
        contexts=[ex.ContextBinding(context=c) for c in contexts],
        labels=labels,
    )
    if timeout is not None:
        run.timeout.CopyFrom(duration(timeout))
    return ex.CreateRunRequest(parent=session, run=run, request_id=request_id)


def create_context(parent: str, context_id: str, data: Any, context: ctx.Context | None) -> ctx.CreateContextRequest:
    request = ctx.CreateContextRequest(parent=parent, context_id=context_id, context=context)
    if data is not UNSET:
        request.data.CopyFrom(to_value(data))
    return request


def write_context(
    name: str,
    *,
    data: Any,
    merge_patch: Any,
    json_patch: JsonPatch | None,
    expected_version: int | None,
    description: str,
    request_id: str,
) -> ctx.WriteContextRequest:
    given = [data is not UNSET, merge_patch is not UNSET, json_patch is not None]
    if sum(given) != 1:
        raise ValueError("write_context takes exactly one of data, merge_patch and json_patch")
    request = ctx.WriteContextRequest(name=name, description=description, request_id=request_id)
    if expected_version is not None:
        request.expected_version = expected_version
    if data is not UNSET:
        request.data.CopyFrom(to_value(data))
    elif merge_patch is not UNSET:
        request.merge_patch.CopyFrom(to_value(merge_patch))
    elif isinstance(json_patch, ctx.JsonPatch):
        request.json_patch.CopyFrom(json_patch)
    else:
        assert json_patch is not None
        request.json_patch.CopyFrom(ctx.JsonPatch(operations=[_operation(op) for op in json_patch]))
    return request


def _operation(op: ctx.JsonPatchOperation | Mapping[str, Any]) -> ctx.JsonPatchOperation:
    if isinstance(op, ctx.JsonPatchOperation):
        return op
    unknown = set(op) - {"op", "path", "from", "value"}
    if unknown:
        raise ValueError(f"a JSON Patch operation has op, path, from and value; not {sorted(unknown)}")
    operation = ctx.JsonPatchOperation(op=op.get("op", ""), path=op.get("path", ""))
    setattr(operation, "from", op.get("from", ""))  # `from` is a Python keyword
    if "value" in op:
        operation.value.CopyFrom(to_value(op["value"]))
    return operation
