"""The worker side: serve agents by turning async generators into leased runs.

A handler is an ``async def`` generator taking a :class:`~agentry.TaskContext` and
yielding :mod:`agentry.steps`. For every run it leases (``PollTask``, long-polled), the
worker:

- heartbeats in the background with ``HeartbeatTask(wait=…)``, which the server answers
  at once when the run is cancelled, so a cancel reaches the handler without delay;
- batches the yielded steps into ``AppendRunEvents`` (every ``flush_interval`` or
  ``batch_size`` events, and always before a plan or the end);
- delivers a cancel into the handler as ``asyncio.CancelledError``: at the ``await`` it
  is blocked on, or at its ``yield`` when the worker is busy sending;
- ends the attempt: ``CompleteTask`` when the generator finishes (with the trailing
  :class:`~agentry.steps.Message` steps as output), ``FailTask`` when it raises
  (retryable only for :class:`~agentry.steps.RetryableError`), nothing when the lease
  was lost (the server re-queues the run) or a plan awaits a human.

The worker's own calls ride out a server restart (see :mod:`agentry.lease`): a transport
failure is retried with the same ``request_id`` until the lease would have run out, and
is never reported as the handler's failure; PollTask is retried for as long as it takes.

``worker.stop()`` stops polling and lets running handlers finish. A worker process that
dies simply stops heartbeating: its leases lapse and the runs are retried elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable

from google.protobuf import duration_pb2

from . import errors
from ._transport import NO_RETRY
from .client import AsyncClient, ChannelOptions
from .lease import BACKOFF, is_transient
from .steps import RetryableError, Step
from .structs import to_struct
from .task import TaskContext
from .tls import TLS
from .v1 import execution_pb2 as ex

__all__ = ["Worker", "TaskContext", "Handler"]

log = logging.getLogger("agentry.worker")

Handler = Callable[[TaskContext], AsyncIterator[Step]]


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _workspace(agent: str) -> str:
    parts = agent.split("/")
    if len(parts) != 4 or parts[0] != "workspaces" or parts[2] != "agents":
        raise ValueError(f"expected workspaces/{{w}}/agents/{{a}}, got {agent!r}")
    return "/".join(parts[:2])


class Worker:
    """Serves agents: leases their runs and drives a handler per run.

    Args:
        target: ``host:port`` of the server.
        api_key: a WORKER key.
        identity: recorded on leased runs; ``host/pid`` by default.
        concurrency: runs handled at once.
        poll_wait: seconds a PollTask waits for a run (at most 60).
        lease_duration: seconds a lease lasts without a heartbeat (1 to 600).
        heartbeat_wait: seconds each HeartbeatTask is held open waiting for a cancel. The
            server extends the lease to ``heartbeat_wait + lease_duration`` from each
            heartbeat: that sum is how long a crashed worker holds its runs, and how
            long a server may be out of reach before a live worker gives an attempt up.
        batch_size: events buffered before a flush.
        flush_interval: seconds an event may wait in the buffer.
        max_buffered: events a handler may yield while a batch is still being sent
            (retried through an outage) before its ``yield`` waits.
        call_timeout: deadline of each attempt of a worker call (a heartbeat gets its
            ``heartbeat_wait`` on top); an attempt that times out is retried.
        tls: TLS settings (see :class:`~agentry.TLS`); plaintext by default.
        options: extra gRPC channel options (e.g. a load-balancing policy for a target
            that names several servers).
        client: an :class:`~agentry.AsyncClient` to use for every call instead of the
            worker's own (then its retry policy applies inside the worker's retries).

    Example::

        worker = Worker("127.0.0.1:50051", worker_key)

        @worker.agent("workspaces/acme/agents/echo")
        async def echo(task: TaskContext):
            yield TextDelta(task.input[-1].content)

        await worker.run()
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        identity: str | None = None,
        concurrency: int = 4,
        poll_wait: float = 30.0,
        lease_duration: float = 30.0,
        heartbeat_wait: float = 20.0,
        batch_size: int = 100,
        flush_interval: float = 0.05,
        max_buffered: int = 10_000,
        call_timeout: float = 10.0,
        tls: TLS | bool | None = None,
        options: ChannelOptions | None = None,
        client: AsyncClient | None = None,
    ) -> None:
        self._target = target
        self._api_key = api_key
        self._tls = tls
        self._options = options
        self.identity = identity or f"{socket.gethostname()}/{os.getpid()}"
        self.concurrency = concurrency
        self.poll_wait = poll_wait
        self.lease_duration = lease_duration
        self.heartbeat_wait = heartbeat_wait
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.call_timeout = call_timeout
        self._client = client
        self._handlers: dict[str, Handler] = {}
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False

    def register(self, agent: str, handler: Handler) -> None:
        """Serves ``agent`` (``workspaces/{w}/agents/{a}``) with ``handler``."""
        workspace = _workspace(agent)
        if self._handlers and _workspace(next(iter(self._handlers))) != workspace:
            raise ValueError("a worker serves the agents of one workspace (its key's)")
        self._handlers[agent] = handler

    def agent(self, agent: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(handler: Handler) -> Handler:
            self.register(agent, handler)
            return handler

        return decorate

    def stop(self) -> None:
        """Stops polling; :meth:`run` returns once the running handlers have finished.

        Call it on the worker's event loop (from a signal handler, a task, or another
        thread through ``loop.call_soon_threadsafe(worker.stop)``).
        """
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    async def run(self) -> None:
        """Polls for runs and handles them until :meth:`stop` (or a fatal error: a key
        that is refused, an agent that does not exist)."""
        if not self._handlers:
            raise ValueError("no agent registered")
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        # Handlers' own calls retry UNAVAILABLE a few times, as any client's; the worker's
        # calls retry through the lease instead (see agentry.lease), so they get none.
        client = self._client or AsyncClient(self._target, self._api_key, tls=self._tls, options=self._options)
        calls = self._client or AsyncClient(
            self._target, self._api_key, tls=self._tls, options=self._options, retry=NO_RETRY
        )
        slots = asyncio.Semaphore(self.concurrency)
        running: set[asyncio.Task[None]] = set()
        request = ex.PollTaskRequest(
            parent=_workspace(next(iter(self._handlers))),
            agents=list(self._handlers),
            identity=self.identity,
            wait=_duration(self.poll_wait),
            lease_duration=_duration(self.lease_duration),
        )
        try:
            while not self._stopping.is_set():
                await slots.acquire()
                task = await self._poll(calls, request)
                if task is None:
                    slots.release()
                    continue
                job = asyncio.create_task(self._execute(TaskContext(self, client, calls, task)))
                running.add(job)
                job.add_done_callback(running.discard)
                job.add_done_callback(lambda _: slots.release())
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            for job in running:
                job.cancel()
            if self._client is None:
                await client.close()
                await calls.close()

    async def _poll(self, calls: AsyncClient, request: ex.PollTaskRequest) -> ex.Task | None:
        """One leased task, or None when the wait passed or the worker is stopping.

        Failures of the transport (and INTERNAL) are retried with backoff for as long as
        they last: a worker outlives a server that restarts or is down for a while.
        """
        assert self._stopping is not None
        failures = 0
        while not self._stopping.is_set():
            poll = asyncio.ensure_future(calls.execution.PollTask(request, timeout=self.poll_wait + self.call_timeout))
            stopped = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({poll, stopped}, return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if not poll.done():
                # A run leased in this instant is retried once its lease lapses.
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)
                return None
            try:
                response: ex.PollTaskResponse = poll.result()
            except errors.AgentryError as e:
                if not (is_transient(e) or isinstance(e, errors.Internal)):
                    raise
                failures += 1
                delay = BACKOFF.delay(failures, e)
                if failures == 1 or failures % 10 == 0:
                    log.warning("poll failed (%s); retrying (attempt %d)", e, failures + 1)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                continue
            if failures:
                log.info("poll succeeded again after %d failures", failures)
            return response.task if response.HasField("task") else None
        return None

    async def _execute(self, ctx: TaskContext) -> None:
        task = ctx.task
        handler = self._handlers.get(task.run.agent) or self._handlers[task.agent.name]
        log.info("run %s: attempt %d leased", task.run.name, task.attempt)
        heartbeat = asyncio.create_task(self._heartbeat(ctx))
        calls = ctx._calls.execution
        try:
            failure = await self._drive(ctx, handler(ctx))
            if ctx.lease_ended:
                return
            token = task.task_token
            if failure is not None:
                ctx._flush_trailing()  # a failed attempt's messages are events, not output
            try:
                await ctx.flush()
            except errors.StaleTask:
                raise
            except errors.AgentryError as e:
                # The server refused the events (a tool the revision lacks …): the attempt
                # cannot succeed, and a handler's own failure is reported before this one.
                failure = failure or e
            # A batch the timer sent may have been refused after the handler finished.
            failure = failure or ctx._failure
            ctx._ending = True
            if failure is None:
                await ctx.lease.call(calls.CompleteTask, ex.CompleteTaskRequest(task_token=token, output=ctx._trailing))
                return
            if isinstance(failure, asyncio.CancelledError):
                # On a CANCELLING run this confirms the cancel: the run ends CANCELLED.
                request = ex.CompleteTaskRequest(task_token=token, stop_reason=ex.STOP_REASON_CANCELLED)
                await ctx.lease.call(calls.CompleteTask, request)
            else:
                await ctx.lease.call(calls.FailTask, self._fail_request(task, failure))
        except errors.StaleTask as e:
            log.warning("run %s: lease lost before the attempt ended (%s)", task.run.name, e)
        except errors.AgentryError as e:
            log.error("run %s: could not end the attempt: %s", task.run.name, e)
        finally:
            ctx._ending = True
            heartbeat.cancel()
            ctx._close()

    async def _drive(self, ctx: TaskContext, steps: AsyncIterator[Step]) -> BaseException | None:
        """Runs the handler to its end.

        Returns None when it finished (or the lease ended), the CancelledError when it
        stopped on a cancel, or the exception the attempt failed with.
        """
        throw = False
        while True:
            ctx._step = asyncio.ensure_future(
                steps.athrow(asyncio.CancelledError("run cancelled"))  # type: ignore[attr-defined]
                if throw
                else steps.__anext__()
            )
            try:
                step = await ctx._step
            except StopAsyncIteration:
                return None
            except asyncio.CancelledError as e:
                if ctx._failure is not None:
                    return ctx._failure
                if ctx.lease_ended:
                    return None
                if ctx.cancel_requested:
                    return e
                raise  # the worker itself is being cancelled
            except Exception as e:
                # Once the lease is gone nothing can be reported; otherwise the handler failed.
                return None if ctx.lease_ended else e
            finally:
                ctx._step = None
            if ctx.lease_ended:
                await steps.aclose()  # type: ignore[attr-defined]
                return None
            try:
                await ctx._emit(step)
            except errors.StaleTask as e:
                ctx._lost(e)
            except (errors.AgentryError, TypeError, ValueError) as e:
                await steps.aclose()  # type: ignore[attr-defined]
                return e
            throw, ctx._throw_at_yield = ctx._throw_at_yield, False

    def _fail_request(self, task: ex.Task, failure: BaseException) -> ex.FailTaskRequest:
        if isinstance(failure, RetryableError):
            request = ex.FailTaskRequest(
                task_token=task.task_token,
                error=ex.RunError(type=failure.type, message=str(failure), details=to_struct(failure.details)),
                retryable=True,
            )
            if failure.retry_after is not None:
                request.next_retry_delay.CopyFrom(_duration(failure.retry_after))
            return request
        log.error("run %s: handler failed", task.run.name, exc_info=failure)
        error = ex.RunError(type=type(failure).__name__, message=str(failure))
        return ex.FailTaskRequest(task_token=task.task_token, error=error, retryable=False)

    async def _heartbeat(self, ctx: TaskContext) -> None:
        """Renews the lease until the attempt ends, and delivers a cancel.

        A heartbeat the server cannot answer is retried until the lease runs out, then
        the attempt is abandoned (see :mod:`agentry.lease`). After a cancel the server
        answers at once, so the handler's wind-down is covered by plain renewals; so is
        the final CompleteTask or FailTask, which may itself be retried through an outage.
        """
        wait = self.heartbeat_wait
        while not ctx.lease_ended:
            # The server renews the lease when the heartbeat arrives but answers only when
            # it has held it `wait`: held for half of what is left of the lease at most, so
            # that the answer comes back in time even when little is left (after an
            # outage, a held heartbeat answered early by a server that stopped).
            held = min(wait, max(ctx.lease.remaining() / 2, 0.0))
            request = ex.HeartbeatTaskRequest(task_token=ctx.task.task_token, wait=_duration(held))
            try:
                response: ex.HeartbeatTaskResponse = await ctx.lease.call(
                    ctx._calls.execution.HeartbeatTask, request, wait=held
                )
            except errors.AgentryError as e:
                if not ctx._ending:  # once the attempt is ending, its own last call reports
                    ctx._lost(e)
                return
            ctx.lease.grant(response.lease_expire_time)
            if response.cancel_requested and not ctx._ending:
                ctx._cancel()
            if ctx.cancel_requested or ctx._ending:
                wait = 0.0
                await asyncio.sleep(max(self.lease_duration / 3, 0.2))
