"""The load the fault suite puts on a server, and the checks it makes afterwards.

- runs served by a worker *process* (worker.py), each streaming numbered deltas;
- followers: one client stream per run, resumed by hand from the last sequence seen, on
  the raw stub (no client-side de-duplication), so that a lost or repeated event shows;
- context writers: each writes its own context, version after version, retrying a
  failed write with the same ``request_id`` until it is acknowledged, and recording
  every acknowledgement, so that afterwards a lost or doubled write shows in the history.

A server answer that is neither success nor a transport failure (INTERNAL with details,
FAILED_PRECONDITION, …) is recorded as a fault of the server and fails the case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentry import NO_RETRY, Client, errors
from agentry.client import ChannelOptions
from agentry.lease import is_transient
from agentry.structs import to_python, to_value
from agentry.testing import AgentryServer, Tenant
from agentry.v1 import common_pb2, context_pb2 as ctx, execution_pb2 as ex, registry_pb2 as reg

HERE = Path(__file__).resolve().parent
WORDS = 40


BALANCED = [
    ("grpc.lb_policy_name", "round_robin"),
    # gRPC would send the whole address list as :authority, which HTTP/2 servers refuse.
    ("grpc.default_authority", "agentry"),
]
"""Channel options for a target naming several servers: calls go round the servers
that answer; a dead one is skipped."""


FIRST = [("grpc.lb_policy_name", "pick_first"), ("grpc.default_authority", "agentry")]
"""Channel options for a target naming several servers: every call goes to the first
that answers (the next one only when it is gone)."""


def client(target: str, key: str, timeout: float = 5.0, options: ChannelOptions = BALANCED) -> Client:
    """A client without retries of its own (the suite retries, and counts), balanced
    over every server a ``target`` names."""
    return Client(target, key, timeout=timeout, retry=NO_RETRY, options=options)


def balanced(*targets: str) -> str:
    """One gRPC target naming several servers."""
    return "ipv4:" + ",".join(targets)


def expected_text(words: int = WORDS) -> str:
    return "".join(f"w{i} " for i in range(words))


@dataclass
class Agent:
    name: str
    instance: str


def make_tenant(server: AgentryServer) -> Tenant:
    """A workspace whose quotas the load never meets (every run may be RUNNING at once,
    every context version is kept), with a project and a key per role."""
    workspace_id = f"faults-{uuid.uuid4().hex[:10]}"
    quotas = common_pb2.Quotas(max_concurrent_runs=1000, context_keep_last=100_000)
    with server.client() as root:
        workspace = root.registry.CreateWorkspace(
            reg.CreateWorkspaceRequest(workspace_id=workspace_id, workspace=reg.Workspace(quotas=quotas))
        )
        project = root.registry.CreateProject(reg.CreateProjectRequest(parent=workspace.name, project_id="default"))

        def key(role: common_pb2.Role.ValueType) -> str:
            api_key = reg.ApiKey(display_name=common_pb2.Role.Name(role).lower(), role=role)
            return root.registry.CreateApiKey(reg.CreateApiKeyRequest(parent=workspace.name, api_key=api_key)).secret

        return Tenant(
            target=server.target,
            workspace=workspace.name,
            project=project.name,
            admin_key=key(common_pb2.ROLE_ADMIN),
            developer_key=key(common_pb2.ROLE_DEVELOPER),
            reader_key=key(common_pb2.ROLE_READER),
            worker_key=key(common_pb2.ROLE_WORKER),
        )


def make_agent(tenant: Tenant, agent_id: str = "counter") -> Agent:
    with tenant.client() as c:
        agent = c.registry.CreateAgent(reg.CreateAgentRequest(parent=tenant.workspace, agent_id=agent_id, agent=reg.Agent()))
        instance = c.registry.CreateInstance(
            reg.CreateInstanceRequest(parent=tenant.project, instance_id=agent_id, instance=reg.Instance(agent=agent.name))
        )
    return Agent(agent.name, instance.name)


class WorkerProcess:
    """worker.py in a process of its own; its output goes to ``log``."""

    def __init__(self, target: str, tenant: Tenant, agent: Agent, log: Path, *, delay: float, concurrency: int = 20):
        env = {
            **os.environ,
            "AGENTRY_API_KEY": tenant.worker_key,
            "WORDS": str(WORDS),
            "DELAY": str(delay),
            "CONCURRENCY": str(concurrency),
        }
        self.log = log
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(HERE / "worker.py"), target, agent.name], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_runs(c: Client, agent: Agent, count: int) -> list[str]:
    """``count`` runs, each in a session of its own (a session runs one at a time)."""
    return [c.start_run(agent.instance, f"count {i}", request_id=str(uuid.uuid4())).name for i in range(count)]


@dataclass
class Follower:
    """Follows one run's events until its terminal event, reconnecting (from the last
    sequence seen) whenever the stream breaks or ends early."""

    target: str
    key: str
    run: str
    options: ChannelOptions = field(default_factory=lambda: BALANCED)
    received: list[ex.RunEvent] = field(default_factory=list)
    reconnects: int = 0
    breaks: dict[str, int] = field(default_factory=dict)  # why streams ended early: count
    calls: list[str] = field(default_factory=list)  # when each call began, and where
    faults: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self, deadline: float) -> Follower:
        threading.Thread(target=self._follow, args=(deadline,), daemon=True).start()
        return self

    def _follow(self, deadline: float) -> None:
        pause = 0.05
        with client(self.target, self.key, options=self.options) as c:
            while time.monotonic() < deadline:
                last = self.received[-1].sequence if self.received else 0
                why = "ended early"
                self.calls.append(f"{time.monotonic():.1f}: after {last}")
                try:
                    for response in c.execution.StreamRunEvents(ex.StreamRunEventsRequest(name=self.run, after_sequence=last)):
                        self.received.append(response.event)
                        if is_terminal(response.event):
                            self.done.set()
                            return
                except errors.AgentryError as e:
                    if not (is_transient(e) or isinstance(e, errors.Unavailable)):
                        self.faults.append(f"{self.run}: stream answered {e}")
                        self.done.set()
                        return
                    why = e.code.name
                self.breaks[why] = self.breaks.get(why, 0) + 1
                self.reconnects += 1
                progressed = bool(self.received) and self.received[-1].sequence > last
                pause = 0.1 if progressed else min(1.0, pause * 2)
                time.sleep(pause)
        self.faults.append(f"{self.run}: stream did not reach the end of the run in time")
        self.done.set()


def is_terminal(event: ex.RunEvent) -> bool:
    return event.WhichOneof("kind") == "status_changed" and event.status_changed.status in (
        ex.RUN_STATUS_SUCCEEDED,
        ex.RUN_STATUS_FAILED,
        ex.RUN_STATUS_CANCELLED,
        ex.RUN_STATUS_TIMED_OUT,
    )


def stored_log(c: Client, run: str) -> list[ex.RunEvent]:
    """The run's whole log (replayed from the start; the run has ended)."""
    events = []
    for response in c.execution.StreamRunEvents(ex.StreamRunEventsRequest(name=run)):
        events.append(response.event)
        if is_terminal(response.event):
            break
    return events


def statuses(events: list[ex.RunEvent]) -> list[str]:
    return [
        ex.RunStatus.Name(e.status_changed.status).removeprefix("RUN_STATUS_")
        + ("/" + ex.StopReason.Name(e.status_changed.stop_reason).removeprefix("STOP_REASON_") if e.status_changed.stop_reason else "")
        for e in events
        if e.WhichOneof("kind") == "status_changed"
    ]


@dataclass
class RunReport:
    succeeded: int = 0
    attempts: list[int] = field(default_factory=list)
    events: int = 0
    problems: list[str] = field(default_factory=list)


def check_runs(c: Client, runs: list[str], *, max_attempt: int) -> RunReport:
    """Every run SUCCEEDED on attempt ≤ ``max_attempt`` with the whole text as output; its
    log is gapless and its last attempt streamed every delta exactly once, in order."""
    report = RunReport()
    for name in runs:
        run = c.execution.GetRun(ex.GetRunRequest(name=name))
        log = stored_log(c, name)
        report.events += len(log)
        report.attempts.append(run.attempt)
        if run.status != ex.RUN_STATUS_SUCCEEDED or run.attempt > max_attempt:
            report.problems.append(f"{name}: {ex.RunStatus.Name(run.status)} on attempt {run.attempt}: {statuses(log)}")
            continue
        if [e.sequence for e in log] != list(range(1, len(log) + 1)):
            report.problems.append(f"{name}: log not gapless: {[e.sequence for e in log]}")
        last_start = max(i for i, e in enumerate(log) if e.WhichOneof("kind") == "status_changed" and e.status_changed.status == ex.RUN_STATUS_RUNNING)
        deltas = "".join(e.message_delta.text for e in log[last_start:] if e.WhichOneof("kind") == "message_delta")
        if deltas != expected_text() or [m.content for m in run.output] != [expected_text()]:
            report.problems.append(f"{name}: deltas of the last attempt {deltas!r}, output {[m.content for m in run.output]}")
        if any(e.WhichOneof("kind") == "error" for e in log):
            report.problems.append(f"{name}: an error event: {statuses(log)}")
        report.succeeded += 1
    return report


def check_followers(c: Client, followers: list[Follower]) -> tuple[int, int, list[str]]:
    """(events lost, events repeated, faults) over every follower, against the stored logs."""
    lost = repeated = 0
    faults: list[str] = []
    for f in followers:
        faults += f.faults
        stored = stored_log(c, f.run)
        seen = [e.sequence for e in f.received]
        repeats = len(seen) - len(set(seen))
        missing = len({e.sequence for e in stored} - set(seen))
        repeated, lost = repeated + repeats, lost + missing
        if not repeats and not missing and f.received != stored:
            faults.append(f"{f.run}: the stream delivered events that differ from the stored log")
    return lost, repeated, faults


@dataclass
class Writer:
    """Writes context ``c<index>`` of ``project`` as ``{"n": k}`` for k = 1, 2, … until
    stopped, each write retried with its request id until acknowledged."""

    target: str
    key: str
    project: str
    index: int
    acknowledged: list[tuple[int, int, float]] = field(default_factory=list)  # (k, version, when)
    retried: dict[str, int] = field(default_factory=dict)  # failed attempts, by code
    faults: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"{self.project}/contexts/c{self.index}"

    def start(self) -> Writer:
        with client(self.target, self.key) as c:
            c.create_context(self.project, f"c{self.index}", {"n": 0})
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()
        return self

    def _write(self) -> None:
        with client(self.target, self.key, timeout=3.0) as c:
            k = 0
            while not self.stopping.is_set():
                k += 1
                request = ctx.WriteContextRequest(name=self.name, data=to_value({"n": k}), request_id=f"w{self.index}-{k}-{uuid.uuid4()}")
                while True:
                    try:
                        written = c.contexts.WriteContext(request)
                    except errors.AgentryError as e:
                        if is_transient(e):
                            self.retried[e.code.name] = self.retried.get(e.code.name, 0) + 1
                            time.sleep(0.1)
                            continue
                        self.faults.append(f"{self.name}: write {k} answered {e}")
                        return
                    self.acknowledged.append((k, written.version.version, time.monotonic()))
                    break
                time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
            if self.thread.is_alive():
                self.faults.append(f"{self.name}: a write was still not acknowledged 60 s after the end")

    def check(self, c: Client) -> list[str]:
        """Every acknowledged write is in the history, at the version it was given, and
        nothing else is (no write applied twice)."""
        problems = list(self.faults)
        versions: dict[int, int] = {}
        token = ""
        while True:
            page = c.contexts.ListContextVersions(
                ctx.ListContextVersionsRequest(name=self.name, page_size=500, page_token=token, view=ctx.CONTEXT_VERSION_VIEW_FULL)
            )
            for v in page.versions:
                versions[v.version] = int(to_python(v.data)["n"])
            token = page.next_page_token
            if not token:
                break
        expected = {1: 0, **{version: k for k, version, _ in self.acknowledged}}
        if versions != expected:
            missing = {v: n for v, n in expected.items() if versions.get(v) != n}
            extra = {v: n for v, n in versions.items() if v not in expected}
            problems.append(f"{self.name}: acknowledged but missing or different {missing}; not acknowledged {extra}")
        return problems


def recovery_after(writers: list[Writer], restored: float) -> tuple[float, float]:
    """Seconds from ``restored`` to the first acknowledged write of any writer, and to
    the moment every writer had had one."""
    firsts = []
    for w in writers:
        after = [when for _, _, when in w.acknowledged if when >= restored]
        firsts.append(min(after) - restored if after else float("inf"))
    return min(firsts), max(firsts)


class Load:
    """Runs served by a worker process and followed by client streams, and context
    writers, all started at once against ``target``."""

    def __init__(
        self,
        target: str,
        tenant: Tenant,
        agent: Agent,
        log: Path,
        *,
        runs: int,
        writers: int,
        delay: float,
        stream_options: Sequence[ChannelOptions] = (BALANCED,),
    ):
        self.target, self.tenant = target, tenant
        self.worker = WorkerProcess(target, tenant, agent, log, delay=delay, concurrency=max(runs, 1))
        with client(target, tenant.developer_key) as c:
            self.runs = start_runs(c, agent, runs)
        deadline = time.monotonic() + 180
        self.followers = [
            Follower(target, tenant.reader_key, run, stream_options[i % len(stream_options)]).start(deadline)
            for i, run in enumerate(self.runs)
        ]
        self.writers = [Writer(target, tenant.developer_key, tenant.project, i).start() for i in range(writers)]

    def under_way(self) -> bool:
        """Every run has streamed a few deltas and every writer has written a few versions."""
        return all(len(f.received) >= 4 for f in self.followers) and all(len(w.acknowledged) >= 3 for w in self.writers)

    def unfinished(self) -> int:
        return sum(not f.done.is_set() for f in self.followers)

    def finish(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        for f in self.followers:
            if not f.done.wait(max(0.0, deadline - time.monotonic())):
                f.faults.append(f"{f.run}: stream still open at {time.monotonic():.1f}: calls {f.calls}, "
                                f"{len(f.received)} events received")
        for w in self.writers:
            w.stop()
        self.worker.stop()

    def check(self, max_attempt: int) -> Checked:
        with client(self.target, self.tenant.reader_key, timeout=30) as c:
            runs = check_runs(c, self.runs, max_attempt=max_attempt)
            lost, repeated, faults = check_followers(c, self.followers)
        with client(self.target, self.tenant.developer_key, timeout=30) as c:
            for w in self.writers:
                faults += w.check(c)
        return Checked(
            runs=runs,
            lost=lost,
            repeated=repeated,
            breaks=merged([f.breaks for f in self.followers]),
            acknowledged=sum(len(w.acknowledged) for w in self.writers),
            retried=merged([w.retried for w in self.writers]),
            problems=runs.problems + faults,
        )


@dataclass
class Checked:
    runs: RunReport
    lost: int
    repeated: int
    breaks: dict[str, int]
    acknowledged: int
    retried: dict[str, int]
    problems: list[str]

    def reconnects(self) -> str:
        """How often streams were resumed, and why."""
        total = sum(self.breaks.values())
        return f"{total} reconnects" + (f": {tally(self.breaks)}" if total else "")

    def retries(self) -> str:
        """The writers' failed attempts, by code."""
        return f"attempts retried: {tally(self.retried)}"

    def attempts(self) -> str:
        counts: dict[int, int] = {}
        for a in self.runs.attempts:
            counts[a] = counts.get(a, 0) + 1
        return ", ".join(f"{n} on attempt {a}" for a, n in sorted(counts.items()))


def merged(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, n in count.items():
            total[key] = total.get(key, 0) + n
    return total


def tally(counts: dict[str, int]) -> str:
    """``3 UNAVAILABLE, 1 DEADLINE_EXCEEDED``, or ``none``."""
    return ", ".join(f"{n} {key}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"
