"""Runs end to end: the Worker serving agents, the client following their event streams."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentry.testing import Tenant
from proxy import DroppingProxy
from support import kinds, make_agent, running, user_input

import agentry
from agentry import AsyncClient, Client, Message, RetryableError, TaskContext, TextDelta, ToolCall, ToolResult, Usage, Worker
from agentry.v1 import common_pb2, execution_pb2 as ex
from google.protobuf import duration_pb2


async def echo(task: TaskContext) -> AsyncIterator[agentry.Step]:
    """Streams the last input message back word by word, then answers it whole."""
    text = task.input[-1].content
    for word in text.split():
        yield TextDelta(word + " ")
    yield Usage(input_tokens=len(text.split()), output_tokens=len(text.split()))
    yield Message(text)


def _worker(tenant: Tenant, **options: Any) -> Worker:
    return Worker(tenant.target, tenant.worker_key, poll_wait=5, **options)


def _create_run(client: Client, session: str, text: str, **run: Any) -> ex.Run:
    return client.execution.CreateRun(ex.CreateRunRequest(parent=session, run=ex.Run(input=user_input(text), **run)))


def test_a_streamed_run_yields_every_event_until_it_succeeds(tenant: Tenant) -> None:
    agent = make_agent(tenant)
    worker = _worker(tenant)
    worker.register(agent.name, echo)
    with running(worker), tenant.client() as client:
        run = _create_run(client, agent.session, "hello brave new world")
        events = list(client.stream_run_events(run.name))
        finished = client.execution.GetRun(ex.GetRunRequest(name=run.name))

    assert kinds(events) == [
        "status:RUN_STATUS_QUEUED",
        "status:RUN_STATUS_RUNNING",
        *["message_delta"] * 4,
        "usage",
        "message_completed",
        "status:RUN_STATUS_SUCCEEDED",
    ]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert "".join(e.message_delta.text for e in events if e.HasField("message_delta")) == "hello brave new world "
    assert finished.status == ex.RUN_STATUS_SUCCEEDED
    assert [m.content for m in finished.output] == ["hello brave new world"]
    assert finished.usage.output_tokens == 4

    with tenant.client(tenant.reader_key) as reader:
        tail = list(reader.stream_run_events(run.name, after_sequence=3))
    assert tail == events[3:]


def test_the_stream_resumes_after_a_dropped_connection(tenant: Tenant) -> None:
    agent = make_agent(tenant)
    gate = threading.Event()

    async def slow_echo(task: TaskContext) -> AsyncIterator[agentry.Step]:
        yield TextDelta("before ")
        await asyncio.to_thread(gate.wait, 30)
        yield TextDelta("after")
        yield Message("before after")

    worker = _worker(tenant)
    worker.register(agent.name, slow_echo)
    with running(worker), DroppingProxy(tenant.target) as proxy, Client(proxy.target, tenant.developer_key) as client:
        run = _create_run(client, agent.session, "go")
        events = []
        for event in client.stream_run_events(run.name):
            events.append(event)
            if event.HasField("message_delta") and event.message_delta.text == "before ":
                proxy.drop_connections()  # the server keeps the run going; the client reconnects
                gate.set()

    assert proxy.connections >= 2
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert kinds(events)[-3:] == ["message_delta", "message_completed", "status:RUN_STATUS_SUCCEEDED"]


async def test_a_cancel_is_raised_inside_the_handler(tenant: Tenant) -> None:
    agent = make_agent(tenant)
    started, saw_cancel = asyncio.Event(), asyncio.Event()

    async def patient(task: TaskContext) -> AsyncIterator[agentry.Step]:
        yield TextDelta("thinking")
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise
        yield Message("never")

    worker = _worker(tenant)
    worker.register(agent.name, patient)
    serving = asyncio.create_task(worker.run())
    async with AsyncClient(tenant.target, tenant.developer_key) as client:
        run = await client.execution.CreateRun(
            ex.CreateRunRequest(parent=agent.session, run=ex.Run(input=user_input("wait")))
        )
        await asyncio.wait_for(started.wait(), 10)
        await client.execution.CancelRun(ex.CancelRunRequest(name=run.name, reason="user gave up"))
        events = [e async for e in client.stream_run_events(run.name)]
        finished = await client.execution.GetRun(ex.GetRunRequest(name=run.name))
    worker.stop()
    await asyncio.wait_for(serving, 10)

    assert saw_cancel.is_set()
    assert finished.status == ex.RUN_STATUS_CANCELLED
    assert finished.stop_reason == ex.STOP_REASON_CANCELLED
    # The handler's delta may be flushed before or after the cancel request.
    assert "status:RUN_STATUS_CANCELLING" in kinds(events)
    assert kinds(events)[-1] == "status:RUN_STATUS_CANCELLED"


def test_a_cancel_reaches_a_handler_parked_at_its_yield(tenant: Tenant) -> None:
    agent = make_agent(tenant)
    cancelled_at: list[int] = []

    async def chatty(task: TaskContext) -> AsyncIterator[agentry.Step]:
        # Never awaits: the cancel can only arrive at a yield, while the worker sends.
        count = 0
        try:
            while True:
                count += 1
                yield TextDelta(".")
        except asyncio.CancelledError:
            cancelled_at.append(count)
            raise

    worker = _worker(tenant, batch_size=1)
    worker.register(agent.name, chatty)
    with running(worker), tenant.client() as client:
        run = _create_run(client, agent.session, "talk")
        for event in client.stream_run_events(run.name):
            if event.HasField("message_delta"):
                client.execution.CancelRun(ex.CancelRunRequest(name=run.name))
                break
        finished_events = list(client.stream_run_events(run.name))

    assert cancelled_at and cancelled_at[0] >= 1
    assert kinds(finished_events)[-1] == "status:RUN_STATUS_CANCELLED"


def test_a_retryable_error_retries_the_run_and_others_fail_it(tenant: Tenant) -> None:
    agent = make_agent(tenant)

    async def flaky(task: TaskContext) -> AsyncIterator[agentry.Step]:
        text = task.input[-1].content
        if text == "broken":
            raise ValueError("cannot do that")
        if task.attempt == 1:
            raise RetryableError("model overloaded", type="Overloaded", retry_after=0.1)
        yield Message(f"worked on attempt {task.attempt}")

    worker = _worker(tenant)
    worker.register(agent.name, flaky)
    with running(worker), tenant.client() as client:
        retried = _create_run(client, agent.session, "please")
        list(client.stream_run_events(retried.name))
        retried = client.execution.GetRun(ex.GetRunRequest(name=retried.name))

        failed = _create_run(client, agent.session, "broken")
        list(client.stream_run_events(failed.name))
        failed = client.execution.GetRun(ex.GetRunRequest(name=failed.name))

    assert retried.status == ex.RUN_STATUS_SUCCEEDED
    assert retried.attempt == 2
    assert [m.content for m in retried.output] == ["worked on attempt 2"]
    assert failed.status == ex.RUN_STATUS_FAILED
    assert (failed.error.type, failed.error.message) == ("ValueError", "cannot do that")


def test_a_plan_waits_for_a_human_and_the_decision_resumes_the_run(tenant: Tenant) -> None:
    agent = make_agent(tenant, tools={"delete_everything": common_pb2.TOOL_RISK_DESTRUCTIVE})
    resumed_with: list[int] = []

    async def careful(task: TaskContext) -> AsyncIterator[agentry.Step]:
        if task.resume is None:
            plan = await task.propose_plan([{"tool": "delete_everything", "arguments": {"really": True}}])
            assert not plan.approved  # L1 does not cover a destructive tool
            return
        resumed_with.append(task.resume.decision)
        yield ToolCall(id="call-1", tool="delete_everything", arguments={"really": True})
        yield ToolResult(id="call-1", result={"deleted": 3})
        yield Message("done")

    worker = _worker(tenant)
    worker.register(agent.name, careful)
    with running(worker), tenant.client() as client:
        run = _create_run(client, agent.session, "clean up", autonomy_level=ex.AUTONOMY_LEVEL_L1)
        events = []
        for event in client.stream_run_events(run.name):
            events.append(event)
            if event.HasField("status_changed") and event.status_changed.status == ex.RUN_STATUS_REQUIRES_ACTION:
                waiting = client.execution.GetRun(ex.GetRunRequest(name=run.name))
                client.execution.DecideApproval(
                    ex.DecideApprovalRequest(
                        name=run.name, approval_id=waiting.approval.approval_id, decision=ex.APPROVAL_DECISION_APPROVE
                    )
                )

    assert resumed_with == [ex.APPROVAL_DECISION_APPROVE]
    assert "plan_proposed" in kinds(events)
    assert kinds(events)[-4:] == [
        "tool_call_started",
        "tool_call_completed",
        "message_completed",
        "status:RUN_STATUS_SUCCEEDED",
    ]


def test_a_run_whose_worker_crashes_is_retried_by_another(tenant: Tenant) -> None:
    agent = make_agent(tenant)
    script = Path(__file__).with_name("crashing_worker.py")
    env = {**os.environ, "AGENTRY_TARGET": tenant.target, "AGENTRY_API_KEY": tenant.worker_key, "AGENTRY_AGENT": agent.name}
    crashing = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        with tenant.client() as client:
            retry = ex.RetryPolicy(initial_interval=duration_pb2.Duration(nanos=100_000_000))
            run = _create_run(client, agent.session, "survive this", retry_policy=retry)
            assert crashing.stdout is not None
            assert crashing.stdout.readline().strip() == "leased"
            crashing.kill()  # no goodbye: the lease simply lapses
            crashing.wait()

            worker = _worker(tenant)
            worker.register(agent.name, echo)
            with running(worker):
                events = list(client.stream_run_events(run.name))
                finished = client.execution.GetRun(ex.GetRunRequest(name=run.name))
    finally:
        crashing.kill()

    lost = [e for e in events if e.HasField("status_changed") and e.status_changed.stop_reason == ex.STOP_REASON_WORKER_LOST]
    assert lost, kinds(events)
    assert finished.status == ex.RUN_STATUS_SUCCEEDED
    assert finished.attempt == 2
    assert [m.content for m in finished.output] == ["survive this"]


async def test_the_async_client_streams_a_run(tenant: Tenant) -> None:
    agent = make_agent(tenant)
    worker = _worker(tenant)
    worker.register(agent.name, echo)
    serving = asyncio.create_task(worker.run())
    async with AsyncClient(tenant.target, tenant.developer_key) as client:
        run = await client.execution.CreateRun(ex.CreateRunRequest(parent=agent.session, run=ex.Run(input=user_input("hi"))))
        events = [e async for e in client.stream_run_events(run.name)]
    worker.stop()
    await asyncio.wait_for(serving, 10)
    assert agentry.is_terminal(events[-1])
    assert events[-1].status_changed.status == ex.RUN_STATUS_SUCCEEDED


@pytest.mark.parametrize("linger", [0.0, 0.5], ids=["sent-at-the-end", "sent-by-the-timer"])
def test_events_the_server_refuses_fail_the_attempt(tenant: Tenant, linger: float) -> None:
    agent = make_agent(tenant)  # an agent without tools

    async def confused(task: TaskContext) -> AsyncIterator[agentry.Step]:
        yield TextDelta("let me call a tool I do not have")
        yield ToolCall(id="call-1", tool="no_such_tool", arguments={"x": 1})
        await asyncio.sleep(linger)  # 0.5 s: the batch goes (and is refused) meanwhile

    worker = _worker(tenant)
    worker.register(agent.name, confused)
    with running(worker), tenant.client() as client:
        run = _create_run(client, agent.session, "go", retry_policy=ex.RetryPolicy(max_attempts=1))
        finished = client.wait_run(run, timeout=60)

    assert finished.status == ex.RUN_STATUS_FAILED
    assert finished.attempt == 1
    assert finished.error.type == "InvalidArgument"
    assert "no_such_tool" in finished.error.message
