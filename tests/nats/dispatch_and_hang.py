"""An engine that starts one execution, says so once its attempt is queued on NATS, then hangs (the
test SIGKILLs it): an engine that dies between dispatching an attempt and any worker taking it.

usage: dispatch_and_hang.py NATS_URL PACKS_DIR DATA_DIR ENGINE_ID MARKER_DIR
prints the execution id once the runs stream holds the attempt
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from attune_actors import Engine
from attune_actors.config import NatsSettings
from attune_actors.nats.connection import connect
from attune_actors.nats.subjects import Subjects
from attune_actors.nats.transport import NatsTransport


async def main(url: str, packs: str, data: str, engine_id: str, markers: str) -> None:
    nc = await connect(NatsSettings(url=url), name="dispatch and hang")
    engine: Engine | None = None

    def action(ref: str) -> Any:
        assert engine is not None
        return engine.catalog.action(ref)

    subjects = Subjects()
    transport = NatsTransport(nc, subjects, engine_id=engine_id, actions=action)
    engine = Engine(packs=[Path(packs)], data_dir=Path(data), transport=transport)
    await engine.start()
    execution = await engine.execute("natstest.slow_once", {"seconds": 0.2, "marker_dir": markers})
    js = nc.jetstream()
    for _ in range(3000):  # the test kills this process after its own deadline anyway
        if (await js.stream_info(subjects.runs_stream)).state.messages:
            print(execution.id, flush=True)
            break
        await asyncio.sleep(0.01)  # deliberate: polling the stream (it sends no event)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
