"""Messages, refusals and search attributes on the real dev server (real clock)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import WorkflowExecution, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from models import search
from models.wire import CaseView, PaymentIn, RestructuringIn
from tests.conftest import running_worker
from tests.loans import loan_start, local_today, start_loan, state
from tests.test_workflow_ladder import seed
from tests.visibility import eventually, listed
from workflows.loan_collection import LoanCollection

pytestmark = pytest.mark.temporal
APPROVAL = {"approved_by": "risk-officer-7", "approval_ref": "APR-1"}


async def overdue_loan(env: WorkflowEnvironment, task_queue: str, dpd: int, **kw: object):
    today = local_today(datetime.now().astimezone())
    start = loan_start(today - timedelta(days=dpd + 31), first_due_date=today - timedelta(days=dpd), **kw)
    return start, await start_loan(env.client, task_queue, start)


def ids(workflows: list[WorkflowExecution]) -> list[str]:
    return sorted(wf.id for wf in workflows)


async def history_length(handle: WorkflowHandle) -> int:
    return len((await handle.fetch_history()).events)


async def refused(handle: WorkflowHandle, update: Any, arg: Any) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(update, arg)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    return str(cause.message)


async def settled(handle: WorkflowHandle) -> CaseView:
    """State once the workflow has finished its current step (histories stop growing)."""
    last = -1
    for _ in range(50):
        n = await history_length(handle)
        if n == last:
            break
        last = n
        await asyncio.sleep(0.1)
    return await state(handle)


@pytest.mark.parametrize(
    ("payment", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -100}, "amount"),
        ({"amount": 10**12}, "amount"),
        ({"amount": 1000, "currency": "USD"}, "currency"),
        ({"amount": 1000, "paid_at": "2999-01-01T00:00:00+00:00"}, "paid_at"),
        ({"amount": 1000, "paid_at": "2000-01-01T00:00:00+00:00"}, "paid_at"),
    ],
    ids=["zero", "negative", "above-payoff", "wrong-currency", "future", "before-disbursal"],
)
async def test_bad_payment_is_refused_naming_the_field_and_changes_nothing(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, payment: dict[str, object], field: str
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        _, handle = await overdue_loan(dev_env, task_queue, dpd=10)
        before = await settled(handle)
        events = await history_length(handle)
        # Sent as the JSON a gateway sends: the workflow's edge refuses it, naming the field.
        message = await refused(handle, LoanCollection.record_payment, {"payment_id": "bad", **payment})
        assert message.startswith(f"{field}:"), message
        assert await history_length(handle) == events  # a validator refusal adds nothing
        assert (await state(handle)).outstanding == before.outstanding


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        ({"kind": "extension", "extension_days": 30, "approved_by": "", "approval_ref": "A"}, "approved_by"),
        ({"kind": "extension", "extension_days": 30, "approved_by": "x"}, "approval_ref"),
        ({"kind": "extension", "extension_days": 3, **APPROVAL}, "extension_days"),
        ({"kind": "reinstallment", "new_term_months": 0, **APPROVAL}, "new_term_months"),
        ({"kind": "waiver", **APPROVAL}, "waive_penalty"),
        ({"kind": "waiver", "waive_amount": 10**12, **APPROVAL}, "waive_amount"),
    ],
    ids=[
        "no-approver",
        "no-approval-ref",
        "too-short-extension",
        "zero-term",
        "empty-waiver",
        "waiver-too-big",
    ],
)
async def test_bad_restructuring_is_refused_naming_the_field(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, request_: dict[str, object], field: str
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        _, handle = await overdue_loan(dev_env, task_queue, dpd=10)
        before = await settled(handle)
        message = await refused(
            handle,
            LoanCollection.apply_restructuring,
            {"restructuring_id": "r", **request_},
        )
        assert message.startswith(f"{field}:"), message
        after = await state(handle)
        assert after.installments == before.installments and after.outstanding == before.outstanding


async def test_payment_ids_apply_once_across_updates_and_signals(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        _, handle = await overdue_loan(dev_env, task_queue, dpd=10)
        before = await settled(handle)
        first = await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="p-1", amount=20_000)
        )
        again = await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="p-1", amount=20_000)
        )
        assert not first.duplicate and again.duplicate
        assert again.allocation == first.allocation and again.outstanding == first.outstanding
        await handle.signal(LoanCollection.payment_received, PaymentIn(payment_id="p-1", amount=20_000))
        await handle.signal(LoanCollection.payment_received, PaymentIn(payment_id="p-2", amount=5_000))
        await handle.signal(LoanCollection.payment_received, PaymentIn(payment_id="p-2", amount=5_000))
        after = await settled(handle)
        assert before.overdue - after.overdue == 25_000


async def test_invalid_signals_are_recorded_and_never_fail_the_workflow(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        start, handle = await overdue_loan(dev_env, task_queue, dpd=10)
        before = await settled(handle)
        await handle.signal(LoanCollection.payment_received, PaymentIn(payment_id="neg", amount=-5))
        await handle.signal(LoanCollection.payment_received, PaymentIn(payment_id="big", amount=10**12))
        await handle.signal(
            LoanCollection.restructuring_approved,
            RestructuringIn(restructuring_id="r", kind="extension", extension_days=30),
        )
        # A payload that does not even match the message's shape.
        await handle.signal("payment_received", {"payment_id": "odd", "amount": "lots", "memo": 1})
        after = await settled(handle)
        assert after.outstanding == before.outstanding and after.stage == before.stage
        description = await handle.describe()
        assert description.status is not None and description.status.name == "RUNNING"
        # The rejections are in the audit log.
        from sqlmodel import Session, select

        from models.tables import AuditLog

        with Session(wf_db) as db:
            rejected = [
                a
                for a in db.exec(select(AuditLog).where(AuditLog.loan_id == start.loan_id))
                if a.event == "rejected"
            ]
        assert len(rejected) == 4
        assert any("odd" in a.detail and "memo" in a.detail for a in rejected)
        assert any("amount:" in a.detail for a in rejected) and any(
            "approved_by:" in a.detail for a in rejected
        )


async def test_paid_off_loan_completes_and_refuses_further_payments(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        start, handle = await overdue_loan(dev_env, task_queue, dpd=40)
        s = await settled(handle)
        assert s.stage == "AGENT" and s.assigned_agent is not None
        res = await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="payoff", amount=s.outstanding.total)
        )
        assert res.stage == "PAID_OFF" and res.outstanding.total == 0
        final = await handle.result()
        assert final.closed and final.assigned_agent is None and final.next_action is None
        with pytest.raises(RPCError):
            await handle.execute_update(
                LoanCollection.record_payment, PaymentIn(payment_id="late", amount=100)
            )
        # A loan id is never reused, also after it closed.
        with pytest.raises(Exception, match="already"):
            await dev_env.client.start_workflow(
                LoanCollection.run,
                start,
                id=f"loan-{start.loan_id}",
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )


async def test_search_attributes_find_cases_like_an_operator_would(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        agent_loan, _ = await overdue_loan(dev_env, task_queue, dpd=50)
        early_loan, _ = await overdue_loan(dev_env, task_queue, dpd=10)
        current, _ = await overdue_loan(dev_env, task_queue, dpd=-5)
        client = dev_env.client
        agent_id, early_id = f"loan-{agent_loan.loan_id}", f"loan-{early_loan.loan_id}"
        # Each query polls until its own answer is complete: visibility is eventually
        # consistent, so a loan found by one query may not show in the next one yet.
        query = f"CollectionStage = 'AGENT' AND DaysPastDue > 45 AND TaskQueue = '{task_queue}'"
        agents = await eventually(lambda: listed(client, query), lambda wfs: ids(wfs) == [agent_id])
        assert ids(agents) == [agent_id]

        def early_indexed(wfs: list[WorkflowExecution]) -> bool:
            if ids(wfs) != [early_id]:
                return False
            sa = wfs[0].typed_search_attributes
            return (
                sa.get(search.DAYS_PAST_DUE) in (10, 11)  # 11 if the Shanghai day turned meanwhile
                and sa.get(search.LOAN_ID) == early_loan.loan_id
                and bool(sa.get(search.AMOUNT_OVERDUE))
                and sa.get(search.OVERDUE_SINCE) is not None
            )

        early_query = f"CollectionStage = 'EARLY' AND TaskQueue = '{task_queue}'"
        early = await eventually(lambda: listed(client, early_query), early_indexed)
        assert ids(early) == [early_id]
        sa = early[0].typed_search_attributes
        assert sa.get(search.DAYS_PAST_DUE) in (10, 11)  # 11 if the Shanghai day turned meanwhile
        assert sa.get(search.LOAN_ID) == early_loan.loan_id
        assert sa.get(search.AMOUNT_OVERDUE) and sa.get(search.OVERDUE_SINCE) is not None
        assert current.loan_id != agent_loan.loan_id


async def test_invalid_terms_fail_the_start_naming_the_field(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    from temporalio.client import WorkflowFailureError

    async with running_worker(dev_env.client, task_queue, wf_db):
        start = loan_start(local_today(datetime.now().astimezone()), annual_rate_bps=9000)
        handle = await start_loan(dev_env.client, task_queue, start)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "annual_rate_bps" in str(info.value.cause)


async def test_a_closed_loan_id_is_never_collected_again(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    from temporalio.client import WorkflowFailureError

    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        start, handle = await overdue_loan(dev_env, task_queue, dpd=-5)
        s = await settled(handle)
        await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="all", amount=s.outstanding.total)
        )
        await handle.result()
        # A careless caller starts the same loan id again with the server's default reuse
        # policy: the new run refuses to collect a loan that was closed.
        again = await dev_env.client.start_workflow(
            LoanCollection.run, start, id=f"loan-{start.loan_id}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as info:
            await again.result()
    failure = info.value.cause
    assert "never reused" in f"{failure} {getattr(failure, 'cause', '')}"
