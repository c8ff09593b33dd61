"""The collector's desk on a real dev server: each update answered, refused naming the
field (nothing changed) and idempotent by its id; its signal twin; the rows in the
lender's database and the audit log; the hold's search attributes an operator queries
(`CollectionHold = "DISPUTE"`) and the hold in the Web UI's current details."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from models import contract, repo, search
from models.tables import AuditLog, CaseTask
from models.wire import CaseView, DeskResult
from tests.conftest import running_worker
from tests.loans import SHANGHAI, loan_start, local_today, start_loan, state
from tests.test_workflow_ladder import seed
from tests.visibility import eventually, listed
from workflows.loan_collection import LoanCollection

pytestmark = pytest.mark.temporal
Handle = WorkflowHandle[LoanCollection, CaseView]


async def overdue_loan(env: WorkflowEnvironment, task_queue: str, dpd: int) -> Handle:
    today = local_today(datetime.now().astimezone())
    start = loan_start(today - timedelta(days=dpd + 31), first_due_date=today - timedelta(days=dpd))
    return await start_loan(env.client, task_queue, start)


async def desk(handle: Handle, update: str, **payload: Any) -> DeskResult:
    return await handle.execute_update(update, payload, result_type=DeskResult)


async def refused(handle: Handle, update: str, **payload: Any) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as exc:
        await desk(handle, update, **payload)
    cause = exc.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


def today_plus(days: int) -> str:
    return (datetime.now(SHANGHAI).date() + timedelta(days=days)).isoformat()


def audit_events(db: Engine, loan_id: str) -> list[str]:
    with Session(db) as s:
        return [a.event for a in s.exec(select(AuditLog).where(AuditLog.loan_id == loan_id))]


async def test_each_desk_update_answers_refuses_and_applies_once(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        handle = await overdue_loan(dev_env, task_queue, dpd=10)
        loan_id = (await state(handle)).loan_id
        promise = {
            "promise_id": "P-1",
            "amount": 20_000,
            "promised_date": today_plus(3),
            "agent_id": "agent-1",
        }
        made = await desk(handle, contract.RECORD_PROMISE, **promise)
        assert (made.kind, made.id, made.status, made.duplicate) == ("promise", "P-1", "open", False)
        assert made.hold is not None and made.hold.reason == "PROMISE" and made.hold.until is not None
        again = await desk(handle, contract.RECORD_PROMISE, **promise | {"amount": 1})
        assert again.duplicate and again.status == "open"
        before = await state(handle)
        second = await refused(handle, contract.RECORD_PROMISE, **promise | {"promise_id": "P-2"})
        assert second.type == "InvalidPromise" and second.message.startswith("promise_id:")
        await handle.signal(contract.PROMISE_MADE, promise | {"promise_id": "P-3"})  # refused too
        assert (await state(handle)).promises == before.promises

        opened = await desk(
            handle, contract.OPEN_DISPUTE, dispute_id="D-1", reason="identity", opened_by="ops"
        )
        assert opened.hold is not None and opened.hold.reason == "DISPUTE"  # stronger than the promise
        hardship = {"hardship_id": "H-1", "reason": "illness", "until": today_plus(30)}
        no_ref = await refused(handle, contract.START_HARDSHIP, **hardship | {"approved_by": "sup"})
        assert no_ref.type == "InvalidHardship" and no_ref.message.startswith("approval_ref:")
        await desk(
            handle, contract.START_HARDSHIP, **hardship | {"approved_by": "sup", "approval_ref": "HR-9"}
        )
        resolved = await desk(
            handle, contract.RESOLVE_DISPUTE, dispute_id="D-1", outcome="upheld", resolved_by="ops-2"
        )
        assert (
            resolved.status == "upheld" and resolved.hold is not None and resolved.hold.reason == "HARDSHIP"
        )
        ended = await desk(handle, contract.END_HARDSHIP, hardship_id="H-1", ended_by="sup")
        assert ended.status == "ended" and ended.hold is not None and ended.hold.reason == "PROMISE"
        prefs = await desk(
            handle,
            contract.SET_CONTACT_PREFERENCES,
            preference_id="PF-1",
            channels=["email"],
            set_by="agent-1",
        )
        assert prefs.contact_channels == ["letter", "email"]
        at = datetime.now(SHANGHAI).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=1)
        call = {"contact_id": "C-1", "agent_ids": ["agent-1"], "channel": "voice", "result": "reached"}
        logged = await desk(
            handle, contract.LOG_CONTACT, **call | {"reason": "illness", "at": at.isoformat()}
        )
        assert logged.status == "logged"
        await handle.signal(contract.CONTACT_LOGGED, call | {"contact_id": "C-2", "at": at.isoformat()})
        final = await state(handle)

        def written() -> repo.DeskRows | None:
            with Session(wf_db) as s:
                rows = repo.desk_records(s, loan_id)
            return (
                rows
                if len(rows.contacts) == 2 and rows.hardships and rows.hardships[0].status == "ended"
                else None
            )

        rows = await eventually(lambda: _async(written), lambda r: r is not None)

    assert [p.status for p in final.promises] == ["open"] and final.hold is not None
    assert [(d.dispute_id, d.status) for d in final.disputes] == [("D-1", "upheld")]
    assert [(h.hardship_id, h.status) for h in final.hardships] == [("H-1", "ended")]
    assert rows is not None
    assert [(p.promise_id, p.amount, p.status) for p in rows.promises] == [("P-1", 20_000, "open")]
    assert [(d.dispute_id, d.status, d.resolved_by) for d in rows.disputes] == [("D-1", "upheld", "ops-2")]
    assert [(h.hardship_id, h.ended_by) for h in rows.hardships] == [("H-1", "sup")]
    assert [p.channels for p in rows.preferences] == [["letter", "email"]]
    assert [(c.contact_id, c.reason) for c in rows.contacts] == [("C-1", "illness"), ("C-2", None)]
    events = audit_events(wf_db, loan_id)
    for event in ("promise", "dispute_opened", "dispute_resolved", "hardship_started", "hardship_ended"):
        assert events.count(event) == 1, event
    assert events.count("contact_logged") == 2 and "preferences" in events
    assert events.count("rejected") == 1  # the second promise sent as a signal


async def _async(fn: Any) -> Any:
    return fn()


async def test_operators_find_held_cases_by_their_search_attributes(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    client = dev_env.client
    async with running_worker(client, task_queue, wf_db):
        disputed = await overdue_loan(dev_env, task_queue, dpd=40)
        relieved = await overdue_loan(dev_env, task_queue, dpd=12)
        broken = await overdue_loan(dev_env, task_queue, dpd=12)
        await desk(disputed, contract.OPEN_DISPUTE, dispute_id="D-1", reason="fraud", opened_by="ops")
        until = today_plus(20)
        await desk(
            relieved,
            contract.START_HARDSHIP,
            hardship_id="H-1",
            reason="job_loss",
            until=until,
            approved_by="sup",
            approval_ref="HR-1",
        )
        made_at = datetime.now(SHANGHAI) - timedelta(days=3)
        await desk(
            broken,
            contract.RECORD_PROMISE,
            promise_id="P-1",
            amount=1_000,
            promised_date=(made_at.date() + timedelta(days=1)).isoformat(),
            agent_id="agent-1",
            made_at=made_at.isoformat(),
        )
        in_queue = f"TaskQueue = '{task_queue}'"
        found = await eventually(
            lambda: listed(client, f'CollectionHold = "DISPUTE" AND {in_queue}'),
            lambda wfs: [w.id for w in wfs] == [disputed.id],
        )
        hardship = await eventually(
            lambda: listed(client, f'CollectionHold = "HARDSHIP" AND {in_queue}'),
            lambda wfs: [w.id for w in wfs] == [relieved.id],
        )
        promises = await eventually(
            lambda: listed(client, f"BrokenPromises >= 1 AND {in_queue}"),
            lambda wfs: [w.id for w in wfs] == [broken.id],
        )
        metadata = await disputed.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
        # A dispute_overdue task only once a dispute has been open 20 days (not yet); a
        # hardship_review only once the relief ends.
        with Session(wf_db) as s:
            tasks = list(s.exec(select(CaseTask)))

    assert found[0].typed_search_attributes.get(search.HOLD_UNTIL) is None  # open-ended
    lifts = hardship[0].typed_search_attributes.get(search.HOLD_UNTIL)
    assert lifts is not None and lifts.astimezone(SHANGHAI).isoformat().startswith(
        (datetime.fromisoformat(until) + timedelta(days=1)).date().isoformat() + "T00:00:00"
    )
    assert promises[0].typed_search_attributes.get(search.BROKEN_PROMISES) == 1
    assert promises[0].typed_search_attributes.get(search.COLLECTION_HOLD) is None  # broken: no hold
    assert "| Hold | **DISPUTE** D-1 (until resolved) |" in metadata.current_details
    assert tasks == []
