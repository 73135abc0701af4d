"""Inquiries: the pending questions of one engine's executions, and the answers to them.

`Inquiries` owns every inquiry record: supervisors open and close them, `Engine.respond` answers
them through `answer`, which checks who answers and the response's JSON Schema before anything
reaches a workflow. Every change is published as an `inquiry` event.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from pykka import ActorDeadError, ActorRef

from attune_actors.engine.commands import OpenInquiry
from attune_actors.engine.events import EventBus
from attune_actors.engine.index import ExecutionIndex
from attune_actors.engine.messages import AnswerInquiry
from attune_actors.engine.state import iso
from attune_actors.errors import InquiryResponseError, NotFoundError
from attune_actors.kv import Masker
from attune_actors.statuses import CANCELED, PENDING, SUCCEEDED


@dataclass
class InquiryRecord:
    """A pending (or answered) inquiry: what to ask, who may answer, where the answer goes."""

    id: str
    execution_id: str
    run_id: str
    task: str
    prompt: str
    schema: dict[str, Any]
    users: list[str]
    roles: list[str]
    expires_at: float | None
    status: str = PENDING
    response: Any = None
    supervisor: ActorRef[Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "execution_id": self.execution_id,
            "task": self.task,
            "prompt": self.prompt,
            "schema": self.schema,
            "users": self.users,
            "roles": self.roles,
            "expires_at": iso(self.expires_at),
            "status": self.status,
            "response": self.response,
        }


class Inquiries:
    """Every inquiry of one engine, by id."""

    def __init__(self, executions: ExecutionIndex, events: EventBus, masker: Masker) -> None:
        self._records: dict[str, InquiryRecord] = {}
        self._executions = executions
        self._events = events
        self._masker = masker

    def open(self, execution_id: str, cmd: OpenInquiry, supervisor: ActorRef[Any]) -> None:
        inp = cmd.input
        record = self._records[cmd.inquiry_id] = InquiryRecord(
            id=cmd.inquiry_id,
            execution_id=execution_id,
            run_id=cmd.run_id,
            task=cmd.task,
            prompt=str(inp.get("prompt") or ""),
            schema=inp.get("schema") or {},
            users=list(inp.get("users") or ()),
            roles=list(inp.get("roles") or ()),
            expires_at=cmd.expires_at,
            supervisor=supervisor,
        )
        self._publish(record)

    def close(self, inquiry_id: str, status: str) -> None:
        """The inquiry ended unanswered (expired, canceled): it is no longer answerable."""
        record = self._records.get(inquiry_id)
        if record is not None and record.status == PENDING:
            record.status = status
            record.supervisor = None
            self._publish(record)

    def get(self, inquiry_id: str) -> InquiryRecord | None:
        return self._records.get(inquiry_id)

    def list(
        self, status: str | None = PENDING, execution_id: str | None = None
    ) -> builtins.list[InquiryRecord]:
        """Inquiries with `status` (None: any), of `execution_id` and its nested executions (None: all)."""
        root_of = self._executions.root_of
        return [
            r
            for r in self._records.values()
            if (status is None or r.status == status)
            and (execution_id is None or execution_id in (r.execution_id, root_of(r.execution_id)))
        ]

    def answer(self, inquiry_id: str, response: Any, identity: str | None = None) -> InquiryRecord:
        """Hand a response to the waiting workflow, after checking who answers and the schema.

        Raises InquiryResponseError (schema violation, identity not allowed, not pending) and
        leaves the inquiry pending; NotFoundError for an unknown id.
        """
        record = self._records.get(inquiry_id)
        if record is None:
            raise NotFoundError(f"no inquiry '{inquiry_id}'")
        if record.status != PENDING or record.supervisor is None:
            raise InquiryResponseError(f"inquiry '{inquiry_id}' is not pending (it is {record.status})")
        allowed_ids = (*record.users, *record.roles)
        if allowed_ids and identity not in allowed_ids:
            allowed = ", ".join([*record.users, *(f"role {r}" for r in record.roles)])
            raise InquiryResponseError(
                f"inquiry '{inquiry_id}' may only be answered by {allowed}, not {identity or 'anonymous'}"
            )
        check_response(record.schema, response, inquiry_id)
        supervisor = record.supervisor
        record.status, record.response, record.supervisor = SUCCEEDED, response, None
        try:
            supervisor.tell(AnswerInquiry(record.run_id, record.id, response))
        except ActorDeadError:
            record.status = CANCELED
            raise InquiryResponseError(f"inquiry '{inquiry_id}' is no longer pending") from None
        self._publish(record)
        return record

    def _publish(self, record: InquiryRecord) -> None:
        if self._events.active:
            event = {
                "type": "inquiry",
                "execution_id": record.execution_id,
                "root_id": self._executions.root_of(record.execution_id),
                **record.to_dict(),
            }
            self._events.publish(self._masker.mask(event))


def check_response(schema: dict[str, Any], response: Any, inquiry_id: str) -> None:
    """Raise InquiryResponseError naming the first schema violation (and where in the response)."""
    if not schema:
        return
    import jsonschema  # imported here: ~50 ms at start-up, needed only for an answer

    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InquiryResponseError(f"inquiry '{inquiry_id}' has an invalid schema: {exc.message}") from None
    error = jsonschema.exceptions.best_match(validator_cls(schema).iter_errors(response))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        at = f" at '{where}'" if where else ""
        raise InquiryResponseError(
            f"response to inquiry '{inquiry_id}' does not match its schema{at}: {error.message}"
        )


__all__ = ["Inquiries", "InquiryRecord", "check_response"]
