"""A client process holding many streams open: half StreamRunEvents of the runs named,
half WatchContext of the contexts named, round-robin. It prints ``open N`` once every
stream has delivered its first item (each is past its replay, tailing), then waits to
be killed; its connections die with it.

    python streams.py TARGET COUNT NAME...   (AGENTRY_API_KEY: a key that may read them)
"""

import asyncio
import os
import sys
from collections.abc import AsyncIterable

from agentry import AsyncClient
from agentry.v1 import context_pb2 as ctx, execution_pb2 as ex


async def open_stream(client: AsyncClient, name: str, opened: asyncio.Queue[str]) -> None:
    call: AsyncIterable[object]
    if "/runs/" in name:
        call = client.execution.StreamRunEvents(ex.StreamRunEventsRequest(name=name))
    else:
        call = client.contexts.WatchContext(ctx.WatchContextRequest(name=name))
    first = True
    async for _ in call:
        if first:
            first = False
            await opened.put(name)


async def main() -> None:
    target, count, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    async with AsyncClient(target, os.environ["AGENTRY_API_KEY"]) as client:
        opened: asyncio.Queue[str] = asyncio.Queue()
        streams = [asyncio.create_task(open_stream(client, names[i % len(names)], opened)) for i in range(count)]
        for _ in range(count):
            await asyncio.wait_for(opened.get(), 60)
        print(f"open {count}", flush=True)
        await asyncio.gather(*streams)


asyncio.run(main())
