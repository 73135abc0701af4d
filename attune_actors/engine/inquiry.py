"""Inquiry responses: checked against the inquiry's JSON Schema before they reach a workflow."""

from __future__ import annotations

from typing import Any

import jsonschema

from attune_actors.errors import InquiryResponseError


def check_response(schema: dict[str, Any], response: Any, inquiry_id: str) -> None:
    """Raise InquiryResponseError naming the first schema violation (and where in the response)."""
    if not schema:
        return
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
