"""Clients for the Agentry API: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both expose the generated service stubs as ``registry``, ``contexts`` and ``execution``
(their methods and messages are exactly the proto's), over a channel that adds the
bearer key, a default deadline, UNAVAILABLE retries and typed errors (see
:mod:`agentry._transport`). On top of the stubs there are two helpers the raw API makes
tedious: :meth:`Client.paginate` (every item of a list call, following
``next_page_token``) and :meth:`Client.stream_run_events` (a run's events, resumed
from the last sequence after a dropped connection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from . import _transport, stream
from ._transport import RetryPolicy
from .tls import TLS
from .v1 import context_pb2_grpc, execution_pb2, execution_pb2_grpc, registry_pb2_grpc

if TYPE_CHECKING:
    from .v1.context_pb2_grpc import ContextServiceAsyncStub
    from .v1.execution_pb2_grpc import ExecutionServiceAsyncStub
    from .v1.registry_pb2_grpc import RegistryServiceAsyncStub

__all__ = ["Client", "AsyncClient", "RetryPolicy"]

DEFAULT_TIMEOUT = 30.0
"""Seconds a unary call may take when the caller passes no ``timeout``."""

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
ChannelOptions = Sequence[tuple[str, Any]]


def _channel_options(options: ChannelOptions | None, tls: TLS | None) -> list[tuple[str, Any]]:
    chosen: dict[str, Any] = {
        # The server's 4 MiB limit in both directions.
        "grpc.max_send_message_length": 4 * 1024 * 1024,
        "grpc.max_receive_message_length": 4 * 1024 * 1024,
        # Keep idle long-polls alive through proxies.
        "grpc.keepalive_time_ms": 30_000,
        # Reconnect within a second of a restarted server coming back. gRPC's default
        # backoff grows to two minutes, and calls fail at once while it waits, so a
        # short outage would otherwise last as long as the backoff.
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 1_000,
    }
    for name, value in [*(tls.channel_options() if tls else ()), *(options or ())]:
        chosen[name] = value  # the caller's options win
    return list(chosen.items())


def _credentials(
    tls: TLS | bool | None, credentials: grpc.ChannelCredentials | None
) -> tuple[TLS | None, grpc.ChannelCredentials | None]:
    """The TLS settings and channel credentials; (None, None) for plaintext."""
    if tls is not None and tls is not False and credentials is not None:
        raise ValueError("pass tls or credentials, not both")
    if tls is True:
        tls = TLS()
    if isinstance(tls, TLS):
        return tls, tls.credentials()
    return None, credentials


def _page_items(response: Message) -> list[Any]:
    """The one repeated field of a List response (``projects``, ``runs`` …)."""
    for field in response.DESCRIPTOR.fields:
        if field.is_repeated:
            return list(getattr(response, field.name))
    raise TypeError(f"{response.DESCRIPTOR.full_name} is not a list response")


def _next_page(request: Req, token: str) -> Req:
    following = type(request)()
    following.CopyFrom(request)
    following.page_token = token  # type: ignore[attr-defined]
    return following


class Client:
    """A blocking client.

    Args:
        target: ``host:port`` of the server.
        api_key: the API key, sent as ``authorization: Bearer <api_key>``.
        timeout: default deadline in seconds of unary calls (``None``: no deadline).
            A per-call ``timeout=`` wins. Streams never get a default deadline.
        retry: retries of calls that fail with UNAVAILABLE; ``agentry.NO_RETRY`` disables them.
        tls: connect over TLS: a :class:`~agentry.TLS` (server CA, client certificate
            and key for mutual TLS), or True for the system's roots. Plaintext by default.
        credentials: gRPC channel credentials, for what ``tls`` does not cover.
        options: extra gRPC channel options (they override the client's own).

    Example::

        with Client("127.0.0.1:50051", api_key) as client:
            project = client.registry.GetProject(registry_pb2.GetProjectRequest(name="workspaces/acme/projects/web"))
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),
        tls: TLS | bool | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions | None = None,
    ) -> None:
        tls, credentials = _credentials(tls, credentials)
        opts = _channel_options(options, tls)
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        channel = grpc.intercept_channel(
            self._channel, _transport.SyncInterceptor(_transport.policy(api_key, timeout, retry))
        )
        self.registry = registry_pb2_grpc.RegistryServiceStub(channel)
        self.contexts = context_pb2_grpc.ContextServiceStub(channel)
        self.execution = execution_pb2_grpc.ExecutionServiceStub(channel)

    def paginate(self, method: Callable[[Req], Resp], request: Req) -> Iterator[Any]:
        """Every item of a list call, fetching pages as the iteration needs them.

        ``client.paginate(client.registry.ListProjects, ListProjectsRequest(parent=ws))``
        """
        while True:
            response = method(request)
            yield from _page_items(response)
            token = getattr(response, "next_page_token", "")
            if not token:
                return
            request = _next_page(request, token)

    def stream_run_events(
        self, run: str, after_sequence: int = 0, *, max_reconnects: int = 10
    ) -> Iterator[execution_pb2.RunEvent]:
        """The events of ``run`` after ``after_sequence``, live, until the terminal one.

        A dropped connection is resumed from the last sequence seen (see :mod:`agentry.stream`).
        """
        return stream.stream_run_events(self.execution, run, after_sequence, max_reconnects=max_reconnects)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """The asyncio client; same arguments as :class:`Client`, awaitable stubs.

    Example::

        async with AsyncClient("127.0.0.1:50051", api_key) as client:
            run = await client.execution.GetRun(execution_pb2.GetRunRequest(name=run_name))
    """

    registry: RegistryServiceAsyncStub
    contexts: ContextServiceAsyncStub
    execution: ExecutionServiceAsyncStub

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),
        tls: TLS | bool | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        options: ChannelOptions | None = None,
    ) -> None:
        tls, credentials = _credentials(tls, credentials)
        policy = _transport.policy(api_key, timeout, retry)
        interceptors: list[grpc.aio.ClientInterceptor] = [
            _transport.AioUnaryInterceptor(policy),
            _transport.AioStreamInterceptor(policy),
        ]
        opts = _channel_options(options, tls)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts, interceptors=interceptors)
        # Typed as the generated async stubs: same methods, awaited the same way.
        self.registry = _transport.AioService(registry_pb2_grpc.RegistryServiceStub(self._channel))  # type: ignore[assignment]
        self.contexts = _transport.AioService(context_pb2_grpc.ContextServiceStub(self._channel))  # type: ignore[assignment]
        self.execution = _transport.AioService(execution_pb2_grpc.ExecutionServiceStub(self._channel))  # type: ignore[assignment]

    async def paginate(self, method: Callable[[Req], Awaitable[Resp]], request: Req) -> AsyncIterator[Any]:
        """Every item of a list call (see :meth:`Client.paginate`)."""
        while True:
            response = await method(request)
            for item in _page_items(response):
                yield item
            token = getattr(response, "next_page_token", "")
            if not token:
                return
            request = _next_page(request, token)

    def stream_run_events(
        self, run: str, after_sequence: int = 0, *, max_reconnects: int = 10
    ) -> AsyncIterator[execution_pb2.RunEvent]:
        """The events of ``run`` after ``after_sequence`` until the terminal one, resumed
        across dropped connections (see :meth:`Client.stream_run_events`)."""
        return stream.stream_run_events_async(self.execution, run, after_sequence, max_reconnects=max_reconnects)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
