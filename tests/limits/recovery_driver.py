"""Driver for the recovery-quarantine test: one engine process per phase, on the same data dir.

usage: recovery_driver.py DATA_DIR PHASE [RECOVERY_STALL]

- start:   (render budget raised) starts `lim.ask` and waits for its inquiry, then starts `lim.heavy`,
           prints `accepted <ask id> <heavy id>` and stays: the heavy render keeps its loop busy.
- recover: (budget raised, limits.recovery_stall RECOVERY_STALL) starts the engine, which resumes
           both and gets stuck in `lim.heavy`.
- final:   (default limits) starts the engine, answers the inquiry, waits for both executions and
           prints them as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

from attune_actors import Engine
from attune_actors.config import load_settings

PACKS = Path(__file__).parent / "packs"


async def main(data_dir: str, phase: str, stall: float) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    limits: dict[str, float] = {} if phase == "final" else {"template_loop_steps": 10**11}
    if phase == "recover":
        limits["recovery_stall"] = stall
    settings = load_settings(
        environ={}, overrides={"packs": [str(PACKS)], "data_dir": data_dir, "limits": limits}
    )
    async with Engine(settings=settings) as engine:
        if phase == "start":
            ask = await engine.execute("lim.ask")
            events = engine.events(ask.id)
            while not await engine.inquiries(execution_id=ask.id):
                await asyncio.wait_for(anext(events), 30)  # the next change of that execution
            events.close()
            heavy = await engine.execute("lim.heavy")
            print(f"accepted {ask.id} {heavy.id}", flush=True)
            await asyncio.Event().wait()  # killed by the test
        elif phase == "recover":
            await asyncio.Event().wait()  # never reached: stuck resuming lim.heavy
        else:
            done = {}
            for execution in await engine.list():
                if execution.ref == "lim.ask":
                    inquiries = await engine.inquiries(execution_id=execution.id)
                    await engine.respond(inquiries[0]["id"], {"go": True})
                final = await engine.wait(execution.id, timeout=30)
                done[final.ref] = {
                    "id": final.id,
                    "status": final.status.value,
                    "error": final.error,
                    "output": final.output,
                    "tasks": [(t.name, t.status.value, t.error) for t in final.tasks],
                }
            print(json.dumps(done), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 10.0))
