"""Polyglot test, the worker (Python `Worker`, WORKER key). The `researcher` agent says
what it will do, proposes a plan (its `search` tool needs a human at autonomy L1) and
stops; once approved it calls the tool, records a finding in the `notes` context and
answers. With CRASH_MARKER set, the first approved attempt creates that file right after
its tool call was appended and then hangs, so the test can kill the process there.

    python worker.py TARGET AGENT CONTEXT   (AGENTRY_API_KEY: the worker key)
"""

import asyncio
import os
import pathlib
import signal
import sys
from collections.abc import AsyncIterator

from agentry import Message, Step, TaskContext, TextDelta, ToolCall, ToolResult, Worker

target, agent, context = sys.argv[1], sys.argv[2], sys.argv[3]
crash_marker = os.environ.get("CRASH_MARKER")
worker = Worker(target, os.environ["AGENTRY_API_KEY"], lease_duration=2.0, heartbeat_wait=1.0, poll_wait=5.0)


@worker.agent(agent)
async def researcher(task: TaskContext) -> AsyncIterator[Step]:
    question = task.input[-1].content
    if task.resume is None:
        yield TextDelta("Let me look that up. ")
        reply = await task.propose_plan([{"tool": "search", "arguments": {"q": question}}])
        if not reply.approved:
            return  # the lease has ended; the decision comes back through PollTask
    call = f"call-{task.attempt}"
    yield ToolCall(id=call, tool="search", arguments={"q": question})
    if crash_marker and not pathlib.Path(crash_marker).exists():
        await asyncio.sleep(0.5)  # let the batch with the tool call reach the server
        pathlib.Path(crash_marker).write_text(str(os.getpid()))
        await asyncio.sleep(3600)  # killed here
    yield ToolResult(id=call, result={"hits": 3})
    await task.client.write_context(context, merge_patch={"findings": [f"3 hits for {question}"]})
    yield TextDelta("Found 3 results.")
    yield Message("Found 3 results.")


async def main() -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    print(f"worker {os.getpid()} serving {agent}", flush=True)
    await worker.run()


asyncio.run(main())
