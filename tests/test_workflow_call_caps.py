"""The call caps across a borrower's loans, end to end on the time-skipping server with the
real activities and a real (SQLite) database: calls a collector logged on one loan keep
the other loan's automated call back until the caps allow it, and that call then goes
out by itself (no retry loop in between), written down as moved by the caps."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from activities._support import as_utc
from activities.contacts import CAPS_REASON
from domain.planner import ACROSS_LOANS
from models import contract
from models.tables import AuditLog, BorrowerCall, ContactAttempt
from tests.conftest import running_worker
from tests.loans import loan_start, local_today, sleep_until_local, start_loan, state
from tests.test_workflow_desk import desk, overdue_loan
from tests.test_workflow_ladder import seed
from tests.visibility import eventually

pytestmark = pytest.mark.temporal
TZ = ZoneInfo("Asia/Shanghai")


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), TZ)


def ledger(db: Engine) -> list[BorrowerCall]:
    with Session(db) as s:
        return list(s.exec(select(BorrowerCall).where(BorrowerCall.borrower_id == "B-1")))


def calls_of(db: Engine, loan_id: str) -> list[ContactAttempt]:
    with Session(db) as s:
        rows = s.exec(
            select(ContactAttempt).where(
                ContactAttempt.loan_id == loan_id, ContactAttempt.kind == "voice_call"
            )
        )
        return list(rows)


def delays(db: Engine, loan_id: str) -> list[str]:
    with Session(db) as s:
        rows = s.exec(select(AuditLog).where(AuditLog.loan_id == loan_id, AuditLog.event == "step_delayed"))
        return [r.detail for r in rows]


async def test_calls_logged_on_one_loan_hold_back_the_other_loans_call_until_the_caps_allow(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        # The borrower's second loan, disbursed the same day with its first due date two
        # months on: current throughout, it makes no calls itself.
        disbursed = local_today(await ts_env.get_current_time()) - timedelta(days=1)
        current = await start_loan(
            ts_env.client,
            task_queue,
            loan_start(disbursed, first_due_date=disbursed + timedelta(days=60)),
        )
        overdue, due1 = await overdue_loan(ts_env, task_queue, dpd=6)
        # Its collector tried the borrower 7 times in two days (6 on one day: the per-line
        # cap; 7 in the week: the weekly cap). On that loan alone, all were allowed.
        tries = [local(due1 + timedelta(days=5), 9) + timedelta(minutes=30 * n) for n in range(6)]
        tries.append(local(due1 + timedelta(days=6), 9))
        for n, at in enumerate(tries):
            logged = await desk(
                current,
                contract.LOG_CONTACT,
                contact_id=f"try-{n}",
                agent_ids=["agent-1"],
                channel="voice",
                result="no_answer",
                at=at.isoformat(),
            )
            assert logged.status == "logged"

        async def ledgered() -> int:
            return len(ledger(wf_db))

        assert await eventually(ledgered, lambda n: n == 7) == 7  # written down by loan 2

        # DPD 7, 10:00: the overdue loan's own call log is empty, but the borrower's week
        # is full: the call waits until the oldest try is a week old.
        await sleep_until_local(ts_env, due1 + timedelta(days=7), hour=12)
        loan_id = (await state(overdue)).loan_id
        (held,) = calls_of(wf_db, loan_id)
        assert held.status == "queued" and held.reason is not None and held.reason.startswith(CAPS_REASON)
        allowed = tries[0] + timedelta(days=7, microseconds=1)
        assert any(
            f"moved by the {ACROSS_LOANS} to {allowed.isoformat()}" in d for d in delays(wf_db, loan_id)
        )
        assert len(ledger(wf_db)) == 7

        # The call goes out by itself at that moment, and says which rule moved it.
        await sleep_until_local(ts_env, due1 + timedelta(days=12), hour=12)
        (placed,) = calls_of(wf_db, loan_id)
        assert placed.status == "delivered" and placed.dialed
        (counted,) = [c for c in ledger(wf_db) if c.loan_id == loan_id]
        # Counted when it was placed: when the workflow woke for it (timers fire a few
        # milliseconds late).
        assert allowed <= as_utc(counted.at) < allowed + timedelta(seconds=1)
        assert any(f"moved by the {ACROSS_LOANS}" in d and "due " in d for d in delays(wf_db, loan_id)[1:])
        assert len(ledger(wf_db)) == 8
