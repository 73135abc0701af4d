"""The shipped packs: core metadata, the examples pack's files, and its actions run for real.

The workflow engine is not needed here: the examples' python actions run through the python runner,
and `expected.yaml` is cross-checked by a deliberately naive walk-through of each workflow (one task
at a time, no timing, no concurrency) that only supports what the examples use. It checks that the
fixture agrees with the workflows and actions; the engine's own tests check the engine against it.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jinja2
import jsonschema
import pytest
import yaml
from jinja2.sandbox import SandboxedEnvironment

from attune_actors.errors import ActionError, ParameterError
from attune_actors.runners import RunContext, RunnerLimits, RunnerSet
from attune_actors.spec.model import (
    BUILTIN_RUNNERS,
    ENGINE_COMMANDS,
    PARAMETER_TYPES,
    RESERVED_NAMES,
    ActionSpec,
    ParamSpec,
)

ROOT = Path(__file__).resolve().parent.parent
PACKS = ROOT / "packs"
EXAMPLES = PACKS / "examples"
CORE = ROOT / "attune_actors" / "packs" / "core"

PACK_KEYS = {"ref", "label", "description", "version", "config_schema"}
ACTION_KEYS = {"name", "runner_type", "entry_point", "description", "parameters", "timeout",
               "additional_parameters"}
PARAM_KEYS = {"type", "required", "default", "enum", "description", "secret"}
WORKFLOW_KEYS = {"ref", "label", "description", "version", "parameters", "vars", "tasks",
                 "output_map", "timeout", "cancellation_policy"}
TASK_KEYS = {"name", "action", "input", "type", "tasks", "with_items", "batch_size", "concurrency",
             "retry", "timeout", "delay", "join", "publish", "next", "on_success", "on_failure",
             "on_complete", "on_timeout", "decision"}
RULE_KEYS = {"ref", "name", "description", "enabled", "trigger", "criteria", "action", "parameters"}
SENSOR_KEYS = {
    "name", "description", "enabled", "entry_point", "class_name", "poll_interval", "trigger_types"
}
STATUSES = {"succeeded", "failed", "timeout", "canceled"}
CASE_KEYS = {"name", "workflow", "parameters", "responses", "status", "output", "waves",
             "task_status", "attempts", "items", "task_results", "min_seconds", "raises",
             "error_contains"}
JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def load(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def action_files(pack: Path) -> list[Path]:
    return sorted((pack / "actions").glob("*.yaml"))


def workflow_files() -> list[Path]:
    return sorted((EXAMPLES / "workflows").glob("*.yaml"))


def workflow_ref(path: Path) -> str:
    return str(load(path).get("ref") or f"examples.{path.stem}")


def action_spec(pack: Path, name: str) -> ActionSpec:
    meta = load(pack / "actions" / f"{name}.yaml")
    params = tuple(
        ParamSpec(name=k, type=v.get("type"), required=bool(v.get("required")),
                  **({"default": v["default"]} if "default" in v else {}))
        for k, v in (meta.get("parameters") or {}).items()
    )
    return ActionSpec(
        ref=f"{load(pack / 'pack.yaml')['ref']}.{name}", pack=pack.name, name=name,
        runner_type=meta["runner_type"], entry_point=meta.get("entry_point"), parameters=params,
        additional_parameters=bool(meta.get("additional_parameters")), pack_path=str(pack),
    )


def context(attempt: int = 1, action: str = "examples.x") -> RunContext:
    return RunContext(execution_id="ex", run_id="run", attempt=attempt, task="t",
                      item_index=None, action=action)


@pytest.fixture
async def runners() -> AsyncIterator[RunnerSet]:
    async with RunnerSet(limits=RunnerLimits(kill_grace=0.5)) as rs:
        yield rs


# -- layout and metadata ---------------------------------------------------------------------------


def test_core_is_linked_into_packs() -> None:
    link = PACKS / "core"
    assert link.is_symlink()
    assert str(link.readlink()) == "../attune_actors/packs/core"
    assert link.resolve() == CORE.resolve()


@pytest.mark.parametrize("pack", [CORE, EXAMPLES], ids=["core", "examples"])
def test_pack_metadata(pack: Path) -> None:
    meta = load(pack / "pack.yaml")
    assert set(meta) <= PACK_KEYS
    assert meta["ref"] == pack.name
    assert isinstance(meta["version"], str)
    if "config_schema" in meta:
        jsonschema.Draft202012Validator.check_schema(meta["config_schema"])
        jsonschema.validate(load(pack / "config.yaml"), meta["config_schema"])


def test_core_actions_are_the_builtins() -> None:
    names = {p.stem: load(p)["runner_type"] for p in action_files(CORE)}
    assert names == {"noop": "noop", "echo": "echo", "local": "local", "http": "http",
                     "sleep": "sleep", "inquiry": "inquiry"}
    assert load(CORE / "actions" / "echo.yaml")["additional_parameters"] is True
    assert load(CORE / "actions" / "noop.yaml")["additional_parameters"] is True
    assert load(CORE / "actions" / "local.yaml")["parameters"]["cmd"]["required"] is True
    assert load(CORE / "actions" / "http.yaml")["parameters"]["url"]["required"] is True
    assert load(CORE / "actions" / "sleep.yaml")["parameters"]["seconds"] == {
        "type": "number", "required": True, "description": "How long to wait (>= 0)."}
    inquiry = load(CORE / "actions" / "inquiry.yaml")["parameters"]
    assert {k: v.get("type") for k, v in inquiry.items()} == {
        "prompt": "string", "schema": "object", "timeout": "number", "users": "array",
        "roles": "array"}


@pytest.mark.parametrize(
    "path", [*action_files(CORE), *action_files(EXAMPLES)], ids=lambda p: f"{p.parent.parent.name}"
    f".{p.stem}"
)
def test_action_metadata(path: Path) -> None:
    meta = load(path)
    assert set(meta) <= ACTION_KEYS
    assert meta["name"] == path.stem
    assert meta["runner_type"] in BUILTIN_RUNNERS
    assert meta.get("description")
    for pname, spec in (meta.get("parameters") or {}).items():
        check_param(pname, spec)
    if meta["runner_type"] == "python":
        check_python_signature(path.parent / meta["entry_point"], meta.get("parameters") or {})


def check_param(name: str, spec: dict[str, Any]) -> None:
    assert set(spec) <= PARAM_KEYS, name
    assert spec.get("type") is None or spec["type"] in PARAMETER_TYPES, name
    if "default" in spec and spec.get("type"):
        assert JSON_TYPES[spec["type"]](spec["default"]), name
    if "enum" in spec and "default" in spec:
        assert spec["default"] in spec["enum"], name
    assert not (spec.get("required") and "default" in spec), f"{name}: required with a default"


def check_python_signature(entry: Path, params: dict[str, Any]) -> None:
    """`run` accepts every declared parameter, and the defaults on both sides agree."""
    assert entry.is_file(), entry
    namespace: dict[str, Any] = {"__name__": f"check_{entry.stem}"}
    exec(compile(entry.read_text(), str(entry), "exec"), namespace)
    signature = inspect.signature(namespace["run"])
    accepted = signature.parameters
    for name, spec in params.items():
        assert name in accepted, f"{entry.name}: run() does not take {name!r}"
        default = accepted[name].default
        if "default" in spec and default is not inspect.Parameter.empty:
            assert default == spec["default"], f"{entry.name}: default of {name!r} differs"
    for name, p in accepted.items():
        if name == "run_context":
            continue
        assert name in params, f"{entry.name}: run({name}) is not declared in the metadata"
        if p.default is inspect.Parameter.empty:
            assert params[name].get("required") or "default" in params[name], name


def all_action_refs() -> set[str]:
    refs = {f"core.{p.stem}" for p in action_files(CORE)}
    refs |= {f"examples.{p.stem}" for p in action_files(EXAMPLES)}
    refs |= {workflow_ref(p) for p in workflow_files()}
    return refs


def sugar_targets(task: dict[str, Any]) -> list[str]:
    targets: list[str] = []
    for key in ("on_success", "on_failure", "on_complete", "on_timeout"):
        value = task.get(key)
        if value is not None:
            targets += [value] if isinstance(value, str) else list(value)
    for entry in task.get("decision") or []:
        value = entry.get("next", entry.get("default"))
        targets += [value] if isinstance(value, str) else list(value)
    for entry in task.get("next") or []:
        value = entry.get("do") or []
        targets += [value] if isinstance(value, str) else list(value)
    return targets


def templates_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if "{{" in value or "{%" in value else []
    if isinstance(value, dict):
        return [t for v in value.values() for t in templates_in(v)]
    if isinstance(value, list):
        return [t for v in value for t in templates_in(v)]
    return []


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: p.stem)
def test_workflow_structure(path: Path) -> None:
    doc = load(path)
    assert set(doc) <= WORKFLOW_KEYS
    ref = workflow_ref(path)
    assert ref == f"examples.{path.stem}"
    for pname, spec in (doc.get("parameters") or {}).items():
        check_param(pname, spec)
    tasks: list[dict[str, Any]] = doc["tasks"]
    names = [t["name"] for t in tasks] + [s["name"] for t in tasks for s in t.get("tasks", [])]
    assert len(names) == len(set(names))
    assert not set(names) & RESERVED_NAMES
    known = all_action_refs()
    targets: set[str] = set()
    for task in tasks:
        assert set(task) <= TASK_KEYS, task["name"]
        subtasks = task.get("tasks", [])
        if task.get("type") == "parallel":
            assert subtasks
            assert "action" not in task
        for sub in subtasks:
            assert set(sub) <= TASK_KEYS
            assert not sugar_targets(sub), "sub-tasks may not have transitions"
        for t in [task, *subtasks]:
            if "action" in t:
                assert t["action"] in known, t["action"]
        for target in sugar_targets(task):
            assert target in names or target in ENGINE_COMMANDS, target
            targets.add(target)
    assert [t["name"] for t in tasks if t["name"] not in targets], "no start task"
    env = SandboxedEnvironment()
    for template in templates_in(doc):
        env.parse(template)  # syntax


def test_every_workflow_has_expected_cases() -> None:
    cases = load(EXAMPLES / "expected.yaml")
    covered = {c["workflow"] for c in cases}
    assert covered == {workflow_ref(p) for p in workflow_files()}
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names))
    for case in cases:
        assert set(case) <= CASE_KEYS, case["name"]
        if "raises" not in case:
            assert case["status"] in STATUSES


def test_rules_and_sensors() -> None:
    for file in sorted((EXAMPLES / "rules").glob("*.yaml")):
        rule = load(file)
        assert set(rule) <= RULE_KEYS, file
        assert {"trigger", "action"} <= set(rule), file
        assert rule["action"] in all_action_refs()
        for template in templates_in(rule):
            SandboxedEnvironment().parse(template)
    sensor = load(EXAMPLES / "sensors" / "disk.yaml")
    assert set(sensor) <= SENSOR_KEYS
    assert (EXAMPLES / "sensors" / sensor["entry_point"]).is_file()
    assert sensor["poll_interval"] > 0


# -- the examples' actions, run through the python runner ------------------------------------------


async def run_action(runners: RunnerSet, name: str, params: dict[str, Any],
                     attempt: int = 1) -> Any:
    spec = action_spec(EXAMPLES, name)
    return await runners.run(spec, params, context(attempt, spec.ref))


async def test_deployment_actions(runners: RunnerSet) -> None:
    assert await run_action(runners, "create_deployment", {"app_name": "shop"}) == {
        "id": "dep-shop-1.0.0", "url": "https://shop.example.test", "app_name": "shop",
        "version": "1.0.0"}
    built = await run_action(runners, "docker_build", {"app": "shop", "tag": "2.0.0"})
    assert built["image"] == built["image_uri"] == "registry.example.test/shop:2.0.0"
    assert built["digest"].startswith("sha256:")
    deployed = await run_action(runners, "k8s_deploy", {"image": built["image"]})
    assert deployed["health_url"] == "https://shop.dev.example.test/health"
    assert deployed["deployment"] == "shop"
    assert await run_action(runners, "health_check", {"url": deployed["health_url"]}) == {
        "url": deployed["health_url"], "status": "healthy", "status_code": 200}
    assert await run_action(runners, "k8s_rollback", {"deployment_id": "dep-1"}) == {
        "rolled_back": True, "deployment_id": "dep-1", "environment": "dev"}
    assert await run_action(runners, "cleanup", {"deployment_id": "dep-1"}) == {
        "cleaned_up": True, "deployment_id": "dep-1"}
    assert await run_action(runners, "chat_post", {"message": "hi", "latency": 0.01}) == {
        "channel": "#deploys", "message": "hi"}


async def test_failing_actions_keep_partial_results(runners: RunnerSet) -> None:
    with pytest.raises(ActionError, match="failed at step 3/3") as info:
        await run_action(runners, "docker_build", {"app": "shop", "fail": True})
    assert isinstance(info.value.result, dict)
    assert info.value.result["log"][-1] == "Step 3/3 : RUN make build -> exit code 2"
    with pytest.raises(ActionError, match="did not become ready") as info:
        await run_action(runners, "k8s_deploy", {"image": "r/shop:1", "fail": True})
    assert isinstance(info.value.result, dict)
    assert info.value.result["ready_replicas"] == 0
    with pytest.raises(ActionError, match="HTTP 503") as info:
        await run_action(runners, "health_check", {"url": "https://x/health", "fail": True})
    assert info.value.result == {"url": "https://x/health", "status": "unhealthy",
                                 "status_code": 503}
    with pytest.raises(ActionError, match=r"^RuntimeError: deployment of 1\.0\.0 to eu-west-1 "
                                          r"failed: quota exceeded \(raised at .*cloud_deploy"):
        await run_action(runners, "cloud_deploy", {"region": "eu-west-1", "fail": True})


async def test_service_checks_share_one_file(runners: RunnerSet) -> None:
    for service in ("database", "cache", "queue"):
        spec = action_spec(EXAMPLES, f"check_{service}")
        assert spec.entry_point == "service_check.py"
        default = next(p.default for p in spec.parameters if p.name == "service")
        result = await runners.run(spec, {"service": default}, context())
        assert result == {"service": service, "healthy": True}
    with pytest.raises(ActionError, match="cache is unreachable"):
        await run_action(runners, "check_cache", {"service": "cache", "fail": True})


async def test_flaky_call_fails_until_its_attempt(runners: RunnerSet) -> None:
    params = {"succeed_on_attempt": 3}
    for attempt in (1, 2):
        with pytest.raises(ActionError, match=f"^ConnectionError: .* on attempt {attempt} "):
            await run_action(runners, "flaky_call", params, attempt)
    for attempt in (3, 4):
        result = await run_action(runners, "flaky_call", params, attempt)
        assert result["attempt"] == attempt


async def test_regional_and_infrastructure_actions(runners: RunnerSet) -> None:
    assert await run_action(runners, "cloud_deploy", {"region": "sa-east-1"}) == {
        "region": "sa-east-1", "version": "1.0.0", "endpoint": "https://sa-east-1.example.test"}
    assert await run_action(runners, "provision", {
        "resource": "cluster", "environment": "dev", "region": "eu-west-1", "network_id": "n"
    }) == {"id": "cluster-dev-eu-west-1", "endpoint": "https://cluster.eu-west-1.dev.example.test",
           "network_id": "n"}


# -- expected.yaml, walked through ----------------------------------------------------------------

_SINGLE = re.compile(r"^\s*\{\{(.*?)\}\}\s*$", re.S)


class Walk:
    """A naive reading of SPEC sections 2-4, enough for the example workflows (see module doc)."""

    def __init__(self, runners: RunnerSet, responses: dict[str, Any]) -> None:
        self.runners = runners
        self.responses = responses
        self.env = SandboxedEnvironment(undefined=jinja2.StrictUndefined)
        self.config = load(EXAMPLES / "config.yaml")
        self.workflows = {workflow_ref(p): load(p) for p in workflow_files()}

    def render(self, value: Any, ctx: dict[str, Any]) -> Any:
        if isinstance(value, dict):
            return {k: self.render(v, ctx) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, ctx) for v in value]
        if not isinstance(value, str) or "{{" not in value:
            return value
        single = _SINGLE.match(value)
        if single and "{{" not in single.group(1):
            return self.env.compile_expression(single.group(1), undefined_to_none=False)(**ctx)
        return self.env.from_string(value).render(**ctx)

    def parameters(self, declared: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        out = dict(given)
        for name, spec in declared.items():
            if name not in out:
                if spec.get("required"):
                    raise ParameterError(f"missing required parameter {name!r}")
                if "default" in spec:
                    out[name] = spec["default"]
                continue
            if spec.get("type") and not JSON_TYPES[spec["type"]](out[name]):
                raise ParameterError(f"parameter {name!r} must be a {spec['type']}")
            if "enum" in spec and out[name] not in spec["enum"]:
                raise ParameterError(f"parameter {name!r} must be one of {spec['enum']}")
        return out

    async def execute(self, ref: str, given: dict[str, Any]) -> dict[str, Any]:
        doc = self.workflows[ref]
        params = self.parameters(doc.get("parameters") or {}, given)
        state: dict[str, Any] = {"vars": dict(doc.get("vars") or {}), "task": {},
                                 "waves": [], "tasks": {}, "failed": False}
        base = {"parameters": params, "pack": {"config": self.config}}
        by_name = {t["name"]: t for t in doc["tasks"]}
        targets = {x for t in doc["tasks"] for x in sugar_targets(t)}
        wave = [t["name"] for t in doc["tasks"] if t["name"] not in targets]
        while wave and not state["failed"]:
            state["waves"].append(list(wave))
            following: list[str] = []
            for name in wave:
                following += await self.task(by_name[name], state, base)
            wave = [n for n in following if n not in ENGINE_COMMANDS]
            state["failed"] = state["failed"] or "fail" in following
        ctx = {**base, "vars": state["vars"], "task": state["task"]}
        output = self.render(doc.get("output_map") or {}, ctx)
        return {"status": "failed" if state["failed"] else "succeeded", "output": output,
                "waves": state["waves"], "tasks": state["tasks"]}

    async def task(self, task: dict[str, Any], state: dict[str, Any],
                   base: dict[str, Any]) -> list[str]:
        def ctx(**extra: Any) -> dict[str, Any]:
            return {**base, "vars": state["vars"], "task": state["task"], **extra}

        record: dict[str, Any] = {"status": "succeeded", "result": None, "attempts": 1}
        if task.get("type") == "parallel":
            state["waves"][-1] += [s["name"] for s in task["tasks"]]
            record["result"] = {}
            for sub in task["tasks"]:
                await self.task(sub, state, base)
                record["result"][sub["name"]] = state["task"][sub["name"]]["result"]
                if state["task"][sub["name"]]["status"] != "succeeded":
                    record["status"] = "failed"
        elif "with_items" in task:
            items = self.render(task["with_items"], ctx())
            record["result"], record["items"] = [], []
            for index, item in enumerate(items):
                status, result, _ = await self.run(
                    task, self.render(task.get("input") or {}, ctx(item=item, index=index)), 1)
                record["result"].append(result)
                record["items"].append(status)
            if "failed" in record["items"]:
                record["status"] = "failed"
        else:
            retry = task.get("retry") or {}
            for attempt in range(1, int(retry.get("count", 0)) + 2):
                status, result, error = await self.run(
                    task, self.render(task.get("input") or {}, ctx()), attempt)
                record.update(status=status, result=result, error=error, attempts=attempt)
                if status == "succeeded" or not retry:
                    break
        state["task"][task["name"]] = record
        state["tasks"][task["name"]] = record
        return self.transitions(task, record, state, ctx)

    async def run(self, task: dict[str, Any], inputs: dict[str, Any],
                  attempt: int) -> tuple[str, Any, Any]:
        ref = task["action"]
        if ref == "core.inquiry":
            if task["name"] not in self.responses:
                return "timeout", None, "inquiry expired"
            response = self.responses[task["name"]]
            jsonschema.validate(response, inputs["schema"])
            return "succeeded", response, None
        if ref in self.workflows:
            child = await self.execute(ref, inputs)
            return child["status"], child["output"], None
        pack, name = ref.split(".")
        spec = action_spec(CORE if pack == "core" else EXAMPLES, name)
        declared = {p.name: p for p in spec.parameters}
        params = dict(inputs)
        for p in declared.values():
            if p.name not in params and p.has_default:
                params[p.name] = p.default
        assert spec.additional_parameters or set(params) <= set(declared), ref
        try:
            return "succeeded", await self.runners.run(spec, params, context(attempt, ref)), None
        except ActionError as exc:
            return "failed", exc.result, exc.message

    def transitions(self, task: dict[str, Any], record: dict[str, Any], state: dict[str, Any],
                    ctx: Callable[..., dict[str, Any]]) -> list[str]:
        status = record["status"]
        ok, failed = status == "succeeded", status in ("failed", "timeout")
        funcs = {"succeeded": lambda: ok, "failed": lambda: failed,
                 "timed_out": lambda: status == "timeout", "result": lambda: record["result"],
                 "error": lambda: record.get("error")}
        if ok:
            self.publish(task.get("publish"), state, ctx(**funcs))
        fired: list[str] = []
        for entry in task.get("decision") or []:
            if ok and ("default" in entry or self.render(entry["when"], ctx(**funcs))):
                fired.append(entry.get("next", entry.get("default")))
                break
        for key, cond in (("on_success", ok), ("on_failure", failed),
                          ("on_timeout", status == "timeout"), ("on_complete", True)):
            if key in task and cond:
                fired += [task[key]] if isinstance(task[key], str) else task[key]
        for entry in task.get("next") or []:
            if "when" not in entry or self.render(entry["when"], ctx(**funcs)):
                self.publish(entry.get("publish"), state, ctx(**funcs))
                fired += entry.get("do") or ["noop"]
        if failed and not fired:
            state["failed"] = True
        return fired

    def publish(self, publish: Any, state: dict[str, Any], ctx: dict[str, Any]) -> None:
        pairs = publish.items() if isinstance(publish, dict) else [
            next(iter(p.items())) for p in publish or []]
        for name, template in pairs:
            state["vars"][name] = self.render(template, ctx)


CASES = load(EXAMPLES / "expected.yaml")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_expected_case_agrees_with_the_workflow(
    case: dict[str, Any], runners: RunnerSet
) -> None:
    walk = Walk(runners, case.get("responses") or {})
    if "raises" in case:
        with pytest.raises(ParameterError, match=case["error_contains"]):
            await walk.execute(case["workflow"], case["parameters"])
        return
    got = await walk.execute(case["workflow"], case["parameters"])
    assert got["status"] == case["status"]
    assert got["output"] == case["output"]
    assert [sorted(w) for w in got["waves"]] == [sorted(w) for w in case["waves"]]
    assert {n: r["status"] for n, r in got["tasks"].items()} == case["task_status"]
    for name, attempts in (case.get("attempts") or {}).items():
        assert got["tasks"][name]["attempts"] == attempts
    for name, statuses in (case.get("items") or {}).items():
        assert got["tasks"][name]["items"] == statuses
    for name, result in (case.get("task_results") or {}).items():
        assert got["tasks"][name]["result"] == result
