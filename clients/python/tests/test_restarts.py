"""The Worker rides out server restarts: a real `agentry serve` is stopped (SIGTERM) in
the middle of a run and started again on the same port and database.

A frozen server (SIGSTOP) is waited out the same way: calls that time out are retried.
A short outage costs nothing: the handler keeps running, its events wait in the buffer,
every worker call is retried with its request id, and the run succeeds on attempt 1 with
a gapless log. An outage longer than the lease abandons the attempt (no FailTask): the
server re-queues the run as WORKER_LOST and it succeeds on attempt 2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator

from google.protobuf import duration_pb2
from support import kinds, make_agent, running, user_input

import agentry
from agentry import Message, TaskContext, TextDelta, Usage, Worker
from agentry.testing import AgentryServer
from agentry.v1 import execution_pb2 as ex

WORDS = [f"w{i}" for i in range(60)]


def _statuses(events: list[ex.RunEvent]) -> list[tuple[str, str]]:
    return [
        (ex.RunStatus.Name(e.status_changed.status), ex.StopReason.Name(e.status_changed.stop_reason))
        for e in events
        if e.HasField("status_changed")
    ]


def _follow(server: AgentryServer, run: str, into: list[ex.RunEvent]) -> threading.Thread:
    """Follows the run's events in a thread, through the restart (the stream resumes)."""

    def follow() -> None:
        with server.client() as client:
            into.extend(client.stream_run_events(run, max_reconnects=100))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread


def test_a_run_survives_a_server_restart_on_attempt_1(own_server: AgentryServer) -> None:
    tenant = own_server.tenant()
    agent = make_agent(tenant)
    progress: list[str] = []
    interrupted: list[BaseException] = []

    async def slow_echo(task: TaskContext) -> AsyncIterator[agentry.Step]:
        # About 6 s of work, streamed the whole time: it spans the outage.
        try:
            for word in WORDS:
                yield TextDelta(word + " ")
                progress.append(word)
                await asyncio.sleep(0.1)
        except BaseException as e:
            interrupted.append(e)
            raise
        yield Usage(output_tokens=len(WORDS))
        yield Message(" ".join(WORDS))

    worker = Worker(tenant.target, tenant.worker_key, poll_wait=5)
    worker.register(agent.name, slow_echo)
    with running(worker), tenant.client() as client:
        run = client.execution.CreateRun(ex.CreateRunRequest(parent=agent.session, run=ex.Run(input=user_input("go"))))
        followed: list[ex.RunEvent] = []
        follower = _follow(own_server, run.name, followed)
        deadline = time.monotonic() + 30
        while len(progress) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(progress) >= 8, "the handler did not start"

        own_server.stop()  # SIGTERM: the server drains and exits
        at_stop = len(progress)
        time.sleep(2.0)  # 2 s down
        during = len(progress) - at_stop
        own_server.start()  # same port, same database
        assert at_stop < len(WORDS), "the run ended before the outage began"
        assert during >= 10, "the handler did not keep running through the outage"

        follower.join(timeout=60)
        assert not follower.is_alive(), "the event stream did not reach the end of the run"

    with own_server.client(tenant.reader_key) as reader:
        finished = reader.execution.GetRun(ex.GetRunRequest(name=run.name))
        stored = list(reader.stream_run_events(run.name))

    assert not interrupted, f"the handler was interrupted: {interrupted!r}"
    assert finished.status == ex.RUN_STATUS_SUCCEEDED, own_server.log()[-3000:]
    assert finished.attempt == 1
    assert [m.content for m in finished.output] == [" ".join(WORDS)]
    # Gapless, each delta exactly once and in order, no error or retry in between.
    assert [e.sequence for e in stored] == list(range(1, len(stored) + 1))
    assert "".join(e.message_delta.text for e in stored if e.HasField("message_delta")) == "".join(w + " " for w in WORDS)
    assert _statuses(stored) == [
        ("RUN_STATUS_QUEUED", "STOP_REASON_UNSPECIFIED"),
        ("RUN_STATUS_RUNNING", "STOP_REASON_UNSPECIFIED"),
        ("RUN_STATUS_SUCCEEDED", "STOP_REASON_END_TURN"),
    ]
    assert "error" not in kinds(stored)
    # The client's stream resumed across the restart with nothing lost or repeated.
    assert followed == stored


def test_an_outage_longer_than_the_lease_abandons_the_attempt(own_server: AgentryServer) -> None:
    tenant = own_server.tenant()
    agent = make_agent(tenant)
    interrupted: list[int] = []
    first_attempt_started = threading.Event()

    async def patient(task: TaskContext) -> AsyncIterator[agentry.Step]:
        if task.attempt == 1:
            yield TextDelta("started ")
            first_attempt_started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                interrupted.append(task.attempt)  # the worker gave the attempt up
                raise
        yield Message(f"done on attempt {task.attempt}")

    # A lease of 1 s + 1 s heartbeat wait: the 5 s outage outlasts it.
    worker = Worker(tenant.target, tenant.worker_key, poll_wait=5, lease_duration=1, heartbeat_wait=1)
    worker.register(agent.name, patient)
    with running(worker), tenant.client() as client:
        retry = ex.RetryPolicy(initial_interval=duration_pb2.Duration(nanos=100_000_000))
        run = client.execution.CreateRun(
            ex.CreateRunRequest(parent=agent.session, run=ex.Run(input=user_input("go"), retry_policy=retry))
        )
        assert first_attempt_started.wait(30)
        time.sleep(0.3)  # let the first delta reach the server
        own_server.stop()
        time.sleep(5.0)
        assert interrupted == [1], "the attempt was not abandoned while the server was down"
        own_server.start()
        events = list(client.stream_run_events(run.name, max_reconnects=100))
        finished = client.execution.GetRun(ex.GetRunRequest(name=run.name))

    assert finished.status == ex.RUN_STATUS_SUCCEEDED, own_server.log()[-3000:]
    assert finished.attempt == 2
    assert [m.content for m in finished.output] == ["done on attempt 2"]
    # Abandoned, not failed: no FailTask, the lapse re-queued the run as WORKER_LOST.
    assert _statuses(events) == [
        ("RUN_STATUS_QUEUED", "STOP_REASON_UNSPECIFIED"),
        ("RUN_STATUS_RUNNING", "STOP_REASON_UNSPECIFIED"),
        ("RUN_STATUS_QUEUED", "STOP_REASON_WORKER_LOST"),
        ("RUN_STATUS_RUNNING", "STOP_REASON_UNSPECIFIED"),
        ("RUN_STATUS_SUCCEEDED", "STOP_REASON_END_TURN"),
    ]
    assert "error" not in kinds(events)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_a_frozen_server_is_waited_out_with_retried_calls(own_server: AgentryServer) -> None:
    tenant = own_server.tenant()
    agent = make_agent(tenant)
    progress: list[str] = []

    async def steady(task: TaskContext) -> AsyncIterator[agentry.Step]:
        for word in WORDS:
            yield TextDelta(word + " ")
            progress.append(word)
            await asyncio.sleep(0.1)
        yield Message(" ".join(WORDS))

    # Each attempt of a worker call times out after 1 s (DEADLINE_EXCEEDED) and is
    # retried with its request id; the frozen server may still apply the timed-out
    # attempts once it thaws, and must then replay them rather than append twice.
    worker = Worker(tenant.target, tenant.worker_key, poll_wait=5, call_timeout=1.0)
    worker.register(agent.name, steady)
    with running(worker), tenant.client() as client:
        run = client.execution.CreateRun(ex.CreateRunRequest(parent=agent.session, run=ex.Run(input=user_input("go"))))
        deadline = time.monotonic() + 30
        while len(progress) < 8 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert own_server.pid is not None
        os.kill(own_server.pid, signal.SIGSTOP)
        try:
            time.sleep(3.0)
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
        events = list(client.stream_run_events(run.name, max_reconnects=100))
        finished = client.execution.GetRun(ex.GetRunRequest(name=run.name))

    assert finished.status == ex.RUN_STATUS_SUCCEEDED, own_server.log()[-3000:]
    assert finished.attempt == 1
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert "".join(e.message_delta.text for e in events if e.HasField("message_delta")) == "".join(w + " " for w in WORDS)
    assert [s for s, _ in _statuses(events)] == ["RUN_STATUS_QUEUED", "RUN_STATUS_RUNNING", "RUN_STATUS_SUCCEEDED"]
