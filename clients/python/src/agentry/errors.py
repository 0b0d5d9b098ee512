"""Typed exceptions for Agentry errors.

The server answers every error with a canonical gRPC code and a ``google.rpc.Status``
in the ``grpc-status-details-bin`` trailer: an ``ErrorInfo`` (stable ``reason``,
``metadata``), plus ``BadRequest`` field violations, ``QuotaFailure`` or ``RetryInfo``
where they apply. :func:`from_rpc_error` turns a ``grpc.RpcError`` (sync or asyncio)
into the matching :class:`AgentryError` subclass with those details as attributes, so
callers catch ``VersionConflict`` instead of inspecting codes and trailers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AgentryError",
    "Cancelled",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
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
    "Unauthenticated",
    "FieldViolation",
    "QuotaViolation",
    "from_rpc_error",
]

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str
    reason: str = ""


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota (``google.rpc.QuotaFailure.Violation``)."""

    subject: str
    description: str


class AgentryError(Exception):
    """An RPC failed. Subclasses are chosen by gRPC code and, for some, by ``reason``.

    Attributes:
        code: the gRPC status code.
        message: the status message.
        reason: ``ErrorInfo.reason`` (e.g. ``SESSION_BUSY``), empty when absent.
        domain: ``ErrorInfo.domain`` (``agentry.dev``).
        metadata: ``ErrorInfo.metadata``.
        field_violations: ``BadRequest`` violations, for bad input.
        quota_violations: ``QuotaFailure`` violations.
        retry_delay: ``RetryInfo.retry_delay`` in seconds, when the server suggests one.
        status: the decoded ``google.rpc.Status`` (None when the trailer was absent).
    """

    default_code = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str = "",
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[FieldViolation] | None = None,
        quota_violations: list[QuotaViolation] | None = None,
        retry_delay: float | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = metadata or {}
        self.field_violations = field_violations or []
        self.quota_violations = quota_violations or []
        self.retry_delay = retry_delay
        self.status = status

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.reason:
            text += f" [{self.reason}]"
        for v in self.field_violations:
            text += f" ({v.field}: {v.description})"
        return text


class Cancelled(AgentryError):
    default_code = grpc.StatusCode.CANCELLED


class InvalidArgument(AgentryError):
    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(AgentryError):
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(AgentryError):
    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AgentryError):
    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(AgentryError):
    """``WORKSPACE_MISMATCH`` or ``ROLE_NOT_ALLOWED``."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(AgentryError):
    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class QuotaExceeded(ResourceExhausted):
    """A workspace quota is used up; see ``quota_violations`` and ``retry_delay``."""


class FailedPrecondition(AgentryError):
    """The resource is not in a state that allows the call; ``reason`` says which
    (``SESSION_BUSY``, ``INVALID_TRANSITION``, ``HAS_CHILDREN``, ``RUN_FINISHED`` …)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class StaleTask(FailedPrecondition):
    """A worker call whose task token no longer holds the lease (``STALE_TASK``)."""


class LeaseExpired(StaleTask):
    """Raised by the worker itself, never sent by the server: the server stayed out of
    reach until the attempt's lease ran out, so the attempt is abandoned and the server
    retries the run. ``code`` is the last transport failure's; ``reason`` is
    ``LEASE_EXPIRED``."""


class Aborted(AgentryError):
    default_code = grpc.StatusCode.ABORTED


class VersionConflict(Aborted):
    """A compare-and-swap write lost: the context's head is ``current_version``."""

    @property
    def current_version(self) -> int:
        return int(self.metadata.get("current_version", "0"))


class EtagMismatch(Aborted):
    """An update carried an outdated ``etag``; the current one is ``current_etag``."""

    @property
    def current_etag(self) -> str:
        return self.metadata.get("current_etag", "")


class OutOfRange(AgentryError):
    default_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(AgentryError):
    default_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(AgentryError):
    default_code = grpc.StatusCode.INTERNAL


class Unavailable(AgentryError):
    """The server (or its database) cannot answer now; retrying may help."""

    default_code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(AgentryError):
    """A missing, unknown, revoked or expired API key."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[AgentryError]] = {
    cls.default_code: cls
    for cls in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        Unauthenticated,
    )
}

_BY_REASON: dict[tuple[grpc.StatusCode, str], type[AgentryError]] = {
    (grpc.StatusCode.ABORTED, "VERSION_CONFLICT"): VersionConflict,
    (grpc.StatusCode.ABORTED, "ETAG_MISMATCH"): EtagMismatch,
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED"): QuotaExceeded,
    (grpc.StatusCode.FAILED_PRECONDITION, "STALE_TASK"): StaleTask,
}


def _status_from_trailers(error: grpc.RpcError) -> status_pb2.Status | None:
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def from_rpc_error(error: grpc.RpcError) -> AgentryError:
    """The typed exception for a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    code_fn = getattr(error, "code", None)
    code: grpc.StatusCode = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details_fn = getattr(error, "details", None)
    message: str = (details_fn() if callable(details_fn) else None) or ""
    status = _status_from_trailers(error)

    fields: dict[str, Any] = {"code": code, "status": status}
    if status is not None:
        message = status.message or message
        violations: list[FieldViolation] = []
        quotas: list[QuotaViolation] = []
        for any_detail in status.details:
            if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_detail.Unpack(info)
                fields.update(reason=info.reason, domain=info.domain, metadata=dict(info.metadata))
            elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_detail.Unpack(bad)
                violations += [
                    FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations
                ]
            elif any_detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
                quota = error_details_pb2.QuotaFailure()
                any_detail.Unpack(quota)
                quotas += [QuotaViolation(v.subject, v.description) for v in quota.violations]
            elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                any_detail.Unpack(retry)
                fields["retry_delay"] = retry.retry_delay.ToTimedelta().total_seconds()
        fields.update(field_violations=violations, quota_violations=quotas)

    cls = _BY_REASON.get((code, fields.get("reason", "")), _BY_CODE.get(code, AgentryError))
    return cls(message, **fields)
