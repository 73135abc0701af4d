import asyncio
import json
import os

from attune_actors.errors import ActionError


async def run(run_context, value=None, seconds=0.08, succeed_on=1):
    # One O_APPEND write per invocation: a kill can only cut the last line short.
    line = (
        json.dumps(
            {"run": run_context.run_id, "item": run_context.item_index, "attempt": run_context.attempt}
        )
        + "\n"
    )
    fd = os.open(os.environ["CRASH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    await asyncio.sleep(seconds)
    if run_context.attempt < succeed_on:
        raise ActionError(f"attempt {run_context.attempt} fails on purpose")
    return value
