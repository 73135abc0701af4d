"""The workflow loader: YAML with locations, and every sugar normalised into canonical `next`."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from spec_helpers import at, parse, spec_of

from attune_actors.errors import Location
from attune_actors.spec.model import RetryPolicy, Transition
from attune_actors.spec.yamlsrc import YList, YMap, load_yaml, plain
from attune_actors.templates import Renderer

SUCCEEDED = "{{ succeeded() }}"
FAILED = "{{ failed() }}"
TIMED_OUT = "{{ timed_out() }}"


def _when_do(transitions: tuple[Transition, ...]) -> list[tuple[str | None, tuple[str, ...]]]:
    return [(t.when, t.do) for t in transitions]


# -- YAML with locations -------------------------------------------------------------------------


def test_yaml_mappings_and_lists_know_where_they_were_written() -> None:
    text = "a:\n  - x\n  - {b: 1}\nc: 2\n"
    value, problems = load_yaml(text, "f.yaml")
    assert problems == []
    assert isinstance(value, YMap)
    assert value.location == Location("f.yaml", 1, 1)
    assert value.loc("c") == Location("f.yaml", 4, 1)
    assert value.loc("missing") == value.location
    items = value["a"]
    assert isinstance(items, YList)
    assert items.loc(0) == Location("f.yaml", 2, 5)
    assert items.loc(1) == Location("f.yaml", 3, 5)
    assert items[1].loc("b") == Location("f.yaml", 3, 6)
    assert plain(value) == {"a": ["x", {"b": 1}], "c": 2}
    assert type(plain(value)) is dict


def test_yaml_keys_become_strings_and_dates_stay_text() -> None:
    value, problems = load_yaml("1: a\ntrue: b\n~: c\nwhen: 2024-01-02\n", "f")
    assert problems == []
    assert value == {"1": "a", "true": "b", "null": "c", "when": "2024-01-02"}


def test_yaml_duplicate_keys_are_located_problems() -> None:
    value, problems = load_yaml("a: 1\nb: 2\na: 3\n", "f")
    assert value == {"a": 1, "b": 2}
    assert [str(p) for p in problems] == ["f:3:1: duplicate key 'a'"]


def test_yaml_merge_keys_let_the_mapping_override_what_it_merges() -> None:
    text = textwrap.dedent(
        """\
        base: &base {action: core.noop, input: {x: 1}}
        other: &other {action: core.echo, timeout: 5}
        task: {<<: [*base, *other], action: core.local}
        """
    )
    value, problems = load_yaml(text, "f")
    assert problems == []
    # The mapping's own keys win, then earlier merged mappings over later ones.
    assert plain(value["task"]) == {"action": "core.local", "input": {"x": 1}, "timeout": 5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [1, 2\n", "2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        ("a: b: c\n", "1:5: invalid YAML: mapping values are not allowed here"),
        ("? [1]\n: x\n", "1:3: a mapping key must be a scalar"),
        ("a: !!set {x}\n", "1:4: unsupported YAML tag tag:yaml.org,2002:set"),
        ("a: !!bool maybe\n", "1:4: invalid YAML: cannot build a tag:yaml.org,2002:bool value: 'maybe'"),
        ("a: !!seq x\n", "1:4: expected a sequence for tag tag:yaml.org,2002:seq"),
        ("a: &x [*x]\n", "1:4: invalid YAML: found unconstructable recursive node"),
        ("a: 1\nb: x\x01\n", "2:5: invalid YAML: unacceptable character #x0001"),
        ("<<: 3\n", "1:5: a merge key (<<) needs a mapping or a list of mappings"),
    ],
)
def test_yaml_problems_are_located(text: str, message: str) -> None:
    _, problems = load_yaml(text, "f.yaml")
    assert [str(p) for p in problems] == [f"f.yaml:{message}"]


# -- the document --------------------------------------------------------------------------------


def test_minimal_workflow_defaults() -> None:
    spec = spec_of(
        """\
        tasks:
          - name: only
            action: core.noop
        """
    )
    assert spec.ref == "tp.wf"
    assert spec.pack == "tp"
    assert spec.cancellation_policy == "allow_finish"
    assert spec.timeout is None
    assert spec.output_map is None
    assert spec.vars == {}
    (task,) = spec.tasks
    assert task.name == "only"
    assert task.action == "core.noop"
    assert task.type == "action"
    assert task.input == {}
    assert task.next == ()
    assert task.publish == ()
    assert task.retry is None
    assert task.join is None
    assert task.batch_size is None
    assert task.with_items is None


def test_top_level_keys_are_all_read() -> None:
    spec = spec_of(
        """\
        ref: tp.named
        label: A label
        description: What it does
        version: "2.1"
        parameters:
          n: {type: integer, required: true, description: how many}
          mode: {type: string, enum: [a, b], default: a}
          token: {type: string, secret: true}
          anything: {}
        vars: {count: 0, items: [1, 2]}
        timeout: 30
        cancellation_policy: cancel_running
        tasks:
          - name: t
            action: core.noop
        output_map:
          count: "{{ vars.count }}"
        """
    )
    assert spec.ref == "tp.named"
    assert (spec.label, spec.description, spec.version) == ("A label", "What it does", "2.1")
    assert spec.timeout == 30
    assert spec.cancellation_policy == "cancel_running"
    assert spec.vars == {"count": 0, "items": [1, 2]}
    assert spec.output_map == {"count": "{{ vars.count }}"}
    params = {p.name: p for p in spec.parameters}
    assert [p.name for p in spec.parameters] == ["n", "mode", "token", "anything"]
    assert params["n"].type == "integer"
    assert params["n"].required
    assert not params["n"].has_default
    assert params["mode"].enum == ("a", "b")
    assert params["mode"].default == "a"
    assert params["token"].secret
    assert params["anything"].type is None
    assert type(spec.vars) is dict  # plain values, not YAML nodes


def test_task_keys_are_all_read() -> None:
    spec = spec_of(
        """\
        tasks:
          - name: t
            action: testpack.square
            input: {n: "{{ item }}"}
            with_items: "{{ [1, 2, 3] }}"
            concurrency: 2
            retry: {count: 4, delay: 0.5, backoff: exponential, max_delay: 3, when: "{{ true }}"}
            timeout: 10
            delay: 1.5
          - name: j
            action: core.noop
            join: all
          - name: k
            action: core.noop
            join: 1
        """
    )
    t, j, k = spec.tasks
    assert t.input == {"n": "{{ item }}"}
    assert t.with_items == "{{ [1, 2, 3] }}"
    assert t.batch_size == 2  # `concurrency` is an alias of batch_size
    assert t.retry == RetryPolicy(count=4, delay=0.5, backoff="exponential", max_delay=3, when="{{ true }}")
    assert t.timeout == 10
    assert t.delay == 1.5
    assert j.join == "all"
    assert k.join == 1


def test_retry_shorthands() -> None:
    spec = spec_of(
        """\
        tasks:
          - {name: a, action: core.noop, retry: 2}
          - {name: b, action: core.noop, retry: {}}
          - {name: c, action: core.noop, retry: {when: true}}
        """
    )
    a, b, c = spec.tasks
    assert a.retry == RetryPolicy(count=2)
    assert b.retry == RetryPolicy(count=3, delay=0.0, backoff="constant")
    assert c.retry is not None
    assert c.retry.when == "{{ true }}"


def test_retry_delays_follow_the_backoff() -> None:
    assert [RetryPolicy(delay=2).delay_before(n) for n in (1, 2, 3)] == [2, 2, 2]
    assert [RetryPolicy(delay=2, backoff="linear").delay_before(n) for n in (1, 2, 3)] == [2, 4, 6]
    exponential = RetryPolicy(delay=2, backoff="exponential", max_delay=5)
    assert [exponential.delay_before(n) for n in (1, 2, 3)] == [2, 4, 5]


def test_parallel_group_and_its_sub_tasks() -> None:
    spec = spec_of(
        """\
        tasks:
          - name: checks
            type: parallel
            tasks:
              - {name: one, action: core.noop}
              - {name: two, action: core.echo, input: {x: 1}}
            on_success: done
          - name: done
            action: core.noop
        """
    )
    group = spec.tasks[0]
    assert group.is_parallel
    assert group.action is None
    assert [t.name for t in group.tasks] == ["one", "two"]
    assert spec.task("two") is group.tasks[1]
    assert spec.task("done") is spec.tasks[1]
    assert spec.task("nope") is None
    assert _when_do(group.next) == [(SUCCEEDED, ("done",))]


# -- sugar -> next -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "when"),
    [("on_success", SUCCEEDED), ("on_failure", FAILED), ("on_timeout", TIMED_OUT), ("on_complete", None)],
)
def test_each_sugar_key_becomes_one_transition(key: str, when: str | None) -> None:
    spec = spec_of(
        f"""\
        tasks:
          - name: a
            action: core.noop
            {key}: b
          - name: b
            action: core.noop
        """
    )
    assert _when_do(spec.tasks[0].next) == [(when, ("b",))]
    assert spec.tasks[0].next[0].derived


def test_sugar_is_normalised_after_next_in_spec_order() -> None:
    # Written in scrambled order: the result follows SPEC section 2 (next, decision, on_success,
    # on_failure, on_timeout, on_complete), whatever the order of the keys.
    spec = spec_of(
        """\
        tasks:
          - name: a
            action: core.noop
            on_complete: [f]
            on_timeout: e
            on_failure: d
            on_success: c
            decision:
              - when: "{{ parameters.x }}"
                next: b
            next:
              - do: g
          - {name: b, action: core.noop}
          - {name: c, action: core.noop}
          - {name: d, action: core.noop}
          - {name: e, action: core.noop}
          - {name: f, action: core.noop}
          - {name: g, action: core.noop}
        """
    )
    assert _when_do(spec.tasks[0].next) == [
        (None, ("g",)),
        ("{{ succeeded() and (parameters.x) }}", ("b",)),
        (SUCCEEDED, ("c",)),
        (FAILED, ("d",)),
        (TIMED_OUT, ("e",)),
        (None, ("f",)),
    ]


def test_decision_first_match_wins_then_default() -> None:
    spec = spec_of(
        """\
        tasks:
          - name: check
            action: core.noop
            decision:
              - when: "{{ parameters.env == 'prod' }}"
                next: approve
              - when: parameters.env in ['prod', 'staging']
                next: [test, lint]
              - default: deploy
          - {name: approve, action: core.noop}
          - {name: test, action: core.noop}
          - {name: lint, action: core.noop}
          - {name: deploy, action: core.noop}
        """
    )
    first, second, default = spec.tasks[0].next
    a, b = "parameters.env == 'prod'", "parameters.env in ['prod', 'staging']"
    assert first.when == f"{{{{ succeeded() and ({a}) }}}}"
    assert second.when == f"{{{{ succeeded() and ({b}) and not ({a}) }}}}"
    assert default.when == f"{{{{ succeeded() and not ({a}) and not ({b}) }}}}"
    assert (first.do, second.do, default.do) == (("approve",), ("test", "lint"), ("deploy",))
    assert first.written_when == f"{{{{ {a} }}}}"
    assert default.written_when is None

    # Evaluated as the engine does: exactly one branch fires, the first that matches.
    renderer = Renderer()

    def fired(env: str, ok: bool = True) -> list[tuple[str, ...]]:
        context: dict[str, Any] = {"succeeded": lambda: ok, "parameters": {"env": env}}
        return [t.do for t in spec.tasks[0].next if renderer.truthy(t.when, context)]

    assert fired("prod") == [("approve",)]  # the second branch matches too, but the first wins
    assert fired("staging") == [("test", "lint")]
    assert fired("dev") == [("deploy",)]
    assert fired("prod", ok=False) == []  # a decision is evaluated on success only


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ("b", ("b",)),
        ("'b, c'", ("b", "c")),
        ("'b,c,noop'", ("b", "c", "noop")),
        ("[b, c]", ("b", "c")),
    ],
)
def test_do_as_string_comma_string_or_list(targets: str, expected: tuple[str, ...]) -> None:
    spec = spec_of(
        f"""\
        tasks:
          - name: a
            action: core.noop
            next:
              - when: "{{{{ succeeded() }}}}"
                do: {targets}
            on_failure: {targets}
          - {{name: b, action: core.noop}}
          - {{name: c, action: core.noop}}
        """
    )
    assert [t.do for t in spec.tasks[0].next] == [expected, expected]


def test_engine_commands_are_valid_targets() -> None:
    spec = spec_of(
        """\
        tasks:
          - name: a
            action: core.noop
            on_failure: [retry]
            on_timeout: fail
            on_complete: noop
        """
    )
    assert [t.do for t in spec.tasks[0].next] == [("retry",), ("fail",), ("noop",)]


def test_next_when_as_boolean_or_absent() -> None:
    spec = spec_of(
        """\
        tasks:
          - name: a
            action: core.noop
            next:
              - when: true
                do: b
              - when: false
                do: b
              - do: b
          - {name: b, action: core.noop}
        """
    )
    assert [t.when for t in spec.tasks[0].next] == ["{{ true }}", "{{ false }}", None]


def test_publish_as_list_or_mapping_keeps_order() -> None:
    spec = spec_of(
        """\
        tasks:
          - name: a
            action: core.noop
            publish:
              - z: "{{ result() }}"
              - a: 1
            next:
              - publish: {y: 2, b: [1, {c: 3}]}
                do: b
          - name: b
            action: core.noop
            publish: {only: "{{ 1 }}", second: x}
        """
    )
    a, b = spec.tasks
    assert a.publish == (("z", "{{ result() }}"), ("a", 1))
    assert a.next[0].publish == (("y", 2), ("b", [1, {"c": 3}]))
    assert b.publish == (("only", "{{ 1 }}"), ("second", "x"))
    assert type(a.next[0].publish[1][1][1]) is dict


def test_published_list_entries_may_hold_several_names() -> None:
    spec = spec_of(
        """\
        tasks:
          - name: a
            action: core.noop
            publish:
              - {x: 1, y: 2}
              - z: 3
        """
    )
    assert spec.tasks[0].publish == (("x", 1), ("y", 2), ("z", 3))


# -- locations ------------------------------------------------------------------------------------


def test_nodes_keep_their_locations() -> None:
    text = textwrap.dedent(
        """\
        parameters:
          n: {type: integer}
        vars:
          v: "{{ parameters.n }}"
        tasks:
          - name: a
            action: core.noop
            input:
              deep: {list: [x, "{{ 1 }}"]}
            publish:
              - p: 1
            next:
              - when: "{{ succeeded() }}"
                publish: {q: 2}
                do: b
            decision:
              - when: "{{ true }}"
                next: b
              - default: b
            on_failure: b
          - name: b
            action: core.noop
        output_map:
          out: "{{ vars.v }}"
        """
    )
    spec, problems = parse(text, file="w.yaml")
    assert problems == []
    assert spec is not None

    def loc(needle: str, nth: int = 1) -> Location:
        line, column = at(text, needle, nth).split(":")
        return Location("w.yaml", int(line), int(column))

    a, b = spec.tasks
    assert spec.file == "w.yaml"
    assert a.location == loc("name: a")
    assert b.location == loc("name: b")
    assert spec.parameters[0].location == loc("n: {")
    assert spec.locations["tasks"] == loc("tasks:")
    assert spec.locations["vars.v"] == loc("v: ")
    assert spec.locations["output_map.out"] == loc("out:")
    assert a.locations["action"] == loc("action: core.noop")
    assert a.locations["input.deep"] == loc("deep:")
    assert a.locations["input.deep.list[1]"] == loc('"{{ 1 }}"')
    assert a.locations["publish.p"] == loc("p: 1")
    # next[0] is the explicit entry, next[1..2] the decision, next[3] on_failure.
    assert a.next[0].location == loc('when: "{{ succeeded')
    assert a.locations["next[0].when"] == loc('when: "{{ succeeded')
    assert a.locations["next[0].publish.q"] == loc("q: 2")
    assert a.locations["next[0].do"] == loc("do: b")
    assert a.locations["next[1].when"] == loc('when: "{{ true')
    assert a.locations["next[1].do"] == loc("next: b")
    assert a.locations["next[2].do"] == loc("default: b")
    assert a.next[3].location == loc("on_failure")
    assert a.locations["next[3].do"] == loc("on_failure")


def test_workflow_source_is_kept() -> None:
    text = "tasks:\n  - {name: a, action: core.noop}\n"
    spec, problems = parse(text)
    assert problems == []
    assert spec is not None
    assert spec.source == text
