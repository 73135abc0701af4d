import asyncio
import os
from pathlib import Path


async def run(seconds, marker_dir, run_context):
    Path(marker_dir, f"{run_context.run_id}.{run_context.attempt}.{os.getpid()}").write_text("started")
    await asyncio.sleep(seconds)
    return {"pid": os.getpid(), "attempt": run_context.attempt}
