import json

from attune_actors.errors import ActionError


def run(run_context, succeed_on: int = 2, log_file: str | None = None):
    if log_file:
        with open(log_file, "a", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {
                        "run_id": run_context.run_id,
                        "item": run_context.item_index,
                        "attempt": run_context.attempt,
                    }
                )
                + "\n"
            )
    if run_context.attempt < succeed_on:
        raise ActionError(f"attempt {run_context.attempt} failed")
    return {"attempt": run_context.attempt}
