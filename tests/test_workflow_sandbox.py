"""DESIGN.md: the workflow file imports only the standard library, temporalio, and
domain/, models/ and activities/ modules passed through the sandbox; never SQLModel or
SQLAlchemy inside it. A (re)import of the database stack inside the sandbox costs ~0.3 s
per workflow run and can break mapper initialisation, so a workflow run here fails as
soon as sandboxed code imports one of them."""

from __future__ import annotations

import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import (
    RestrictedWorkflowAccessError,
    SandboxedWorkflowRunner,
    SandboxMatcher,
    SandboxRestrictions,
)

from activities import collection_activities
from models.wire import PaymentIn, RestructuringIn
from tests.loans import loan_start, local_today, sleep_until_local, start_loan, state, terminate_started
from tests.sandbox_probe import ImportsSqlmodel
from tests.test_workflow_ladder import seed
from workflows.loan_collection import LoanCollection

pytestmark = pytest.mark.temporal
DATABASE_STACK = {"sqlalchemy", "sqlmodel", "alembic", "psycopg"}


def strict_worker(client: Client, task_queue: str, db: Engine, executor: ThreadPoolExecutor) -> Worker:
    """A worker whose sandbox refuses to import the database stack, and fails the
    workflow (instead of retrying its task forever) when workflow code tries."""
    restrictions = dataclasses.replace(
        SandboxRestrictions.default, invalid_modules=SandboxMatcher(access=DATABASE_STACK)
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[LoanCollection, ImportsSqlmodel],
        activities=collection_activities(db),
        activity_executor=executor,
        workflow_runner=SandboxedWorkflowRunner(restrictions=restrictions),
        workflow_failure_exception_types=[RestrictedWorkflowAccessError],
    )


async def test_the_guard_catches_a_workflow_that_imports_sqlmodel_in_the_sandbox(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    with ThreadPoolExecutor(max_workers=2) as executor:
        async with strict_worker(ts_env.client, task_queue, wf_db, executor):
            with pytest.raises(WorkflowFailureError) as info:
                await ts_env.client.execute_workflow(
                    ImportsSqlmodel.run, id=f"probe-{uuid.uuid4().hex[:8]}", task_queue=task_queue
                )
    assert "sqlmodel" in str(info.value.cause)


async def test_a_loan_runs_in_the_sandbox_without_importing_the_database_stack(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()), term_months=3)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with strict_worker(ts_env.client, task_queue, wf_db, executor):
            # Every path of the workflow code: opening, the ladder, both update kinds, a
            # signal, the query, and the payoff that ends the run.
            handle = await start_loan(ts_env.client, task_queue, start)
            due1 = (await state(handle)).installments[0].due_date
            await sleep_until_local(ts_env, due1 + timedelta(days=10))
            await handle.execute_update(
                LoanCollection.apply_restructuring,
                RestructuringIn(
                    restructuring_id="w", kind="waiver", waive_penalty=True, approved_by="a", approval_ref="b"
                ),
            )
            await handle.signal(LoanCollection.payment_received, PaymentIn(payment_id="bad", amount=-1))
            payoff = (await state(handle)).outstanding.total
            await handle.execute_update(
                LoanCollection.record_payment, PaymentIn(payment_id="all", amount=payoff)
            )
            final = await handle.result()
            await terminate_started()
    assert final.closed and final.stage == "PAID_OFF"
