import asyncio
import os
from pathlib import Path

# Python actions run in a pool process of the worker: its parent is the worker process.


def _mark(marker):
    with open(marker, "a") as f:
        f.write("started\n")


async def run(seconds, marker_dir, run_context):
    marker = Path(marker_dir, f"{run_context.run_id}.{run_context.attempt}.{os.getppid()}")
    await asyncio.to_thread(_mark, marker)
    await asyncio.sleep(seconds)
    return {"pid": os.getppid(), "attempt": run_context.attempt}
