"""Helpers for workflow tests: start a loan dated relative to the server's clock."""

from __future__ import annotations

import contextlib
import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from models.wire import CaseView, LoanStart
from workflows.loan_collection import LoanCollection

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local_today(now: datetime, tz: str = "Asia/Shanghai") -> date:
    return now.astimezone(ZoneInfo(tz)).date()


def loan_start(disbursed_on: date, **overrides: object) -> LoanStart:
    fields: dict[str, object] = {
        "loan_id": f"T{uuid.uuid4().hex[:10]}",
        "borrower_id": "B-1",
        "product": "credit",
        "principal": 1_200_000,
        "annual_rate_bps": 1800,
        "term_months": 12,
        "repayment_method": "equal_installment",
        "disbursed_on": disbursed_on,
    }
    fields.update(overrides)
    return LoanStart.model_validate(fields)


# Loans started by the current test: terminated when its worker stops, because a loan
# left running keeps timers that stall the time-skipping server for the next test.
STARTED: list[WorkflowHandle[LoanCollection, CaseView]] = []


async def start_loan(
    client: Client, task_queue: str, start: LoanStart
) -> WorkflowHandle[LoanCollection, CaseView]:
    handle = await client.start_workflow(
        LoanCollection.run,
        start,
        id=f"loan-{start.loan_id}",
        task_queue=task_queue,
    )
    STARTED.append(handle)
    return handle


async def terminate_started() -> None:
    while STARTED:
        handle = STARTED.pop()
        with contextlib.suppress(RPCError):  # already completed
            await handle.terminate("test finished")


SKIP_STEP = timedelta(days=30)


async def sleep_until_local(
    env: WorkflowEnvironment, day: date, hour: int = 12, tz: str = "Asia/Shanghai"
) -> None:
    """Advance the time-skipping clock to `day` at `hour` local time, at most 30 days per
    call: one call that skips years keeps the Java test server busy in a single request,
    which a loaded machine has seen end in a dropped connection."""
    target = datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(tz))
    now = await env.get_current_time()
    while target > now:
        await env.sleep(min(target - now, SKIP_STEP))
        now = await env.get_current_time()


async def state(handle: WorkflowHandle[LoanCollection, CaseView]) -> CaseView:
    return await handle.query(LoanCollection.state)


def days(n: int) -> timedelta:
    return timedelta(days=n)
