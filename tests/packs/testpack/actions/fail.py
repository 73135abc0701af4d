from attune_actors.errors import ActionError


def run(message: str = "boom") -> None:
    raise ActionError(message, result={"partial": True})
