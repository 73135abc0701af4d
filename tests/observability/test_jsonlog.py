"""`logging.format: json`: one JSON object per line, with the ids, and secrets masked."""

from __future__ import annotations

import io
import json
import logging

from attune_actors import Engine, logctx
from attune_actors.kv.masking import default_masker
from attune_actors.observability.jsonlog import JsonFormatter


def json_handler() -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logctx.install(handler)
    handler.setFormatter(JsonFormatter())
    return handler, stream


async def test_engine_records_are_json_lines_with_ids(workflow, engine_factory) -> None:
    ref = workflow(
        "talky",
        """
        tasks:
          - {name: speak, action: testpack.talk, input: {message: hello there}}
        """,
    )
    handler, stream = json_handler()
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        engine: Engine = await engine_factory()
        execution = await engine.execute(ref)
        assert (await engine.wait(execution.id, timeout=10)).status == "succeeded"
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [spoken] = [line for line in lines if line["logger"] == "testpack.talk"]
    assert spoken["execution_id"] == execution.id
    assert spoken["task"] == "speak"
    assert spoken["level"] == "WARNING"
    assert spoken["time"].endswith("Z")
    assert all(set(line) >= {"time", "level", "logger", "message", "execution_id", "task"} for line in lines)


def test_secrets_and_tracebacks_are_masked_in_json_lines() -> None:
    default_masker().add("hunter2-json")
    handler, stream = json_handler()
    log = logging.getLogger("attune_actors.test_jsonlog")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("token is %s", "hunter2-json")
        try:
            raise RuntimeError("bad token hunter2-json")
        except RuntimeError:
            log.exception("it broke")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "token is ***"
    assert first["execution_id"] is None
    assert "hunter2-json" not in stream.getvalue()
    assert "RuntimeError: bad token ***" in second["exception"]
