"""The worker side: serve agents by turning async generators into leased runs.

A handler is an ``async def`` generator taking a :class:`TaskContext` and yielding
:mod:`agentry.steps`. For every run it leases (``PollTask``, long-polled), the worker:

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

``worker.stop()`` stops polling and lets running handlers finish. A worker process that
dies simply stops heartbeating: its leases lapse and the runs are retried elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2

from . import errors
from .client import AsyncClient
from .steps import Custom, Message, RetryableError, Step, TextDelta, ToolCall, ToolResult, Usage
from .v1 import execution_pb2 as ex

__all__ = ["Worker", "TaskContext", "Handler"]

log = logging.getLogger("agentry.worker")

Handler = Callable[["TaskContext"], AsyncIterator[Step]]


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _value(obj: Any) -> struct_pb2.Value:
    return json_format.ParseDict(obj, struct_pb2.Value())


def _workspace(agent: str) -> str:
    parts = agent.split("/")
    if len(parts) != 4 or parts[0] != "workspaces" or parts[2] != "agents":
        raise ValueError(f"expected workspaces/{{w}}/agents/{{a}}, got {agent!r}")
    return "/".join(parts[:2])


class TaskContext:
    """One leased attempt of a run, as the handler sees it.

    Attributes:
        task: the leased ``Task`` (run, instance, agent at the pinned revision, deadline).
        client: the worker's :class:`~agentry.AsyncClient`, e.g. to read the transcript.
        cancel_requested: set once the run was cancelled.
        lease_ended: set once this attempt can no longer write to the run (a plan went
            to a human, or the lease was lost); the handler should return.
    """

    def __init__(self, worker: Worker, client: AsyncClient, task: ex.Task) -> None:
        self.task = task
        self.client = client
        self.cancel_requested = False
        self._worker = worker
        self._buffer: list[ex.RunEventInput] = []
        self._trailing: list[ex.Message] = []  # Message steps not followed by anything yet
        self._tools: dict[str, str] = {}  # open tool call id → tool
        self._message_index = 0
        self._flush_lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._step: asyncio.Future[Any] | None = None  # the handler, while it runs
        self._throw_at_yield = False
        self._failure: BaseException | None = None  # a background flush failed
        self.lease_ended = False

    @property
    def run(self) -> ex.Run:
        return self.task.run

    @property
    def input(self) -> Sequence[ex.Message]:
        """The run's input messages."""
        return self.task.run.input

    @property
    def attempt(self) -> int:
        return self.task.attempt

    @property
    def resume(self) -> ex.Approval | None:
        """The decision on this run's plan, when the run resumes after REQUIRES_ACTION."""
        return self.task.resume.approval if self.task.HasField("resume") else None

    async def propose_plan(self, steps: Sequence[ex.PlanStep | Mapping[str, Any]]) -> ex.ProposePlanResponse:
        """Proposes tool steps; returns the server's answer.

        ``approved`` True: go on. False: the run waits for a human and this lease has
        ended; the handler should return, and the decision comes back as ``resume`` on
        a later task. Steps are ``PlanStep`` messages or dicts with ``tool``,
        ``arguments`` and ``description``.
        """
        plan = [
            s if isinstance(s, ex.PlanStep)
            else ex.PlanStep(tool=s["tool"], arguments=_value(s.get("arguments")), description=s.get("description", ""))
            for s in steps
        ]
        self._flush_trailing()
        await self.flush()
        response: ex.ProposePlanResponse = await self.client.execution.ProposePlan(
            ex.ProposePlanRequest(task_token=self.task.task_token, steps=plan)
        )
        if not response.approved:
            self.lease_ended = True
        return response

    # Steps → events.

    def _add(self, event: ex.RunEventInput) -> None:
        self._buffer.append(event)
        if self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    def _flush_trailing(self) -> None:
        for message in self._trailing:
            self._add(ex.RunEventInput(message_completed=ex.MessageCompleted(message=message)))
        self._trailing.clear()

    async def _emit(self, step: Step) -> None:
        if not isinstance(step, Usage):
            self._flush_trailing()
        if isinstance(step, TextDelta):
            message_id = step.message_id or f"a{self.attempt}-m{self._message_index}"
            self._add(ex.RunEventInput(message_delta=ex.MessageDelta(message_id=message_id, text=step.text)))
        elif isinstance(step, Message):
            self._trailing.append(ex.Message(role=step.role, content=step.content))
            self._message_index += 1
        elif isinstance(step, ToolCall):
            self._tools[step.id] = step.tool
            call = ex.ToolCall(id=step.id, tool=step.tool, arguments=_value(step.arguments))
            self._add(ex.RunEventInput(tool_call_started=ex.ToolCallStarted(tool_call=call)))
        elif isinstance(step, ToolResult):
            call = ex.ToolCall(
                id=step.id, tool=self._tools.pop(step.id, ""), result=_value(step.result), is_error=step.is_error
            )
            self._add(ex.RunEventInput(tool_call_completed=ex.ToolCallCompleted(tool_call=call)))
        elif isinstance(step, Usage):
            usage = ex.Usage(input_tokens=step.input_tokens, output_tokens=step.output_tokens, cost_usd=step.cost_usd)
            self._add(ex.RunEventInput(usage=usage))
        elif isinstance(step, Custom):
            data = struct_pb2.Struct()
            data.update(step.data)
            self._add(ex.RunEventInput(custom=ex.CustomEvent(name=step.name, data=data)))
        else:
            raise TypeError(f"a handler yielded {step!r}, which is not an agentry step")
        if len(self._buffer) >= self._worker.batch_size:
            await self.flush()

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._worker.flush_interval)
        try:
            await self.flush()
        except errors.StaleTask as e:
            self._lost(e)
        except errors.AgentryError as e:
            log.warning("run %s: appending events failed: %s", self.run.name, e)
            self._failure = e
            self._interrupt()

    async def flush(self) -> None:
        """Sends the buffered events now (the worker also does this on its own)."""
        async with self._flush_lock:
            if self._timer is not None and self._timer is not asyncio.current_task():
                self._timer.cancel()
            self._timer = None
            while self._buffer:
                batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
                response = await self.client.execution.AppendRunEvents(
                    ex.AppendRunEventsRequest(task_token=self.task.task_token, events=batch)
                )
                if response.cancel_requested:
                    self._cancel()

    # Cancellation.

    def _cancel(self) -> None:
        """Delivers a cancel into the handler: at its await if it is running, else at its yield."""
        if self.cancel_requested:
            return
        self.cancel_requested = True
        log.info("run %s: cancel requested", self.run.name)
        self._interrupt()

    def _lost(self, error: errors.AgentryError) -> None:
        if self.lease_ended:
            return
        self.lease_ended = True
        log.warning("run %s: lease lost (%s); stopping the handler", self.run.name, error)
        self._interrupt()

    def _interrupt(self) -> None:
        if self._step is not None:
            self._step.cancel()
        else:
            self._throw_at_yield = True


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
            heartbeat, so that sum is how long a crashed worker holds its runs.
        batch_size: events buffered before a flush.
        flush_interval: seconds an event may wait in the buffer.
        client: an :class:`~agentry.AsyncClient` to use instead of creating one.

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
        client: AsyncClient | None = None,
    ) -> None:
        self._target = target
        self._api_key = api_key
        self.identity = identity or f"{socket.gethostname()}/{os.getpid()}"
        self.concurrency = concurrency
        self.poll_wait = poll_wait
        self.lease_duration = lease_duration
        self.heartbeat_wait = heartbeat_wait
        self.batch_size = batch_size
        self.flush_interval = flush_interval
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
        """Polls for runs and handles them until :meth:`stop` (or a fatal error)."""
        if not self._handlers:
            raise ValueError("no agent registered")
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        client = self._client or AsyncClient(self._target, self._api_key)
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
                task = await self._poll(client, request)
                if task is None:
                    slots.release()
                    continue
                job = asyncio.create_task(self._execute(client, task))
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

    async def _poll(self, client: AsyncClient, request: ex.PollTaskRequest) -> ex.Task | None:
        assert self._stopping is not None
        poll = asyncio.ensure_future(client.execution.PollTask(request, timeout=self.poll_wait + 10))
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
        except (errors.Unavailable, errors.DeadlineExceeded, errors.Internal) as e:
            log.warning("poll failed (%s); retrying", e)
            await asyncio.sleep(1.0)
            return None
        return response.task if response.HasField("task") else None

    async def _execute(self, client: AsyncClient, task: ex.Task) -> None:
        ctx = TaskContext(self, client, task)
        handler = self._handlers.get(task.run.agent) or self._handlers[task.agent.name]
        log.info("run %s: attempt %d leased", task.run.name, task.attempt)
        heartbeat = asyncio.create_task(self._heartbeat(ctx))
        try:
            failure = await self._drive(ctx, handler(ctx))
            if ctx.lease_ended:
                return
            token = task.task_token
            if failure is None:
                await ctx.flush()
                request = ex.CompleteTaskRequest(task_token=token, output=ctx._trailing)
                await client.execution.CompleteTask(request)
                return
            ctx._flush_trailing()
            await ctx.flush()
            if isinstance(failure, asyncio.CancelledError):
                # On a CANCELLING run this confirms the cancel: the run ends CANCELLED.
                await client.execution.CompleteTask(
                    ex.CompleteTaskRequest(task_token=token, stop_reason=ex.STOP_REASON_CANCELLED)
                )
            else:
                await client.execution.FailTask(self._fail_request(task, failure))
        except errors.StaleTask as e:
            log.warning("run %s: lease lost before the attempt ended (%s)", task.run.name, e)
        except errors.AgentryError as e:
            log.error("run %s: could not end the attempt: %s", task.run.name, e)
        finally:
            heartbeat.cancel()
            if ctx._timer is not None:
                ctx._timer.cancel()

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
            except Exception as e:  # the handler failed
                return e
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
        if isinstance(failure, asyncio.CancelledError):
            error = ex.RunError(type="Cancelled", message="cancelled in the handler")
            return ex.FailTaskRequest(task_token=task.task_token, error=error)
        details = struct_pb2.Struct()
        if isinstance(failure, RetryableError):
            details.update(failure.details)
            request = ex.FailTaskRequest(
                task_token=task.task_token,
                error=ex.RunError(type=failure.type, message=str(failure), details=details),
                retryable=True,
            )
            if failure.retry_after is not None:
                request.next_retry_delay.CopyFrom(_duration(failure.retry_after))
            return request
        log.exception("run %s: handler failed", task.run.name, exc_info=failure)
        error = ex.RunError(type=type(failure).__name__, message=str(failure))
        return ex.FailTaskRequest(task_token=task.task_token, error=error, retryable=False)

    async def _heartbeat(self, ctx: TaskContext) -> None:
        request = ex.HeartbeatTaskRequest(task_token=ctx.task.task_token, wait=_duration(self.heartbeat_wait))
        while not ctx.lease_ended:
            try:
                response: ex.HeartbeatTaskResponse = await ctx.client.execution.HeartbeatTask(
                    request, timeout=self.heartbeat_wait + 10
                )
            except (errors.Unavailable, errors.DeadlineExceeded) as e:
                log.warning("run %s: heartbeat failed (%s); retrying", ctx.run.name, e)
                await asyncio.sleep(1.0)
                continue
            except errors.AgentryError as e:
                if not ctx.lease_ended:
                    ctx._lost(e)
                return
            if response.cancel_requested:
                ctx._cancel()
                return
