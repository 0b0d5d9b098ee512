"""Follow a run's event log across dropped connections.

StreamRunEvents replays the stored events after ``after_sequence`` and then tails new
ones, each exactly once, ending after the terminal status event. The log is durable, so
a broken stream is resumed by asking again from the last sequence seen: the iterators
here do that on UNAVAILABLE, and when a stream ends before the terminal event (a
server shutting down ends streams cleanly). ``max_reconnects`` bounds consecutive
attempts that bring no event; any event resets the count. ``timeout`` bounds the whole
iteration: past it, :class:`TimeoutError` is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from . import errors
from ._transport import RetryPolicy
from .v1 import execution_pb2 as ex

TERMINAL_STATUSES = frozenset(
    {
        ex.RUN_STATUS_SUCCEEDED,
        ex.RUN_STATUS_FAILED,
        ex.RUN_STATUS_CANCELLED,
        ex.RUN_STATUS_TIMED_OUT,
    }
)

RECONNECT_BACKOFF = RetryPolicy(initial_backoff=0.2, max_backoff=2.0)


def is_terminal(event: ex.RunEvent) -> bool:
    """Whether ``event`` is the run's terminal status change (always its last event)."""
    return event.WhichOneof("kind") == "status_changed" and event.status_changed.status in TERMINAL_STATUSES


class _Resume:
    """The bookkeeping both iterators share: last sequence seen and the retry budget."""

    def __init__(
        self, run: str, after_sequence: int, max_reconnects: int, backoff: RetryPolicy, timeout: float | None
    ) -> None:
        self.run = run
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.last_sequence = after_sequence
        self.max_reconnects = max_reconnects
        self.backoff = backoff
        self.failures = 0

    def request(self) -> ex.StreamRunEventsRequest:
        return ex.StreamRunEventsRequest(name=self.run, after_sequence=self.last_sequence)

    def timeout(self) -> float | None:
        """The deadline of the next call; raises once the whole iteration's time is up."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out()
        return left

    def timed_out(self) -> TimeoutError:
        return TimeoutError(f"{self.run} did not finish in time (last event seen: {self.last_sequence})")

    def accept(self, event: ex.RunEvent) -> bool:
        """Records an event; False for one already seen (never expected, but harmless)."""
        if event.sequence <= self.last_sequence:
            return False
        self.last_sequence = event.sequence
        self.failures = 0
        return True

    def broken(self, error: errors.AgentryError | None) -> float:
        """The delay before reconnecting; raises when the budget is spent."""
        self.failures += 1
        if self.failures > self.max_reconnects:
            raise error or errors.Unavailable(
                f"event stream of {self.run} kept ending before the run finished"
            )
        return self.backoff.delay(self.failures, error or errors.Unavailable())


def stream_run_events(
    stub: Any,
    run: str,
    after_sequence: int = 0,
    *,
    max_reconnects: int = 10,
    backoff: RetryPolicy = RECONNECT_BACKOFF,
    timeout: float | None = None,
) -> Iterator[ex.RunEvent]:
    """Yields the events of ``run`` after ``after_sequence`` until its terminal event."""
    state = _Resume(run, after_sequence, max_reconnects, backoff, timeout)
    while True:
        error: errors.AgentryError | None = None
        call = stub.StreamRunEvents(state.request(), timeout=state.timeout())
        try:
            for response in call:
                if state.accept(response.event):
                    yield response.event
                    if is_terminal(response.event):
                        return
        except errors.Unavailable as e:
            error = e
        except errors.DeadlineExceeded as e:
            if state.deadline is None:
                raise
            raise state.timed_out() from e
        finally:
            call.cancel()
        time.sleep(min(state.broken(error), state.timeout() or float("inf")))


async def stream_run_events_async(
    stub: Any,
    run: str,
    after_sequence: int = 0,
    *,
    max_reconnects: int = 10,
    backoff: RetryPolicy = RECONNECT_BACKOFF,
    timeout: float | None = None,
) -> AsyncIterator[ex.RunEvent]:
    """The asyncio form of :func:`stream_run_events`."""
    state = _Resume(run, after_sequence, max_reconnects, backoff, timeout)
    while True:
        error: errors.AgentryError | None = None
        call = stub.StreamRunEvents(state.request(), timeout=state.timeout())
        try:
            async for response in call:
                if state.accept(response.event):
                    yield response.event
                    if is_terminal(response.event):
                        return
        except errors.Unavailable as e:
            error = e
        except errors.DeadlineExceeded as e:
            if state.deadline is None:
                raise
            raise state.timed_out() from e
        finally:
            call.cancel()
        await asyncio.sleep(min(state.broken(error), state.timeout() or float("inf")))
