"""Simulated container image build."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from attune_actors.errors import ActionError


def run(
    app: str,
    tag: str = "latest",
    registry: str = "registry.example.test",
    fail: bool = False,
    latency: float = 0,
) -> dict[str, Any]:
    time.sleep(latency)
    image = f"{registry}/{app}:{tag}"
    log = ["Step 1/3 : FROM python:3.11-slim", f"Step 2/3 : COPY . /srv/{app}"]
    if fail:
        log.append("Step 3/3 : RUN make build -> exit code 2")
        raise ActionError(f"docker build of {image} failed at step 3/3", result={"log": log})
    log.append("Step 3/3 : RUN make build")
    digest = "sha256:" + hashlib.sha256(image.encode()).hexdigest()
    return {"image": image, "image_uri": image, "digest": digest, "log": log}
