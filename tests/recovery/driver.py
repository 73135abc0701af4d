"""Crash-test driver: runs a fixed mix of workflows on an embedded engine until all are done.

Started again and again on the same data dir after SIGKILLs; each start picks up where the last
stopped: executions already in the store are resumed by the engine, missing ones are started. The
pending inquiry is answered and the paused execution resumed once everything else has ended.

usage: driver.py DATA_DIR RESULT_FILE   (the env var CRASH_LOG names the invocation log)
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from attune_actors import Engine

PACKS = Path(__file__).parent / "packs"
MIX = ["sequential", "items", "parallel", "retry", "nested", "approval", "paused"]


async def main(data_dir: str, result_file: str) -> None:
    async with Engine(packs=[PACKS], data_dir=data_dir) as engine:
        known = {e.parameters.get("tag"): e for e in await engine.list()}
        for name in MIX:
            if name not in known:
                known[name] = await engine.execute(f"crash.{name}", {"tag": name})
                if name == "paused":
                    await engine.pause(known[name].id)
        others = [e.id for n, e in known.items() if n not in ("approval", "paused")]
        for execution_id in others:
            await engine.wait(execution_id, timeout=60)
        approval = known["approval"].id
        events = engine.events(approval)
        while not (await engine.get(approval)).terminal:
            for inquiry in await engine.inquiries(execution_id=approval):
                await engine.respond(inquiry["id"], {"go": True})
            await asyncio.wait_for(anext(events), 30)  # the next change of that execution
        events.close()
        await engine.resume(known["paused"].id)
        results = {}
        for name, execution in known.items():
            final = await engine.wait(execution.id, timeout=60)
            results[name] = {
                "status": final.status.value,
                "output": final.output,
                "tasks": sorted(t.name for t in final.tasks),
            }
    Path(result_file).write_text(json.dumps(results, indent=2, sort_keys=True))  # noqa: ASYNC240


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
