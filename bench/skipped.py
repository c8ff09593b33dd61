"""The time-skipping measures: history events per on-time installment, and on-time
loan-years per second against the minimal 12-installment loan (bench/baseline.py).

Loans run one after another (start, twelve payments by signal the day before each due
date, result): the Java test server breaks when many `result()` calls unlock time
skipping at once (TEMPORAL_NOTES.md). The two kinds alternate, loan by loan, so the
noise of a shared machine falls on both.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import collection_activities
from bench.baseline import MinimalLoan, MinimalLoanStart, add_months, due_dates, remind
from bench.history_events import HistoryCounts, count_events
from bench.live import binary
from client.search_attributes import ensure_search_attributes
from models.db import make_engine, upgrade_schema
from models.wire import PaymentIn
from tests.loans import loan_start, local_today, sleep_until_local
from tests.test_workflow_ladder import events_once_asleep, seed
from worker import preload_policies
from workflows.loan_collection import LoanCollection

RESULT_TIMEOUT_S = 120
YEARS_PER_SERVER = 20  # loan-years of each kind on one time-skipping server (2 x 20 years)


async def time_skipping_env() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(env.client, env.client.namespace)
    return env


@asynccontextmanager
async def bench_worker(
    env: WorkflowEnvironment,
    task_queue: str,
    db: Engine,
    *,
    activity_executor: Executor | None = None,
    workflow_task_executor: ThreadPoolExecutor | None = None,
) -> AsyncIterator[None]:
    """The real loan workflow with its real activities, and the minimal loan, in-process."""
    preload_policies()
    with ThreadPoolExecutor(max_workers=8) as default_executor:
        async with Worker(
            env.client,
            task_queue=task_queue,
            workflows=[LoanCollection, MinimalLoan],
            activities=[*collection_activities(db), remind],
            activity_executor=activity_executor or default_executor,
            workflow_task_executor=workflow_task_executor,
        ):
            yield


@asynccontextmanager
async def sqlite_db() -> AsyncIterator[Engine]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade_schema(url)
        db = make_engine(url)
        seed(db)  # borrower B-1 with a phone and an email: the reminders are really sent
        try:
            yield db
        finally:
            db.dispose()


async def loan_year(env: WorkflowEnvironment, task_queue: str) -> float:
    """One 12-installment LoanCollection paid on time by signal: seconds taken."""
    began = time.perf_counter()
    start = loan_start(local_today(await env.get_current_time()))
    handle = await env.client.start_workflow(
        LoanCollection.run, start, id=f"loan-{start.loan_id}", task_queue=task_queue
    )
    for inst in (await handle.query(LoanCollection.state)).installments:
        await sleep_until_local(env, inst.due_date - timedelta(days=1))
        await handle.signal(
            LoanCollection.payment_received,
            PaymentIn(payment_id=f"p{inst.seq}", amount=inst.principal + inst.interest),
        )
    view = await asyncio.wait_for(handle.result(), RESULT_TIMEOUT_S)
    if not view.closed:
        raise RuntimeError(f"loan {start.loan_id} did not close after its twelve payments")
    return time.perf_counter() - began


async def minimal_year(env: WorkflowEnvironment, task_queue: str) -> float:
    """One MinimalLoan, the same dates, paid the same way: seconds taken."""
    began = time.perf_counter()
    first_due = add_months(local_today(await env.get_current_time()), 1)
    start = MinimalLoanStart(loan_id=f"M{uuid.uuid4().hex[:10]}", first_due=first_due)
    handle = await env.client.start_workflow(
        MinimalLoan.run, start, id=f"minimal-{start.loan_id}", task_queue=task_queue
    )
    for seq, due in enumerate(due_dates(first_due, start.installments), start=1):
        await sleep_until_local(env, due - timedelta(days=1))
        await handle.signal(MinimalLoan.pay, seq)
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT_S)
    return time.perf_counter() - began


async def minimal_events(env: WorkflowEnvironment, task_queue: str) -> HistoryCounts:
    """The minimal loan's history, counted like the real one's (no ladder: it has none)."""
    first_due = add_months(local_today(await env.get_current_time()), 1)
    start = MinimalLoanStart(loan_id=f"M{uuid.uuid4().hex[:10]}", first_due=first_due)
    handle = await env.client.start_workflow(
        MinimalLoan.run, start, id=f"minimal-{start.loan_id}", task_queue=task_queue
    )
    opened = await events_once_asleep(handle)
    for seq, due in enumerate(due_dates(first_due, start.installments), start=1):
        await sleep_until_local(env, due - timedelta(days=1))
        await handle.signal(MinimalLoan.pay, seq)
    await asyncio.wait_for(handle.result(), RESULT_TIMEOUT_S)
    return HistoryCounts(opened=opened, on_time=len((await handle.fetch_history()).events), ladder=0)


@dataclass
class SkipResults:
    history: HistoryCounts | None = None
    minimal_history: HistoryCounts | None = None
    loans: int = 0
    loan_s: list[float] = field(default_factory=list)
    minimal_s: list[float] = field(default_factory=list)

    @property
    def loan_years_per_s(self) -> float:
        return len(self.loan_s) / sum(self.loan_s)

    @property
    def minimal_years_per_s(self) -> float:
        return len(self.minimal_s) / sum(self.minimal_s)


async def measure_skipped(skip_loans: int, *, history: bool, throughput: bool) -> SkipResults:
    results = SkipResults(loans=skip_loans)
    async with sqlite_db() as db:
        if history:
            env = await time_skipping_env()
            try:
                task_queue = f"bench-skip-{uuid.uuid4().hex[:8]}"
                async with bench_worker(env, task_queue, db):
                    results.history = await count_events(env, task_queue)
                    results.minimal_history = await minimal_events(env, task_queue)
            finally:
                await env.shutdown()
        done = 0
        while throughput and done < skip_loans:
            # A fresh server every YEARS_PER_SERVER loan-years of each kind: its clock runs
            # one year per loan from today, and a loan must be disbursed before 2101.
            env = await time_skipping_env()
            try:
                task_queue = f"bench-skip-{uuid.uuid4().hex[:8]}"
                async with bench_worker(env, task_queue, db):
                    # One of each first, not counted: imports, sandbox, first database writes.
                    await loan_year(env, task_queue)
                    await minimal_year(env, task_queue)
                    for _ in range(min(YEARS_PER_SERVER, skip_loans - done)):
                        results.loan_s.append(await loan_year(env, task_queue))
                        results.minimal_s.append(await minimal_year(env, task_queue))
                        done += 1
            finally:
                await env.shutdown()
    return results
