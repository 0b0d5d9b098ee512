"""One leased attempt as a handler sees it: its input, the steps it yields turned into run
events, plans, and the cancel or lost lease that interrupts it.

Steps are buffered and sent in batches (``AppendRunEvents``) by a timer or when a batch
is full, one batch at a time, each with its own ``request_id`` kept across retries, so a
batch the server already appended is replayed rather than appended twice. While a batch
is being retried (the server is out of reach) the handler keeps running and its steps
keep buffering, up to ``Worker.max_buffered`` events; past that its ``yield`` waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import errors
from .client import AsyncClient
from .lease import Lease
from .steps import Custom, Message, Step, TextDelta, ToolCall, ToolResult, Usage
from .structs import to_python, to_struct, to_value
from .v1 import execution_pb2 as ex, registry_pb2 as reg

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["TaskContext"]

log = logging.getLogger("agentry.worker")

_MAX_BATCH = 1000  # the server's limit per AppendRunEvents


class TaskContext:
    """One leased attempt of a run, as the handler sees it.

    Attributes:
        task: the leased ``Task`` (run, instance, agent at the pinned revision, deadline).
        client: an :class:`~agentry.AsyncClient` for the handler's own calls (reading the
            transcript, writing a context); its calls retry UNAVAILABLE a few times and
            then raise into the handler like any other failure.
        cancel_requested: set once the run was cancelled.
        lease_ended: set once this attempt can no longer write to the run (a plan went
            to a human, or the lease was lost); the handler should return.
    """

    def __init__(self, worker: Worker, client: AsyncClient, calls: AsyncClient, task: ex.Task) -> None:
        self.task = task
        self.client = client
        self.cancel_requested = False
        self.lease_ended = False
        self.lease = Lease(task.run.name, task.task_token, task.lease_expire_time, call_timeout=worker.call_timeout)
        self._calls = calls  # the worker's own calls: no retries of their own, the lease's instead
        self._worker = worker
        self._buffer: list[ex.RunEventInput] = []
        self._trailing: list[ex.Message] = []  # Message steps not followed by anything yet
        self._tools: dict[str, str] = {}  # open tool call id → tool
        self._message_index = 0
        self._flush_lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()  # timers, including one mid-flush
        self._step: asyncio.Future[Any] | None = None  # the handler, while it runs
        self._throw_at_yield = False
        self._failure: BaseException | None = None  # a background flush failed
        self._ending = False  # CompleteTask or FailTask is under way

    @property
    def run(self) -> ex.Run:
        return self.task.run

    @property
    def instance(self) -> reg.Instance:
        """The instance the run belongs to."""
        return self.task.instance

    @property
    def agent(self) -> reg.Agent:
        """The agent at the revision the instance pins (its tools, config schema …)."""
        return self.task.agent

    @property
    def config(self) -> dict[str, Any]:
        """The instance's effective config (its config over the agent's defaults), as a dict."""
        return to_python(self.task.instance.effective_config)

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
        ``arguments`` (any JSON value: dicts, lists …) and ``description``.

        Raises:
            agentry.StaleTask: the lease was lost (the handler should return).
        """
        plan = [
            s if isinstance(s, ex.PlanStep)
            else ex.PlanStep(tool=s["tool"], arguments=to_value(s.get("arguments")), description=s.get("description", ""))
            for s in steps
        ]
        self._flush_trailing()
        await self.flush()
        request = ex.ProposePlanRequest(task_token=self.task.task_token, steps=plan)
        try:
            response: ex.ProposePlanResponse = await self.lease.call(self._calls.execution.ProposePlan, request)
        except errors.StaleTask as e:
            self._lost(e)
            raise
        if not response.approved:
            self.lease_ended = True
        return response

    # Steps → events.

    def _add(self, event: ex.RunEventInput) -> None:
        self._buffer.append(event)
        if self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())
            self._background.add(self._timer)
            self._timer.add_done_callback(self._background.discard)

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
            call = ex.ToolCall(id=step.id, tool=step.tool, arguments=to_value(step.arguments))
            self._add(ex.RunEventInput(tool_call_started=ex.ToolCallStarted(tool_call=call)))
        elif isinstance(step, ToolResult):
            call = ex.ToolCall(
                id=step.id, tool=self._tools.pop(step.id, ""), result=to_value(step.result), is_error=step.is_error
            )
            self._add(ex.RunEventInput(tool_call_completed=ex.ToolCallCompleted(tool_call=call)))
        elif isinstance(step, Usage):
            usage = ex.Usage(input_tokens=step.input_tokens, output_tokens=step.output_tokens, cost_usd=step.cost_usd)
            self._add(ex.RunEventInput(usage=usage))
        elif isinstance(step, Custom):
            self._add(ex.RunEventInput(custom=ex.CustomEvent(name=step.name, data=to_struct(step.data))))
        else:
            raise TypeError(f"a handler yielded {step!r}, which is not an agentry step")
        if len(self._buffer) >= self._worker.batch_size:
            # A batch in flight (perhaps retried through an outage) sends these too when
            # it is done; the handler only waits once the buffer is too full.
            if not self._flush_lock.locked() or len(self._buffer) >= self._worker.max_buffered:
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
                batch, self._buffer = self._buffer[:_MAX_BATCH], self._buffer[_MAX_BATCH:]
                request = ex.AppendRunEventsRequest(task_token=self.task.task_token, events=batch)
                response: ex.AppendRunEventsResponse = await self.lease.call(
                    self._calls.execution.AppendRunEvents, request
                )
                if response.cancel_requested:
                    self._cancel()

    def _close(self) -> None:
        """Stops background sends (the attempt is over)."""
        for timer in self._background:
            timer.cancel()

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
