"""The fault suite's worker process: a Python ``agentry.Worker`` serving one agent. Each
run streams ``WORDS`` deltas (``w0 `` … ), one every ``DELAY`` seconds, and answers
with the whole text as its message, so the suite can tell from a run's log whether any
event was lost or repeated.

    python worker.py TARGET AGENT   (environment: AGENTRY_API_KEY, WORDS, DELAY,
                                     CONCURRENCY; TARGET may name several servers)
"""

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator

from agentry import Message, Step, TaskContext, TextDelta, Worker

target, agent = sys.argv[1], sys.argv[2]
words = int(os.environ.get("WORDS", "40"))
delay = float(os.environ.get("DELAY", "0.1"))
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

worker = Worker(
    target,
    os.environ["AGENTRY_API_KEY"],
    concurrency=int(os.environ.get("CONCURRENCY", "20")),
    poll_wait=5.0,
    lease_duration=10.0,
    heartbeat_wait=5.0,
    # A target naming several servers (replicas) is balanced; a dead one is skipped.
    # gRPC would send the whole address list as :authority, which HTTP/2 servers refuse.
    options=[("grpc.lb_policy_name", "round_robin"), ("grpc.default_authority", "agentry")],
)


@worker.agent(agent)
async def counter(task: TaskContext) -> AsyncIterator[Step]:
    for i in range(words):
        yield TextDelta(f"w{i} ")
        await asyncio.sleep(delay)
    yield Message("".join(f"w{i} " for i in range(words)))


async def main() -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    print(f"worker {os.getpid()} serving {agent} on {target}", flush=True)
    await worker.run()


asyncio.run(main())
