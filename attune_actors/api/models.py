"""The HTTP API's request and response shapes, as typed models: the OpenAPI document is built from them.

Responses are the engine's own documents (SPEC sections 6 and 9) passed through as JSON; these
models describe them for `/openapi.json` and the schema-driven tests check that they agree.
Requests are validated against them before a route runs: unknown fields are refused (so a body can
never claim an identity: that comes from the bearer token).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from attune_actors.statuses import Status


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors


class ErrorDetail(_Response):
    code: str = Field(description="stable error code (docs/http.md), the same as on NATS")
    message: str = Field(description="what went wrong and where, in one line (or one per problem)")
    errors: list[str] | None = Field(default=None, description="every problem of an invalid workflow")


class ErrorBody(_Response):
    error: ErrorDetail


# -- executions


class TaskRun(_Response):
    id: str
    name: str
    status: Status
    result: Any = None
    error: str | None = None
    attempts: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    items: list[dict[str, Any]] | None = Field(default=None, description="with_items: one entry per item")
    inquiry_id: str | None = Field(default=None, description="the pending inquiry of an inquiry task")


class ExecutionError(_Response):
    message: str
    task: str | None = None


class Execution(_Response):
    """The execution document (SPEC section 6)."""

    id: str
    ref: str
    status: Status
    parameters: dict[str, Any] = {}
    output: Any = None
    error: ExecutionError | None = None
    started_at: str | None = None
    ended_at: str | None = None
    parent_id: str | None = None
    tasks: list[TaskRun] = []


class ExecutionList(_Response):
    executions: list[Execution]


class TaskList(_Response):
    tasks: list[TaskRun]


class ExecuteRequest(_Request):
    parameters: dict[str, Any] = Field(default_factory=dict, description="the workflow's input parameters")


class CancelRequest(_Request):
    force: bool = Field(
        default=False, description="stop running tasks whatever the workflow's cancellation policy"
    )


class RerunRequest(_Request):
    tasks: list[str] | None = Field(
        default=None, description="run again from these tasks (default: the failed ones)"
    )
    reset_items: bool = Field(
        default=False, description="with_items tasks run every item again, not only failed ones"
    )


# -- graph


class GraphNode(_Response):
    id: str = Field(description="the task name")
    kind: Literal["action", "parallel", "workflow", "inquiry"]
    action: str | None = None
    status: Status | None = Field(default=None, description="the latest run's status; null if it never ran")
    runs: int
    join: int | str | None = None
    group: str | None = Field(default=None, description="the parallel group a sub-task belongs to")


class GraphEdge(_Response):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    when: str | None = Field(default=None, description="the transition's condition (null: on completion)")
    taken: bool = Field(description="whether a run of `from` fired this transition")


class Graph(_Response):
    """The graph document (SPEC section 9)."""

    execution_id: str
    ref: str
    status: Status
    nodes: list[GraphNode]
    edges: list[GraphEdge]


# -- workflows


class Parameter(_Response):
    type: str | None = None
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    description: str = ""
    secret: bool = False


class Workflow(_Response):
    ref: str
    pack: str
    label: str = ""
    description: str = ""
    version: str = ""
    file: str = ""
    runtime_defined: bool = Field(description="put through the API (can be changed and deleted there)")
    parameters: dict[str, Parameter]
    parameters_schema: dict[str, Any] = Field(
        description="JSON Schema of the execute request's `parameters` (for generated forms)"
    )
    source: str = Field(description="the YAML definition")


class WorkflowList(_Response):
    workflows: list[Workflow]


# -- inquiries


class Inquiry(_Response):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    execution_id: str
    task: str
    prompt: str
    schema_: dict[str, Any] = Field(
        alias="schema", description="JSON Schema a response must validate against"
    )
    users: list[str] = []
    roles: list[str] = []
    expires_at: str | None = None
    status: str
    response: Any = None


class InquiryList(_Response):
    inquiries: list[Inquiry]


class RespondRequest(_Request):
    response: Any = Field(description="the answer; it must validate against the inquiry's schema")


# -- system


class Health(_Response):
    status: Literal["ok"]
    version: str


class Whoami(_Response):
    identity: str | None = Field(description="who the bearer token says the caller is (null: no tokens)")
    role: Literal["viewer", "operator", "admin"]
    auth: bool = Field(description="whether the server checks tokens (false: loopback only, no tokens)")
