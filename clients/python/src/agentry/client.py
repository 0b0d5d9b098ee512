"""Clients for the Agentry API: :class:`Client` (blocking) and :class:`AsyncClient` (asyncio).

Both expose the generated service stubs as ``registry``, ``contexts`` and ``execution``
(their methods and messages are exactly the proto's), over a channel that adds the
bearer key, a default deadline, UNAVAILABLE retries and typed errors (see
:mod:`agentry._transport`). On top of the stubs there are helpers for what the raw API
makes tedious: :meth:`Client.paginate` (every item of a list call, following
``next_page_token``), :meth:`Client.stream_run_events` (a run's events, resumed from the
last sequence after a dropped connection), :meth:`Client.start_run` and
:meth:`Client.wait_run` (the common case of a run), and context reads and writes that
take and give plain Python values (:meth:`Client.write_context` …).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import Message

from . import _requests, _transport, stream
from ._requests import UNSET, JsonPatch, RunInput
from ._transport import RetryPolicy
from .structs import to_python
from .tls import TLS
from .v1 import context_pb2 as ctx, context_pb2_grpc, execution_pb2, execution_pb2_grpc, registry_pb2_grpc

if TYPE_CHECKING:
    from .v1.context_pb2_grpc import ContextServiceAsyncStub
    from .v1.execution_pb2_grpc import ExecutionServiceAsyncStub
    from .v1.registry_pb2_grpc import RegistryServiceAsyncStub

__all__ = ["Client", "AsyncClient", "RetryPolicy"]

ex = execution_pb2
TERMINAL = stream.TERMINAL_STATUSES

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
        self, run: str, after_sequence: int = 0, *, max_reconnects: int = 10, timeout: float | None = None
    ) -> Iterator[execution_pb2.RunEvent]:
        """The events of ``run`` after ``after_sequence``, live, until the terminal one.

        A dropped connection is resumed from the last sequence seen (see :mod:`agentry.stream`);
        past ``timeout`` seconds :class:`TimeoutError` is raised.
        """
        return stream.stream_run_events(
            self.execution, run, after_sequence, max_reconnects=max_reconnects, timeout=timeout
        )

    def start_run(
        self,
        instance: str,
        input: RunInput,
        *,
        session: str | None = None,
        autonomy_level: ex.AutonomyLevel.ValueType = ex.AUTONOMY_LEVEL_UNSPECIFIED,
        timeout: float | None = None,
        retry_policy: ex.RetryPolicy | None = None,
        multitask_strategy: ex.MultitaskStrategy.ValueType = ex.MULTITASK_STRATEGY_UNSPECIFIED,
        contexts: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> ex.Run:
        """Starts a run of ``instance`` (``workspaces/{w}/projects/{p}/instances/{i}``).

        ``input`` is the user's text (or ``Message``\s). The run goes to ``session``, by
        default a new session of the instance. ``timeout`` (seconds) ends it TIMED_OUT;
        ``contexts`` names contexts of the project the run may use. Returns the QUEUED run.
        """
        if session is None:
            session = self.execution.CreateSession(_requests.create_session(instance)).name
        return self.execution.CreateRun(
            _requests.create_run(
                session,
                input,
                autonomy_level=autonomy_level,
                timeout=timeout,
                retry_policy=retry_policy,
                multitask_strategy=multitask_strategy,
                contexts=contexts,
                labels=labels,
                request_id=request_id,
            )
        )

    def wait_run(
        self,
        run: str | ex.Run,
        *,
        timeout: float | None = None,
        on_event: Callable[[ex.RunEvent], None] | None = None,
    ) -> ex.Run:
        """Waits until ``run`` has finished (SUCCEEDED, FAILED, CANCELLED or TIMED_OUT) and
        returns it, with its ``output``, ``error`` and ``usage``.

        It follows the run's event stream, so it returns as soon as the run ends; a run
        waiting for a plan decision keeps it waiting. ``on_event`` sees every event,
        from the first. Past ``timeout`` seconds :class:`TimeoutError` is raised.
        """
        name = run if isinstance(run, str) else run.name
        current = self.execution.GetRun(ex.GetRunRequest(name=name), timeout=timeout)
        if current.status in TERMINAL and on_event is None:
            return current
        for event in self.stream_run_events(name, timeout=timeout):
            if on_event is not None:
                on_event(event)
        return self.execution.GetRun(ex.GetRunRequest(name=name))

    def create_context(
        self, parent: str, context_id: str, data: Any = UNSET, *, context: ctx.Context | None = None
    ) -> ctx.Context:
        """Creates context ``context_id`` in project ``parent``; ``data`` (a dict), when
        given, is version 1."""
        return self.contexts.CreateContext(_requests.create_context(parent, context_id, data, context))

    def write_context(
        self,
        name: str,
        *,
        data: Any = UNSET,
        merge_patch: Any = UNSET,
        json_patch: JsonPatch | None = None,
        expected_version: int | None = None,
        description: str = "",
        request_id: str = "",
    ) -> ctx.WriteContextResponse:
        """Writes one version of context ``name``: exactly one of ``data`` (the new
        document, a dict), ``merge_patch`` (RFC 7396, a dict) or ``json_patch`` (RFC
        6902, a list of ``{"op", "path", "value"}`` dicts). With ``expected_version`` it
        is a compare-and-swap (:class:`~agentry.VersionConflict` when the head moved)."""
        return self.contexts.WriteContext(
            _requests.write_context(
                name,
                data=data,
                merge_patch=merge_patch,
                json_patch=json_patch,
                expected_version=expected_version,
                description=description,
                request_id=request_id,
            )
        )

    def context_data(self, name: str, version: int = 0) -> Any:
        """The document of context ``name`` at ``version`` (the head when 0), as plain
        Python (a dict)."""
        return to_python(self.contexts.ReadContext(ctx.ReadContextRequest(name=name, version=version)).data)

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
        self, run: str, after_sequence: int = 0, *, max_reconnects: int = 10, timeout: float | None = None
    ) -> AsyncIterator[execution_pb2.RunEvent]:
        """The events of ``run`` after ``after_sequence`` until the terminal one, resumed
        across dropped connections (see :meth:`Client.stream_run_events`)."""
        return stream.stream_run_events_async(
            self.execution, run, after_sequence, max_reconnects=max_reconnects, timeout=timeout
        )

    async def start_run(
        self,
        instance: str,
        input: RunInput,
        *,
        session: str | None = None,
        autonomy_level: ex.AutonomyLevel.ValueType = ex.AUTONOMY_LEVEL_UNSPECIFIED,
        timeout: float | None = None,
        retry_policy: ex.RetryPolicy | None = None,
        multitask_strategy: ex.MultitaskStrategy.ValueType = ex.MULTITASK_STRATEGY_UNSPECIFIED,
        contexts: Sequence[str] = (),
        labels: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> ex.Run:
        """Starts a run of ``instance`` (see :meth:`Client.start_run`)."""
        if session is None:
            session = (await self.execution.CreateSession(_requests.create_session(instance))).name
        return await self.execution.CreateRun(
            _requests.create_run(
                session,
                input,
                autonomy_level=autonomy_level,
                timeout=timeout,
                retry_policy=retry_policy,
                multitask_strategy=multitask_strategy,
                contexts=contexts,
                labels=labels,
                request_id=request_id,
            )
        )

    async def wait_run(
        self,
        run: str | ex.Run,
        *,
        timeout: float | None = None,
        on_event: Callable[[ex.RunEvent], None] | None = None,
    ) -> ex.Run:
        """Waits until ``run`` has finished and returns it (see :meth:`Client.wait_run`)."""
        name = run if isinstance(run, str) else run.name
        current = await self.execution.GetRun(ex.GetRunRequest(name=name), timeout=timeout)
        if current.status in TERMINAL and on_event is None:
            return current
        async for event in self.stream_run_events(name, timeout=timeout):
            if on_event is not None:
                on_event(event)
        return await self.execution.GetRun(ex.GetRunRequest(name=name))

    async def create_context(
        self, parent: str, context_id: str, data: Any = UNSET, *, context: ctx.Context | None = None
    ) -> ctx.Context:
        """Creates a context (see :meth:`Client.create_context`)."""
        return await self.contexts.CreateContext(_requests.create_context(parent, context_id, data, context))

    async def write_context(
        self,
        name: str,
        *,
        data: Any = UNSET,
        merge_patch: Any = UNSET,
        json_patch: JsonPatch | None = None,
        expected_version: int | None = None,
        description: str = "",
        request_id: str = "",
    ) -> ctx.WriteContextResponse:
        """Writes one version of a context (see :meth:`Client.write_context`)."""
        return await self.contexts.WriteContext(
            _requests.write_context(
                name,
                data=data,
                merge_patch=merge_patch,
                json_patch=json_patch,
                expected_version=expected_version,
                description=description,
                request_id=request_id,
            )
        )

    async def context_data(self, name: str, version: int = 0) -> Any:
        """The document of a context at a version, as plain Python (see :meth:`Client.context_data`)."""
        version_read = await self.contexts.ReadContext(ctx.ReadContextRequest(name=name, version=version))
        return to_python(version_read.data)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
