"""The fault suite: real `agentry serve` processes, a Python worker process, client
streams and context writers, on a Postgres cluster of the suite's own, through the
faults a deployment meets. Each case prints one line per fault, ``faults: <case>: …``,
with its figures, and fails (exit status 1) when a guarantee does not hold.

    python suite.py [CASE...]      (AGENTRY_BIN: the server binary)

Cases: server-restart, replica-killed, postgres-restart, connection-cut-and-stalled,
vanished-streams.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any
from pathlib import Path

from harness import Cluster, Proxy, Server, cpu_share, wait_until
from load import BALANCED, FIRST, HERE, Load, balanced, client, make_agent, make_tenant, start_runs

BINARY = os.environ.get("AGENTRY_BIN") or str(HERE.parents[1] / "target" / "debug" / "agentry")


class Suite:
    def __init__(self) -> None:
        self.cluster = Cluster()
        self.logs = Path(tempfile.mkdtemp(prefix="agentry-faults."))
        self.servers: list[Server] = []
        self.loads: list[Load] = []

    def database(self, name: str) -> str:
        return self.cluster.create_database(name)

    def server(self, database_url: str, **options: object) -> Server:
        server = Server(BINARY, database_url, **options)  # type: ignore[arg-type]
        self.servers.append(server)
        server.start()
        return server

    def load(self, target: str, server: Server, *, runs: int, writers: int, delay: float, **options: Any) -> Load:
        tenant = make_tenant(server)
        agent = make_agent(tenant)
        log = self.logs / f"worker-{len(self.loads)}.log"
        load = Load(target, tenant, agent, log, runs=runs, writers=writers, delay=delay, **options)
        self.loads.append(load)
        wait_until(load.under_way, 60, what="runs streaming and writers writing")
        return load

    def tidy(self, failed: bool) -> None:
        """Stops what the case started; after a failure, prints the tails of its logs."""
        for load in self.loads:
            for w in load.writers:
                w.stopping.set()
            load.worker.stop()
            if failed:
                print(f"--- {load.worker.log}\n{load.worker.log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        for i, server in enumerate(self.servers):
            if failed:
                print(f"--- server {server.target}\n{server.log()[-5000:]}", file=sys.stderr)
                kept = self.logs / f"server-{server.port}-{i}.log"
                kept.write_text(server.log())
                print(f"faults: the whole log of server {server.target} is in {kept}", file=sys.stderr)
            server.close()
        self.servers, self.loads = [], []

    def close(self, failed: bool) -> None:
        """Removes the cluster, and the logs unless a case failed (they say where)."""
        self.cluster.close()
        if not failed:
            shutil.rmtree(self.logs, ignore_errors=True)


def verdict(case: str, problems: list[str]) -> None:
    if problems:
        raise AssertionError(f"{case}: " + "\n  ".join(problems[:20]))


def server_restart(s: Suite) -> None:
    """SIGTERM mid-run, 3 s down, started again on the same port and database, while
    20 runs are served by one worker process and followed by 20 client streams."""
    server = s.server(s.database("restart"))
    load = s.load(server.target, server, runs=20, writers=0, delay=0.4)
    stopping = time.monotonic()
    server.stop(signal.SIGTERM)
    stopped = time.monotonic()
    unfinished = load.unfinished()
    time.sleep(3.0)
    server.start()
    serving = time.monotonic()
    load.finish()
    checked = load.check(max_attempt=1)
    print(
        f"faults: server restart: {checked.runs.succeeded}/20 runs SUCCEEDED ({checked.attempts()}); "
        f"SIGTERM to exit {stopped - stopping:.1f} s, down {serving - stopped:.1f} s; "
        f"{checked.runs.events} events in 20 gapless logs; 20 streams resumed "
        f"({checked.reconnects()}): {checked.lost} events lost, {checked.repeated} repeated",
        flush=True,
    )
    problems = checked.problems
    if unfinished != 20:
        problems.append(f"only {unfinished} of 20 runs were unfinished when the server stopped")
    if checked.lost or checked.repeated:
        problems.append(f"streams lost {checked.lost} and repeated {checked.repeated} events")
    verdict("server restart", problems)


def replica_killed(s: Suite) -> None:
    """Two replicas on one Postgres; one is SIGKILLed while runs, streams and context
    writes go through both."""
    url = s.database("replicas")
    a = s.server(url)
    b = s.server(url, root_key=a.root_key)
    target = balanced(a.target, b.target)
    # Half the streams go round the replicas, half sit on the first (A) until it dies.
    load = s.load(target, a, runs=10, writers=8, delay=0.3, stream_options=[BALANCED, FIRST])
    a.stop(signal.SIGKILL)
    killed = time.monotonic()
    unfinished = load.unfinished()
    load.finish()
    took = time.monotonic() - killed
    checked = load.check(max_attempt=2)
    print(
        f"faults: replica killed: {checked.runs.succeeded}/10 runs SUCCEEDED ({checked.attempts()}), the last "
        f"{took:.1f} s after the SIGKILL; {checked.acknowledged} acknowledged context writes, all kept "
        f"({checked.retries()}); {checked.runs.events} events in gapless logs; streams: "
        f"{checked.lost} events lost, {checked.repeated} repeated ({checked.reconnects()})",
        flush=True,
    )
    problems = checked.problems
    if unfinished != 10:
        problems.append(f"only {unfinished} of 10 runs were unfinished at the kill")
    if sum(checked.breaks.values()) < 5:
        problems.append(f"the 5 streams on the killed replica were not cut: {checked.reconnects()}")
    if checked.lost or checked.repeated:
        problems.append(f"streams lost {checked.lost} and repeated {checked.repeated} events")
    verdict("replica killed", problems)


def outage(s: Suite, case: str, server: Server, load: Load, begin: Callable[[], None], end: Callable[[], None], down: float) -> str:
    """One database outage under ``load``: the figures of its recovery, as text."""
    before = time.monotonic()
    begin()
    time.sleep(down)
    end()
    restored = time.monotonic()
    # Recovered: every writer has had a write acknowledged since.
    wait_until(lambda: all(w.acknowledged and w.acknowledged[-1][2] >= restored for w in load.writers), 60, what=f"writes after the {case}")
    first = min(next(t for _, _, t in w.acknowledged if t >= restored) for w in load.writers) - restored
    every = max(next(t for _, _, t in w.acknowledged if t >= restored) for w in load.writers) - restored
    if not server.running:
        raise AssertionError(f"{case}: the server exited:\n{server.log()[-3000:]}")
    return f"down {restored - before:.1f} s; writes acknowledged again {first:.2f} s after it ended, by every writer {every:.2f} s"


def postgres_restart(s: Suite) -> None:
    """The suite's Postgres stopped (fast: connections ended) and started again under 8
    context writers and 8 running runs; the server is not restarted."""
    server = s.server(s.database("pgrestart"))
    pid = server.pid
    load = s.load(server.target, server, runs=8, writers=8, delay=0.3)
    recovery = outage(s, "postgres restart", server, load, lambda: s.cluster.stop("fast"), s.cluster.start, 2.0)
    load.finish()
    checked = load.check(max_attempt=1)
    print(
        f"faults: postgres restart: {recovery}; server not restarted (pid {pid}); "
        f"{checked.acknowledged} acknowledged context writes, all kept ({checked.retries()}); "
        f"{checked.runs.succeeded}/8 runs SUCCEEDED ({checked.attempts()}); streams: {checked.lost} events lost, "
        f"{checked.repeated} repeated",
        flush=True,
    )
    problems = checked.problems
    if server.pid != pid:
        problems.append("the server was restarted")
    if checked.lost or checked.repeated:
        problems.append(f"streams lost {checked.lost} and repeated {checked.repeated} events")
    verdict("postgres restart", problems)


def connection_cut_and_stalled(s: Suite) -> None:
    """The server reaches Postgres through the suite's proxy, which first cuts every
    connection (and refuses new ones) for 3 s, then lets no byte through for 3 s."""
    s.database("proxied")
    proxy = Proxy(s.cluster.port)
    try:
        server = s.server(proxy.url("proxied"))
        load = s.load(server.target, server, runs=8, writers=8, delay=0.4)
        cut = outage(s, "connection cut", server, load, proxy.cut, proxy.restore, 3.0)
        print(f"faults: connection cut: {cut}", flush=True)
        stalled = outage(s, "connection stalled", server, load, proxy.stall, proxy.restore, 3.0)
        print(f"faults: connection stalled: {stalled}", flush=True)
        load.finish()
        checked = load.check(max_attempt=1)
    finally:
        proxy.close()
    print(
        f"faults: connection cut and stalled: {checked.acknowledged} acknowledged context writes, all kept "
        f"({checked.retries()}); {checked.runs.succeeded}/8 runs SUCCEEDED ({checked.attempts()}); "
        f"streams: {checked.lost} events lost, {checked.repeated} repeated",
        flush=True,
    )
    problems = checked.problems
    if checked.lost or checked.repeated:
        problems.append(f"streams lost {checked.lost} and repeated {checked.repeated} events")
    verdict("connection cut and stalled", problems)


def vanished_streams(s: Suite) -> None:
    """100 streams (run events and context watches) whose client process is killed
    during a 10 s Postgres outage: within 2 s after the outage the server is idle and
    has no stream left."""
    server = s.server(s.database("streams"))
    tenant = make_tenant(server)
    agent = make_agent(tenant)
    with client(server.target, tenant.developer_key) as c:
        names = start_runs(c, agent, 10)  # no worker: they stay QUEUED, their streams tail
        names += [c.create_context(tenant.project, f"watched-{i}", {"n": i}).name for i in range(10)]
    holder = subprocess.Popen(
        [sys.executable, str(HERE / "streams.py"), server.target, "100", *names],
        env={**os.environ, "AGENTRY_API_KEY": tenant.reader_key},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open 100", "the client did not open its streams"
        wait_until(lambda: server.metric("agentry_streams_open") == 100, 10, what="100 open streams on /metrics")
        assert server.pid is not None
        s.cluster.stop("fast")
        down = time.monotonic()
        time.sleep(3.0)  # the streams meet the outage: their reads fail
        holder.kill()
        holder.wait()
        gone = time.monotonic()
        def all_closed() -> float:
            """When the scrape that says 0 began (a scrape waits up to 1 s for the run
            counts while the database is down), else 0."""
            asked = time.monotonic()
            return asked if server.metric("agentry_streams_open") == 0 else 0.0

        left_in_outage = wait_until(all_closed, 10, what="streams to close")
        time.sleep(max(0.0, down + 8.5 - time.monotonic()))
        busy_in_outage = cpu_share(server.pid, 1.0)
        time.sleep(max(0.0, down + 10.0 - time.monotonic()))
        s.cluster.start()
        ended = time.monotonic()
        time.sleep(1.0)
        share = cpu_share(server.pid, 1.0)
        open_after = server.metric("agentry_streams_open")
        after = time.monotonic() - ended
    finally:
        if holder.poll() is None:
            holder.kill()
    print(
        f"faults: vanished streams: 100 streams open, client killed 3 s into a 10 s Postgres outage; "
        f"/metrics said 0 streams open {left_in_outage - gone:.2f} s later; server CPU {busy_in_outage:.1%} of "
        f"a core late in the outage; {after:.1f} s after the outage: {open_after:.0f} streams open, "
        f"server CPU {share:.1%} of a core over the last second",
        flush=True,
    )
    problems = []
    if open_after != 0:
        problems.append(f"{open_after} streams still open after the outage")
    if share > 0.05:
        problems.append(f"the server used {share:.1%} of a core after the outage")
    verdict("vanished streams", problems)


CASES: dict[str, Callable[[Suite], None]] = {
    "server-restart": server_restart,
    "replica-killed": replica_killed,
    "postgres-restart": postgres_restart,
    "connection-cut-and-stalled": connection_cut_and_stalled,
    "vanished-streams": vanished_streams,
}


def main() -> int:
    chosen = sys.argv[1:] or list(CASES)
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        print(f"faults: unknown case {unknown}; cases: {', '.join(CASES)}", file=sys.stderr)
        return 2
    suite = Suite()
    failed: list[str] = []
    try:
        for name in chosen:
            started = time.monotonic()
            try:
                CASES[name](suite)
                suite.tidy(failed=False)
            except Exception:
                traceback.print_exc()
                suite.tidy(failed=True)
                failed.append(name)
            print(f"faults: {name}: {'FAILED' if name in failed else 'ok'} in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        suite.close(failed=bool(failed))
    print(f"faults: {len(chosen) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
