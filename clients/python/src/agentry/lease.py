"""A worker's hold on one attempt of a run, and the calls it makes under it.

The lease lives in the server's database, not in a server process: a server that
restarts (a rolling deploy, a crash) still honours it afterwards. So a worker that cannot
reach the server must not give up on the attempt, and must never report its own
transport failure as the handler's: the handler keeps running, its events stay
buffered, and every call is retried with jittered backoff and the same ``request_id``
(which makes the server replay a call that did arrive) until the lease the server last
granted would have run out. Only then is the attempt abandoned: no FailTask, the server
re-queues the run when it sees the lapse.

Which failures are the transport's: UNAVAILABLE (server gone, restarting, connection
refused or reset), DEADLINE_EXCEEDED (no answer in time), and INTERNAL, UNKNOWN or
CANCELLED without the ``google.rpc.Status`` details every error of the server carries
(a stream reset by a dying connection). Everything else is the server's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from . import errors
from ._transport import RetryPolicy
from .errors import LeaseExpired

__all__ = ["Lease", "is_transient", "BACKOFF"]

log = logging.getLogger("agentry.worker")

BACKOFF = RetryPolicy(initial_backoff=0.1, max_backoff=1.0)
"""Between attempts of a worker call: 0.05-0.1 s at first, growing to 0.5-1 s."""

_TRANSPORT_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED})

Resp = TypeVar("Resp")


class _Request(Protocol):
    request_id: str


def is_transient(error: errors.AgentryError) -> bool:
    """Whether ``error`` is the transport's (retry the call) rather than the server's answer."""
    if isinstance(error, (errors.Unavailable, errors.DeadlineExceeded)):
        return True
    return error.status is None and error.code in _TRANSPORT_CODES


def _wall_to_monotonic(expire_time: timestamp_pb2.Timestamp) -> float:
    """The local monotonic time of a server timestamp (the server's clock is assumed to
    agree with ours; a skew only moves the moment the worker gives up)."""
    left = expire_time.ToNanoseconds() / 1e9 - time.time()
    return time.monotonic() + left


class Lease:
    """The lease of one attempt: its token, when it runs out, and calls made under it.

    Args:
        run: the run's name, for log lines.
        token: the attempt's task token.
        expire_time: the lease expiry PollTask granted.
        call_timeout: the deadline of each attempt of a call (plus the call's own wait).
    """

    def __init__(
        self,
        run: str,
        token: str,
        expire_time: timestamp_pb2.Timestamp,
        *,
        call_timeout: float,
        backoff: RetryPolicy = BACKOFF,
    ) -> None:
        self.run = run
        self.token = token
        self.call_timeout = call_timeout
        self.backoff = backoff
        self._expires = _wall_to_monotonic(expire_time)

    def grant(self, expire_time: timestamp_pb2.Timestamp) -> None:
        """Records a renewal (HeartbeatTask's answer)."""
        self._expires = max(self._expires, _wall_to_monotonic(expire_time))

    def remaining(self) -> float:
        """Seconds until the lease runs out, as far as this worker knows."""
        return self._expires - time.monotonic()

    async def call(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Message,
        *,
        wait: float = 0.0,
    ) -> Resp:
        """``method(request)``, retried on transport failures until the lease runs out.

        ``wait`` is how long the server may hold the call by design (a heartbeat's
        ``wait``); each attempt gets that plus ``call_timeout``. A request with a
        ``request_id`` field gets one now, kept across attempts.

        Raises:
            LeaseExpired: the lease ran out before the server could be reached.
            errors.AgentryError: the server's answer (``StaleTask`` when the lease is
                no longer this attempt's).
        """
        if "request_id" in request.DESCRIPTOR.fields_by_name:
            keyed: _Request = request  # type: ignore[assignment]
            if not keyed.request_id:
                keyed.request_id = str(uuid.uuid4())
        name = request.DESCRIPTOR.name.removesuffix("Request")
        failures = 0
        while True:
            # Never wait on one attempt past the lease: the answer would come too late.
            timeout = max(min(wait + self.call_timeout, self.remaining()), wait + 0.5)
            try:
                return await method(request, timeout=timeout)
            except errors.AgentryError as e:
                if not is_transient(e):
                    raise
                failures += 1
                delay = self.backoff.delay(failures, e)
                left = self.remaining()
                if left <= delay:
                    log.warning(
                        "run %s: %s failed (%s) and the lease runs out in %.1f s; abandoning the attempt",
                        self.run, name, e, max(left, 0.0),
                    )
                    raise LeaseExpired(
                        f"{name}: the server was out of reach until the lease ran out ({e.message})",
                        code=e.code,
                        reason="LEASE_EXPIRED",
                    ) from e
                if failures == 1 or failures % 10 == 0:
                    log.warning(
                        "run %s: %s failed (%s); retrying (attempt %d, lease left %.1f s)",
                        self.run, name, e, failures + 1, left,
                    )
            await asyncio.sleep(delay)
