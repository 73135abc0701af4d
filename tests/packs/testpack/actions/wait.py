import asyncio


async def run(seconds: float = 0.05, value=None):
    await asyncio.sleep(seconds)
    return value
