"""Property-based fuzzing: no input makes the loader or the validator crash.

Whatever the text, loading returns a value or located problems (`AttuneError` with a
`FILE:LINE:COLUMN`), and validation of whatever loaded returns located problems too.
"""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_helpers import EXAMPLES, TEST_PACK

from attune_actors.cli import located as _located
from attune_actors.errors import AttuneError
from attune_actors.spec.packs import load_packs, load_workflow_text
from attune_actors.spec.params import PARAM_KEYS
from attune_actors.spec.validate import validate_workflow
from attune_actors.spec.workflow import RETRY_KEYS, TASK_KEYS, TRANSITION_KEYS, WORKFLOW_KEYS
from attune_actors.spec.yamlsrc import load_yaml
from attune_actors.templates import Renderer

FILE = "fuzz.yaml"
FUZZ = settings(
    max_examples=int(os.environ.get("ATTUNE_FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CATALOG, _ = load_packs([TEST_PACK])
RENDERER = Renderer()
EXAMPLE_TEXTS = [
    p.read_text(encoding="utf-8") for p in sorted((EXAMPLES / "examples" / "workflows").glob("*.yaml"))
]


def assert_located(problems: list[AttuneError]) -> None:
    for err in problems:
        assert isinstance(err, AttuneError)
        assert err.location is not None, err.message
        assert err.location.file == FILE
        assert err.location.line >= 1
        assert err.location.column >= 1
        assert "\n" not in _located(err)  # what `attune-actors validate` prints: one line each


def load_and_validate(text: str) -> None:
    """Load `text` as a workflow of the test pack and validate it; only located problems may come out."""
    problems: list[AttuneError] = []
    spec = load_workflow_text(
        text, pack="testpack", file=FILE, default_ref="testpack.fuzz", problems=problems
    )
    assert_located(problems)
    if spec is not None:
        assert_located(validate_workflow(spec, CATALOG, RENDERER))


# -- arbitrary text -------------------------------------------------------------------------------

YAML_ALPHABET = string.ascii_letters[:8] + string.digits[:3] + " \n\t-:,[]{}&*!|>'\"#%@`?<=~.\\_"


@FUZZ
@given(st.text())
def test_arbitrary_text_never_crashes_the_yaml_reader(text: str) -> None:
    _, problems = load_yaml(text, FILE)
    assert_located(problems)
    load_and_validate(text)


@FUZZ
@given(st.text(alphabet=YAML_ALPHABET, max_size=80))
def test_yaml_punctuation_soup_never_crashes_the_loader(text: str) -> None:
    load_and_validate(text)


@FUZZ
@given(st.sampled_from(EXAMPLE_TEXTS), st.data())
def test_damaged_example_workflows_never_crash(text: str, data: st.DataObject) -> None:
    for _ in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, len(text)))
        end = data.draw(st.integers(start, min(len(text), start + 40)))
        insert = data.draw(st.text(alphabet=YAML_ALPHABET, max_size=6))
        text = text[:start] + insert + text[end:]
    load_and_validate(text)


# -- arbitrary YAML documents ------------------------------------------------------------------------

KEYS = sorted({*WORKFLOW_KEYS, *TASK_KEYS, *TRANSITION_KEYS, *RETRY_KEYS, *PARAM_KEYS, "default", "next"})
NAMES = ["a", "b", "c", "task", "noop", "fail", "retry", "core.noop", "core.echo", "testpack.square", "x.y"]
TEMPLATES = [
    "{{ task.a.result }}",
    "{{ task.zz }}",
    "{{ succeeded() }}",
    "{{ 1 + }}",
    "{% if x %}y{% endif %}",
    "{{ x ? 1 : 2 }}",
    "{{ [1, 2] }}",
    "{% include 'x' %}",
    "{{",
    "}}",
    "a, b",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NAMES + TEMPLATES + ["all", "parallel", "action", "linear", "string", "integer"]),
    st.text(max_size=8),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6))
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)


def dump(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


@FUZZ
@given(values)
def test_arbitrary_yaml_documents_never_crash(document: Any) -> None:
    load_and_validate(dump(document))


task_values: st.SearchStrategy[dict[str, Any]] = st.dictionaries(
    st.sampled_from([*TASK_KEYS, "name", "name", "action", "bogus"]), values, max_size=7
).map(lambda task: {"name": task.pop("name", "t"), **task})
workflows = st.fixed_dictionaries(
    {"tasks": st.lists(task_values, min_size=1, max_size=5)},
    optional={key: values for key in WORKFLOW_KEYS if key != "tasks"},
)


@FUZZ
@given(workflows)
def test_workflow_shaped_documents_never_crash(document: dict[str, Any]) -> None:
    load_and_validate(dump(document))


# The same through the pack loader and the whole-pack validator, on disk.


@settings(max_examples=25, deadline=None, database=None)
@given(workflows)
def test_packs_with_arbitrary_workflows_never_crash(tmp_path_factory: Any, document: dict[str, Any]) -> None:
    from attune_actors.spec.validate import validate_paths

    root: Path = tmp_path_factory.mktemp("fuzzpack")
    (root / "pack.yaml").write_text("ref: fuzz\n", encoding="utf-8")
    (root / "workflows").mkdir()
    file = root / "workflows" / "w.yaml"
    file.write_text(dump(document), encoding="utf-8")
    for err in validate_paths([root]):
        assert err.location is not None
        assert err.location.file == str(file)
        assert err.location.line >= 1
