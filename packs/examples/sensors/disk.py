"""A poll sensor: the engine calls `poll(emit)` every `poll_interval` seconds in a supervised actor;
an exception is logged and the sensor is restarted with backoff."""

import shutil


class DiskSensor:
    def __init__(self, config):
        self.mounts = ["/"]

    async def poll(self, emit):
        for mount in self.mounts:
            usage = shutil.disk_usage(mount)
            await emit(
                "disk_usage",
                {"mount": mount, "percent": round(100 * usage.used / usage.total, 1), "free_bytes": usage.free},
            )
