"""A worker serving an echo agent: it streams the user's last message back word by word.

    AGENTRY_API_KEY=<worker key> python examples/echo_worker.py workspaces/acme/agents/echo

AGENTRY_TARGET defaults to 127.0.0.1:50051. SIGINT/SIGTERM stop polling, let the
running handlers finish and exit.
"""

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator

from agentry import Message, Step, TaskContext, TextDelta, Usage, Worker

target = os.environ.get("AGENTRY_TARGET", "127.0.0.1:50051")
worker = Worker(target, os.environ["AGENTRY_API_KEY"])


@worker.agent(sys.argv[1])
async def echo(task: TaskContext) -> AsyncIterator[Step]:
    text = task.input[-1].content
    for word in text.split():
        yield TextDelta(word + " ")  # message_delta events, batched into AppendRunEvents
        await asyncio.sleep(0.05)  # a CancelRun arrives here as asyncio.CancelledError
    yield Usage(input_tokens=len(text.split()), output_tokens=len(text.split()))
    yield Message(text)  # the final answer: CompleteTask output, Run.output


async def main() -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    print(f"serving {sys.argv[1]} on {target}", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
