import asyncio
import os
from pathlib import Path


def _mark(marker):
    with open(marker, "a") as f:
        f.write("started\n")


async def run(seconds, marker_dir, run_context):
    marker = Path(marker_dir, f"{run_context.run_id}.{run_context.attempt}.{os.getpid()}")
    await asyncio.to_thread(_mark, marker)
    await asyncio.sleep(seconds)
    return {"pid": os.getpid(), "attempt": run_context.attempt}
