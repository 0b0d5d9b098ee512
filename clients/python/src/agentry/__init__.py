"""Python SDK for Agentry, a gRPC control plane for AI agents.

- :class:`Client` / :class:`AsyncClient`: the generated service stubs (``registry``,
  ``contexts``, ``execution``) with bearer auth, deadlines, UNAVAILABLE retries and typed
  errors, plus ``paginate`` and a resuming ``stream_run_events``.
- :class:`Worker`: serves agents written as async generators of steps.
- :mod:`agentry.errors`: the exception hierarchy (``VersionConflict``, ``PermissionDenied`` …).
- :mod:`agentry.v1`: the generated messages (``from agentry.v1 import execution_pb2``).
"""

from . import errors
from ._transport import NO_RETRY, RetryPolicy
from .client import AsyncClient, Client
from .errors import (
    Aborted,
    AgentryError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    QuotaExceeded,
    ResourceExhausted,
    StaleTask,
    Unauthenticated,
    Unavailable,
    VersionConflict,
)
from .steps import Custom, Message, RetryableError, Step, TextDelta, ToolCall, ToolResult, Usage
from .stream import is_terminal
from .structs import to_python, to_struct, to_value
from .tls import TLS
from .v1 import common_pb2, context_pb2, execution_pb2, registry_pb2
from .worker import TaskContext, Worker

__all__ = [
    "Client",
    "AsyncClient",
    "RetryPolicy",
    "NO_RETRY",
    "TLS",
    "to_value",
    "to_struct",
    "to_python",
    "Worker",
    "TaskContext",
    "Step",
    "TextDelta",
    "Message",
    "ToolCall",
    "ToolResult",
    "Usage",
    "Custom",
    "RetryableError",
    "is_terminal",
    "errors",
    "AgentryError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "Unauthenticated",
    "FailedPrecondition",
    "StaleTask",
    "Aborted",
    "VersionConflict",
    "ResourceExhausted",
    "QuotaExceeded",
    "OutOfRange",
    "Unavailable",
    "common_pb2",
    "context_pb2",
    "execution_pb2",
    "registry_pb2",
]
