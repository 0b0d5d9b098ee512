"""What an agent handler yields, and the exception that asks for a retry.

A handler is an async generator of these steps; the :class:`agentry.Worker` turns them
into run events (``AppendRunEvents``) and, at the end, into ``CompleteTask``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from .v1 import execution_pb2 as ex

__all__ = [
    "TextDelta",
    "Message",
    "ToolCall",
    "ToolResult",
    "Usage",
    "Custom",
    "Step",
    "RetryableError",
]


@dataclass(frozen=True)
class TextDelta:
    """A piece of streamed text (a ``message_delta`` event).

    ``message_id`` groups the deltas of one message; by default the worker uses one id per
    message, moving to the next after each :class:`Message` step.
    """

    text: str
    message_id: str = ""


@dataclass(frozen=True)
class Message:
    """A complete message that joins the session transcript (``message_completed``).

    The messages a handler yields last (followed by nothing but :class:`Usage`) are sent
    with ``CompleteTask`` instead and become the run's ``output``.
    """

    content: str
    role: ex.MessageRole.ValueType = ex.MESSAGE_ROLE_ASSISTANT


@dataclass(frozen=True)
class ToolCall:
    """The agent calls a tool (``tool_call_started``); ``id`` is unique within the run."""

    id: str
    tool: str
    arguments: Any = None


@dataclass(frozen=True)
class ToolResult:
    """A tool answered the call ``id`` (``tool_call_completed``); ``result`` is JSON."""

    id: str
    result: Any = None
    is_error: bool = False


@dataclass(frozen=True)
class Usage:
    """Tokens and cost spent since the last Usage step (a ``usage`` event)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Custom:
    """Anything else worth recording (a ``custom`` event with a JSON object)."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)


Step = Union[TextDelta, Message, ToolCall, ToolResult, Usage, Custom]


class RetryableError(Exception):
    """Raise from a handler to fail the attempt with ``retryable=True``.

    The run is queued again with backoff (``retry_after`` seconds overrides the policy)
    unless its retry policy is used up or lists ``type`` as non-retryable. Any other
    exception fails the run for good.
    """

    def __init__(
        self,
        message: str,
        *,
        type: str = "",
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type or "RetryableError"
        self.retry_after = retry_after
        self.details = details or {}
