"""Actor layer benchmark: AsyncioActor, a bare asyncio-queue actor (the floor) and pykka's ThreadingActor.

One run measures, side by side:

- tell throughput: N tells from a coroutine (a thread for ThreadingActor), in batches of 1,000 each
  followed by a round trip, until the last is handled;
- ask round trips: sequential `await ref.ask(msg, block=False)` (a blocking `ask` for ThreadingActor,
  whose caller and actor threads are pinned to two CPUs, as the scheduler places them on an idle
  machine; its best case, both on one CPU, is shown too);
- start rate and RSS per idle actor at each size (default 10,000 and 100,000 actors), each measured
  in a fresh subprocess so the figures are not polluted by earlier measurements;
- for AsyncioActor, a few extra rows: `await proxy.method()`, tells from another thread, and the cost
  of pykka's ActorRegistry for short-lived actors while N idle actors are registered.

Throughput figures are medians of `--repeat` interleaved runs; idle figures medians of `--idle-repeat`
subprocesses. Ratios are medians of back-to-back pairs measured in the same run. Default run: about a
minute on 2 cores.

    .venv/bin/python bench/actors.py             # the recorded run
    .venv/bin/python bench/actors.py --quick     # a smoke run, a few seconds
    .venv/bin/python bench/actors.py --markdown  # same, tables as Markdown
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import version
from typing import Any

import pykka

from attune_actors.actors import AsyncioActor

PAGE = os.sysconf("SC_PAGE_SIZE")
KINDS = ("floor", "asyncio", "threading")
TITLES = {"floor": "bare asyncio (floor)", "asyncio": "AsyncioActor", "threading": "ThreadingActor"}


# -- the three actors ----------------------------------------------------------------------------


class BareActor:
    """The floor: an asyncio.Queue, a task that calls a handler, a loop future per ask."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future[Any] | None]] = asyncio.Queue()
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        queue = self.queue
        while True:
            message, reply = await queue.get()
            result = self.on_receive(message)
            if reply is not None:
                reply.set_result(result)

    def on_receive(self, message: Any) -> Any:
        return message

    def tell(self, message: Any) -> None:
        self.queue.put_nowait((message, None))

    def ask(self, message: Any) -> asyncio.Future[Any]:
        future = self.loop.create_future()
        self.queue.put_nowait((message, future))
        return future

    def stop(self) -> None:
        self.task.cancel()


class Echo(AsyncioActor):
    def on_receive(self, message: Any) -> Any:
        return message

    def echo(self, value: Any) -> Any:
        return value


class ShortLived(Echo):
    """A task-actor stand-in: registered in pykka's ActorRegistry (the default)."""


class ShortLivedUnregistered(Echo):
    use_actor_registry = False


class ThreadEcho(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, cpu: int | None = None) -> None:
        super().__init__()
        self.cpu = cpu

    def on_start(self) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})  # this thread only

    def on_receive(self, message: Any) -> Any:
        return message


class Countdown(AsyncioActor):
    """Resolves `done` when it has handled `n` messages (tells from another thread)."""

    use_actor_registry = False

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        super().__init__()
        self.left = n
        self.done = done

    def on_receive(self, message: Any) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set_result(None)


# -- throughput (in this process) ----------------------------------------------------------------


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


BATCH = 1000  # tells between two round trips: a producer that keeps up, not an unbounded burst


async def floor_tells(n: int) -> float:
    actor = BareActor()
    await actor.ask(None)
    start = time.perf_counter()
    for batch in range(0, n, BATCH):
        for i in range(batch, min(n, batch + BATCH)):
            actor.tell(i)
        await actor.ask(None)
    elapsed = time.perf_counter() - start
    actor.stop()
    return rate(n, elapsed)


async def floor_asks(n: int) -> float:
    actor = BareActor()
    await actor.ask(None)
    start = time.perf_counter()
    for i in range(n):
        await actor.ask(i)
    elapsed = time.perf_counter() - start
    actor.stop()
    return rate(n, elapsed)


async def asyncio_tells(n: int) -> float:
    ref = Echo.start()
    await ref.ask(None, block=False)
    start = time.perf_counter()
    for batch in range(0, n, BATCH):
        for i in range(batch, min(n, batch + BATCH)):
            ref.tell(i)
        await ref.ask(None, block=False)
    elapsed = time.perf_counter() - start
    await ref.stop(block=False)
    return rate(n, elapsed)


async def asyncio_asks(n: int) -> float:
    ref = Echo.start()
    await ref.ask(None, block=False)
    start = time.perf_counter()
    for i in range(n):
        await ref.ask(i, block=False)
    elapsed = time.perf_counter() - start
    await ref.stop(block=False)
    return rate(n, elapsed)


async def asyncio_proxy_calls(n: int) -> float:
    ref = Echo.start()
    proxy = ref.proxy()
    await proxy.echo(None)
    start = time.perf_counter()
    for i in range(n):
        await proxy.echo(i)
    elapsed = time.perf_counter() - start
    await ref.stop(block=False)
    return rate(n, elapsed)


async def asyncio_thread_tells(n: int) -> float:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ref = Countdown.start(n, done)
    await ref.ask(None, block=False)

    def send() -> None:
        for i in range(n):
            ref.tell(i)

    sender = threading.Thread(target=send)
    start = time.perf_counter()
    sender.start()
    await done
    elapsed = time.perf_counter() - start
    sender.join()
    await ref.stop(block=False)
    return rate(n, elapsed)


Placement = tuple[int, int] | None  # (caller CPU, actor thread CPU), or None: the scheduler decides


@contextlib.contextmanager
def pinned(placement: Placement) -> Iterator[int | None]:
    """Pin this thread to the caller CPU; yield the CPU the actor thread should pin itself to."""
    if placement is None:
        yield None
        return
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {placement[0]})
    try:
        yield placement[1]
    finally:
        os.sched_setaffinity(0, affinity)


def threading_tells(n: int, placement: Placement = None) -> float:
    with pinned(placement) as actor_cpu:
        ref = ThreadEcho.start(actor_cpu)
        ref.ask(None)
        start = time.perf_counter()
        for batch in range(0, n, BATCH):
            for i in range(batch, min(n, batch + BATCH)):
                ref.tell(i)
            ref.ask(None)
        elapsed = time.perf_counter() - start
        ref.stop()
    return rate(n, elapsed)


def threading_asks(n: int, placement: Placement = None) -> float:
    with pinned(placement) as actor_cpu:
        ref = ThreadEcho.start(actor_cpu)
        ref.ask(None)
        start = time.perf_counter()
        for i in range(n):
            ref.ask(i)
        elapsed = time.perf_counter() - start
        ref.stop()
    return rate(n, elapsed)


def placements() -> tuple[Placement, Placement]:
    """Where ThreadingActor's two threads run: on two CPUs (what the scheduler picks on an idle
    machine, measured pinned so that load from elsewhere cannot change it) and on one CPU (its best
    case: a round trip is then a plain thread switch). Unpinned where affinity is not available."""
    if not hasattr(os, "sched_setaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    two = (cpus[0], cpus[1]) if len(cpus) > 1 else None
    return two, (cpus[0], cpus[0])


def throughput(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Run every throughput measurement once per repeat, interleaved, so that load from elsewhere
    on the machine hits all of them alike; report medians of the rates and of the ratios of the
    back-to-back pairs."""
    loop = asyncio.new_event_loop()
    two_cpus, one_cpu = placements()
    measures: dict[tuple[str, str], Callable[[], float]] = {
        ("tell", "floor"): lambda: loop.run_until_complete(floor_tells(args.tells)),
        ("tell", "asyncio"): lambda: loop.run_until_complete(asyncio_tells(args.tells)),
        ("tell", "threading"): lambda: threading_tells(args.thread_tells, two_cpus),
        ("ask", "floor"): lambda: loop.run_until_complete(floor_asks(args.asks)),
        ("ask", "asyncio"): lambda: loop.run_until_complete(asyncio_asks(args.asks)),
        ("ask", "threading"): lambda: threading_asks(args.thread_asks, two_cpus),
        ("proxy", "asyncio"): lambda: loop.run_until_complete(asyncio_proxy_calls(args.asks)),
        ("thread_tell", "asyncio"): lambda: loop.run_until_complete(asyncio_thread_tells(args.tells)),
    }
    if one_cpu is not None:
        measures["ask_one_cpu", "threading"] = lambda: threading_asks(args.thread_asks, one_cpu)
    for measure in measures.values():  # warm-up round, not counted: heap growth, caches
        measure()
    runs: dict[tuple[str, str], list[float]] = {key: [] for key in measures}
    for _ in range(args.repeat):
        for key, measure in measures.items():
            runs[key].append(measure())
    loop.close()

    out: dict[str, dict[str, float]] = {}
    for (row, kind), rates in runs.items():
        out.setdefault(row, {})[kind] = statistics.median(rates)
    ours = {"tell": runs["tell", "asyncio"], "ask": runs["ask", "asyncio"]}
    out["ratio"] = {}
    for row, kind in (("tell", "floor"), ("tell", "threading"), ("ask", "floor"), ("ask", "threading")):
        pairs = zip(ours[row], runs[row, kind], strict=True)
        out["ratio"][f"{row}/{kind}"] = statistics.median(a / b for a, b in pairs)
    if one_cpu is not None:
        pairs = zip(ours["ask"], runs["ask_one_cpu", "threading"], strict=True)
        out["ratio"]["ask/one_cpu"] = statistics.median(a / b for a, b in pairs)
    return out


# -- idle actors (one subprocess per measurement) -------------------------------------------------


def rss_and_vms() -> tuple[int, int]:
    with open("/proc/self/statm") as statm:
        size, resident = (int(field) for field in statm.read().split()[:2])
    return resident * PAGE, size * PAGE


async def idle_async(kind: str, n: int, churn: int) -> dict[str, Any]:
    if kind == "floor":
        for actor in [BareActor() for _ in range(10)]:  # warm up the code paths
            await actor.ask(None)
            actor.stop()
    else:
        for ref in [Echo.start() for _ in range(10)]:
            await ref.ask(None, block=False)
            await ref.stop(block=False)
    await asyncio.sleep(0)
    gc.collect()
    rss0, vms0 = rss_and_vms()
    start = time.perf_counter()
    if kind == "floor":
        floor = [BareActor() for _ in range(n)]
        await asyncio.sleep(0)  # every task has run its first step and parked
        elapsed = time.perf_counter() - start
        for actor in floor:  # each actor handles one message, like a parked execution
            await actor.ask(None)
    else:
        refs = [Echo.start() for _ in range(n)]
        await asyncio.sleep(0)  # every actor has run on_start and parked
        elapsed = time.perf_counter() - start
        for ref in refs:
            await ref.ask(None, block=False)
    gc.collect()
    rss1, vms1 = rss_and_vms()
    result: dict[str, Any] = {
        "start_rate": rate(n, elapsed),
        "rss_per_actor": (rss1 - rss0) / n,
        "vms_per_actor": (vms1 - vms0) / n,
    }
    if kind == "asyncio" and churn:
        # Short-lived actors (start, one ask, stop) while the n idle actors are registered.
        churners: tuple[tuple[type[Echo], str], ...] = (
            (ShortLived, "churn_registered"),
            (ShortLivedUnregistered, "churn_opted_out"),
        )
        for cls, key in churners:
            start = time.perf_counter()
            for _ in range(churn):
                ref = cls.start()
                await ref.ask(None, block=False)
                await ref.stop(block=False)
            result[key] = rate(churn, time.perf_counter() - start)
    return result


def idle_threading(n: int) -> dict[str, Any]:
    for ref in [ThreadEcho.start() for _ in range(10)]:
        ref.ask(None)
        ref.stop()
    gc.collect()
    rss0, vms0 = rss_and_vms()
    start = time.perf_counter()
    refs = [ThreadEcho.start() for _ in range(n)]
    elapsed = time.perf_counter() - start
    for ref in refs:
        ref.ask(None)
    gc.collect()
    rss1, vms1 = rss_and_vms()
    return {
        "start_rate": rate(n, elapsed),
        "rss_per_actor": (rss1 - rss0) / n,
        "vms_per_actor": (vms1 - vms0) / n,
    }


def child_main(kind: str, n: int, churn: int) -> None:
    if kind == "threading":
        result = idle_threading(n)
    else:
        # Not asyncio.run(): on exit it would cancel the n actor tasks one by one, and each
        # cancelled AsyncioActor leaves pykka's registry by a linear scan (O(n^2) in all).
        result = asyncio.new_event_loop().run_until_complete(idle_async(kind, n, churn))
    print(json.dumps(result), flush=True)
    os._exit(0)  # skip stopping n actors (and joining n threads): the figures are taken


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used (Linux /proc/stat), or 0 where unknown."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:8]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def our_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def thread_limit() -> int | None:
    """How many threads this process can have at most (each needs two memory maps)."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read()) // 2
    except OSError:
        return None


def idle(args: argparse.Namespace) -> dict[str, dict[int, dict[str, Any] | str]]:
    out: dict[str, dict[int, dict[str, Any] | str]] = {kind: {} for kind in KINDS}
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    limit = thread_limit()
    for _ in range(args.idle_repeat):  # repeats outermost, so load from elsewhere hits all alike
        for n in args.sizes:
            for kind in KINDS:
                if kind == "threading" and limit is not None and n > limit * 0.9:
                    out[kind][n] = f"not run: ~{limit} threads max (vm.max_map_count)"
                    continue
                command = [sys.executable, __file__, "--child", kind, "--n", str(n)]
                command += ["--churn", str(args.churn if kind == "asyncio" else 0)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{kind} at {n}: {done.stderr.strip()[-2000:]}")
                runs.setdefault((kind, n), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
    for (kind, n), results in runs.items():
        out[kind][n] = {key: statistics.median(r[key] for r in results) for key in results[0]}
    return out


# -- report ---------------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    return f"{value / 1000:,.1f}k/s" if value < 1e6 else f"{value / 1e6:,.2f}M/s"


def report(args: argparse.Namespace, thr: dict[str, dict[str, float]], idl: dict[str, Any]) -> str:
    md = args.markdown
    rows: list[list[str]] = []
    header = ["", *(TITLES[k] for k in KINDS), "Asyncio / floor", "Asyncio / Threading"]

    def add(
        label: str,
        values: Mapping[str, float | str],
        fmt: Callable[[float], str],
        ratios: tuple[float, float] | None = None,
    ) -> None:
        cells = [label]
        for kind in KINDS:
            value = values.get(kind)
            cells.append(fmt(value) if isinstance(value, float | int) else (value or "-"))
        if ratios is not None:  # medians of back-to-back pairs
            cells += [f"{ratios[0]:.2f}x" if ratios[0] else "", f"{ratios[1]:.1f}x" if ratios[1] else ""]
        else:
            ours, floor, thread = values.get("asyncio"), values.get("floor"), values.get("threading")
            cells += [_ratio(ours, floor, ".2f"), _ratio(ours, thread, ".1f")]
        rows.append(cells)

    ratio = thr["ratio"]
    add("tell throughput", thr["tell"], fmt_rate, (ratio["tell/floor"], ratio["tell/threading"]))
    add("ask round trips", thr["ask"], fmt_rate, (ratio["ask/floor"], ratio["ask/threading"]))
    if "ask_one_cpu" in thr:
        one_cpu_ask = {"asyncio": thr["ask"]["asyncio"], **thr["ask_one_cpu"]}
        add(
            "ask round trips, ThreadingActor threads on one CPU",
            one_cpu_ask,
            fmt_rate,
            (0, ratio["ask/one_cpu"]),
        )
    add("await proxy.method()", {"asyncio": thr["proxy"]["asyncio"]}, fmt_rate)
    add("tell from another thread", {"asyncio": thr["thread_tell"]["asyncio"]}, fmt_rate)
    for n in args.sizes:
        add(f"start rate, {n:,} actors", _pick(idl, n, "start_rate"), fmt_rate)
    for n in args.sizes:
        add(f"RSS per idle actor, {n:,}", _pick(idl, n, "rss_per_actor"), _kib)
    for n in args.sizes:
        add(f"virtual memory per idle actor, {n:,}", _pick(idl, n, "vms_per_actor"), _kib)

    lines = [_table(header, rows, md), ""]
    lines.append(
        "ThreadingActor's caller and actor threads are pinned to two CPUs (the scheduler's placement "
        "on an idle machine);"
    )
    lines.append(
        "on one CPU a round trip is a plain thread switch, its best case. Ratios are medians of "
        "back-to-back pairs."
    )
    churn_rows = []
    for n in args.sizes:
        ours = idl["asyncio"].get(n)
        if isinstance(ours, dict) and "churn_registered" in ours:
            reg, opt = ours["churn_registered"], ours["churn_opted_out"]
            churn_rows.append(
                [f"{n:,} idle actors registered", fmt_rate(reg), fmt_rate(opt), f"{opt / reg:.1f}x"]
            )
    if churn_rows:
        lines.append("")
        lines.append(
            f"Short-lived actors (start, one ask, stop; {args.churn:,} of them) next to N idle "
            "registered actors:"
        )
        lines.append("")
        head = ["", "registered (default)", "use_actor_registry = False", "gain"]
        lines.append(_table(head, churn_rows, md))

    tell_ratio, ask_ratio, vs_threads = ratio["tell/floor"], ratio["ask/floor"], ratio["ask/threading"]
    worst_rss = max(v["rss_per_actor"] for v in idl["asyncio"].values() if isinstance(v, dict))
    goals = [
        ("tell >= 0.6x floor", f"{tell_ratio:.2f}x", tell_ratio >= 0.6),
        ("ask >= 0.6x floor", f"{ask_ratio:.2f}x", ask_ratio >= 0.6),
        ("<= 8 KiB RSS per idle actor", _kib(worst_rss), worst_rss <= 8 * 1024),
        ("ask >= 5x ThreadingActor", f"{vs_threads:.1f}x", vs_threads >= 5),
    ]
    rows_goals = [[g, m, "met" if ok else "MISSED"] for g, m, ok in goals]
    if "ask_one_cpu" in thr:  # for reference: ThreadingActor's best case, both threads on one CPU
        rows_goals.append(["(ask vs ThreadingActor on one CPU)", f"{ratio['ask/one_cpu']:.1f}x", "reference"])
    lines.append("")
    lines.append("Goals:")
    lines.append("")
    lines.append(_table(["goal", "measured", ""], rows_goals, md))
    return "\n".join(lines)


def _ratio(ours: object, other: object, spec: str) -> str:
    if isinstance(ours, float | int) and isinstance(other, float | int) and other > 0:
        return f"{ours / other:{spec}}x"
    return ""


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB" if value < 1024 * 1024 else f"{value / 1024 / 1024:,.1f} MiB"


def _pick(idl: dict[str, Any], n: int, key: str) -> dict[str, float | str]:
    picked: dict[str, float | str] = {}
    for kind in KINDS:
        entry = idl[kind].get(n)
        picked[kind] = entry[key] if isinstance(entry, dict) else (entry or "-")
    return picked


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*row) for row in [header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="idle actor counts")
    parser.add_argument("--tells", type=int, default=200_000)
    parser.add_argument("--asks", type=int, default=50_000)
    parser.add_argument("--thread-tells", type=int, default=100_000)
    parser.add_argument("--thread-asks", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per throughput figure")
    parser.add_argument("--idle-repeat", type=int, default=3, help="subprocesses per idle figure")
    parser.add_argument("--churn", type=int, default=1000, help="short-lived actors per churn run")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--json", metavar="FILE", help="also write the raw figures to FILE")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.n, args.churn)
        return
    if args.quick:
        args.sizes, args.tells, args.asks = "2000", 20_000, 5_000
        args.thread_tells, args.thread_asks, args.repeat, args.idle_repeat = 10_000, 2_000, 1, 1
        args.churn = 100
    args.sizes = [int(size) for size in args.sizes.split(",")]

    began = time.perf_counter()
    machine_before, ours_before = machine_busy_seconds(), our_cpu_seconds()
    thr = throughput(args)
    idl = idle(args)
    wall = time.perf_counter() - began
    others = machine_busy_seconds() - machine_before - (our_cpu_seconds() - ours_before)
    others_share = max(0.0, others) / (wall * (os.cpu_count() or 1))
    print(
        f"Python {platform.python_version()}, pykka {version('pykka')}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}; medians of {args.repeat} runs "
        f"(idle: {args.idle_repeat} subprocesses); {wall:.0f} s; other processes used "
        f"{others_share:.0%} of the machine meanwhile"
    )
    if others_share > 0.1:
        print("warning: the machine was busy; the figures are noisier than usual")
    print()
    print(report(args, thr, idl))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"throughput": thr, "idle": idl}, f, indent=2, default=str)


if __name__ == "__main__":
    main()
