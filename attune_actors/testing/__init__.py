"""Test your workflows: the real engine, scripted action outcomes, virtual time.

    from attune_actors.testing import WorkflowTest, error, result

    async with WorkflowTest(packs=["packs"]) as t:
        t.mock("examples.health_check", error("503"), error("503"), result({"status": "ok"}))
        run = await t.run("examples.deploy", {"app_name": "shop"})
        run.expect(status="succeeded", tasks={"health_check": {"attempts": 3}})

`WorkflowTest` starts an `Engine` whose transport plays scripted outcomes for mocked actions (and
runs the others for real) and whose clock is a `VirtualClock`: retry delays, `delay:`, timeouts
and inquiry expiry pass as soon as the engine has nothing else to do. `Run` is the finished
execution with its route, attempts, published vars, events and calls; `Run.expect` fails with one
line per difference, naming the task. Rehearsal files (`rehearse`, `attune-actors test`) say the
same in YAML; the pytest plugin (`attune_workflow_test` fixture) comes with the package.
"""

from attune_actors.testing._expect import Expect
from attune_actors.testing._harness import Answer, Run, WorkflowTest
from attune_actors.testing._script import Call, Mock, Outcome, error, real, result, timeout

__all__ = [
    "Answer",
    "Call",
    "Expect",
    "Mock",
    "Outcome",
    "Run",
    "WorkflowTest",
    "error",
    "real",
    "result",
    "timeout",
]
