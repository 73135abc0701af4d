from attune_actors.errors import ActionError


def run(n: int) -> int:
    if n < 0:
        raise ActionError(f"negative: {n}")
    return n * n
