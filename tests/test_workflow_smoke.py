from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from models.wire import PaymentIn
from tests.conftest import running_worker
from tests.loans import loan_start, local_today, sleep_until_local, start_loan, state
from workflows.loan_collection import LoanCollection


async def test_unpaid_loan_walks_the_ladder_and_pays_off(ts_env: WorkflowEnvironment, task_queue, wf_db) -> None:
    today = local_today(await ts_env.get_current_time())
    start = loan_start(today)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        first_due = start.disbursed_on.replace()  # noqa
        s = await state(handle)
        due1 = s.installments[0].due_date
        assert s.stage == "CURRENT"
        await sleep_until_local(ts_env, due1 + timedelta(days=45))
        s = await state(handle)
        print(s.model_dump_json(indent=1)[:1500])
        assert s.stage == "AGENT"
        assert s.days_past_due == 45
        res = await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="p1", amount=s.outstanding.total)
        )
        print(res)
        result = await handle.result()
        assert result.closed
