"""A worker that dies after writing a payment down and before its workflow task
completes: the retried workflow task takes the payment in again (it was never in
history) and writes it down again. The booking is idempotent by (loan_id, payment_id);
the audit entry of a payment is keyed by its payment_id, so it is written once (it was
keyed by the workflow task's time and written twice)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from temporalio.testing import WorkflowEnvironment

from models.db import make_engine
from models.wire import PaymentIn
from tests.faults.harness import WorkerProcess, until
from tests.loans import loan_start, local_today, start_loan, terminate_started
from workflows.loan_collection import LoanCollection

pytestmark = [pytest.mark.faults, pytest.mark.temporal]


def counts(url: str, loan_id: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            booked = conn.execute(
                sa.text("SELECT COUNT(*) FROM payment WHERE loan_id = :l"), {"l": loan_id}
            ).scalar_one()
            audited = conn.execute(
                sa.text("SELECT COUNT(*) FROM audit_log WHERE loan_id = :l AND event = 'payment'"),
                {"l": loan_id},
            ).scalar_one()
    finally:
        engine.dispose()
    return int(booked), int(audited)


async def test_a_payment_is_audited_once_when_the_worker_dies_after_writing_it_down(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    address = dev_env.client.service_client.config.target_host
    dying = WorkerProcess(
        tmp_path,
        address=address,
        task_queue=task_queue,
        database_url=url,
        argv=("-m", "tests.faults.crashing_worker"),
        name="dying",
    )
    healthy = WorkerProcess(tmp_path, address=address, task_queue=task_queue, database_url=url)
    try:
        dying.start()
        await dying.polling()
        today = local_today(datetime.now().astimezone())
        start = loan_start(today - timedelta(days=40), first_due_date=today - timedelta(days=9))
        handle = await start_loan(dev_env.client, task_queue, start)
        payment = PaymentIn(payment_id="PAY-once", amount=1_000)
        update = asyncio.create_task(handle.execute_update(LoanCollection.record_payment, payment))

        async def died() -> bool:
            return not dying.alive()

        await until(died, timeout=60, what="the dying worker to write the payment down and die")
        assert counts(url, start.loan_id) == (1, 1)  # written down before the workflow task completed
        healthy.start()
        answer = await asyncio.wait_for(update, timeout=90)
        assert not answer.duplicate  # the payment was not in history: the retried task took it in
        booked, audited = counts(url, start.loan_id)
        assert booked == 1  # the ledger: exactly once
        assert audited == 1, f"the payment is audited {audited} times"
    finally:
        await terminate_started()
        dying.stop()
        healthy.stop()
