"""Template work per render (SPEC 12): loop steps and output bytes, enforced inside the sandbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from attune_actors import Engine, TemplateError
from attune_actors.config import load_settings
from attune_actors.templates import Renderer

STEPS = "limits.template_loop_steps"
OUTPUT = "limits.template_output_bytes"


@pytest.fixture
def small() -> Renderer:
    return Renderer(max_loop_steps=1000, max_output=10_000)


@pytest.mark.parametrize(
    ("source", "limit"),
    [
        # the issue's loop, smaller: the outer steps are refused before the first one runs
        ("{% for a in [1]*5000 %}{% for b in [1]*1000 %}{% endfor %}{% endfor %}", STEPS),
        # nested loops add up: 40 x 40 = 1600 steps
        ("{% for a in range(40) %}{% for b in range(40) %}{% endfor %}{% endfor %}", STEPS),
        # a loop over something without a length is counted as it goes
        ("{% for x in (range(3000) | map('string')) | reverse %}{% endfor %}", STEPS),
        ("{{ 'a' * 20000 }}", OUTPUT),
        ("{% set s = 'a' * 10000 %}{{ ([s] * 1000) | join | length }}", OUTPUT),
        ("{% set s = 'a' * 10000 %}{{ [s] * 1000 }}", OUTPUT),  # a native value
        ("{% set s = 'a' * 10000 %}x{{ [s] * 1000 }}", OUTPUT),  # printed into text
        ("{{ ''.join(['ab'] * 6000) }}", OUTPUT),
        ("{% for i in range(200) %}{{ 'abcdefghij' * 10 }}{% endfor %}", OUTPUT),
        ("{{ (['abc'] * 5000) | join(attribute='upper') }}", OUTPUT),
    ],
)
def test_work_over_the_budget_is_refused_naming_the_limit(
    small: Renderer, source: str, limit: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        small.render(source, {}, where="task t input.x")
    message = str(caught.value)
    assert message.startswith("task t input.x: refused by the sandbox: ")
    assert f"exceeds {limit} (" in message


def test_the_issue_s_60_character_gigabyte_is_refused_with_the_defaults() -> None:
    with pytest.raises(TemplateError, match=r"join would produce 1000000000 characters or items, "
                       r"which exceeds limits.template_output_bytes \(1048576\)"):
        Renderer().render("{% set s='a'*1000000 %}{{ ([s]*1000)|join|length }}", {})


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{% for a in range(30) %}{% for b in range(30) %}.{% endfor %}{% endfor %}", "." * 900),
        ("{{ (['ab'] * 100) | join(',') | length }}", 299),
        ("{% for x in (range(5) | map('string')) | reverse %}{{ x }}{% endfor %}", "43210"),
        ("{{ [{'a': 'x' * 100}] * 10 }}", [{"a": "x" * 100}] * 10),
    ],
)
def test_work_within_the_budget_renders(small: Renderer, source: str, expected: Any) -> None:
    assert small.render(source, {}) == expected


def test_each_render_has_its_own_budget(small: Renderer) -> None:
    source = "{% for a in range(600) %}{% endfor %}done"
    for _ in range(5):
        assert small.render(source, {}) == "done"


def test_recursive_loops_are_refused_at_compile_time(small: Renderer) -> None:
    error = small.check("{% for x in [1] recursive %}{{ loop([1, 1]) }}{% endfor %}")
    assert error is not None
    assert "recursive loops are not allowed in workflow templates" in str(error)


Make = Callable[..., Any]
WorkflowWriter = Callable[[str, str], str]


async def test_an_execution_over_the_budget_fails_and_the_others_run(
    engine_factory: Make, workflow: WorkflowWriter, tmp_path: Any
) -> None:
    heavy = workflow(
        "heavy",
        """
        tasks:
          - name: build
            action: core.noop
            input:
              x: "{% for a in [1]*1000000 %}{% for b in [1]*1000 %}{% endfor %}{% endfor %}"
        """,
    )
    light = workflow(
        "light",
        """
        tasks:
          - {name: one, action: testpack.square, input: {n: 3}}
        output_map: {n: "{{ task.one.result }}"}
        """,
    )
    settings = load_settings(environ={}, overrides={"limits": {"template_loop_steps": 5000}})
    engine: Engine = await engine_factory(settings=settings)
    bad = await engine.execute(heavy)
    good = await engine.execute(light)
    final_bad = await engine.wait(bad.id, timeout=30)
    final_good = await engine.wait(good.id, timeout=30)
    assert final_good.status == "succeeded"
    assert final_good.output == {"n": 9}
    assert final_bad.status == "failed"
    assert final_bad.error is not None
    assert "exceeds limits.template_loop_steps (5000)" in final_bad.error["message"]
    assert final_bad.error["task"] == "build"
