"""Fails its first two polls (counted in the file the pack config names), then emits sensing.tick."""

from pathlib import Path


class Flaky:
    def __init__(self, config):
        self.counter = Path(config["counter_file"])

    async def poll(self, emit):
        n = int(self.counter.read_text()) + 1 if self.counter.exists() else 1
        self.counter.write_text(str(n))
        if n <= 2:
            raise RuntimeError(f"flaky sensor fails poll {n}")
        await emit("tick", {"n": n})
