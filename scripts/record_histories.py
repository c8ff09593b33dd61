"""Record the replay corpus: run workflow-test scenarios on the time-skipping server and
store each history as JSON in tests/histories/ (WorkflowHistory.to_json), where
tests/test_workflow_durability.py replays every file on the current code in CI.

    .venv/bin/python scripts/record_histories.py            # every scenario
    .venv/bin/python scripts/record_histories.py cure_from_agent on_time_payoff

Re-record only deliberately, before the first deployment: once loans run on a deployed
version, a stored history stands for a running loan, and a change that breaks its replay
must be guarded by `workflow.patched(...)` instead (README, "Changing the workflow").
Scenarios are chosen to keep each file small (well under 300 KB): short loans, and loans
that start late in the ladder rather than sleeping through all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import Engine  # noqa: E402
from temporalio.client import WorkflowHandle, WorkflowHistory  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.testing import WorkflowEnvironment  # noqa: E402
from temporalio.worker import Replayer  # noqa: E402

from client.search_attributes import ensure_search_attributes  # noqa: E402
from models.db import make_engine, upgrade_schema  # noqa: E402
from models.wire import PaymentIn, RestructuringIn  # noqa: E402
from tests.conftest import running_worker  # noqa: E402
from tests.loans import loan_start, local_today, sleep_until_local, start_loan, state  # noqa: E402
from tests.test_workflow_ladder import seed  # noqa: E402
from worker import preload_policies  # noqa: E402
from workflows.loan_collection import LoanCollection  # noqa: E402

HISTORIES = ROOT / "tests" / "histories"
MAX_BYTES = 300_000
APPROVAL = {"approved_by": "supervisor.li", "approval_ref": "APR-1"}

Handle = WorkflowHandle[LoanCollection, Any]
Scenario = Callable[[WorkflowEnvironment, str], Awaitable[Handle]]


async def _pay_total(handle: Handle, payment_id: str) -> None:
    s = await state(handle)
    await handle.execute_update(
        LoanCollection.record_payment, PaymentIn(payment_id=payment_id, amount=s.outstanding.total)
    )


async def on_time_payoff(env: WorkflowEnvironment, tq: str) -> Handle:
    """Every installment paid on its due date; the last payment closes the loan."""
    start = loan_start(local_today(await env.get_current_time()), term_months=3)
    handle = await start_loan(env.client, tq, start)
    for inst in (await state(handle)).installments:
        await sleep_until_local(env, inst.due_date, hour=10)
        s = await state(handle)
        if inst.seq == len(s.installments):
            await _pay_total(handle, f"P-{inst.seq}")
        else:
            amount = inst.principal + inst.interest - s.installments[inst.seq - 1].paid
            await handle.execute_update(
                LoanCollection.record_payment, PaymentIn(payment_id=f"P-{inst.seq}", amount=amount)
            )
    await handle.result()
    return handle


async def partial_payer_grace_early(env: WorkflowEnvironment, tq: str) -> Handle:
    """A part paid in GRACE, the overdue paid in EARLY (a cure), then the payoff."""
    start = loan_start(local_today(await env.get_current_time()), term_months=3)
    handle = await start_loan(env.client, tq, start)
    due1 = (await state(handle)).installments[0].due_date
    await sleep_until_local(env, due1 + timedelta(days=2))
    assert (await state(handle)).stage == "GRACE"
    await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id="part", amount=10_000))
    await sleep_until_local(env, due1 + timedelta(days=8))
    s = await state(handle)
    assert s.stage == "EARLY"
    await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id="cure", amount=s.overdue))
    await sleep_until_local(env, due1 + timedelta(days=9))
    await _pay_total(handle, "all")
    await handle.result()
    return handle


async def extension_then_payoff(env: WorkflowEnvironment, tq: str) -> Handle:
    start = loan_start(local_today(await env.get_current_time()), term_months=3)
    handle = await start_loan(env.client, tq, start)
    due1 = (await state(handle)).installments[0].due_date
    await sleep_until_local(env, due1 + timedelta(days=5))
    await handle.execute_update(
        LoanCollection.apply_restructuring,
        RestructuringIn(restructuring_id="ext", kind="extension", extension_days=30, **APPROVAL),
    )
    await sleep_until_local(env, due1 + timedelta(days=12))
    await _pay_total(handle, "all")
    await handle.result()
    return handle


async def reinstallment_then_payoff(env: WorkflowEnvironment, tq: str) -> Handle:
    start = loan_start(local_today(await env.get_current_time()), term_months=3)
    handle = await start_loan(env.client, tq, start)
    due1 = (await state(handle)).installments[0].due_date
    await sleep_until_local(env, due1 + timedelta(days=10))
    await handle.execute_update(
        LoanCollection.apply_restructuring,
        RestructuringIn(restructuring_id="re", kind="reinstallment", new_term_months=6, **APPROVAL),
    )
    await sleep_until_local(env, due1 + timedelta(days=16))
    await _pay_total(handle, "all")
    await handle.result()
    return handle


async def cure_from_agent(env: WorkflowEnvironment, tq: str) -> Handle:
    """A loan onboarded 31 days past due (an agent is assigned), cured, then paid off."""
    today = local_today(await env.get_current_time())
    start = loan_start(today - timedelta(days=62), first_due_date=today - timedelta(days=31), term_months=3)
    handle = await start_loan(env.client, tq, start)
    await env.sleep(timedelta(hours=6))
    s = await state(handle)
    assert s.stage == "AGENT" and s.assigned_agent is not None, s
    await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id="cure", amount=s.overdue))
    assert (await state(handle)).stage == "CURRENT"
    await env.sleep(timedelta(days=3))
    await _pay_total(handle, "all")
    await handle.result()
    return handle


async def late_legal_to_charge_off(env: WorkflowEnvironment, tq: str) -> Handle:
    """A loan onboarded in LEGAL (175 days past due) that runs into charge-off. (A loan that
    sleeps through the whole ladder makes a history of about a megabyte.)"""
    today = local_today(await env.get_current_time())
    start = loan_start(today - timedelta(days=205), first_due_date=today - timedelta(days=175), term_months=3)
    handle = await start_loan(env.client, tq, start)
    await env.sleep(timedelta(days=8))
    s = await state(handle)
    assert s.stage == "CHARGED_OFF" and s.legal_referred, s
    await handle.terminate("recorded")
    return handle


async def signals_rejected(env: WorkflowEnvironment, tq: str) -> Handle:
    """Raw signals of every bad shape (recorded as rejected), a valid one, then the payoff."""
    start = loan_start(local_today(await env.get_current_time()), term_months=3)
    handle = await start_loan(env.client, tq, start)
    due1 = (await state(handle)).installments[0].due_date
    await sleep_until_local(env, due1 + timedelta(days=2))
    raw = env.client.get_workflow_handle(handle.id)
    sent: list[tuple[str, list[Any]]] = [
        ("payment_received", [{"payment_id": "  ", "amount": 100}]),
        ("payment_received", [{"payment_id": "p-1", "amount": True}]),
        ("payment_received", [{"payment_id": "p-2", "amount": 10**12}]),
        ("payment_received", [None]),
        ("payment_received", [{"payment_id": "p-3", "amount": 100}, {"x": 1}]),
        ("restructuring_approved", [{"restructuring_id": "r", "kind": "waiver"}]),
        ("restructuring_approved", ["text"]),
        ("no_such_signal", [{"payment_id": "p-4", "amount": 100}]),
    ]
    for name, args in sent:
        await raw.signal(name, args=args)
    await raw.signal("payment_received", {"payment_id": "ok", "amount": 5_000})
    await env.sleep(timedelta(hours=1))
    assert (await state(handle)).installments[0].paid == 5_000
    await _pay_total(handle, "all")
    await handle.result()
    return handle


async def collectors_desk(env: WorkflowEnvironment, tq: str) -> Handle:
    """Every desk message on one loan: a promise kept, a promise broken (its SMS), a
    dispute escalated then rejected, contact preferences, logged calls (one refused), a
    hardship run to its end (its review), invalid desk signals, then the payoff."""
    today = local_today(await env.get_current_time())
    start = loan_start(today - timedelta(days=33), first_due_date=today - timedelta(days=2), term_months=3)
    handle = await start_loan(env.client, tq, start)
    raw = env.client.get_workflow_handle(handle.id)
    await env.sleep(timedelta(hours=1))
    s = await state(handle)
    day = local_today(await env.get_current_time())
    await raw.execute_update(
        "record_promise",
        {
            "promise_id": "P-1",
            "amount": 5_000,
            "promised_date": (day + timedelta(days=2)).isoformat(),
            "agent_id": "a",
        },
    )
    await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id="p-1", amount=5_000))
    await raw.signal(
        "promise_made",
        {
            "promise_id": "P-2",
            "amount": 5_000,
            "promised_date": (day + timedelta(days=1)).isoformat(),
            "agent_id": "a",
        },
    )
    await raw.signal("promise_made", {"promise_id": "P-bad", "amount": 0})
    await sleep_until_local(env, day + timedelta(days=3))  # P-2 broken, its SMS sent
    await raw.execute_update("open_dispute", {"dispute_id": "D-1", "reason": "amount", "opened_by": "ops"})
    await raw.execute_update(
        "set_contact_preferences", {"preference_id": "PF-1", "channels": ["sms", "email"], "set_by": "a"}
    )
    await sleep_until_local(env, day + timedelta(days=24))  # escalated after 20 days
    await raw.signal("dispute_resolved", {"dispute_id": "D-1", "outcome": "rejected", "resolved_by": "ops"})
    noon = (await env.get_current_time()).isoformat()
    await raw.execute_update(
        "log_contact",
        {"contact_id": "C-1", "agent_ids": ["a"], "channel": "voice", "result": "reached", "at": noon},
    )
    await raw.signal(
        "contact_logged",
        {"contact_id": "C-2", "agent_ids": ["a"], "channel": "field_visit", "result": "reached", "at": noon},
    )
    until = (day + timedelta(days=30)).isoformat()
    await raw.execute_update(
        "start_hardship",
        {"hardship_id": "H-1", "reason": "illness", "until": until, "approved_by": "s", "approval_ref": "HR"},
    )
    await sleep_until_local(env, day + timedelta(days=33))  # the hardship ended: reviewed
    s = await state(handle)
    assert [h.status for h in s.hardships] == ["ended"] and s.disputes[0].escalated, s
    await _pay_total(handle, "all")
    await handle.result()
    return handle


async def calls_across_loans(env: WorkflowEnvironment, tq: str) -> Handle:
    """The call caps across a borrower's loans: calls logged on a second loan fill the
    borrower's week, so the overdue loan's DPD 7 call is deferred (not_before) and placed
    when the caps allow it (the `delay-reasons` and `call-keys` patches), then the payoff."""
    today = local_today(await env.get_current_time())
    other = await start_loan(env.client, tq, loan_start(today - timedelta(days=8), term_months=3))
    start = loan_start(today - timedelta(days=36), first_due_date=today - timedelta(days=5), term_months=3)
    handle = await start_loan(env.client, tq, start)
    raw = env.client.get_workflow_handle(other.id)
    first = datetime.combine(today - timedelta(days=2), time(9), ZoneInfo("Asia/Shanghai"))
    for n in range(7):
        at = first + timedelta(minutes=30 * n) if n < 6 else first + timedelta(days=1)
        await raw.execute_update(
            "log_contact",
            {"contact_id": f"T-{n}", "agent_ids": ["a"], "channel": "voice", "result": "no_answer", "at": at},
        )
    await sleep_until_local(env, today + timedelta(days=8))  # deferred at DPD 7, placed at DPD 10
    await _pay_total(handle, "all")
    await handle.result()
    await other.terminate("recorded")
    return handle


async def continued_as_new(env: WorkflowEnvironment, tq: str) -> Handle:
    """The run after a continue-as-new (its input is the carried case), not the long first
    run: a charged-off loan wakes each midnight until the server suggests continuing."""
    today = local_today(await env.get_current_time())
    start = loan_start(today - timedelta(days=230), first_due_date=today - timedelta(days=200), term_months=3)
    handle = await start_loan(env.client, tq, start)
    await handle.execute_update(LoanCollection.record_payment, PaymentIn(payment_id="early", amount=1000))
    latest = env.client.get_workflow_handle(handle.id)
    for _ in range(40):
        await env.sleep(timedelta(days=30))
        first = (await latest.fetch_history()).events[0].workflow_execution_started_event_attributes
        if first.continued_execution_run_id:
            break
    else:
        raise AssertionError("did not continue as new")
    again = await latest.execute_update("record_payment", {"payment_id": "early", "amount": 1000})
    assert again["duplicate"] is True
    await latest.execute_update("record_payment", {"payment_id": "after", "amount": 2000})
    await env.sleep(timedelta(days=2))
    await latest.terminate("recorded")
    return latest


SCENARIOS: dict[str, Scenario] = {
    f.__name__: f
    for f in (
        on_time_payoff,
        partial_payer_grace_early,
        extension_then_payoff,
        reinstallment_then_payoff,
        cure_from_agent,
        late_legal_to_charge_off,
        signals_rejected,
        continued_as_new,
        collectors_desk,
        calls_across_loans,
    )
}


async def record(names: list[str], out: Path) -> int:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=shutil.which("temporal-test-server")
        or str(Path(sys.executable).parent / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    too_big = 0
    try:
        await ensure_search_attributes(env.client, env.client.namespace)
        preload_policies()
        replayer = Replayer(workflows=[LoanCollection], data_converter=pydantic_data_converter)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'collections.db'}"
            upgrade_schema(url)
            db: Engine = make_engine(url)
            seed(db)
            for name in names:
                tq = f"tq-rec-{uuid.uuid4().hex[:8]}"
                async with running_worker(env.client, tq, db):
                    handle = await SCENARIOS[name](env, tq)
                    history: WorkflowHistory = await handle.fetch_history()
                await replayer.replay_workflow(history)  # never store what does not replay
                text = history.to_json()
                (out / f"{name}.json").write_text(text)
                size = len(text.encode())
                too_big += size > MAX_BYTES
                print(f"{name}: {len(history.events)} events, {size // 1000} KB", flush=True)
            db.dispose()
    finally:
        await env.shutdown()
        gc.collect()
        await asyncio.sleep(0.2)  # sdk-python #300: let the SDK's threads settle before exit
    return 1 if too_big else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenario", nargs="*", help=f"default: all ({', '.join(SCENARIOS)})")
    parser.add_argument("--out", type=Path, default=HISTORIES)
    args = parser.parse_args()
    unknown = [n for n in args.scenario if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    return asyncio.run(record(args.scenario or list(SCENARIOS), args.out))


if __name__ == "__main__":
    sys.exit(main())
