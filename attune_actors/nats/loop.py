"""The event loop `attune-actors serve` and `attune-actors worker` run on (their `--loop`).

`auto` (the default) is uvloop where it is installed (a dependency, except on Windows), else
asyncio's own loop; `uvloop` insists on it; `asyncio` is the standard loop. A NATS hop is mostly
wake-ups (a read, the client's parser, a callback, a write), which uvloop makes cheaper: see
docs/perf/round2.md. The embedded `Engine` API leaves the loop to the application.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from attune_actors.errors import ConfigError

T = TypeVar("T")

LOOPS = ("auto", "uvloop", "asyncio")


def add_argument(parser: Any) -> None:
    """The `--loop` option of a command that runs an engine or a worker."""
    parser.add_argument(
        "--loop", choices=LOOPS, default="auto",
        help="event loop: uvloop where installed (auto, the default), uvloop, or asyncio's own",
    )


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the named loop (None: asyncio's default); ConfigError if it is not available."""
    if name not in LOOPS:
        raise ConfigError(f"--loop: {name!r} is not one of {', '.join(LOOPS)}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError("--loop uvloop: uvloop is not installed (pip install uvloop; "
                              "it does not exist for Windows)") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(name: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`main()` on a new loop of the named kind, like `asyncio.run`."""
    factory = loop_factory(name)  # before the coroutine exists: a bad choice leaves nothing unawaited
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def running_loop_name() -> str:
    """`uvloop` or `asyncio`: the kind of the running loop (for logs)."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
