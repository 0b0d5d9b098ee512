"""Plain Python values in and out of ``google.protobuf.Struct`` / ``Value`` fields.

Agent configs, config schemas, context documents, patches, tool arguments and results
travel as JSON in ``Struct`` (an object) or ``Value`` (any JSON value) fields. The
generated messages want those types; these helpers build them from ``dict``, ``list``,
``str``, numbers, ``bool`` and ``None``, and read them back::

    request = context_pb2.WriteContextRequest(name=name, merge_patch=to_value({"turns": 2}))
    document = to_python(client.contexts.GetContext(...).data)   # a dict

The SDK's own helpers (``Client.write_context`` …, the Worker's steps) call them for you.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

from google.protobuf import json_format, struct_pb2

__all__ = ["to_value", "to_struct", "to_python"]


def to_value(obj: Any) -> struct_pb2.Value:
    """A ``Value`` holding ``obj`` (any JSON value; a ``Value`` or ``Struct`` is taken as is)."""
    if isinstance(obj, struct_pb2.Value):
        return obj
    value = struct_pb2.Value()
    if isinstance(obj, struct_pb2.Struct):
        value.struct_value.CopyFrom(obj)
    elif isinstance(obj, struct_pb2.ListValue):
        value.list_value.CopyFrom(obj)
    else:
        json_format.ParseDict(obj, value)
    return value


def to_struct(obj: Mapping[str, Any] | struct_pb2.Struct | None) -> struct_pb2.Struct:
    """A ``Struct`` holding the JSON object ``obj`` (a ``Struct`` is taken as is; None: empty)."""
    if isinstance(obj, struct_pb2.Struct):
        return obj
    struct = struct_pb2.Struct()
    if obj is not None:
        if not isinstance(obj, Mapping):
            raise TypeError(f"a Struct holds a JSON object (a mapping), not {type(obj).__name__}")
        json_format.ParseDict(dict(obj), struct)
    return struct


@overload
def to_python(message: struct_pb2.Struct) -> dict[str, Any]: ...
@overload
def to_python(message: struct_pb2.ListValue) -> list[Any]: ...
@overload
def to_python(message: struct_pb2.Value) -> Any: ...


def to_python(message: struct_pb2.Struct | struct_pb2.ListValue | struct_pb2.Value) -> Any:
    """The plain Python value of a ``Struct`` (a dict), ``ListValue`` (a list) or ``Value``.

    Numbers come back as ``float`` (JSON has one number type), except those that are
    whole, which come back as ``int``.
    """
    return _ints(json_format.MessageToDict(message))


def _ints(obj: Any) -> Any:
    if isinstance(obj, float) and obj.is_integer() and abs(obj) < 2**53:
        return int(obj)
    if isinstance(obj, dict):
        return {k: _ints(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_ints(v) for v in obj]
    return obj
