"""`serve` with a short lease TTL and stall bound, for the wedged-engine tests.

usage: wedge_serve.py NATS_URL PACKS_DIR DATA_DIR LOOP_STEPS [cluster ENGINE_ID]

With `cluster`, an engine of a cluster (nats store, 2 partitions) named ENGINE_ID; else a
standalone engine on SQLite.
"""

from __future__ import annotations

import asyncio
import sys

from attune_actors.config import configure_logging, load_settings
from attune_actors.nats.serve import serve

if __name__ == "__main__":
    url, packs, data, steps = sys.argv[1:5]
    cluster = sys.argv[5:6] == ["cluster"]
    settings = load_settings(
        environ={},
        overrides={
            "packs": [packs],
            "data_dir": data,
            "store": "nats" if cluster else "sqlite",
            "transport": "nats",
            "nats": {"url": url},
            "cluster": {"partitions": 2, "lease_ttl": 1.0},
            "limits": {"template_loop_steps": int(steps)},
        },
    )
    configure_logging(settings)
    engine_id = sys.argv[6] if cluster else "wedge"
    sys.exit(asyncio.run(serve(settings, engine_id=engine_id, lease_ttl=1.0, stall=1.0)))
