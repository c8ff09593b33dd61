"""Where a time-skipped loan-year goes: cProfile of one in-process worker while on-time
loans (12 installments, paid by signal) run on the time-skipping server, then the same
for the minimal loan of bench/baseline.py.

    .venv/bin/python -m bench.profile_year [--loans 5] [--top 30] [--dump DIR]

Workflow activations run in the worker's workflow-task threads and the synchronous
activities (database writes, contacts) in its activity threads: each thread gets its own
profiler (cProfile sees one thread only), and the main thread (event loop: the SDK's
Python side, the benchmark's client calls) one more. cProfile's default clock is wall
time: a worker thread's figures include its waits for the GIL, and the main thread's
include every wait on the server (time.thread_time would count CPU only, but it
triples the profiling overhead and distorts the shares more). Prints, per loan-year, the CPU
seconds of each side and the cumulative time of the usual suspects, then the top
functions of the workflow threads. Profiling slows everything down: compare the shares,
not the absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.testing import WorkflowEnvironment

from bench.skipped import bench_worker, loan_year, minimal_year, sqlite_db, time_skipping_env
from worker import preload_policies

# (label, file fragment, function name): cumulative seconds summed over matching entries.
SUSPECTS = [
    ("workflow activation (all of it)", "temporalio/worker/_workflow_instance.py", "activate"),
    ("sandbox: run an activation in the sandbox", "workflow_sandbox/_runner.py", "activate"),
    ("sandbox: restricted imports", "workflow_sandbox/_importer.py", "_import"),
    ("sandbox: restriction proxies", "workflow_sandbox/_restrictions.py", "__getattribute__"),
    ("planner: next_action", "domain/planner.py", "next_action"),
    ("planner: reconcile", "domain/planner.py", "reconcile"),
    ("planner: record_outcome", "domain/planner.py", "record_outcome"),
    ("views: case_view", "models/views.py", "case_view"),
    ("views: search_values", "models/views.py", "search_values"),
    ("views: details_markdown", "models/views.py", "details_markdown"),
    ("books: take (what to write down)", "workflows/books.py", "take"),
    ("pydantic: model_dump_json / model_dump", "pydantic/main.py", "model_dump"),
    ("pydantic: model_dump_json", "pydantic/main.py", "model_dump_json"),
    ("pydantic: model_validate", "pydantic/main.py", "model_validate"),
    ("pydantic: model_copy", "pydantic/main.py", "model_copy"),
    ("pydantic converter: to_payloads", "temporalio/converter.py", "to_payloads"),
    ("pydantic converter: from_payloads", "temporalio/converter.py", "from_payloads"),
    ("activity: record_case_events", "activities/records.py", "record_case_events"),
    ("activity: record_loan", "activities/records.py", "record_loan"),
    ("activity: send_contact", "activities/contacts.py", "send_contact"),
    ("activity: load_policy", "activities/records.py", "load_policy"),
    ("sqlalchemy: Session.commit", "sqlalchemy/orm/session.py", "commit"),
]


class ProfilingExecutor(ThreadPoolExecutor):
    """A thread pool whose every task runs under its thread's own cProfile.Profile."""

    def __init__(self, max_workers: int, sink: list[cProfile.Profile]) -> None:
        super().__init__(max_workers=max_workers)
        self._local = threading.local()
        self._sink = sink
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return super().submit(self._profiled, fn, *args, **kwargs)

    def _profiled(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        profile: cProfile.Profile | None = getattr(self._local, "profile", None)
        if profile is None:
            profile = self._local.profile = cProfile.Profile()
            with self._lock:
                self._sink.append(profile)
        profile.enable()
        try:
            return fn(*args, **kwargs)
        finally:
            profile.disable()


def merged(profiles: list[cProfile.Profile]) -> pstats.Stats | None:
    if not profiles:
        return None
    stats = pstats.Stats(profiles[0], stream=io.StringIO())
    for profile in profiles[1:]:
        stats.add(profile)
    return stats


def total_s(stats: pstats.Stats | None) -> float:
    return 0.0 if stats is None else float(stats.total_tt)  # type: ignore[attr-defined]


def cumulative(stats: pstats.Stats | None, file_part: str, func: str) -> tuple[float, int]:
    if stats is None:
        return 0.0, 0
    seconds, calls = 0.0, 0
    for (path, _line, name), (_cc, nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name == func and file_part in path:
            seconds += ct
            calls += nc
    return seconds, calls


async def profile_kind(
    env: WorkflowEnvironment, year: Callable[[WorkflowEnvironment, str], Awaitable[float]], loans: int
) -> tuple[float, pstats.Stats | None, pstats.Stats | None, pstats.Stats]:
    wf_profiles: list[cProfile.Profile] = []
    act_profiles: list[cProfile.Profile] = []
    main = cProfile.Profile()
    async with sqlite_db() as db:
        task_queue = f"profile-{uuid.uuid4().hex[:8]}"
        with (
            ProfilingExecutor(4, wf_profiles) as wf_exec,
            ProfilingExecutor(8, act_profiles) as act_exec,
        ):
            async with bench_worker(
                env, task_queue, db, activity_executor=act_exec, workflow_task_executor=wf_exec
            ):
                await year(env, task_queue)  # warm-up, before the profilers count
                for profile in [*wf_profiles, *act_profiles]:
                    profile.clear()
                began = time.perf_counter()
                main.enable()
                for _ in range(loans):
                    await year(env, task_queue)
                main.disable()
                wall = time.perf_counter() - began
    return wall, merged(wf_profiles), merged(act_profiles), pstats.Stats(main, stream=io.StringIO())


def report(name: str, loans: int, wall: float, wf: Any, act: Any, main: pstats.Stats) -> None:
    per = 1000 / loans
    print(f"\n== {name}: {loans} loan-years in {wall:.2f} s wall (profiled), per loan-year:")
    print(f"   wall {wall * per:8.1f} ms")
    print(f"   workflow-task threads     {total_s(wf) * per:8.1f} ms")
    print(f"   activity threads          {total_s(act) * per:8.1f} ms")
    print(f"   main thread               {total_s(main) * per:8.1f} ms (wall: mostly waiting on the server)")
    for label, file_part, func in SUSPECTS:
        for where, stats in (("wf", wf), ("act", act), ("main", main)):
            seconds, calls = cumulative(stats, file_part, func)
            if calls:
                print(f"   {label:45s} [{where:4s}] {seconds * per:8.1f} ms  {calls / loans:7.0f} calls")


async def run(loans: int, top: int, dump: Path | None) -> None:
    preload_policies()
    env = await time_skipping_env()
    try:
        results = {}
        for name, year in (("LoanCollection", loan_year), ("MinimalLoan", minimal_year)):
            results[name] = await profile_kind(env, year, loans)
        for name, (wall, wf, act, main) in results.items():
            report(name, loans, wall, wf, act, main)
        wall, wf, act, main = results["LoanCollection"]
        for title, stats in (("workflow-task threads", wf), ("activity threads", act)):
            if stats is not None:
                print(f"\n== LoanCollection, {title}: top {top} by cumulative time")
                out = io.StringIO()
                stats.stream = out  # type: ignore[attr-defined]
                stats.sort_stats("cumulative").print_stats(top)
                print(out.getvalue())
                if dump is not None:
                    dump.mkdir(parents=True, exist_ok=True)
                    stats.dump_stats(dump / f"loan-{title.split()[0]}.pstats")
    finally:
        await env.shutdown()
        gc.collect()
        await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loans", type=int, default=5)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--dump", type=Path, default=None, help="write .pstats files here")
    args = parser.parse_args()
    asyncio.run(run(args.loans, args.top, args.dump))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
