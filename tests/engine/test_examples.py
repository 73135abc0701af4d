"""The seed's examples (packs/examples) run to the outcomes packs/examples/expected.yaml records.

Each case runs as a rehearsal (attune_actors.testing): the real engine and actions on a virtual
clock, so deploy-health-fails' 50 s of retry delays take no real time. The pack's own rehearsal
files run through `attune-actors test` in tests/toolkit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from attune_actors.testing import Expect
from attune_actors.testing.rehearsal import Rehearsal, rehearse

REPO = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((REPO / "packs" / "examples" / "expected.yaml").read_text())


def as_rehearsal(case: dict[str, Any]) -> Rehearsal:
    """An expected.yaml case as a rehearsal: waves become the route, per-task fields `tasks`."""
    tasks: dict[str, dict[str, Any]] = {}
    for field, key in (("task_status", "status"), ("attempts", "attempts"), ("items", "items"),
                       ("task_results", "result")):
        for name, value in (case.get(field) or {}).items():
            tasks.setdefault(name, {})[key] = value
    expect = Expect() if "raises" in case else Expect(
        status=case["status"],
        route=[wave[0] if len(wave) == 1 else wave for wave in case["waves"]],
        output=case["output"],
        tasks=tasks,
        min_seconds=case.get("min_seconds"),
    )
    return Rehearsal(
        name=case["name"],
        workflow=case["workflow"],
        parameters=case["parameters"],
        answers=case.get("responses") or {},
        expect=expect,
        rejected=case.get("error_contains") if "raises" in case else None,
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_example(case: dict[str, Any]) -> None:
    differences = await rehearse(as_rehearsal(case), [REPO / "packs"])
    assert not differences, "\n".join(differences)
