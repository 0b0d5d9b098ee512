"""The fault suite's machinery: a Postgres cluster of its own that it can stop and start,
a TCP proxy between the server and Postgres that cuts or stalls the connection, `agentry
serve` processes, and what the suite reads off a process from the outside (CPU time from
/proc, `agentry_streams_open` from /metrics).

Everything here is real: initdb and pg_ctl, sockets, child processes. Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agentry.testing import AgentryServer

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Polls ``predicate`` until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _postgres_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeError("faults: no Postgres server binaries (initdb, pg_ctl); apt-get install postgresql")
    return versions[-1]


class Cluster:
    """A throwaway Postgres cluster on a free port, owned by the suite so that it can be
    stopped and started again. Commits are synchronous (an acknowledged write survives a
    restart of the cluster); fsync is off, which only matters if the machine crashes."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="agentry-faults-pg."))
        self.data = self.dir / "data"
        self.port = free_port()
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8", "--no-locale",
        )  # fmt: skip
        self.start()

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as_owner, *command], capture_output=True, text=True)
        if done.returncode != 0:
            log = (self.dir / "server.log").read_text() if (self.dir / "server.log").exists() else ""
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}\n{log[-3000:]}")

    def start(self) -> None:
        options = (
            f"-F -c full_page_writes=off -c max_connections=300 -c listen_addresses=127.0.0.1 "
            f"-p {self.port} -c unix_socket_directories={self.dir}"
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-w", "-t", "60", "-o", options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stops the cluster (``fast``: what an operator's restart does — every connection
        is ended, open transactions roll back)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def sql(self, statement: str) -> None:
        subprocess.run(
            [str(self.bin / "psql"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", statement],
            check=True, capture_output=True,
        )  # fmt: skip

    def close(self) -> None:
        try:
            self.stop("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Proxy:
    """A TCP proxy between the server and Postgres that the suite controls: ``cut()``
    drops every connection and refuses new ones (calls fail fast); ``stall()`` keeps
    every connection, new ones too, but lets no byte through either way (calls hang);
    ``restore()`` ends either."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._down = False
        self._flowing = threading.Event()
        self._flowing.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                client.close()  # refused: the server sees the connection close
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        with self._lock:
            if self._down:
                client.close()
                server.close()
                return
            self._open += [client, server]
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            self._down = True
            dropping, self._open = self._open, []
        for s in dropping:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def stall(self) -> None:
        self._flowing.clear()

    def restore(self) -> None:
        self._down = False
        self._flowing.set()

    def close(self) -> None:
        self._listener.close()
        self.cut()


class Server(AgentryServer):
    """``agentry serve`` on a database of the suite, with /metrics on a port of its own."""

    def __init__(self, binary: str, database_url: str, *, root_key: str | None = None, port: int | None = None):
        self.metrics_port = free_port()
        super().__init__(
            binary,
            database_url=database_url,
            root_key=root_key,
            port=port,
            args=["--metrics-listen", f"127.0.0.1:{self.metrics_port}", "--shutdown-grace", "2s"],
            env={"AGENTRY_LOG_FORMAT": "text", "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )

    def metric(self, name: str) -> float:
        """The sum of every sample of ``name`` on /metrics (0 when absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3, utime field 14 and stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_share(pid: int, window: float) -> float:
    """The share of one core that ``pid`` used over the next ``window`` seconds."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(window)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)
