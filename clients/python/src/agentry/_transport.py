"""Channel interceptors: bearer auth, default deadlines, UNAVAILABLE retries, typed errors.

One policy, applied by a sync and an asyncio interceptor, so the generated stubs keep
their signatures (and their mypy types) while every call gets the same behaviour:

- ``authorization: Bearer <key>`` is added to the call metadata;
- unary calls without a timeout get the client's default deadline; streams get none;
- a unary call that fails with UNAVAILABLE is retried with jittered exponential backoff
  (or the server's ``RetryInfo`` delay) within the call's deadline. Before the first
  attempt an empty ``request_id`` is filled with a UUID, so a retried write that did
  reach the server is replayed, not applied twice. No other code is retried;
- failures are raised as :class:`agentry.errors.AgentryError` subclasses: by the sync
  interceptor itself, and for asyncio by :class:`AioService` around each stub, because
  grpc.aio's call objects must see their own ``AioRpcError`` leave an interceptor.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message

from . import errors


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of unary calls that fail with UNAVAILABLE (attempts include the first)."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def delay(self, retry: int, error: errors.AgentryError) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based)."""
        if error.retry_delay:
            return min(error.retry_delay, self.max_backoff)
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return random.uniform(ceiling / 2, ceiling)


NO_RETRY = RetryPolicy(max_attempts=1)


def _with_request_id(request: Any) -> Any:
    if isinstance(request, Message) and "request_id" in request.DESCRIPTOR.fields_by_name:
        if not getattr(request, "request_id"):
            copy = type(request)()
            copy.CopyFrom(request)
            setattr(copy, "request_id", str(uuid.uuid4()))
            return copy
    return request


class _Policy:
    def __init__(self, api_key: str, timeout: float | None, retry: RetryPolicy) -> None:
        self._auth = ("authorization", f"Bearer {api_key}")
        self.timeout = timeout
        self.retry = retry

    def metadata(self, metadata: Any) -> list[tuple[str, str | bytes]]:
        return [*(metadata or ()), self._auth]

    def deadline(self, details: Any) -> float | None:
        timeout = details.timeout if details.timeout is not None else self.timeout
        return None if timeout is None else time.monotonic() + timeout


def _details(details: Any, metadata: Any, deadline: float | None) -> Any:
    """``details`` (a namedtuple in both grpc and grpc.aio) with our metadata and deadline."""
    timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    return details._replace(timeout=timeout, metadata=metadata)


def _should_retry(policy: _Policy, attempt: int, error: errors.AgentryError, deadline: float | None) -> float | None:
    """The backoff before another attempt, or None to give up."""
    if not isinstance(error, errors.Unavailable) or attempt >= policy.retry.max_attempts:
        return None
    delay = policy.retry.delay(attempt, error)
    if deadline is not None and time.monotonic() + delay >= deadline:
        return None
    return delay


class _StreamErrors:
    """A response iterator of a sync server-streaming call that raises typed errors."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> _StreamErrors:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class SyncInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, policy: _Policy) -> None:
        self._policy = policy

    def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        metadata = self._policy.metadata(client_call_details.metadata)
        deadline = self._policy.deadline(client_call_details)
        request = _with_request_id(request)
        attempt = 1
        while True:
            outcome = continuation(_details(client_call_details, metadata, deadline), request)
            failure = outcome.exception()
            if failure is None:
                return outcome
            if not isinstance(failure, grpc.RpcError):
                raise failure
            error = errors.from_rpc_error(failure)
            delay = _should_retry(self._policy, attempt, error, deadline)
            if delay is None:
                raise error from None
            time.sleep(delay)
            attempt += 1

    def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        metadata = self._policy.metadata(client_call_details.metadata)
        deadline = None if client_call_details.timeout is None else time.monotonic() + client_call_details.timeout
        return _StreamErrors(continuation(_details(client_call_details, metadata, deadline), request))


class AioUnaryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Auth, deadline and retries for asyncio unary calls.

    Failures leave as ``AioRpcError`` (grpc.aio's call objects expect that type);
    :class:`AioService` converts them.
    """

    def __init__(self, policy: _Policy) -> None:
        self._policy = policy

    async def intercept_unary_unary(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        metadata = self._policy.metadata(client_call_details.metadata)
        deadline = self._policy.deadline(client_call_details)
        request = _with_request_id(request)
        attempt = 1
        while True:
            call = await continuation(_details(client_call_details, metadata, deadline), request)
            try:
                return await call
            except grpc.aio.AioRpcError as e:
                delay = _should_retry(self._policy, attempt, errors.from_rpc_error(e), deadline)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1


class AioStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """Auth for asyncio server-streaming calls (no default deadline, no retries)."""

    def __init__(self, policy: _Policy) -> None:
        self._policy = policy

    async def intercept_unary_stream(self, continuation: Callable[..., Any], client_call_details: Any, request: Any) -> Any:
        metadata = self._policy.metadata(client_call_details.metadata)
        deadline = None if client_call_details.timeout is None else time.monotonic() + client_call_details.timeout
        return await continuation(_details(client_call_details, metadata, deadline), request)


class _AioStream:
    """The responses of an asyncio server-streaming call, raising typed errors."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._responses()

    async def _responses(self) -> AsyncIterator[Any]:
        try:
            async for response in self._call:
                yield response
        except grpc.aio.AioRpcError as e:
            raise errors.from_rpc_error(e) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class AioService:
    """A generated asyncio stub whose calls raise :class:`agentry.errors.AgentryError`."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        if isinstance(method, grpc.aio.UnaryStreamMultiCallable):

            def stream(request: Any, **kwargs: Any) -> _AioStream:
                return _AioStream(method(request, **kwargs))

            return stream

        async def unary(request: Any, **kwargs: Any) -> Any:
            try:
                return await method(request, **kwargs)
            except grpc.aio.AioRpcError as e:
                raise errors.from_rpc_error(e) from None

        return unary


def policy(api_key: str, timeout: float | None, retry: RetryPolicy | None) -> _Policy:
    return _Policy(api_key, timeout, retry or NO_RETRY)


__all__ = ["RetryPolicy", "NO_RETRY", "SyncInterceptor", "AioUnaryInterceptor", "AioStreamInterceptor", "AioService", "policy"]
