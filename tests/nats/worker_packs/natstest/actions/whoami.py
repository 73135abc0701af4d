import asyncio
import os


async def run(seconds=0):
    if seconds:
        await asyncio.sleep(seconds)
    return {"pid": os.getpid()}
