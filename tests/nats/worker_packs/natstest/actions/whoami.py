import asyncio
import os

# Python actions run in a pool process of the worker: its parent is the worker process.


async def run(seconds=0):
    if seconds:
        await asyncio.sleep(seconds)
    return {"pid": os.getppid()}
