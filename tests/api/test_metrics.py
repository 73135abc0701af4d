"""`GET /metrics` on the HTTP API: the engine's Prometheus series after runs started over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from api_support import TOKENS, ApiFactory
from prometheus_client.parser import text_string_to_metric_families


async def test_metrics_count_runs_made_over_http(
    api_factory: ApiFactory, workflow: Callable[..., str]
) -> None:
    workflow(
        "square_chain",
        """
        tasks:
          - {name: one, action: testpack.square, input: {n: 2}, on_success: two}
          - {name: two, action: testpack.square, input: {n: 3}}
        """,
    )
    api = await api_factory()
    operator = api.client("operator")
    for _ in range(2):
        created = await operator.post("/workflows/testpack.square_chain/execute", json={"parameters": {}})
        assert created.status_code == 201, created.text
        final = await api.engine.wait(created.json()["id"], timeout=20)
        assert final.status == "succeeded"
    headers = {"Authorization": f"Bearer {TOKENS['viewer'][0]}"}
    async with httpx.AsyncClient(base_url=api.url) as client:
        scraped = await client.get("/metrics", headers=headers)
        refused = await client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert refused.status_code == 401  # with tokens configured, like every other GET
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped.text) for s in family.samples
    }
    ended = (("ref", "testpack.square_chain"), ("status", "succeeded"))
    assert samples[("attune_executions_total", ended)] == 2
    ran = (("action", "testpack.square"), ("status", "succeeded"))
    assert samples[("attune_task_runs_total", ran)] == 4
    assert samples[("attune_task_run_seconds_count", (("action", "testpack.square"),))] == 4
    assert samples[("attune_executions_running", ())] == 0
