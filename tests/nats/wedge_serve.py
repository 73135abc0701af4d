"""`serve` with a short lease TTL and stall bound, for the wedged-engine test.

usage: wedge_serve.py NATS_URL PACKS_DIR DATA_DIR LOOP_STEPS
"""

from __future__ import annotations

import asyncio
import sys

from attune_actors.config import configure_logging, load_settings
from attune_actors.nats.serve import serve

if __name__ == "__main__":
    url, packs, data, steps = sys.argv[1:5]
    settings = load_settings(
        environ={},
        overrides={
            "packs": [packs],
            "data_dir": data,
            "store": "sqlite",
            "transport": "nats",
            "nats": {"url": url},
            "limits": {"template_loop_steps": int(steps)},
        },
    )
    configure_logging(settings)
    sys.exit(asyncio.run(serve(settings, engine_id="wedge", lease_ttl=1.0, stall=1.0)))
