"""The collector's desk and borrower protections on the time-skipping server, with the
real activities writing to a real (SQLite) database: promises kept and broken, the
broken-promise limit, a dispute held from GRACE to DPD 40, a hardship of 30 days,
contact preferences, and the contact log as a compliance gate."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

import starter
from activities._support import non_retryable
from activities.records import RecordActivities
from models import contract, repo
from models.tables import Assignment, AuditLog, ContactAttempt, CreditBureauRecord, Loan
from models.wire import CaseView, DeskResult, PaymentIn
from settings import Settings
from tests.conftest import running_worker
from tests.loans import STARTED, loan_start, local_today, sleep_until_local, start_loan, state
from tests.test_workflow_ladder import seed
from tests.visibility import eventually
from workflows.loan_collection import LoanCollection

pytestmark = pytest.mark.temporal
TZ = ZoneInfo("Asia/Shanghai")
Handle = WorkflowHandle[LoanCollection, CaseView]


async def desk(handle: Handle, update: str, **payload: Any) -> DeskResult:
    return await handle.execute_update(update, payload, result_type=DeskResult)


async def refused(handle: Handle, update: str, **payload: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await desk(handle, update, **payload)
    cause = exc.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.message


def contacts(db: Engine, loan_id: str) -> list[ContactAttempt]:
    with Session(db) as s:
        return list(s.exec(select(ContactAttempt).where(ContactAttempt.loan_id == loan_id)))


def audit(db: Engine, loan_id: str, event: str) -> list[AuditLog]:
    with Session(db) as s:
        rows = s.exec(select(AuditLog).where(AuditLog.loan_id == loan_id, AuditLog.event == event))
        return list(rows)


async def execution_status(env: WorkflowEnvironment, handle: Handle) -> int:
    """The raw describe: the SDK's typed describe cannot decode a Datetime search
    attribute from the time-skipping server (TEMPORAL_NOTES.md)."""
    request = DescribeWorkflowExecutionRequest(
        namespace=env.client.namespace, execution=WorkflowExecution(workflow_id=handle.id)
    )
    described = await env.client.workflow_service.describe_workflow_execution(request)
    return int(described.workflow_execution_info.status)


def local_at(day: date, hour: int, minute: int = 0) -> str:
    return datetime.combine(day, time(hour, minute), TZ).isoformat()


async def overdue_loan(env: WorkflowEnvironment, task_queue: str, dpd: int) -> tuple[Handle, date]:
    """A loan disbursed yesterday, its first installment `dpd` days past due at noon."""
    start = loan_start(local_today(await env.get_current_time()) - timedelta(days=1), term_months=6)
    handle = await start_loan(env.client, task_queue, start)
    due1 = (await state(handle)).installments[0].due_date
    await sleep_until_local(env, due1 + timedelta(days=dpd))
    return handle, due1


async def test_a_kept_promise_holds_the_calls_and_is_kept_the_moment_it_is_paid(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=5)
        overdue = (await state(handle)).overdue
        made = await desk(
            handle,
            contract.RECORD_PROMISE,
            promise_id="P-1",
            amount=overdue,
            promised_date=(due1 + timedelta(days=9)).isoformat(),
            agent_id="agent-1",
        )
        assert (made.status, made.hold and made.hold.reason) == ("open", "PROMISE")
        await sleep_until_local(ts_env, due1 + timedelta(days=8))  # past the DPD 7 call
        held = await state(handle)
        await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="pay-1", amount=held.overdue)
        )
        after = await state(handle)
        loan_id = after.loan_id

    calls = [c for c in contacts(wf_db, loan_id) if c.kind == "voice_call"]
    assert calls == []  # held by the promise
    assert any(
        "DPD 7: voice call" in a.detail and "hold:PROMISE P-1" in a.detail
        for a in audit(wf_db, loan_id, "step_held")
    )
    assert held.hold is not None and held.hold.ref == "P-1"
    assert [p.status for p in after.promises] == ["kept"]
    assert after.hold is None and after.broken_promises == 0


async def test_a_broken_promise_sends_its_sms_and_the_ladder_resumes_without_replaying(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=5)
        await desk(
            handle,
            contract.RECORD_PROMISE,
            promise_id="P-1",
            amount=10_000,
            promised_date=(due1 + timedelta(days=8)).isoformat(),
            agent_id="agent-1",
        )
        await sleep_until_local(ts_env, due1 + timedelta(days=8), hour=23)
        on_the_day = await state(handle)
        await sleep_until_local(ts_env, due1 + timedelta(days=9), hour=12)
        broken = await state(handle)
        await sleep_until_local(ts_env, due1 + timedelta(days=15), hour=12)
        later = await state(handle)
        loan_id = later.loan_id

    assert [p.status for p in on_the_day.promises] == ["open"]  # kept until its day ends
    assert [p.status for p in broken.promises] == ["broken"] and broken.broken_promises == 1
    sent = contacts(wf_db, loan_id)
    sms = [c for c in sent if c.kind == "broken_promise"]
    assert len(sms) == 1 and sms[0].status == "delivered" and sms[0].channel == "sms"
    planned = sms[0].scheduled_at.astimezone(TZ)
    assert (planned.date(), planned.hour) == (due1 + timedelta(days=9), 8)  # the next window opens
    calls = sorted(c.scheduled_at.astimezone(TZ).date() for c in sent if c.kind == "voice_call")
    assert calls == [due1 + timedelta(days=14)]  # DPD 7 held and not replayed; DPD 14 runs


async def test_a_second_broken_promise_refuses_a_third(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=4)
        for n, day in enumerate((5, 7), start=1):
            await desk(
                handle,
                contract.RECORD_PROMISE,
                promise_id=f"P-{n}",
                amount=5_000,
                promised_date=(due1 + timedelta(days=day)).isoformat(),
                agent_id="agent-1",
            )
            await sleep_until_local(ts_env, due1 + timedelta(days=day + 1))
        reason = await refused(
            handle,
            contract.RECORD_PROMISE,
            promise_id="P-3",
            amount=5_000,
            promised_date=(due1 + timedelta(days=10)).isoformat(),
            agent_id="agent-1",
        )
        s = await state(handle)

    assert reason.startswith("promise_id:") and "max_broken_promises = 2" in reason
    assert s.broken_promises == 2 and [p.promise_id for p in s.promises] == ["P-1", "P-2"]


async def test_a_dispute_holds_from_grace_is_escalated_and_the_ladder_resumes_when_rejected(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=2)
        opened = await desk(
            handle, contract.OPEN_DISPUTE, dispute_id="D-1", reason="amount", opened_by="ops-1"
        )
        assert opened.hold is not None and opened.hold.reason == "DISPUTE" and opened.hold.until is None
        await sleep_until_local(ts_env, due1 + timedelta(days=21))  # 19 days open
        before_deadline = await state(handle)
        await sleep_until_local(ts_env, due1 + timedelta(days=40))
        held = await state(handle)
        loan_id = held.loan_id
        held_contacts = contacts(wf_db, loan_id)
        with Session(wf_db) as s:
            held_reports = list(
                s.exec(select(CreditBureauRecord).where(CreditBureauRecord.loan_id == loan_id))
            )
            held_agents = list(s.exec(select(Assignment).where(Assignment.loan_id == loan_id)))
        await desk(
            handle, contract.RESOLVE_DISPUTE, dispute_id="D-1", outcome="rejected", resolved_by="ops-2"
        )
        await sleep_until_local(ts_env, due1 + timedelta(days=41))
        resumed = await state(handle)
        await sleep_until_local(ts_env, due1 + timedelta(days=51))
        reported = await state(handle)

    assert not before_deadline.disputes[0].escalated
    assert held.disputes[0].escalated and held.stage == "AGENT" and held.days_past_due == 40
    since_opening = datetime.combine(due1 + timedelta(days=2), time(12), TZ)
    since_opened = [c for c in held_contacts if c.scheduled_at > since_opening]
    assert [c.kind for c in since_opened if c.kind != "reminder"] == []  # no notice, SMS or call
    assert held_reports == [] and held_agents == [] and held.assigned_agent is None
    assert not held.credit_reported
    escalations = audit(wf_db, loan_id, "dispute_overdue")
    assert len(escalations) == 1
    assert escalations[0].at.astimezone(TZ).date() == due1 + timedelta(days=22)  # 20 days after opening
    # Resumed like a loan onboarded at DPD 40: the agent and the credit notice, no replay.
    assert resumed.assigned_agent == "agent-1" and resumed.hold is None
    notices = [c for c in contacts(wf_db, loan_id) if c.kind == "credit_notice"]
    assert len(notices) == 1 and notices[0].status == "delivered"
    after_opening = [c for c in contacts(wf_db, loan_id) if c.scheduled_at > since_opening]
    assert not [c for c in after_opening if c.kind in ("overdue_sms", "voice_call")]
    assert not resumed.credit_reported and reported.credit_reported  # 10 days after the notice


async def test_a_hardship_of_30_days_stops_contact_and_penalty_then_both_resume(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=5)
        first = due1 + timedelta(days=5)
        started = await desk(
            handle,
            contract.START_HARDSHIP,
            hardship_id="H-1",
            reason="job_loss",
            until=(first + timedelta(days=29)).isoformat(),
            approved_by="supervisor-1",
            approval_ref="HR-2026-7",
        )
        at_start = await state(handle)
        sent_before = len(contacts(wf_db, at_start.loan_id))
        await sleep_until_local(ts_env, first + timedelta(days=29), hour=22)
        at_end = await state(handle)
        sent_during = len(contacts(wf_db, at_start.loan_id)) - sent_before
        await sleep_until_local(ts_env, first + timedelta(days=36))
        after = await state(handle)
        loan_id = after.loan_id

    assert started.hold is not None and started.hold.reason == "HARDSHIP"
    assert sent_during == 0  # no contact of any kind, reminders included
    assert at_end.outstanding.penalty == at_start.outstanding.penalty  # frozen
    assert after.outstanding.penalty > at_end.outstanding.penalty  # accrues again
    assert [h.status for h in after.hardships] == ["ended"] and after.hold is None
    # Collection again after it: the agent the hardship held at DPD 31 (the entry step of
    # the stage the loan is now in), and no held step replayed.
    assert at_end.assigned_agent is None and after.assigned_agent == "agent-1"
    assert len(audit(wf_db, loan_id, "hardship_review")) == 1
    assert audit(wf_db, loan_id, "step_held")  # each stopped step written down


async def test_without_voice_calls_fall_back_to_sms(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=4)
        answer = await desk(
            handle,
            contract.SET_CONTACT_PREFERENCES,
            preference_id="pref-1",
            channels=["sms", "email"],
            set_by="agent-1",
        )
        await sleep_until_local(ts_env, due1 + timedelta(days=8))
        loan_id = (await state(handle)).loan_id

    assert answer.contact_channels == ["sms", "letter", "email"]
    calls = [c for c in contacts(wf_db, loan_id) if c.kind == "voice_call"]
    assert [(c.channel, c.status) for c in calls] == [("sms", "delivered")]


async def test_the_contact_log_is_a_compliance_gate(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=32)
        today = due1 + timedelta(days=32)
        at_night = await refused(
            handle,
            contract.LOG_CONTACT,
            contact_id="C-1",
            agent_ids=["agent-1"],
            channel="voice",
            result="reached",
            at=local_at(today - timedelta(days=1), 23),
        )
        alone = await refused(
            handle,
            contract.LOG_CONTACT,
            contact_id="C-2",
            agent_ids=["agent-1"],
            channel="field_visit",
            result="reached",
            at=local_at(today, 10),
        )
        for n in range(3):  # three connected calls: the daily cap
            logged = await desk(
                handle,
                contract.LOG_CONTACT,
                contact_id=f"C-ok-{n}",
                agent_ids=["agent-1"],
                channel="voice",
                result="reached",
                reason="job_loss",
                at=local_at(today, 9, n),
            )
            assert logged.status == "logged"
        over_cap = await refused(
            handle,
            contract.LOG_CONTACT,
            contact_id="C-4",
            agent_ids=["agent-1"],
            channel="voice",
            result="reached",
            at=local_at(today, 11),
        )
        again = await desk(
            handle,
            contract.LOG_CONTACT,
            contact_id="C-ok-0",
            agent_ids=["agent-1"],
            channel="voice",
            result="reached",
            at=local_at(today, 9),
        )

    assert at_night.startswith("at:") and "outside the contact window" in at_night
    assert alone.startswith("agent_ids:") and "at least two collectors" in alone
    assert over_cap.startswith("at:") and "call caps" in over_cap
    assert again.duplicate


@pytest.mark.parametrize("how", ["signal-with-start", "sent-before-any-worker"])
async def test_a_desk_signal_in_the_first_workflow_task_is_applied(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, how: str
) -> None:
    """Found by review: handlers registered in __init__ missed a signal delivered with the
    run's first task (it was recorded as rejected and the dispute was lost)."""
    start = loan_start(local_today(await ts_env.get_current_time()) - timedelta(days=1), term_months=6)
    dispute = {"dispute_id": "D-1", "reason": "amount", "opened_by": "ops"}
    if how == "signal-with-start":
        handle = await ts_env.client.start_workflow(
            LoanCollection.run,
            start,
            id=f"loan-{start.loan_id}",
            task_queue=task_queue,
            start_signal=contract.DISPUTE_OPENED,
            start_signal_args=[dispute],
        )
        STARTED.append(handle)
    else:
        handle = await start_loan(ts_env.client, task_queue, start)
        await handle.signal(contract.DISPUTE_OPENED, dispute)
    async with running_worker(ts_env.client, task_queue, wf_db):
        # The signal waits for the case to be opened (its policy loaded) before it is
        # applied; a query before then answers from the start input alone.
        view = await eventually(lambda: state(handle), lambda v: bool(v.disputes))

    assert [d.dispute_id for d in view.disputes] == ["D-1"]
    assert view.hold is not None and view.hold.reason == "DISPUTE"
    assert audit(wf_db, start.loan_id, "rejected") == []


async def test_a_loan_paid_off_under_dispute_stays_open_until_the_dispute_is_resolved(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    """Found by review: the run completed at payoff and the dispute could never be
    resolved (its row stayed open for ever)."""
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=10)
        await desk(handle, contract.OPEN_DISPUTE, dispute_id="D-1", reason="amount", opened_by="ops")
        total = (await state(handle)).outstanding.total
        await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id="all", amount=total))
        await sleep_until_local(ts_env, due1 + timedelta(days=35))  # past the 20-day deadline
        paid = await state(handle)
        running = await execution_status(ts_env, handle)
        resolved = await desk(
            handle, contract.RESOLVE_DISPUTE, dispute_id="D-1", outcome="upheld", resolved_by="ops-2"
        )
        final = await handle.result()
        loan_id = paid.loan_id

    assert paid.closed and paid.stage == "PAID_OFF" and paid.hold is not None
    assert running == WorkflowExecutionStatus.RUNNING.value
    assert paid.disputes[0].escalated and len(audit(wf_db, loan_id, "dispute_overdue")) == 1
    assert resolved.status == "upheld" and resolved.hold is None
    assert final.closed and [d.status for d in final.disputes] == ["upheld"]


async def test_compliance_reads_why_a_call_did_not_happen_and_collectors_their_tasks(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """`starter.py audit LOAN --event step_held` answers "why was this borrower not called
    on the 14th?"; `starter.py tasks --queue` lists the dispute left open too long."""
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=5)
        await desk(handle, contract.OPEN_DISPUTE, dispute_id="D-9", reason="identity", opened_by="ops")
        await sleep_until_local(ts_env, due1 + timedelta(days=26))
        loan_id = (await state(handle)).loan_id
    settings = Settings(database_url=wf_db.url.render_as_string(hide_password=False))
    capsys.readouterr()
    assert await starter.amain(["audit", loan_id, "--event", "step_held", "--json"], settings=settings) == 0
    held = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert await starter.amain(["tasks", "--queue"], settings=settings) == 0
    listed_tasks = capsys.readouterr().out

    day14 = next(e for e in held if e["detail"].startswith("DPD 14: voice call"))
    assert (
        day14["detail"].endswith("stopped by hold:DISPUTE D-9") and day14["source"] == "rule:hold:DISPUTE D-9"
    )
    assert datetime.fromisoformat(day14["at"]).astimezone(TZ).date() == due1 + timedelta(days=14)
    assert loan_id in listed_tasks and "dispute_overdue" in listed_tasks and "(queue)" in listed_tasks


@pytest.mark.parametrize("disputed", [False, True], ids=["no-dispute", "under-dispute"])
async def test_a_failed_write_at_payoff_is_retried_also_while_a_dispute_keeps_the_run_open(
    ts_env: WorkflowEnvironment,
    task_queue: str,
    wf_db: Engine,
    monkeypatch: pytest.MonkeyPatch,
    disputed: bool,
) -> None:
    """Found by the second review: waiting for a dispute's resolution after payoff did not
    honour the write-down's retry, so the lender's database showed the loan unpaid."""
    seed(wf_db)
    real = RecordActivities.sync_loan
    failed: list[str] = []

    @activity.defn(name="sync_loan")
    def refuse_once(self: RecordActivities, proj: Any) -> Any:
        if proj.closed and not failed:
            failed.append(proj.loan_id)
            raise non_retryable("the projection write refused once", "InvalidData")
        return real(self, proj)

    monkeypatch.setattr(RecordActivities, "sync_loan", refuse_once)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=10)
        if disputed:
            await desk(handle, contract.OPEN_DISPUTE, dispute_id="D-1", reason="amount", opened_by="ops")
        await sleep_until_local(ts_env, due1 + timedelta(days=35))  # escalated: nothing left to plan
        total = (await state(handle)).outstanding.total
        await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id="all", amount=total))
        await sleep_until_local(ts_env, due1 + timedelta(days=37))  # the write's backoff is 1 minute
        loan_id = (await state(handle)).loan_id
        with Session(wf_db) as s:
            row = s.get(Loan, loan_id)
            assert row is not None
            closed_in_db = row.closed

    assert failed == [loan_id]
    assert closed_in_db


async def test_a_queued_case_leaves_the_queue_while_a_dispute_holds_and_gets_its_agent_after(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    """Found by the second review: the database's queue handed a disputed case to the
    first agent added, though the workflow held escalation."""
    seed(wf_db, agents=0)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=33)  # queued at DPD 31: no agents
        await desk(handle, contract.OPEN_DISPUTE, dispute_id="D-1", reason="amount", opened_by="ops")
        await sleep_until_local(ts_env, due1 + timedelta(days=34))
        with Session(wf_db) as s:
            repo.add_agent(s, "agent-9", "Agent 9", max_cases=1)
            s.commit()
        await sleep_until_local(ts_env, due1 + timedelta(days=40))
        held = await state(handle)
        with Session(wf_db) as s:
            during = [(r.agent_id, r.released_at is None) for r in repo.assignments_for_loan(s, held.loan_id)]
            loads = repo.agent_loads(s)
        await desk(handle, contract.RESOLVE_DISPUTE, dispute_id="D-1", outcome="rejected", resolved_by="ops")
        await sleep_until_local(ts_env, due1 + timedelta(days=41))
        after = await state(handle)

    assert held.assigned_agent is None and (None, True) not in during and ("agent-9", True) not in during
    assert loads.get("agent-9", 0) == 0
    assert after.assigned_agent == "agent-9"


async def test_case_tasks_close_when_their_dispute_is_resolved_or_a_collector_marks_them_done(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the second review: case tasks never closed."""
    seed(wf_db)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle, due1 = await overdue_loan(ts_env, task_queue, dpd=10)
        await desk(handle, contract.OPEN_DISPUTE, dispute_id="D-1", reason="amount", opened_by="ops")
        await desk(
            handle,
            contract.START_HARDSHIP,
            hardship_id="H-1",
            reason="illness",
            until=(due1 + timedelta(days=12)).isoformat(),
            approved_by="s",
            approval_ref="HR",
        )
        await sleep_until_local(ts_env, due1 + timedelta(days=35))  # escalated; the hardship ended
        loan_id = (await state(handle)).loan_id
        with Session(wf_db) as s:
            both = sorted(t.kind for t in repo.open_case_tasks(s) if t.loan_id == loan_id)
        await desk(handle, contract.RESOLVE_DISPUTE, dispute_id="D-1", outcome="rejected", resolved_by="ops")
        await sleep_until_local(ts_env, due1 + timedelta(days=36))
        with Session(wf_db) as s:
            left = [t for t in repo.open_case_tasks(s) if t.loan_id == loan_id]
    settings = Settings(database_url=wf_db.url.render_as_string(hide_password=False))
    assert [t.kind for t in left] == ["hardship_review"]
    assert await starter.amain(["tasks", "done", str(left[0].id), "--by", "agent-1"], settings=settings) == 0
    assert await starter.amain(["tasks", "--agent", " "], settings=settings) == 2
    assert "--agent" in capsys.readouterr().err

    assert both == ["dispute_overdue", "hardship_review"]
    with Session(wf_db) as s:
        assert [t for t in repo.open_case_tasks(s) if t.loan_id == loan_id] == []
    done = audit(wf_db, loan_id, "task_done")
    assert len(done) == 1 and done[0].detail.endswith("done by agent-1")
