"""Python SDK for Agentry, a gRPC control plane for AI agents.

- :class:`Client` / :class:`AsyncClient`: the generated service stubs (``registry``,
  ``contexts``, ``execution``) with bearer auth, TLS, deadlines, UNAVAILABLE retries and
  typed errors, plus ``start_run``/``wait_run``, ``paginate``, a resuming
  ``stream_run_events`` and context helpers that take plain dicts.
- :class:`Worker`: serves agents written as async generators of steps, and rides out
  server restarts.
- :func:`to_value` / :func:`to_struct` / :func:`to_python`: plain Python values in and
  out of the ``Struct``/``Value`` fields of the generated messages.
- Errors: :class:`AgentryError` and a subclass per gRPC code and per notable reason
  (``VersionConflict``, ``StaleTask`` …), all importable from here.
- :mod:`agentry.testing`: a real ``agentry serve`` for tests, with pytest fixtures.
- :mod:`agentry.v1`: the generated messages (``from agentry.v1 import execution_pb2``).
"""

from . import errors
from ._transport import NO_RETRY, RetryPolicy
from .client import AsyncClient, Client
from .errors import (
    Aborted,
    AgentryError,
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    EtagMismatch,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    LeaseExpired,
    NotFound,
    OutOfRange,
    PermissionDenied,
    QuotaExceeded,
    QuotaViolation,
    ResourceExhausted,
    StaleTask,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    VersionConflict,
    from_rpc_error,
)
from .steps import Custom, Message, RetryableError, Step, TextDelta, ToolCall, ToolResult, Usage
from .stream import is_terminal
from .structs import to_python, to_struct, to_value
from .task import TaskContext
from .tls import TLS
from .v1 import common_pb2, context_pb2, execution_pb2, registry_pb2
from .worker import Worker

__version__ = "0.2.0"
"""The SDK's version; releases share one version with the server and the other SDKs."""

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "RetryPolicy",
    "NO_RETRY",
    "TLS",
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
    "to_value",
    "to_struct",
    "to_python",
    "errors",
    "from_rpc_error",
    "AgentryError",
    "Cancelled",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "Unauthenticated",
    "ResourceExhausted",
    "QuotaExceeded",
    "FailedPrecondition",
    "StaleTask",
    "LeaseExpired",
    "Aborted",
    "VersionConflict",
    "EtagMismatch",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "FieldViolation",
    "QuotaViolation",
    "common_pb2",
    "context_pb2",
    "execution_pb2",
    "registry_pb2",
]
