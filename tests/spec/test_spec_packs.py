"""Pack loading: pack.yaml, config.yaml against config_schema, actions, workflows, rules and sensors."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_helpers import EXAMPLES, TEST_PACK, at, lines

from attune_actors.errors import NotFoundError
from attune_actors.spec.packs import CORE_PACK_PATH, load_pack, load_packs
from attune_actors.spec.validate import validate_paths


def make_pack(root: Path, name: str, files: dict[str, str]) -> Path:
    """Write a pack folder `root/name` holding `files` (relative path -> dedented text)."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {"pack.yaml": f"ref: {name}\n", **files}
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def problem_lines(root: Path) -> list[str]:
    """Problems of loading and validating `root`, with `root/` cut from the file names."""
    return [line.replace(f"{root}/", "") for line in lines(validate_paths([root]))]


# -- loading what is there ----------------------------------------------------------------------


def test_the_test_pack_loads_with_its_config() -> None:
    catalog, problems = load_packs([TEST_PACK])
    assert problems == []
    pack = catalog.packs["testpack"]
    assert (pack.ref, pack.label, pack.version) == ("testpack", "Test pack", "1.0.0")
    assert pack.config == {"greeting": "hi"}  # config.yaml wins over the schema default
    assert pack.config_schema is not None
    assert pack.path == str(TEST_PACK)
    square = catalog.action("testpack.square")
    assert square.runner_type == "python"
    assert square.entry_point == "square.py"
    assert square.pack_path == str(TEST_PACK)
    assert [(p.name, p.type, p.required) for p in square.parameters] == [("n", "integer", True)]
    assert not square.is_workflow


def test_the_core_pack_is_always_loaded() -> None:
    catalog, problems = load_packs([])
    assert problems == []
    assert set(catalog.packs) == {"core"}
    refs = {"core.noop", "core.echo", "core.local", "core.http", "core.sleep", "core.inquiry"}
    assert refs <= set(catalog.actions)
    assert catalog.action("core.echo").additional_parameters
    assert catalog.action("core.inquiry").runner_type == "inquiry"
    without, _ = load_packs([TEST_PACK], include_core=False)
    assert set(without.packs) == {"testpack"}


def test_the_example_packs_load_with_workflows_rules_and_sensors() -> None:
    catalog, problems = load_packs([EXAMPLES])
    assert problems == []  # packs/core is a link to the built-in pack: loaded once, no duplicate
    assert set(catalog.packs) == {"core", "examples"}
    pack = catalog.packs["examples"]
    assert pack.config == {"registry": "registry.example.test", "chat_channel": "#deploys"}
    deploy = catalog.action("examples.deploy")
    assert deploy.is_workflow
    assert deploy.runner_type == "workflow"
    assert deploy.workflow is not None
    assert deploy.parameters == deploy.workflow.parameters
    assert deploy.name == "deploy"
    assert [a.ref for a in catalog.workflows("examples")][:2] == ["examples.decision", "examples.deploy"]
    assert all(a.is_workflow for a in catalog.workflows())
    rules = {r.ref: r for r in pack.rules}
    assert set(rules) == {
        "examples.on_push",
        "examples.release_webhook",
        "examples.nightly",
        "examples.on_disk_full",
    }
    push = rules["examples.on_push"]
    assert (push.trigger_type, push.trigger_parameters, push.action) == (
        "core.nats",
        {"subject": "git.push"},
        "examples.deploy",
    )
    assert push.criteria[0] == ("trigger.payload.branch", "equals", "main")
    assert push.file.endswith("rules/on_push.yaml")
    (sensor,) = pack.sensors
    assert (sensor.ref, sensor.class_name, [t.ref for t in sensor.trigger_types]) == (
        "examples.disk",
        "DiskSensor",
        ["examples.disk_usage"],
    )


def test_unknown_refs_name_the_closest() -> None:
    catalog, _ = load_packs([TEST_PACK])
    with pytest.raises(NotFoundError, match=r"unknown action or workflow 'testpack\.sqare' "):
        catalog.action("testpack.sqare")
    with pytest.raises(NotFoundError, match=r"did you mean 'testpack\.square'\?"):
        catalog.action("testpack.sqare")


def test_a_folder_is_a_pack_or_a_folder_of_packs(tmp_path: Path) -> None:
    make_pack(tmp_path / "many", "one", {})
    make_pack(tmp_path / "many", "two", {})
    single = make_pack(tmp_path, "alone", {})
    catalog, problems = load_packs([tmp_path / "many", single])
    assert problems == []
    assert set(catalog.packs) == {"core", "one", "two", "alone"}


def test_workflow_ref_from_its_key_or_file_name(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        "p",
        {
            "workflows/by_file.yaml": "tasks: [{name: a, action: core.noop}]\n",
            "workflows/other.yaml": "ref: p.by_key\ntasks: [{name: a, action: core.noop}]\n",
        },
    )
    catalog, problems = load_packs([tmp_path])
    assert problems == []
    assert {a.ref for a in catalog.workflows("p")} == {"p.by_file", "p.by_key"}


def test_workflows_call_workflows_of_other_packs(tmp_path: Path) -> None:
    make_pack(tmp_path, "lib", {"workflows/helper.yaml": "tasks: [{name: a, action: core.noop}]\n"})
    make_pack(tmp_path, "app", {"workflows/main.yaml": "tasks: [{name: a, action: lib.helper}]\n"})
    assert problem_lines(tmp_path) == []


# -- config.yaml against config_schema -------------------------------------------------------------

SCHEMA = """\
    ref: cfg
    config_schema:
      type: object
      properties:
        host: {type: string}
        port: {type: integer, default: 8080}
        tls: {type: boolean, default: true}
      required: [host]
      additionalProperties: false
    """


def test_config_defaults_fill_what_config_yaml_leaves_out(tmp_path: Path) -> None:
    folder = make_pack(tmp_path, "cfg", {"pack.yaml": SCHEMA, "config.yaml": "host: db.test\ntls: false\n"})
    pack, problems = load_pack(folder)
    assert problems == []
    assert pack is not None
    assert pack.config == {"host": "db.test", "tls": False, "port": 8080}


def test_config_violating_the_schema_is_located(tmp_path: Path) -> None:
    config = "host: db.test\nport: eighty\nextra: 1\n"
    make_pack(tmp_path, "cfg", {"pack.yaml": SCHEMA, "config.yaml": config})
    assert problem_lines(tmp_path) == [
        f"cfg/config.yaml:{at(config, 'port')}: pack config port: 'eighty' is not of type 'integer'",
        f"cfg/config.yaml:{at(config, 'extra')}: pack config (root): Additional properties are not allowed "
        "('extra' was unexpected)",
    ]


def test_required_config_without_config_yaml(tmp_path: Path) -> None:
    make_pack(tmp_path, "cfg", {"pack.yaml": SCHEMA})
    assert problem_lines(tmp_path) == ["cfg/pack.yaml:1:1: pack config (root): 'host' is a required property"]


def test_invalid_config_schema(tmp_path: Path) -> None:
    text = "ref: cfg\nconfig_schema:\n  type: objekt\n"
    make_pack(tmp_path, "cfg", {"pack.yaml": text})
    (line,) = problem_lines(tmp_path)
    assert line.startswith(
        f"cfg/pack.yaml:{at(text, 'config_schema')}: invalid config_schema: 'objekt' is not valid"
    )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"pack.yaml": "ref: p\nconfig_schema: [1]\n"},
            "p/pack.yaml:2:1: 'config_schema' must be a JSON Schema mapping",
        ),
        ({"config.yaml": "- 1\n"}, "p/config.yaml:1:1: config.yaml must be a mapping"),
        ({"pack.yaml": "ref: p\nconfig_schema: {properties: [x]}\n"}, None),
    ],
)
def test_config_shapes(tmp_path: Path, files: dict[str, str], expected: str | None) -> None:
    make_pack(tmp_path, "p", files)
    found = problem_lines(tmp_path)
    if expected is None:  # a malformed schema is reported, never a crash
        assert len(found) == 1
        assert "invalid config_schema" in found[0]
    else:
        assert found == [expected]


# -- pack.yaml ------------------------------------------------------------------------------------


def test_pack_yaml_unknown_key(tmp_path: Path) -> None:
    make_pack(tmp_path, "p", {"pack.yaml": "ref: p\nversoin: 1\n"})
    assert problem_lines(tmp_path) == [
        "p/pack.yaml:2:1: unknown key 'versoin' in pack.yaml (did you mean 'version'?)"
    ]


def test_pack_ref_must_be_a_name(tmp_path: Path) -> None:
    make_pack(tmp_path, "p", {"pack.yaml": "ref: my.pack\n"})
    assert problem_lines(tmp_path) == ["p/pack.yaml:1:1: pack ref 'my.pack' must be a name"]


def test_pack_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    make_pack(tmp_path, "p", {"pack.yaml": "[ref]\n"})
    assert problem_lines(tmp_path) == ["p/pack.yaml:1:1: pack.yaml must be a mapping"]


def test_pack_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    make_pack(tmp_path, "p", {"pack.yaml": "ref: p\nlabel: [unclosed\n"})
    (line,) = problem_lines(tmp_path)
    assert line.startswith("p/pack.yaml:3:1: invalid YAML: ")


def test_pack_ref_defaults_to_the_folder_name(tmp_path: Path) -> None:
    make_pack(tmp_path, "named_by_folder", {"pack.yaml": "label: x\n"})
    catalog, problems = load_packs([tmp_path])
    assert problems == []
    assert "named_by_folder" in catalog.packs


def test_duplicate_pack_refs(tmp_path: Path) -> None:
    make_pack(tmp_path / "a", "one", {"pack.yaml": "ref: same\n"})
    make_pack(tmp_path / "b", "two", {"pack.yaml": "ref: same\n"})
    catalog, problems = load_packs([tmp_path / "a", tmp_path / "b"])
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'b' / 'two' / 'pack.yaml'}:1:1: duplicate pack 'same' "
        f"(also at {tmp_path / 'a' / 'one'})"
    ]
    assert catalog.packs["same"].path == str(tmp_path / "a" / "one")


def test_the_same_pack_named_twice_is_loaded_once(tmp_path: Path) -> None:
    folder = make_pack(tmp_path, "p", {})
    catalog, problems = load_packs([folder, tmp_path, folder])
    assert problems == []
    assert set(catalog.packs) == {"core", "p"}


def test_missing_folders_and_folders_without_packs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _, problems = load_packs([tmp_path / "nope", tmp_path / "empty"])
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'nope'}: no such pack folder",
        f"{tmp_path / 'empty'}: no pack here (no pack.yaml in it or its sub-folders)",
    ]


# -- actions --------------------------------------------------------------------------------------


def test_action_metadata_is_read(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        "p",
        {
            "actions/run.yaml": """\
                name: run
                runner_type: local
                entry_point: echo hi
                timeout: 2.5
                description: says hi
                additional_parameters: true
                parameters:
                  level: {type: integer, default: 1}
                """,
        },
    )
    catalog, problems = load_packs([tmp_path])
    assert problems == []
    action = catalog.action("p.run")
    assert (action.runner_type, action.entry_point, action.timeout) == ("local", "echo hi", 2.5)
    assert action.additional_parameters
    assert action.description == "says hi"
    assert action.parameters[0].default == 1


def test_action_name_defaults_to_the_file_name(tmp_path: Path) -> None:
    make_pack(tmp_path, "p", {"actions/nameless.yaml": "runner_type: noop\n"})
    catalog, problems = load_packs([tmp_path])
    assert problems == []
    assert catalog.action("p.nameless").runner_type == "noop"


def test_missing_entry_point(tmp_path: Path) -> None:
    text = "name: a\nrunner_type: python\nentry_point: gone.py\n"
    make_pack(tmp_path, "p", {"actions/a.yaml": text, "actions/b.yaml": "name: b\nrunner_type: python\n"})
    assert problem_lines(tmp_path) == [
        f"p/actions/a.yaml:{at(text, 'entry_point')}: action 'p.a': entry point 'gone.py' not found in "
        "p/actions",
        "p/actions/b.yaml:1:1: action 'p.b': python actions need 'entry_point'",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def run(**params):\n    return 1\n", None),
        ("async def run(n):\n    return n\n", None),
        ("from os.path import join as run\n", None),
        ("try:\n    from fast import run\nexcept ImportError:\n    def run():\n        pass\n", None),
        ("def main():\n    pass\n", "3:1: action 'p.a': entry point 'a.py' defines no function 'run'"),
        ("def run(:\n", "a.py:2:9: action 'p.a': syntax error in entry point: invalid syntax"),
    ],
)
def test_python_entry_points_are_parsed_not_imported(
    tmp_path: Path, source: str, expected: str | None
) -> None:
    meta = "name: a\nrunner_type: python\nentry_point: a.py\n"
    make_pack(
        tmp_path, "p", {"actions/a.yaml": meta, "actions/a.py": "raise SystemExit('imported!')\n" + source}
    )
    found = problem_lines(tmp_path)
    if expected is None:
        assert found == []
    elif expected.startswith("a.py"):
        assert found == [f"p/actions/{expected}"]  # located in the python file itself
    else:
        assert found == [f"p/actions/a.yaml:{expected}"]


def test_entry_point_outside_the_actions_folder(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        "p",
        {
            "actions/a.yaml": "runner_type: python\nentry_point: ../secret.py\n",
            "secret.py": "def run():\n    pass\n",
        },
    )
    assert problem_lines(tmp_path) == [
        "p/actions/a.yaml:2:1: action 'p.a': entry point '../secret.py' is outside p/actions"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: a\nrunner_type: pyhton\n",
            "2:1: action 'p.a': unknown runner_type 'pyhton' (one of python, local, "
            "http, noop, echo, sleep, inquiry)",
        ),
        (
            "name: a\nrunner_type: workflow\n",
            "2:1: action 'p.a': unknown runner_type 'workflow' (one of python, "
            "local, http, noop, echo, sleep, inquiry)",
        ),
        (
            "name: a\nrunner_type: noop\ntimeout: -1\n",
            "3:1: action 'p.a': 'timeout' must be a number of seconds",
        ),
        (
            "name: a\nrunner_type: noop\nparamters: {}\n",
            "3:1: unknown key 'paramters' in action (did you mean 'parameters'?)",
        ),
        ("name: a-b\nrunner_type: noop\n", "1:1: action name 'a-b' must be an identifier"),
        (
            "name: a\nrunner_type: noop\nparameters: {x: {type: text}}\n",
            "3:18: parameter 'x': unknown type "
            "'text' (one of string, integer, number, boolean, array, object)",
        ),
        ("- a\n", "1:1: action metadata must be a mapping"),
    ],
)
def test_action_metadata_problems(tmp_path: Path, text: str, expected: str) -> None:
    make_pack(tmp_path, "p", {"actions/a.yaml": text})
    assert problem_lines(tmp_path) == [f"p/actions/a.yaml:{expected}"]


def test_duplicate_action_names(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        "p",
        {
            "actions/a.yaml": "name: same\nrunner_type: noop\n",
            "actions/b.yaml": "name: same\nrunner_type: echo\n",
        },
    )
    assert problem_lines(tmp_path) == [
        "p/actions/b.yaml:1:1: duplicate action 'p.same' (also defined in p/actions/a.yaml)"
    ]


def test_workflow_ref_taken_by_an_action_or_another_workflow(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        "p",
        {
            "actions/job.yaml": "runner_type: noop\n",
            "workflows/job.yaml": "tasks: [{name: a, action: core.noop}]\n",
            "workflows/one.yaml": "tasks: [{name: a, action: core.noop}]\n",
            "workflows/two.yaml": "label: x\nref: p.one\ntasks: [{name: a, action: core.noop}]\n",
        },
    )
    assert problem_lines(tmp_path) == [
        "p/workflows/job.yaml:1:1: duplicate ref 'p.job': already the action in p/actions/job.yaml",
        "p/workflows/two.yaml:2:1: duplicate ref 'p.one': already the workflow in p/workflows/one.yaml",
    ]


# -- rules and sensors ------------------------------------------------------------------------------


def test_rules_and_sensors_are_checked_with_located_errors(tmp_path: Path) -> None:
    make_pack(
        tmp_path,
        "p",
        {
            "workflows/job.yaml": "parameters: {n: {type: integer, required: true}}\n"
            "tasks: [{name: a, action: core.noop}]\n",
            "rules/ok.yaml": "trigger: {type: core.webhook, parameters: {name: go}}\naction: p.job\n"
            "parameters: {n: '{{ trigger.payload.n }}'}\n",
            "rules/bad.yaml": "triger: x\naction: p.job\n",
            "rules/ops.yaml": "trigger: {type: core.nats, parameters: {subject: a.b}}\n"
            "criteria:\n  trigger.payload.x: {equal: 1}\n  trigger.payload.y: {regex: '(['}\n"
            "  payload.z: {exists: true}\naction: p.job\nparameters: {n: 1}\n",
            "rules/refs.yaml": "trigger: {type: core.webhok, parameters: {name: x}}\naction: p.jobb\n",
            "rules/params.yaml": "trigger: {type: core.interval, parameters: {seconds: 0}}\naction: p.job\n"
            "parameters: {n: 'x', m: 1, k: '{{ parameters.n }}'}\n",
            "rules/cron.yaml": "trigger: {type: core.cron, parameters: {expression: '61 * * * *', "
            "timezone: Mars/Base}}\naction: p.job\nparameters: {n: 2}\n",
            "sensors/odd.yaml": "name: odd\nentry_point: nothere.py\nclass_name: X\ntrigger_types: [t]\n",
        },
    )
    assert problem_lines(tmp_path) == [
        "p/rules/bad.yaml:1:1: unknown key 'triger' in rule (did you mean 'trigger'?)",
        "p/rules/bad.yaml:1:1: rule 'p.bad' needs 'trigger' ({type, parameters})",
        "p/rules/cron.yaml:1:41: rule 'p.cron': core.cron 'expression' is not a valid cron expression: "
        "'61 * * * *'",
        "p/rules/cron.yaml:1:67: rule 'p.cron': core.cron 'timezone' is not a known time zone: 'Mars/Base'",
        "p/rules/ops.yaml:3:23: rule 'p.ops': criteria 'trigger.payload.x': unknown operator 'equal' "
        "(did you mean 'equals'?); one of equals, nequals, lt, lte, gt, gte, contains, ncontains, "
        "startswith, endswith, regex, exists, nexists, in, nin",
        "p/rules/ops.yaml:4:23: rule 'p.ops': criteria 'trigger.payload.y': bad regex '([': "
        "unterminated character set at position 1",
        "p/rules/ops.yaml:5:3: rule 'p.ops': criteria key 'payload.z' must be a path into the trigger "
        "instance (trigger.payload.<key>, trigger.subject, ...)",
        "p/rules/params.yaml:1:45: rule 'p.params': core.interval 'seconds' must be a number of seconds "
        "above 0, got 0",
        "p/rules/params.yaml:3:14: rule 'p.params': parameter 'n' must be of type integer, got string 'x'",
        "p/rules/params.yaml:3:22: rule 'p.params': unknown parameter 'm' of p.job",
        "p/rules/params.yaml:3:28: rule 'p.params': unknown parameter 'k' of p.job",
        "p/rules/params.yaml:3:28: rule 'p.params': parameters.k: unknown name parameters "
        "(a rule's templates see trigger.* and pack.config.*)",
        "p/rules/refs.yaml:1:11: rule 'p.refs': unknown trigger type 'core.webhok' "
        "(did you mean 'core.webhook'?)",
        "p/rules/refs.yaml:2:1: rule 'p.refs': unknown action 'p.jobb' (did you mean 'p.job'?)",
        "p/sensors/odd.yaml:2:1: sensor 'p.odd': entry point 'nothere.py' not found in p/sensors",
    ]


# -- no pack file makes the loader crash ------------------------------------------------------------

documents = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-2, 3),
        st.text(max_size=6),
        st.sampled_from(["python", "noop", "x.py", "object", "string", "{{ x }}"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "ref",
                    "name",
                    "runner_type",
                    "entry_point",
                    "parameters",
                    "config_schema",
                    "type",
                    "properties",
                    "default",
                    "required",
                    "timeout",
                    "trigger",
                    "action",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=15,
)


@settings(max_examples=40, deadline=None, database=None)
@given(documents, documents, documents)
def test_arbitrary_pack_files_never_crash(tmp_path_factory: Any, meta: Any, config: Any, action: Any) -> None:
    root: Path = tmp_path_factory.mktemp("packs")
    folder = root / "p"
    (folder / "actions").mkdir(parents=True)
    (folder / "pack.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (folder / "actions" / "a.yaml").write_text(yaml.safe_dump(action), encoding="utf-8")
    for err in validate_paths([root]):
        assert err.location is not None
        assert err.location.file.startswith(str(folder))
    shutil.rmtree(root)


def test_core_pack_path_is_inside_the_package() -> None:
    assert (CORE_PACK_PATH / "pack.yaml").is_file()
