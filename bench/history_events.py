"""History events per loan on the time-skipping server: the budget that decides how long
a loan runs before continue-as-new and what a year of collections costs the cluster.

    .venv/bin/python bench/history_events.py

Prints events per on-time installment (two reminders and one payment each) and per full
unpaid ladder (disbursal to charge-off), with the continue-as-new threshold for scale.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from client.search_attributes import ensure_search_attributes
from models.db import make_engine, upgrade_schema
from models.wire import LoanStart, PaymentIn
from tests.conftest import running_worker
from tests.loans import sleep_until_local
from tests.test_workflow_ladder import events_once_asleep
from worker import preload_policies
from workflows.loan_collection import LoanCollection

TZ = ZoneInfo("Asia/Shanghai")
CONTINUE_AS_NEW_SUGGESTED_AT = 4096


def start_input(disbursed: datetime, months: int) -> LoanStart:
    return LoanStart(
        loan_id=f"B{uuid.uuid4().hex[:8]}",
        borrower_id="B-1",
        product="credit",
        principal=1_200_000,
        annual_rate_bps=1800,
        term_months=months,
        repayment_method="equal_installment",
        disbursed_on=disbursed.astimezone(TZ).date(),
    )


@dataclass
class HistoryCounts:
    opened: int  # events once the loan is open and asleep on its first timer
    on_time: int  # events of a 12-installment loan paid the day before each due date
    ladder: int  # events of an unpaid loan from disbursal to DPD 182

    @property
    def per_installment(self) -> float:
        return (self.on_time - self.opened) / 12


async def count_events(env: WorkflowEnvironment, task_queue: str) -> HistoryCounts:
    """Both loans on the time-skipping server `env`, with a worker polling `task_queue`."""
    # On-time payer: pays each installment (by update) the day before it is due.
    start = start_input(await env.get_current_time(), 12)
    handle = await env.client.start_workflow(
        LoanCollection.run, start, id=f"loan-{start.loan_id}", task_queue=task_queue
    )
    opened = await events_once_asleep(handle)
    for inst in (await handle.query(LoanCollection.state)).installments:
        await sleep_until_local(env, inst.due_date - timedelta(days=1))
        await handle.execute_update(
            LoanCollection.record_payment,
            PaymentIn(payment_id=f"p{inst.seq}", amount=inst.principal + inst.interest),
        )
    await handle.result()
    on_time = len((await handle.fetch_history()).events)

    # Never pays: the whole ladder to charge-off (DPD 181) and the day after.
    start = start_input(await env.get_current_time(), 12)
    handle = await env.client.start_workflow(
        LoanCollection.run, start, id=f"loan-{start.loan_id}", task_queue=task_queue
    )
    due1 = (await handle.query(LoanCollection.state)).installments[0].due_date
    await sleep_until_local(env, due1 + timedelta(days=182))
    ladder = len((await handle.fetch_history()).events)
    await handle.terminate("bench done")
    return HistoryCounts(opened=opened, on_time=on_time, ladder=ladder)


async def main() -> None:
    binary = shutil.which("temporal-test-server") or str(Path(sys.executable).parent / "temporal-test-server")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary, data_converter=pydantic_data_converter
    )
    await ensure_search_attributes(env.client, env.client.namespace)
    preload_policies()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade_schema(url)
        db = make_engine(url)
        async with running_worker(env.client, "bench", db):
            counts = await count_events(env, "bench")
        db.dispose()
    await env.shutdown()
    print(
        f"on-time loan, 12 installments: {counts.on_time} events: {counts.opened} to open the loan, "
        f"then {counts.per_installment:.1f} per installment"
    )
    print(f"unpaid ladder, disbursal to DPD 182: {counts.ladder} events")
    print(f"continue-as-new is suggested at {CONTINUE_AS_NEW_SUGGESTED_AT} events")
    gc.collect()
    await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(main())
