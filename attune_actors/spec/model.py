"""The typed, immutable model of packs, actions and workflows, as the loader produces it.

Everything here is plain data: frozen dataclasses with slots, no behaviour beyond small lookups.
Sugar (`on_success`, `decision`, ...) is already normalised into `TaskSpec.next`, so the engine only
knows one transition shape. Every node keeps its `Location` for error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attune_actors.errors import Location

if TYPE_CHECKING:
    from attune_actors.spec.rules import RuleSpec, SensorSpec

PARAMETER_TYPES = ("string", "integer", "number", "boolean", "array", "object")
BACKOFFS = ("constant", "linear", "exponential")
CANCELLATION_POLICIES = ("allow_finish", "cancel_running")
# Engine commands may appear in a transition's `do` list in place of a task name.
ENGINE_COMMANDS = ("noop", "fail", "retry")
RESERVED_NAMES = frozenset(
    (
        "task",
        "vars",
        "parameters",
        "pack",
        "system",
        "kv",
        "item",
        "index",
        *ENGINE_COMMANDS,
        "continue",
    )
)
BUILTIN_RUNNERS = ("python", "local", "http", "noop", "echo", "sleep", "inquiry", "workflow")


class _Missing:
    """Marks a parameter without a default (None is a valid default)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One declared parameter of a workflow or action."""

    name: str
    type: str | None = None  # None accepts any JSON value
    required: bool = False
    default: Any = MISSING
    enum: tuple[Any, ...] | None = None
    description: str = ""
    secret: bool = False
    location: Location | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING


@dataclass(frozen=True, slots=True)
class Transition:
    """One canonical `next` entry: when `when` holds, publish, then schedule each of `do`."""

    when: str | None = None  # template source; None means "on completion, whatever the status"
    publish: tuple[tuple[str, Any], ...] = ()
    do: tuple[str, ...] = ()
    location: Location | None = None
    # Sugar (`on_success`, `decision`, ...) builds `when` itself; `derived` marks such transitions, and
    # `written_when` keeps the condition as the user wrote it (a decision branch), which is what
    # validation checks and reports.
    derived: bool = False
    written_when: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`retry:` on a task: extra attempts of the same task run."""

    count: int = 3
    delay: float = 0.0
    backoff: str = "constant"
    max_delay: float | None = None
    when: str | None = None  # template on error()/result(); None: any failure or timeout

    def delay_before(self, n: int) -> float:
        """Seconds to wait before retry number `n` (1-based), per SPEC section 7."""
        if self.backoff == "linear":
            d = self.delay * n
        elif self.backoff == "exponential":
            d = self.delay * (2 ** (n - 1))
        else:
            d = self.delay
        if self.max_delay is not None:
            d = min(d, self.max_delay)
        return d


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task of a workflow (or a sub-task of a parallel group)."""

    name: str
    action: str | None = None  # None only for parallel groups
    input: dict[str, Any] = field(default_factory=dict)
    type: str = "action"  # "action" | "parallel"
    tasks: tuple[TaskSpec, ...] = ()  # sub-tasks of a parallel group
    with_items: Any = None  # template (usually) or literal list
    batch_size: int | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    delay: float | None = None
    join: int | str | None = None  # None, "all" or N
    publish: tuple[tuple[str, Any], ...] = ()
    next: tuple[Transition, ...] = ()
    location: Location | None = None
    # Where each key was written, by path as validation names it: "action", "join", "input.url",
    # "publish.x", "next[0].when", "next[0].do" (sugar: the sugar key), ...
    locations: dict[str, Location] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_parallel(self) -> bool:
        return self.type == "parallel"


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A whole workflow definition, normalised."""

    ref: str
    pack: str
    tasks: tuple[TaskSpec, ...]
    label: str = ""
    description: str = ""
    version: str = ""
    parameters: tuple[ParamSpec, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict)
    output_map: dict[str, Any] | None = None
    timeout: float | None = None
    cancellation_policy: str = "allow_finish"
    file: str = ""
    source: str = ""  # the YAML text it was loaded from (definitions are stored with it)
    # Where each top-level key and each entry of `vars`/`output_map` was written ("tasks", "vars.x").
    locations: dict[str, Location] = field(default_factory=dict, compare=False, repr=False)

    def task(self, name: str) -> TaskSpec | None:
        """The task (or parallel sub-task) called `name`."""
        for t in self.tasks:
            if t.name == name:
                return t
            for sub in t.tasks:
                if sub.name == name:
                    return sub
        return None


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """An action: a runnable unit (`runner_type` + entry point) or a workflow (`workflow` set)."""

    ref: str  # "<pack>.<name>"
    pack: str
    name: str
    runner_type: str
    entry_point: str | None = None  # python: file under actions/; local: command template
    parameters: tuple[ParamSpec, ...] = ()
    # True when the action takes inputs it does not declare (core.echo, core.noop).
    additional_parameters: bool = False
    timeout: float | None = None
    description: str = ""
    pack_path: str = ""  # the pack's directory, where entry points are resolved
    workflow: WorkflowSpec | None = None
    location: Location | None = None

    @property
    def is_workflow(self) -> bool:
        return self.workflow is not None


@dataclass(frozen=True, slots=True)
class PackSpec:
    """A loaded pack: metadata, configuration and its actions (workflows included)."""

    ref: str
    path: str
    label: str = ""
    description: str = ""
    version: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    config_schema: dict[str, Any] | None = None
    actions: dict[str, ActionSpec] = field(default_factory=dict)  # by full ref
    rules: tuple[RuleSpec, ...] = ()
    sensors: tuple[SensorSpec, ...] = ()
    location: Location | None = None  # where its ref was written (pack.yaml)
