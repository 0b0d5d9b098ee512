"""A worker process that leases one run, says so on stdout and hangs until killed.

The test kills it with SIGKILL: no FailTask, no more heartbeats, so the lease lapses
(within heartbeat_wait + lease_duration) and the server re-queues the run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from agentry import Step, TaskContext, TextDelta, Worker


async def hang(task: TaskContext) -> AsyncIterator[Step]:
    yield TextDelta("working")
    print("leased", flush=True)
    await asyncio.Event().wait()


worker = Worker(os.environ["AGENTRY_TARGET"], os.environ["AGENTRY_API_KEY"], lease_duration=1, heartbeat_wait=1)
worker.register(os.environ["AGENTRY_AGENT"], hang)
asyncio.run(worker.run())
