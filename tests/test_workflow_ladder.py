"""The LoanCollection workflow on the time-skipping server, with the real activities
writing to a real (SQLite) database."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from models import repo
from models.tables import (
    Assignment,
    BorrowerCreate,
    ChargeOff,
    ContactAttempt,
    CreditBureauRecord,
    LegalReferral,
    Loan,
    Payment,
)
from models.wire import PaymentIn, RestructuringIn
from tests.conftest import running_worker
from tests.loans import loan_start, local_today, sleep_until_local, start_loan, state
from workflows.loan_collection import LoanCollection

pytestmark = pytest.mark.temporal
TZ = ZoneInfo("Asia/Shanghai")


def seed(db: Engine, agents: int = 2, borrower: str = "B-1") -> None:
    with Session(db) as s:
        repo.upsert_borrower(
            s,
            BorrowerCreate(
                borrower_id=borrower, name="张三", phone_mobile="13800138000", email="z@example.com"
            ),
        )
        for n in range(agents):
            repo.add_agent(s, f"agent-{n + 1}", f"Agent {n + 1}")
        s.commit()


async def events_once_asleep(handle: WorkflowHandle[Any, Any]) -> int:
    """History length once the workflow has opened the case and sleeps on its first timer."""
    for _ in range(100):
        events = (await handle.fetch_history()).events
        if any(e.HasField("timer_started_event_attributes") for e in events):
            return len(events)
        await asyncio.sleep(0.05)
    raise AssertionError("the loan never went to sleep")


def contacts(db: Engine, loan_id: str) -> list[ContactAttempt]:
    with Session(db) as s:
        return list(s.exec(select(ContactAttempt).where(ContactAttempt.loan_id == loan_id)))


async def test_unpaid_loan_climbs_every_rung_on_its_day(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()) - timedelta(days=1), term_months=3)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=190))
        s = await state(handle)

    assert s.stage == "CHARGED_OFF" and not s.closed
    assert s.credit_reported and s.legal_referred and s.assigned_agent == "agent-1"
    sent = [c for c in contacts(wf_db, start.loan_id) if c.status == "delivered"]
    assert s.contacts_sent == len(sent)
    # Every contact inside 08:00-21:00 borrower local time.
    for c in sent:
        assert c.sent_at is not None
        assert 8 <= c.scheduled_at.astimezone(TZ).hour < 21, c.idempotency_key
    # Call caps held: never more than 3 calls a day nor 7 in any 7 days.
    calls = sorted(c.scheduled_at for c in sent if c.kind == "voice_call")
    assert max(Counter(c.astimezone(TZ).date() for c in calls).values()) <= 3
    assert all(sum(1 for d in calls if c - timedelta(days=7) < d <= c) <= 7 for c in calls)
    ladder = sorted(
        ((c.scheduled_at.astimezone(TZ).date() - due1).days, c.kind)
        for c in sent
        if "/1/" in c.idempotency_key and c.kind != "reminder"
    )
    assert ladder == [
        (1, "overdue_sms"),
        (3, "overdue_sms"),
        (5, "credit_notice"),
        (7, "voice_call"),
        (14, "voice_call"),
        (21, "voice_call"),
        (61, "demand_letter"),
    ]
    reminders = Counter(c.template for c in sent if c.kind == "reminder")
    # Each of the three installments was reminded before and on its due date, once.
    assert reminders == {"reminder_t3": 3, "reminder_t1": 3, "reminder_due_today": 3}
    with Session(wf_db) as db:
        bureau = {
            r.kind: r
            for r in db.exec(select(CreditBureauRecord).where(CreditBureauRecord.loan_id == start.loan_id))
        }
        assert set(bureau) == {"notice", "report"}
        assert bureau["report"].at - bureau["notice"].at >= timedelta(days=10)
        assert (bureau["report"].at.astimezone(TZ).date() - due1).days == 15
        (assignment,) = db.exec(select(Assignment).where(Assignment.loan_id == start.loan_id))
        assert (assignment.requested_at.astimezone(TZ).date() - due1).days == 31
        (referral,) = db.exec(select(LegalReferral).where(LegalReferral.loan_id == start.loan_id))
        assert referral.days_past_due == 91
        (charge_off,) = db.exec(select(ChargeOff).where(ChargeOff.loan_id == start.loan_id))
        assert charge_off.days_past_due == 181
        loan = db.get(Loan, start.loan_id)
        assert loan is not None and loan.stage == "CHARGED_OFF"


async def test_on_time_payer_for_a_year_gets_reminders_and_nothing_else(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db, agents=0)
    start = loan_start(local_today(await ts_env.get_current_time()) + timedelta(days=1))
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        opened = await events_once_asleep(handle)
        schedule = (await state(handle)).installments
        for inst in schedule:
            await sleep_until_local(ts_env, inst.due_date - timedelta(days=1), hour=12)
            res = await handle.execute_update(
                LoanCollection.record_payment,
                PaymentIn(payment_id=f"pay-{inst.seq}", amount=inst.principal + inst.interest),
            )
            assert res.allocation.penalty == 0 and res.days_past_due == 0
        final = await handle.result()
        history = await handle.fetch_history()
    assert final.closed and final.stage == "PAID_OFF" and final.outstanding.total == 0
    sent = contacts(wf_db, start.loan_id)
    assert Counter(c.template for c in sent) == {"reminder_t3": 12, "reminder_t1": 12}
    # What each installment costs once the loan is open (the opening itself, loading the
    # policy and recording the loan, is paid once per loan).
    per_installment = (len(history.events) - opened) / 12
    assert per_installment <= 24, f"{per_installment:.1f} history events per on-time installment"
    with Session(wf_db) as db:
        assert len(list(db.exec(select(Payment).where(Payment.loan_id == start.loan_id)))) == 12


async def test_payment_in_grace_carries_no_penalty(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()))
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        inst = (await state(handle)).installments[0]
        await sleep_until_local(ts_env, inst.due_date + timedelta(days=3))
        s = await state(handle)
        assert s.stage == "GRACE" and s.outstanding.penalty == 0
        res = await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="g", amount=s.overdue)
        )
    assert res.allocation.penalty == 0 and res.stage == "CURRENT" and res.overdue == 0


async def test_partial_payer_stays_overdue_and_pays_oldest_first(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()))
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        inst = (await state(handle)).installments[0]
        await sleep_until_local(ts_env, inst.due_date + timedelta(days=10))
        before = await state(handle)
        res = await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="part", amount=50_000)
        )
        assert res.allocation.penalty == before.outstanding.penalty > 0
        assert res.allocation.interest == inst.interest
        assert res.allocation.principal == 50_000 - before.outstanding.penalty - inst.interest
        assert res.stage == "EARLY" and res.days_past_due == 10
        assert res.overdue == before.overdue - 50_000


@pytest.mark.parametrize(
    ("dpd", "stage_before"), [(2, "GRACE"), (10, "EARLY"), (40, "AGENT"), (100, "LEGAL")]
)
async def test_cure_at_each_stage_returns_to_current_and_releases_the_agent(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, dpd: int, stage_before: str
) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()))
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=dpd))
        s = await state(handle)
        assert s.stage == stage_before
        res = await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="cure", amount=s.overdue)
        )
        assert res.stage == "CURRENT" and res.days_past_due == 0 and res.overdue == 0
        await ts_env.sleep(timedelta(hours=1))
        after = await state(handle)
    assert after.stage == "CURRENT" and after.assigned_agent is None
    with Session(wf_db) as db:
        open_assignments = [
            a
            for a in db.exec(select(Assignment).where(Assignment.loan_id == start.loan_id))
            if a.released_at is None
        ]
        assert open_assignments == []
        bureau = [
            r.kind
            for r in db.exec(select(CreditBureauRecord).where(CreditBureauRecord.loan_id == start.loan_id))
        ]
        assert ("update" in bureau) == ("report" in bureau)


@pytest.mark.parametrize(
    ("dpd", "stage", "entry_table"),
    [
        (2, "GRACE", None),
        (10, "EARLY", None),
        (45, "AGENT", Assignment),
        (120, "LEGAL", LegalReferral),
        (200, "CHARGED_OFF", ChargeOff),
    ],
)
async def test_a_loan_started_late_starts_in_its_stage_without_replaying_reminders(
    ts_env: WorkflowEnvironment,
    task_queue: str,
    wf_db: Engine,
    dpd: int,
    stage: str,
    entry_table: Any,
) -> None:
    seed(wf_db)
    today = local_today(await ts_env.get_current_time())
    start = loan_start(today - timedelta(days=dpd + 31), first_due_date=today - timedelta(days=dpd))
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        await ts_env.sleep(timedelta(hours=1))
        s = await state(handle)
    # The server clock may cross a local midnight during the hour slept.
    assert s.stage == stage and s.days_past_due in (dpd, dpd + 1)
    steps = Counter(c.idempotency_key.split("/")[2] for c in contacts(wf_db, start.loan_id))
    # Nothing that fell before the start is replayed: no reminders of installment 1, no
    # overdue SMS or calls of past days; only the compliance step still owed (the credit
    # notice, once DPD 5 has passed) ...
    missed = {"t-3", "t-1", "due-today", "dpd-1-sms", "dpd-7-call", "dpd-14-call", "dpd-21-call"}
    assert not missed & set(steps), steps
    assert steps.get("dpd-5-credit-notice", 0) == (1 if dpd >= 5 else 0)
    # ... and the entry step of the stage the loan is in.
    if entry_table is not None:
        with Session(wf_db) as db:
            assert len(list(db.exec(select(entry_table).where(entry_table.loan_id == start.loan_id)))) == 1


async def test_each_restructuring_kind(ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()))
    approval = {"approved_by": "risk-officer-7", "approval_ref": "APR-2026-001"}
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=20))
        s = await state(handle)
        assert s.stage == "EARLY" and s.outstanding.penalty > 0

        waived = await handle.execute_update(
            LoanCollection.apply_restructuring,
            RestructuringIn(restructuring_id="w1", kind="waiver", waive_penalty=True, **approval),
        )
        assert waived.outstanding.penalty == 0 and waived.stage == "EARLY"

        extended = await handle.execute_update(
            LoanCollection.apply_restructuring,
            RestructuringIn(restructuring_id="e1", kind="extension", extension_days=30, **approval),
        )
        assert extended.stage == "CURRENT" and extended.overdue == 0
        assert extended.installments[0].due_date == due1 + timedelta(days=30)

        again = await handle.execute_update(
            LoanCollection.apply_restructuring,
            RestructuringIn(restructuring_id="e1", kind="extension", extension_days=30, **approval),
        )
        assert again.duplicate and again.installments[0].due_date == due1 + timedelta(days=30)

        payoff_before = (await state(handle)).outstanding.total
        reinstalled = await handle.execute_update(
            LoanCollection.apply_restructuring,
            RestructuringIn(restructuring_id="r1", kind="reinstallment", new_term_months=24, **approval),
        )
        fresh = [i for i in reinstalled.installments if i.seq > 12]
        assert len(fresh) == 24 and sum(i.principal for i in fresh) == payoff_before
        assert reinstalled.stage == "CURRENT"


async def test_no_agent_free_queues_the_case_until_one_is_added(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db, agents=0)
    start = loan_start(local_today(await ts_env.get_current_time()))
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=33))
        waiting = await state(handle)
        assert waiting.stage == "AGENT" and waiting.assigned_agent is None
        with Session(wf_db) as db:
            (queued,) = db.exec(select(Assignment).where(Assignment.loan_id == start.loan_id))
            assert queued.agent_id is None and queued.released_at is None
            repo.add_agent(db, "late-agent", "Late Agent")
            db.commit()
        await sleep_until_local(ts_env, due1 + timedelta(days=34), hour=12)
        picked = await state(handle)
    assert picked.assigned_agent == "late-agent"


async def test_borrower_without_contact_details_is_suppressed_not_failed(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()), borrower_id="B-unknown")
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=20))
        s = await state(handle)
    rows = contacts(wf_db, start.loan_id)
    assert rows and all(r.status == "suppressed" for r in rows)
    assert s.contacts_sent == 0
    # No notice reached the borrower, so nothing may be reported to the credit bureau.
    assert not s.credit_reported
    with Session(wf_db) as db:
        assert (
            list(db.exec(select(CreditBureauRecord).where(CreditBureauRecord.loan_id == start.loan_id))) == []
        )


async def test_an_extended_loan_left_unpaid_falls_overdue_on_its_new_date(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()))
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=20))
        await handle.execute_update(
            LoanCollection.apply_restructuring,
            RestructuringIn(
                restructuring_id="e", kind="extension", extension_days=30, approved_by="a", approval_ref="b"
            ),
        )
        new_due = due1 + timedelta(days=30)
        await sleep_until_local(ts_env, new_due + timedelta(days=2), hour=12)
        s = await state(handle)
    assert s.stage == "GRACE" and s.days_past_due == 2
    sent = {
        c.idempotency_key.split("/")[2]
        for c in contacts(wf_db, start.loan_id)
        if c.scheduled_at.astimezone(TZ).date() >= new_due - timedelta(days=3)
    }
    assert {"t-3", "t-1", "due-today", "dpd-1-sms"} <= sent


async def test_a_deactivated_agents_case_shows_its_new_agent_by_the_next_morning(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db, agents=2)
    start = loan_start(local_today(await ts_env.get_current_time()))
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=33))
        first = (await state(handle)).assigned_agent
        assert first is not None
        with Session(wf_db) as db:
            repo.deactivate_agent(db, first)
            db.commit()
        await sleep_until_local(ts_env, due1 + timedelta(days=34))
        now_held = (await state(handle)).assigned_agent
    assert now_held is not None and now_held != first
