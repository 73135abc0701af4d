"""The actor layer: pykka actors on asyncio, supervised parent/child trees, a pool for blocking code.

Public API (everything else in this package may change):

- `AsyncioActor`: a `pykka.Actor` whose inbox, message loop and futures live on the running loop;
  `spawn()` children, supervise them with `supervisor_strategy` / `on_child_failure()`.
- `AsyncioFuture`: the future `ask()` returns; `await` it on a loop, `get()` it from a thread.
- `Directive`: `RESTART`, `STOP`, `ESCALATE`, what a parent does with a failed child.
- `BlockingPool`: a bounded thread pool awaited from the loop (`await pool.run(fn, *args)`).
- `deliver_burst(call, args)`: from a loop callback, `call` each arg, then run the actors woken.
- `running_actors()`, `stop_all_actors()`, `wait_all_stopped()`: population helpers for tests and shutdown.
"""

from attune_actors.actors._actor import AsyncioActor
from attune_actors.actors._future import AsyncioFuture
from attune_actors.actors._inbox import deliver_burst
from attune_actors.actors._pool import BlockingPool
from attune_actors.actors._population import running_actors, stop_all_actors, wait_all_stopped
from attune_actors.actors._supervision import Directive

__all__ = [
    "AsyncioActor",
    "AsyncioFuture",
    "BlockingPool",
    "Directive",
    "deliver_burst",
    "running_actors",
    "stop_all_actors",
    "wait_all_stopped",
]
