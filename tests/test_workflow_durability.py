"""Durability: a worker that dies mid-ladder, continue-as-new, and replay of stored
histories so a code change that would break running loans fails CI."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.delivery import RecordingDeliverer
from domain import policy as policy_module
from models.tables import ContactAttempt
from models.wire import PaymentIn, RestructuringIn
from tests.conftest import running_worker
from tests.loans import loan_start, local_today, sleep_until_local, start_loan, state, terminate_started
from tests.test_workflow_ladder import seed
from workflows.loan_collection import LoanCollection

pytestmark = pytest.mark.temporal
HISTORIES = Path(__file__).parent / "histories"


async def test_a_worker_stopped_mid_ladder_and_replaced_sends_nothing_twice(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    deliverer = RecordingDeliverer()
    start = loan_start(local_today(await ts_env.get_current_time()))
    async with running_worker(
        ts_env.client, task_queue, wf_db, deliverer=deliverer, terminate_loans=False, sticky=False
    ):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=6))
    sent_before = len(deliverer.sent)
    # The loan's timers fire while no worker runs; a new worker picks the case up and
    # replays its history: nothing already done is done again.
    async with running_worker(ts_env.client, task_queue, wf_db, deliverer=deliverer):
        await sleep_until_local(ts_env, due1 + timedelta(days=35))
        s = await state(handle)
    assert s.stage == "AGENT"
    with Session(wf_db) as db:
        rows = list(db.exec(select(ContactAttempt).where(ContactAttempt.loan_id == start.loan_id)))
    keys = Counter(r.idempotency_key for r in rows)
    assert all(n == 1 for n in keys.values())
    assert len(deliverer.sent) == len(rows) > sent_before
    assert s.contacts_sent == len(rows)


async def test_continue_as_new_carries_the_whole_case(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()), term_months=6)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        first_run = handle.result_run_id
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=2))
        await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id="early", amount=1000))
        # A charged-off loan wakes every midnight for years; the history is handed over
        # to a new run well before it grows too long.
        await sleep_until_local(ts_env, due1 + timedelta(days=900))
        latest = ts_env.client.get_workflow_handle(handle.id)
        # (describe() is avoided: the time-skipping server hands Datetime search
        # attributes of a continued run back in a form the SDK cannot decode.)
        started = (await latest.fetch_history()).events[0].workflow_execution_started_event_attributes
        assert started.continued_execution_run_id  # this run continued an earlier one
        again = await latest.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="early", amount=1000)
        )
        assert again.duplicate
        s = await latest.query(LoanCollection.state)
        assert s.stage == "CHARGED_OFF" and s.days_past_due == 900 and s.credit_reported and s.legal_referred
        first = await ts_env.client.get_workflow_handle(handle.id, run_id=first_run).fetch_history()
        assert len(first.events) <= 4096 + 200
        await terminate_started()


def _histories() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def test_the_corpus_holds_every_recorded_scenario() -> None:
    """scripts/record_histories.py records the corpus; a scenario without its stored
    history (or one grown past the size budget) fails here, not silently."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "record_histories", Path(__file__).parent.parent / "scripts" / "record_histories.py"
    )
    assert spec is not None and spec.loader is not None
    recorder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recorder)
    stored = {p.stem: p.stat().st_size for p in _histories()}
    for name in recorder.SCENARIOS:
        assert name in stored, f"tests/histories/{name}.json missing: run scripts/record_histories.py {name}"
        assert stored[name] <= recorder.MAX_BYTES, (name, stored[name])


@pytest.mark.parametrize("path", _histories(), ids=lambda p: p.stem)
async def test_stored_histories_replay_on_the_current_code(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[LoanCollection], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


async def test_a_fresh_full_ladder_replays_also_after_the_policy_file_changed(
    ts_env: WorkflowEnvironment,
    task_queue: str,
    wf_db: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records the histories the replay test keeps (set RECORD_HISTORIES=1 to refresh the
    stored files) and replays a fresh one: restructuring, payments and the ladder."""
    seed(wf_db)
    start = loan_start(local_today(await ts_env.get_current_time()), term_months=3)
    async with running_worker(ts_env.client, task_queue, wf_db):
        handle = await start_loan(ts_env.client, task_queue, start)
        due1 = (await state(handle)).installments[0].due_date
        await sleep_until_local(ts_env, due1 + timedelta(days=20))
        await handle.execute_update(
            LoanCollection.apply_restructuring,
            RestructuringIn(
                restructuring_id="w", kind="waiver", waive_penalty=True, approved_by="a", approval_ref="b"
            ),
        )
        await handle.signal(LoanCollection.payment_received, PaymentIn(payment_id="bad", amount=-1))
        await sleep_until_local(ts_env, due1 + timedelta(days=100))
        s = await state(handle)
        await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="all", amount=s.outstanding.total)
        )
        await handle.result()
        history = await handle.fetch_history()
    assert len(history.events) < 4096
    replayer = Replayer(workflows=[LoanCollection], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    # Editing the policy file (here: the second overdue SMS moved from DPD 3 to DPD 4)
    # changes loans started afterwards, never the replay of a running one: each loan
    # replays under the policy recorded when it started.
    edited = tmp_path / "policies"
    edited.mkdir()
    text = (policy_module.POLICY_DIR / "standard.toml").read_text()
    assert 'id = "dpd-3-sms"\nday = 3' in text
    (edited / "standard.toml").write_text(
        text.replace('id = "dpd-3-sms"\nday = 3', 'id = "dpd-3-sms"\nday = 4')
    )
    monkeypatch.setattr(policy_module, "POLICY_DIR", edited)
    policy_module.load_policy.cache_clear()
    try:
        assert policy_module.load_policy("standard", "credit").ladder[1].day == 4
        await replayer.replay_workflow(history)
    finally:
        monkeypatch.undo()
        policy_module.load_policy.cache_clear()
    import os

    if os.environ.get("RECORD_HISTORIES"):
        (HISTORIES / "ladder_waiver_payoff.json").write_text(history.to_json())
