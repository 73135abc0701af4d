"""Simulated Kubernetes deployment."""

from __future__ import annotations

import time
from typing import Any

from attune_actors.errors import ActionError


def run(
    image: str,
    environment: str = "dev",
    cluster: str | None = None,
    fail: bool = False,
    latency: float = 0,
) -> dict[str, Any]:
    time.sleep(latency)
    name = image.rsplit("/", 1)[-1].split(":", 1)[0]
    cluster = cluster or f"https://k8s.{environment}.example.test"
    if fail:
        raise ActionError(
            f"rollout of {name} in {environment} did not become ready",
            result={"deployment": name, "cluster": cluster, "ready_replicas": 0, "replicas": 3},
        )
    return {
        "deployment": name,
        "namespace": environment,
        "cluster": cluster,
        "image": image,
        "replicas": 3,
        "health_url": f"https://{name}.{environment}.example.test/health",
    }
