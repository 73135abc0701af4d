"""One test per validation rule (SPEC sections 2, 3 and 7).

Each writes a workflow into a copy of the test pack, validates the pack as `attune-actors validate`
does, and asserts the exact problems: `LINE:COLUMN: message`, pointing at the offending key or task.
The test pack's `testpack.square` takes `n: {type: integer, required: true}`.
"""

from __future__ import annotations

import pytest
from conftest import Check
from spec_helpers import at

# -- unknown keys, with the closest valid key --------------------------------------------------------


def test_unknown_workflow_key_names_the_closest(check: Check) -> None:
    text, problems = check(
        """\
        labl: x
        tasks:
          - {name: a, action: core.noop}
        """
    )
    assert problems == [f"{at(text, 'labl')}: unknown key 'labl' in workflow (did you mean 'label'?)"]


def test_unknown_task_key_names_the_closest(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            on_succes: b
          - name: b
            action: core.noop
        """
    )
    # The typo leaves `b` untargeted, which is fine: it is just another start task.
    assert problems == [
        f"{at(text, 'on_succes')}: unknown key 'on_succes' in task 'a' (did you mean 'on_success'?)"
    ]


def test_unknown_transition_key_names_the_closest(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            next:
              - when: "{{ succeeded() }}"
                dp: b
          - {name: b, action: core.noop}
        """
    )
    assert problems == [f"{at(text, 'dp:')}: unknown key 'dp' in task 'a' next (did you mean 'do'?)"]


def test_unknown_retry_key_names_the_closest(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            retry: {cout: 2}
        """
    )
    assert problems == [f"{at(text, 'cout')}: unknown key 'cout' in task 'a' retry (did you mean 'count'?)"]


def test_unknown_parameter_key_names_the_closest(check: Check) -> None:
    text, problems = check(
        """\
        parameters:
          n:
            type: integer
            requird: true
        tasks:
          - {name: a, action: core.noop}
        """
    )
    assert problems == [
        f"{at(text, 'requird')}: unknown key 'requird' in parameter 'n' (did you mean 'required'?)"
    ]


def test_unknown_decision_key_names_the_closest(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            decision:
              - when: "{{ true }}"
                nxt: b
              - default: b
          - {name: b, action: core.noop}
        """
    )
    # Sorted by position: the entry (at its first key) comes before its second key.
    assert problems == [
        f"{at(text, 'when')}: task 'a': decision entry needs 'next'",
        f"{at(text, 'nxt')}: unknown key 'nxt' in task 'a' decision (did you mean 'next'?)",
    ]


def test_unknown_key_without_a_close_one_lists_the_valid_keys(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            next:
              - zzz: 1
        """
    )
    assert problems == [
        f"{at(text, 'zzz')}: unknown key 'zzz' in task 'a' next (valid keys: do, publish, when)"
    ]


# -- names --------------------------------------------------------------------------------------------


def test_duplicate_task_names(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
          - name: a
            action: core.echo
        """
    )
    assert problems == [f"{at(text, 'name: a', 2)}: duplicate task name 'a' (first defined on line 2)"]


def test_duplicate_names_across_parallel_groups(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: group
            type: parallel
            tasks:
              - {name: a, action: core.noop}
          - name: a
            action: core.noop
        """
    )
    assert problems == [f"{at(text, 'name: a', 2)}: duplicate task name 'a' (first defined on line 5)"]


@pytest.mark.parametrize("name", ["task", "vars", "parameters", "item", "noop", "fail", "retry", "continue"])
def test_reserved_task_names(check: Check, name: str) -> None:
    text, problems = check(
        f"""\
        tasks:
          - name: {name}
            action: core.noop
        """
    )
    assert problems == [f"{at(text, 'name:')}: task '{name}': '{name}' is a reserved word"]


def test_task_name_must_be_a_name(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: "has space"
            action: core.noop
          - action: core.noop
        """
    )
    assert problems == [
        f"{at(text, 'name:')}: task #1: 'name' must be a name (letters, digits, _ and -), got 'has space'",
        f"{at(text, 'action', 2)}: task #2: 'name' must be a name (letters, digits, _ and -), got None",
    ]


def test_duplicate_yaml_keys(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            action: core.echo
        """
    )
    assert problems == [f"{at(text, 'action', 2)}: duplicate key 'action'"]


# -- the graph --------------------------------------------------------------------------------------


def test_transition_to_an_unknown_task_suggests_the_closest(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: build
            action: core.noop
            on_success: deplyo
            next:
              - do: [deploy, nowhere]
          - name: deploy
            action: core.noop
        """
    )
    assert problems == [
        f"{at(text, 'on_success')}: task 'build': transition to unknown task 'deplyo' "
        "(did you mean 'deploy'?)",
        f"{at(text, 'do:')}: task 'build': transition to unknown task 'nowhere'",
    ]


def test_transition_to_a_sub_task_of_a_parallel_group(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: start
            action: core.noop
            on_success: inner
          - name: group
            type: parallel
            tasks:
              - {name: inner, action: core.noop}
        """
    )
    assert problems == [
        f"{at(text, 'on_success')}: task 'start': cannot transition to 'inner', a sub-task of a parallel "
        "group (transition to the group instead)"
    ]


def test_no_start_task(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            on_success: b
          - name: b
            action: core.noop
            on_complete: a
        """
    )
    assert problems == [f"{at(text, 'tasks:')}: no start task: every task is the target of a transition"]


def test_task_no_start_task_leads_to(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: start
            action: core.noop
          - name: loop_a
            action: core.noop
            on_success: loop_b
          - name: loop_b
            action: core.noop
            on_success: loop_a
        """
    )
    assert problems == [
        f"{at(text, 'name: loop_a')}: task 'loop_a' can never run: no start task leads to it",
        f"{at(text, 'name: loop_b')}: task 'loop_b' can never run: no start task leads to it",
    ]


def test_join_larger_than_the_inbound_transitions(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            on_success: [c]
          - name: b
            action: core.noop
            on_success: c
          - name: c
            action: core.noop
            join: 3
        """
    )
    assert problems == [
        f"{at(text, 'join')}: task 'c': join 3 can never be satisfied: only 2 task(s) transition to it (a, b)"
    ]


def test_join_on_a_task_nothing_transitions_to(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            join: all
        """
    )
    assert problems == [f"{at(text, 'join')}: task 'a': 'join' on a task that no transition targets"]


def test_join_waiting_for_a_task_that_only_runs_after_it(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            on_success: j
          - name: j
            action: core.noop
            join: all
            on_success: b
          - name: b
            action: core.noop
            on_success: j
        """
    )
    assert problems == [
        f"{at(text, 'join')}: task 'j': join all can never be satisfied: 'b' cannot run before it"
    ]


def test_join_within_reach_is_valid(check: Check) -> None:
    _, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            on_success: [b, c]
          - name: b
            action: core.noop
            on_success: j
          - name: c
            action: core.noop
            on_failure: j
            on_success: b
          - name: j
            action: core.noop
            join: 2
            on_failure: c
        """
    )
    assert problems == []


def test_loops_are_allowed(check: Check) -> None:
    _, problems = check(
        """\
        tasks:
          - name: init
            action: core.noop
            on_success: step
          - name: step
            action: core.noop
            next:
              - when: "{{ vars.get('n', 0) < 3 }}"
                do: step
        """
    )
    assert problems == []


# -- parallel groups ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["next", "join", "on_success", "on_failure", "on_complete", "decision"])
def test_sub_tasks_of_a_parallel_group_may_not_have_transitions(check: Check, key: str) -> None:
    value = "[{default: b}]" if key == "decision" else ("1" if key == "join" else "b")
    if key == "next":
        value = "[{do: b}]"
    text, problems = check(
        f"""\
        tasks:
          - name: group
            type: parallel
            tasks:
              - name: sub
                action: core.noop
                {key}: {value}
            on_success: b
          - name: b
            action: core.noop
        """
    )
    assert problems == [
        f"{at(text, key + ':')}: task 'sub': sub-tasks of parallel group 'group' may not have '{key}' "
        "(put transitions on the group)"
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("with_items", "[1, 2]"),
        ("retry", "2"),
        ("batch_size", "1"),
        ("concurrency", "1"),
        ("action", "core.noop"),
        ("input", "{x: 1}"),
        ("timeout", "5"),
    ],
)
def test_keys_not_allowed_on_a_parallel_group(check: Check, key: str, value: str) -> None:
    text, problems = check(
        f"""\
        tasks:
          - name: group
            type: parallel
            {key}: {value}
            tasks:
              - {{name: sub, action: core.noop}}
        """
    )
    assert problems[0] == f"{at(text, key + ':')}: task 'group': '{key}' is not allowed on a parallel group"
    # batch_size/concurrency also need with_items; nothing else is reported.
    assert len(problems) == (2 if key in ("batch_size", "concurrency") else 1)


def test_parallel_groups_cannot_be_nested(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: outer
            type: parallel
            tasks:
              - name: inner
                type: parallel
                tasks:
                  - {name: leaf, action: core.noop}
        """
    )
    assert problems == [f"{at(text, 'type', 2)}: task 'inner': parallel groups cannot be nested"]


def test_parallel_group_needs_tasks(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: group
            type: parallel
            tasks: []
        """
    )
    assert problems == [
        f"{at(text, 'tasks: []')}: task 'group': a parallel group needs a non-empty 'tasks' list"
    ]


def test_tasks_only_on_parallel_groups(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            tasks:
              - {name: b, action: core.noop}
        """
    )
    assert problems == [f"{at(text, 'tasks:', 2)}: task 'a': 'tasks' is only allowed with 'type: parallel'"]


def test_task_type_must_be_action_or_parallel(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            type: paralel
            action: core.noop
        """
    )
    assert problems == [f"{at(text, 'type')}: task 'a': 'type' must be 'action' or 'parallel'"]


# -- ranges -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("batch_size", "0", "'batch_size' must be at least 1, got 0"),
        ("concurrency", "-1", "'concurrency' must be at least 1, got -1"),
        ("batch_size", "1.5", "'batch_size' must be an integer, got 1.5"),
        ("batch_size", "'two'", "'batch_size' must be an integer, got 'two'"),
    ],
)
def test_batch_size_range(check: Check, key: str, value: str, message: str) -> None:
    text, problems = check(
        f"""\
        tasks:
          - name: a
            action: core.echo
            with_items: [1, 2]
            {key}: {value}
        """
    )
    assert problems == [f"{at(text, key)}: task 'a': {message}"]


def test_batch_size_needs_with_items(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            batch_size: 2
        """
    )
    assert problems == [f"{at(text, 'batch_size')}: task 'a': 'batch_size' needs 'with_items'"]


def test_batch_size_and_concurrency_together(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.echo
            with_items: [1]
            batch_size: 1
            concurrency: 1
        """
    )
    assert problems == [
        f"{at(text, 'concurrency')}: task 'a': use 'batch_size' or its alias 'concurrency', not both"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("timeout", "-1", "'timeout' must be zero or more, got -1"),
        ("delay", "-0.5", "'delay' must be zero or more, got -0.5"),
        ("timeout", "soon", "'timeout' must be a number, got 'soon'"),
        ("delay", "true", "'delay' must be a number, got True"),
        ("timeout", ".nan", "'timeout' must be zero or more, got nan"),
    ],
)
def test_task_timeout_and_delay_ranges(check: Check, key: str, value: str, message: str) -> None:
    text, problems = check(
        f"""\
        tasks:
          - name: a
            action: core.noop
            {key}: {value}
        """
    )
    assert problems == [f"{at(text, key)}: task 'a': {message}"]


def test_workflow_timeout_range(check: Check) -> None:
    text, problems = check(
        """\
        timeout: -5
        tasks:
          - {name: a, action: core.noop}
        """
    )
    assert problems == [f"{at(text, 'timeout')}: workflow: 'timeout' must be zero or more, got -5"]


@pytest.mark.parametrize(
    ("retry", "needle", "message"),
    [
        ("{count: -1}", "count", "'count' must be zero or more, got -1"),
        ("{count: 1.5}", "count", "'count' must be an integer, got 1.5"),
        ("{delay: -1}", "delay", "'delay' must be zero or more, got -1"),
        ("{max_delay: -2}", "max_delay", "'max_delay' must be zero or more, got -2"),
        ("-3", "retry", "'count' must be zero or more, got -3"),
    ],
)
def test_retry_ranges(check: Check, retry: str, needle: str, message: str) -> None:
    text, problems = check(
        f"""\
        tasks:
          - name: a
            action: core.noop
            retry: {retry}
        """
    )
    assert problems == [f"{at(text, needle)}: task 'a' retry: {message}"]


def test_retry_backoff_must_be_known(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            retry: {backoff: quadratic}
        """
    )
    assert problems == [
        f"{at(text, 'backoff')}: task 'a': retry 'backoff' must be one of constant, linear, exponential, "
        "got 'quadratic'"
    ]


def test_retry_must_be_a_mapping_or_count(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            retry: [1]
        """
    )
    assert problems == [
        f"{at(text, 'retry')}: task 'a': 'retry' must be a mapping (count, delay, backoff, max_delay, when)"
    ]


@pytest.mark.parametrize(
    ("value", "shown"), [("0", "0"), ("-2", "-2"), ("some", "'some'"), ("true", "True"), ("1.5", "1.5")]
)
def test_join_values(check: Check, value: str, shown: str) -> None:
    text, problems = check(
        f"""\
        tasks:
          - name: a
            action: core.noop
            on_success: b
          - name: b
            action: core.noop
            join: {value}
        """
    )
    assert problems == [
        f"{at(text, 'join')}: task 'b': 'join' must be 'all' or a whole number of at least 1, got {shown}"
    ]


# -- shapes ---------------------------------------------------------------------------------------------


def test_workflow_needs_tasks(check: Check) -> None:
    text, problems = check("label: nothing to do\n")
    assert problems == ["1:1: a workflow needs a non-empty 'tasks' list"]
    text, problems = check("tasks: {a: 1}\n")
    assert problems == [f"{at(text, 'tasks')}: a workflow needs a non-empty 'tasks' list"]


def test_workflow_must_be_a_mapping(check: Check) -> None:
    _, problems = check("- name: a\n  action: core.noop\n")
    assert problems == ["1:1: a workflow must be a YAML mapping with a 'tasks' list"]


def test_task_must_be_a_mapping(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - {name: a, action: core.noop}
          - just a string
        """
    )
    assert problems == [f"{at(text, 'just')}: each task must be a mapping with at least 'name'"]


def test_action_must_be_a_pack_ref(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: noop
          - name: b
        """
    )
    assert problems == [
        f"{at(text, 'action')}: task 'a': 'action' must be '<pack>.<action>', got 'noop'",
        f"{at(text, 'name: b')}: task 'b': 'action' must be '<pack>.<action>', got None",
    ]


def test_workflow_ref_must_be_in_its_pack(check: Check) -> None:
    text, problems = check(
        """\
        ref: otherpack.flow
        tasks:
          - {name: a, action: core.noop}
        """
    )
    assert problems == [
        f"{at(text, 'ref')}: workflow ref 'otherpack.flow' must be '<pack>.<name>' in pack 'testpack'"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("vars", "[1]", "'vars' must be a mapping"),
        ("output_map", "out", "'output_map' must be a mapping"),
        ("parameters", "[n]", "'parameters' must be a mapping of name to declaration"),
        ("cancellation_policy", "kill", "'cancellation_policy' must be one of allow_finish, cancel_running"),
        ("label", "[x]", "'label' must be a string"),
    ],
)
def test_top_level_shapes(check: Check, key: str, value: str, message: str) -> None:
    text, problems = check(
        f"""\
        {key}: {value}
        tasks:
          - {{name: a, action: core.noop}}
        """
    )
    assert problems == [f"{at(text, key)}: {message}"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("input", "[1]", "'input' must be a mapping"),
        ("with_items", "7", "'with_items' must be a template or a list"),
        ("publish", "x", "'publish' must be a mapping or a list of mappings"),
        ("next", "b", "'next' must be a list of {when, publish, do}"),
        ("decision", "b", "'decision' must be a list of {when, next} and one {default}"),
        ("on_success", "[1]", "targets must be a task name or a list of task names, got [1]"),
        ("on_failure", "''", "targets must be a task name or a list of task names, got ''"),
    ],
)
def test_task_shapes(check: Check, key: str, value: str, message: str) -> None:
    text, problems = check(
        f"""\
        tasks:
          - name: a
            action: core.echo
            {key}: {value}
          - name: b
            action: core.noop
        """
    )
    assert problems == [f"{at(text, key)}: task 'a': {message}"]


def test_publish_entries(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            publish:
              - just_a_name
              - not-an-identifier: 1
        """
    )
    assert problems == [
        f"{at(text, 'just')}: task 'a': each 'publish' entry must be a mapping of name to template",
        f"{at(text, 'not-an')}: task 'a': published name 'not-an-identifier' must be an identifier",
    ]


def test_next_entries_must_be_mappings(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            next:
              - b
        """
    )
    assert problems == [f"{at(text, '- b')[:-1]}9: task 'a': each 'next' entry must be a mapping"]


# -- decision -------------------------------------------------------------------------------------------


def test_decision_default_must_come_last_and_once(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            decision:
              - default: b
              - when: "{{ true }}"
                next: b
              - default: b
          - {name: b, action: core.noop}
        """
    )
    assert problems == [
        f"{at(text, 'default')}: task 'a': the decision 'default' must come last",
        f"{at(text, 'default', 2)}: task 'a': a decision has at most one 'default'",
    ]


def test_decision_when_must_be_one_expression(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            decision:
              - when: "{{ a }} and {{ b }}"
                next: b
              - when: 3
                next: b
          - {name: b, action: core.noop}
        """
    )
    assert problems == [
        f"{at(text, 'when')}: task 'a': a decision 'when' must be one {{{{ expression }}}}, "
        "got '{{ a }} and {{ b }}'",
        f"{at(text, 'when', 2)}: task 'a': a decision 'when' must be one {{{{ expression }}}}, got 3",
    ]


def test_decision_entries_need_when_and_next(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            decision:
              - next: b
              - when: "{{ true }}"
              - oops
          - {name: b, action: core.noop}
        """
    )
    assert problems == [
        f"{at(text, 'next: b')}: task 'a': decision entry needs 'when' (or use 'default')",
        f"{at(text, 'when')}: task 'a': decision entry needs 'next'",
        f"{at(text, 'oops')}: task 'a': each decision entry must be a mapping",
    ]


# -- parameters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decl", "needle", "message"),
    [
        ("{type: strng}", "type", "unknown type 'strng' (did you mean 'string'?)"),
        ("{type: int}", "type", "unknown type 'int' (did you mean 'integer'?)"),
        ("{type: integer, default: 'x'}", "default", "default must be of type integer, got string 'x'"),
        ("{enum: [a, b], default: c}", "default", "default must be one of 'a', 'b', got 'c'"),
        ("{enum: a}", "enum", "'enum' must be a list"),
        ("{required: yes please}", "required", "'required' must be true or false"),
        ("{secret: 1}", "secret", "'secret' must be true or false"),
    ],
)
def test_parameter_declarations(check: Check, decl: str, needle: str, message: str) -> None:
    text, problems = check(
        f"""\
        parameters:
          p: {decl}
        tasks:
          - {{name: a, action: core.noop}}
        """
    )
    assert problems == [f"{at(text, needle)}: parameter 'p': {message}"]


def test_parameter_names_and_declarations_shapes(check: Check) -> None:
    text, problems = check(
        """\
        parameters:
          not-ok: {}
          p: string
        tasks:
          - {name: a, action: core.noop}
        """
    )
    assert problems == [
        f"{at(text, 'not-ok')}: parameter name 'not-ok' must be an identifier",
        f"{at(text, 'p: string')}: parameter 'p' must be a mapping",
    ]


# -- actions and their inputs --------------------------------------------------------------------------


def test_action_ref_that_resolves_in_no_pack(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: testpack.sqare
          - name: b
            action: nopack.thing
        """
    )
    assert problems == [
        f"{at(text, 'action')}: task 'a': unknown action 'testpack.sqare' (did you mean 'testpack.square'?)",
        f"{at(text, 'action', 2)}: task 'b': unknown action 'nopack.thing'",
    ]


def test_literal_input_of_the_wrong_type(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: testpack.square
            input:
              n: "3"
          - name: b
            action: core.http
            input:
              url: http://x.test
              method: FETCH
              verify_ssl: "{{ parameters.x }}"
        """
    )
    n_at = at(text, 'n: "3"')
    assert problems == [
        f"{n_at}: task 'a' (action testpack.square): input 'n' must be of type integer, got string '3'",
        f"{at(text, 'method')}: task 'b' (action core.http): input 'method' must be one of 'GET', 'POST', "
        "'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', got 'FETCH'",
    ]


def test_unknown_input_names_the_closest_parameter(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: testpack.square
            input:
              n: 2
              nn: 3
          - name: b
            action: core.echo
            input: {anything: 1}
        """
    )
    assert problems == [
        f"{at(text, 'nn:')}: task 'a' (action testpack.square): unknown input 'nn' (did you mean 'n'?)"
    ]


def test_missing_required_input(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: testpack.square
          - name: b
            action: core.local
            input: {cwd: /tmp}
        """
    )
    assert problems == [
        f"{at(text, 'name: a')}: task 'a' (action testpack.square): missing required input 'n'",
        f"{at(text, 'input')}: task 'b' (action core.local): missing required input 'cmd'",
    ]


def test_inputs_of_a_nested_workflow_are_its_parameters(check: Check, pack_root: object) -> None:
    from pathlib import Path

    assert isinstance(pack_root, Path)
    child = pack_root / "testpack" / "workflows" / "child.yaml"
    child.parent.mkdir(exist_ok=True)
    child.write_text(
        "parameters:\n  size: {type: integer, required: true}\ntasks:\n  - {name: a, action: core.noop}\n",
        encoding="utf-8",
    )
    text, problems = check(
        """\
        tasks:
          - name: a
            action: testpack.child
            input: {size: big}
        """
    )
    assert problems == [
        f"{at(text, 'size')}: task 'a' (action testpack.child): input 'size' must be of type integer, "
        "got string 'big'"
    ]


def test_workflow_that_calls_itself(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: again
            action: testpack.wf
        """
    )
    assert problems == [f"{at(text, 'action')}: workflow calls itself: testpack.wf -> testpack.wf"]


# -- templates -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "snippet", "label"),
    [
        ("input", "input: {x: '{{ 1 + }}'}", "input.x"),
        ("with_items", "with_items: '{{ [1, 2 }}'", "with_items"),
        ("publish", "publish: [{p: '{{ result( }}'}]", "publish.p"),
        ("retry", "retry: {when: '{{ error( }}'}", "retry.when"),
        ("next", "next: [{when: '{{ succeeded( }}', do: b}]", "next[0].when"),
        ("next", "next: [{publish: {q: '{% if %}'}, do: b}]", "next[0].publish.q"),
        ("decision", "decision: [{when: '{{ 1 + }}', next: b}]", "next[0].when"),
    ],
)
def test_template_syntax_errors_in_tasks(check: Check, key: str, snippet: str, label: str) -> None:
    text, problems = check(
        f"""\
        tasks:
          - name: a
            action: core.echo
            {snippet}
          - name: b
            action: core.noop
        """
    )
    assert len(problems) == 1, problems
    position, message = problems[0].split(": ", 1)
    inner = snippet.split(": ", 1)[1]
    needle = {"input": "x:", "publish": "p:", "retry": "when", "next": "when" if "when" in inner else "q:"}
    expected = at(text, needle.get(key, "when" if key == "decision" else key))
    assert position == expected
    assert message.startswith(f"task 'a' {label}: syntax error")


def test_template_syntax_errors_in_vars_and_output_map(check: Check) -> None:
    text, problems = check(
        """\
        vars:
          v: "{{ parameters.x ! }}"
        tasks:
          - {name: a, action: core.noop}
        output_map:
          nested:
            out: "{% for %}"
        """
    )
    assert [p.split(": syntax error")[0] for p in problems] == [
        f"{at(text, 'v:')}: vars.v",
        f"{at(text, 'out:')}: output_map.nested.out",
    ]


def test_condition_without_braces_is_checked_as_an_expression(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.noop
            next:
              - when: succeeded() and
                do: b
          - {name: b, action: core.noop}
        """
    )
    assert len(problems) == 1
    assert problems[0].startswith(f"{at(text, 'when')}: task 'a' next[0].when: syntax error")


def test_refused_template_tags_are_errors(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: a
            action: core.echo
            input:
              x: "{% include 'other' %}"
        """
    )
    assert len(problems) == 1
    assert problems[0].startswith(f"{at(text, 'x:')}: task 'a' input.x: ")
    assert "include" in problems[0]


def test_reference_to_an_undefined_task(check: Check) -> None:
    text, problems = check(
        """\
        tasks:
          - name: build
            action: core.echo
            input:
              image: "{{ task.biuld.result.image }}"
            publish:
              - x: "{{ task['nothing'].result }}"
            next:
              - when: "{{ task.build.status == 'succeeded' and task.other }}"
                do: group
          - name: group
            type: parallel
            tasks:
              - {name: sub, action: core.echo, input: {r: "{{ task.sub.result }}"}}
        output_map:
          out: "{{ task.gone.result }}"
        """
    )
    assert problems == [
        f"{at(text, 'image')}: task 'build' input.image: reference to undefined task 'task.biuld' "
        "(did you mean 'build'?)",
        f"{at(text, 'x:')}: task 'build' publish.x: reference to undefined task 'task.nothing'",
        f"{at(text, 'when')}: task 'build' next[0].when: reference to undefined task 'task.other'",
        f"{at(text, 'out:')}: output_map.out: reference to undefined task 'task.gone'",
    ]


# -- several problems at once ---------------------------------------------------------------------


def test_every_problem_of_a_file_is_reported_in_file_order(check: Check) -> None:
    text, problems = check(
        """\
        labell: x
        tasks:
          - name: one
            action: core.noop
            on_succes: two
            retry: {count: -1}
            timeout: -1
            input:
              a: "{{ task.zwo.result }}"
          - name: two
            action: testpack.square
            input:
              n: "abc"
            join: 3
          - name: vars
            action: core.nope
            next:
              - when: "{{ succeeded( }}"
                do: three
          - name: one
            action: core.echo
        """
    )
    n_at = at(text, 'n: "abc"')
    assert problems == [
        f"{at(text, 'labell')}: unknown key 'labell' in workflow (did you mean 'label'?)",
        f"{at(text, 'on_succes')}: unknown key 'on_succes' in task 'one' (did you mean 'on_success'?)",
        f"{at(text, 'count')}: task 'one' retry: 'count' must be zero or more, got -1",
        f"{at(text, 'timeout')}: task 'one': 'timeout' must be zero or more, got -1",
        f"{at(text, 'a: ')}: task 'one' input.a: reference to undefined task 'task.zwo' "
        "(did you mean 'two'?)",
        f"{n_at}: task 'two' (action testpack.square): input 'n' must be of type integer, got string 'abc'",
        f"{at(text, 'join')}: task 'two': 'join' on a task that no transition targets",
        f"{at(text, 'name: vars')}: task 'vars': 'vars' is a reserved word",
        f"{at(text, 'action: core.nope')}: task 'vars': unknown action 'core.nope' "
        "(did you mean 'core.noop'?)",
        f"{at(text, 'when')}: task 'vars' next[0].when: syntax error: unexpected '}}', expected ')' "
        "(in template '{{ succeeded( }}')",
        f"{at(text, 'do: three')}: task 'vars': transition to unknown task 'three'",
        f"{at(text, 'name: one', 2)}: duplicate task name 'one' (first defined on line 3)",
    ]


def test_the_example_pack_is_valid() -> None:
    from spec_helpers import EXAMPLES, lines

    from attune_actors.spec.validate import validate_paths

    assert lines(validate_paths([EXAMPLES])) == []
