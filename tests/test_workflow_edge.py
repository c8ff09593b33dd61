"""Issue 8 on real servers: nothing a caller sends, and no activity that fails for good,
can fail or jam a loan's workflow. Raw payloads go through untyped handles, as any
caller's JSON would; each test checks that the workflow still runs, that its history has
no failed workflow task, that `state` answers, and where the refusal was recorded."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import collection_activities
from activities.delivery import RecordingDeliverer
from domain.onboarding import open_case
from domain.policy import load_policy
from models.tables import AuditLog, Loan, Payment
from models.wire import CaseView, PaymentIn
from tests.conftest import running_worker
from tests.loans import STARTED, loan_start, local_today, start_loan, state, terminate_started
from tests.test_workflow_ladder import seed
from workflows.loan_collection import LoanCollection

pytestmark = pytest.mark.temporal


# --- Helpers ----------------------------------------------------------------------------


async def task_failures(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """Workflow tasks that failed, by cause. UNHANDLED_COMMAND is not a failure of the
    workflow's code: a message arrived while a task completed, and the server hands the
    worker a new task with it (benign, seen whenever messages arrive close together)."""
    history = await handle.fetch_history()
    causes = [
        WorkflowTaskFailedCause.Name(e.workflow_task_failed_event_attributes.cause)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    return [c for c in causes if c != "WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND"]


async def is_running(handle: WorkflowHandle[Any, Any]) -> bool:
    history = await handle.fetch_history()
    closed = {
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
    }
    return not any(e.event_type in closed for e in history.events)


async def healthy(handle: WorkflowHandle[Any, Any]) -> CaseView:
    """Still running, no failed workflow task, and the state query answers."""
    assert await is_running(handle)
    assert await task_failures(handle) == []
    return await handle.query(LoanCollection.state)


def audit(db: Engine, loan_id: str, event: str) -> list[AuditLog]:
    with Session(db) as s:
        rows = s.exec(select(AuditLog).where(AuditLog.loan_id == loan_id, AuditLog.event == event))
        return list(rows)


async def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll `check` until it answers something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = check()
        if asyncio.iscoroutine(answer):
            answer = await answer
        if answer:
            return answer
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


async def overdue_loan(env: WorkflowEnvironment, task_queue: str, dpd: int, now: datetime | None = None):
    today = local_today(now or datetime.now().astimezone())
    start = loan_start(today - timedelta(days=dpd + 31), first_due_date=today - timedelta(days=dpd))
    return start, await start_loan(env.client, task_queue, start)


class Failing:
    """An activity that refuses for good (non-retryable) on its first `times` calls
    (None: always), then does its work."""

    def __init__(self, fn: Callable[[Any], Any], times: int | None) -> None:
        self.calls = 0
        self.times = times
        defn = activity._Definition.must_from_callable(fn)

        @functools.wraps(fn)
        def wrapper(arg: Any) -> Any:
            self.calls += 1
            if self.times is None or self.calls <= self.times:
                raise ApplicationError("injected: refused for good", type="Injected", non_retryable=True)
            return fn(arg)

        wrapper.__dict__.pop("__temporal_activity_definition", None)  # copied by wraps
        self.fn = activity.defn(name=defn.name)(wrapper)
        self.name = defn.name


@asynccontextmanager
async def worker_with(client: Client, task_queue: str, db: Engine, *failing: Failing) -> AsyncIterator[None]:
    by_name: dict[str | None, Callable[..., Any]] = {f.name: f.fn for f in failing}
    acts = [
        by_name.get(activity._Definition.must_from_callable(a).name, a)
        for a in collection_activities(db, RecordingDeliverer())
    ]
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[LoanCollection],
            activities=acts,
            activity_executor=executor,
        ):
            try:
                yield
            finally:
                await terminate_started()


def activities_of(db: Engine) -> dict[str, Callable[[Any], Any]]:
    return {str(activity._Definition.must_from_callable(a).name): a for a in collection_activities(db)}


# --- Raw payloads: signals --------------------------------------------------------------

HUGE = "x" * 100_000
SIGNALS = 60  # 6 MB of signals: past the ~4 MB at which the server suggests continue-as-new


async def test_any_signal_payload_ends_applied_or_recorded_as_rejected(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        start, typed = await overdue_loan(dev_env, task_queue, dpd=10)
        before = await until(lambda: audit(wf_db, start.loan_id, "opened")) and await state(typed)
        handle = dev_env.client.get_workflow_handle(typed.id)  # untyped: any caller's JSON
        sent: list[tuple[str, dict[str, Any]]] = [
            ("payment_received", {"args": [{"payment_id": "   ", "amount": 100}]}),
            ("payment_received", {"args": [{"payment_id": "p\x00", "amount": 100}]}),
            ("payment_received", {"args": [{"payment_id": "p\u202e1", "amount": 100}]}),
            ("payment_received", {"args": [{"payment_id": "p-1", "amount": 100, "channel": "a\nb"}]}),
            ("payment_received", {"args": [{"payment_id": "p-2", "amount": True}]}),
            ("payment_received", {"args": [{"payment_id": "p-3", "amount": "100"}]}),
            (
                "payment_received",
                {"args": [{"payment_id": "p-4", "amount": 100, "paid_at": "0001-01-01T00:00:00+14:00"}]},
            ),
            ("payment_received", {"args": [{"payment_id": "p-5", "amount": 100}, {"payment_id": "p-6"}]}),
            ("payment_received", {"args": [None]}),
            ("payment_received", {"args": [[1, 2]]}),
            ("payment_received", {"args": ["text"]}),
            ("payment_received", {"args": []}),
            (
                "restructuring_approved",
                {"args": [{"restructuring_id": "r", "kind": "waiver", "waive_amount": True}]},
            ),
            ("no_such_signal", {"args": [{"payment_id": "p-7", "amount": 100}]}),
        ]
        for name, how in sent:
            await handle.signal(name, args=how["args"])
        rejected = await until(
            lambda: (r := audit(wf_db, start.loan_id, "rejected")) and len(r) >= len(sent) and r
        )
        assert len(rejected) == len(sent)
        details = " | ".join(r.detail for r in rejected)
        for expected in (
            "payment_id:",
            "channel:",
            "amount:",
            "paid_at:",
            "waive_amount:",
            "payload:",
            "unknown",
        ):
            assert expected in details, expected
        after = await healthy(handle)
        assert after.outstanding == before.outstanding and after.stage == before.stage


# --- Raw payloads: updates --------------------------------------------------------------


@pytest.mark.parametrize(
    ("update", "args", "field"),
    [
        ("record_payment", [{"payment_id": "   ", "amount": 100}], "payment_id"),
        ("record_payment", [{"payment_id": "p\u2066", "amount": 100}], "payment_id"),
        ("record_payment", [{"payment_id": "p", "amount": True}], "amount"),
        ("record_payment", [{"payment_id": "p", "amount": "100"}], "amount"),
        (
            "record_payment",
            [{"payment_id": "p", "amount": 100, "paid_at": "0001-01-01T00:00:00+14:00"}],
            "paid_at",
        ),
        ("record_payment", [None], "payload"),
        ("record_payment", [{"payment_id": "p", "amount": 100}, {"x": 1}], "payload"),
        ("record_payment", [[1, 2]], "payload"),
        (
            "apply_restructuring",
            [{"restructuring_id": "r", "kind": "waiver", "waive_amount": True}],
            "waive_amount",
        ),
        (
            "apply_restructuring",
            [{"restructuring_id": "r", "kind": "waiver", "waive_penalty": "yes"}],
            "waive_penalty",
        ),
        (
            "apply_restructuring",
            [{"restructuring_id": "r", "kind": "extension", "extension_days": "30"}],
            "extension_days",
        ),
    ],
    ids=[
        "blank-id",
        "bidi-id",
        "bool-amount",
        "string-amount",
        "year-1",
        "null",
        "two-arguments",
        "array",
        "bool-waive-amount",
        "string-waive-penalty",
        "string-extension-days",
    ],
)
async def test_an_update_of_any_shape_is_refused_naming_the_field(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, update: str, args: list[Any], field: str
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        start, typed = await overdue_loan(dev_env, task_queue, dpd=10)
        await until(lambda: audit(wf_db, start.loan_id, "opened"))
        handle = dev_env.client.get_workflow_handle(typed.id)
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update(update, args=args)
        cause = info.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.message.startswith(f"{field}:"), cause.message
        await healthy(handle)


async def test_typed_json_updates_and_signals_still_apply(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        start, handle = await overdue_loan(dev_env, task_queue, dpd=10)
        paid_at = datetime.now().astimezone()
        first = await handle.execute_update(
            LoanCollection.record_payment,
            PaymentIn(payment_id=" p-1 ", amount=10_000, paid_at=paid_at, channel="alipay"),
        )
        assert first.payment_id == "p-1" and not first.duplicate
        raw = dev_env.client.get_workflow_handle(handle.id)
        again = await raw.execute_update("record_payment", {"payment_id": "p-1", "amount": 10_000})
        assert again["duplicate"] is True
        await raw.signal(
            "payment_received", {"payment_id": "p-2", "amount": 5_000, "paid_at": paid_at.isoformat()}
        )
        await until(lambda: len(audit(wf_db, start.loan_id, "payment")) == 2)
        await healthy(handle)


# --- Bounded rejections: continue-as-new stays possible -----------------------------------


async def test_huge_signals_never_stop_continue_as_new(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    """60 signals of 100 KB fill the history past the size at which the server suggests
    continue-as-new: the carried case keeps only clipped rejections, so the new run
    starts with a small input."""
    seed(wf_db)
    async with running_worker(dev_env.client, task_queue, wf_db):
        start, typed = await overdue_loan(dev_env, task_queue, dpd=10)
        await until(lambda: audit(wf_db, start.loan_id, "opened"))
        first_run = (await typed.describe()).run_id
        handle = dev_env.client.get_workflow_handle(typed.id)

        def refs() -> set[str]:
            return {r.detail.split()[1].split("-")[0] for r in audit(wf_db, start.loan_id, "rejected")}

        for n in range(SIGNALS):
            await handle.signal("payment_received", {"payment_id": f"{n}-{HUGE}", "amount": 100})
            if n % 5 == 4:
                # Paced to the worker: signals buffered while a workflow task runs count
                # toward the server's mutable-state limit (2 MB), past which it terminates
                # the workflow. A gateway's retries are paced the same way in practice.
                await until(functools.partial(lambda sent: len(refs()) >= sent, n + 1))

        async def continued() -> bool:
            return (await handle.describe()).run_id != first_run

        await until(continued, timeout=60)
        old = dev_env.client.get_workflow_handle(typed.id, run_id=first_run)
        assert await task_failures(old) == []
        latest = dev_env.client.get_workflow_handle(typed.id)
        started = (await latest.fetch_history()).events[0].workflow_execution_started_event_attributes
        carried = sum(len(p.data) for p in started.input.payloads)
        assert carried < 200_000, carried
        await healthy(latest)

        # Every one recorded. (A workflow task retried after a signal arrived mid-task
        # can write an entry twice: the audit key carries the workflow time.)
        assert await until(lambda: refs() == {str(n) for n in range(SIGNALS)})
        rejected = audit(wf_db, start.loan_id, "rejected")
        assert all(len(r.detail) <= 500 for r in rejected)


# --- Starts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"borrower_id": "   "}, "borrower_id"),
        ({"borrower_id": "B\x00"}, "borrower_id"),
        ({"principal": 2**63}, "principal"),
    ],
    ids=["blank-borrower", "nul-borrower", "2^63"],
)
async def test_an_invalid_start_sent_directly_fails_as_invalid_loan(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, change: dict[str, Any], field: str
) -> None:
    """Past the CLI (another caller starts the workflow with raw JSON): refused at once as
    InvalidLoan naming the field, before anything is recorded; never retried forever."""
    today = local_today(datetime.now().astimezone())
    raw = loan_start(today).model_dump(mode="json") | change
    async with running_worker(dev_env.client, task_queue, wf_db):
        handle = await dev_env.client.start_workflow(
            "LoanCollection", raw, id=f"loan-{raw['loan_id']}", task_queue=task_queue
        )
        STARTED.append(handle)
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), timeout=30)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidLoan", cause
    assert field in cause.message
    with Session(wf_db) as s:
        assert s.get(Loan, raw["loan_id"]) is None


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ([], "(record)"),
        (["GOOD", {}], "expected one argument, got 2"),
        (["CARRIED"], "case"),
    ],
    ids=["no-argument", "two-arguments", "made-up-carried-case"],
)
async def test_a_start_of_the_wrong_shape_fails_as_invalid_loan(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, args: list[Any], field: str
) -> None:
    """Found by review: a start with no argument or two arguments failed the first workflow
    task forever, and a caller could start a loan with a made-up carried case (which only
    a continued run may take)."""
    today = local_today(datetime.now().astimezone())
    good = loan_start(today)
    raw = good.model_dump(mode="json")
    made_up = open_case(
        **good.model_dump(exclude={"policy"}), policy=load_policy("standard"), now=datetime.now(UTC)
    )
    carried = {"start": raw, "case": made_up.model_dump(mode="json")}
    sent = [raw if a == "GOOD" else carried if a == "CARRIED" else a for a in args]
    async with running_worker(dev_env.client, task_queue, wf_db):
        handle = await dev_env.client.start_workflow(
            "LoanCollection", args=sent, id=f"loan-{good.loan_id}", task_queue=task_queue
        )
        STARTED.append(handle)
        with pytest.raises(WorkflowFailureError) as info:
            await asyncio.wait_for(handle.result(), timeout=30)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "InvalidLoan", cause
    assert field in cause.message
    assert not await task_failures(handle)
    with Session(wf_db) as s:
        assert s.get(Loan, good.loan_id) is None


# --- Activities that fail for good ------------------------------------------------------


async def test_failed_write_downs_are_kept_and_written_later(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    acts = activities_of(wf_db)
    record_loan = Failing(acts["record_loan"], times=1)
    events = Failing(acts["record_case_events"], times=2)
    async with worker_with(ts_env.client, task_queue, wf_db, record_loan, events):
        start, handle = await overdue_loan(ts_env, task_queue, dpd=2, now=await ts_env.get_current_time())
        paid = await handle.execute_update(
            LoanCollection.record_payment, PaymentIn(payment_id="p-1", amount=5_000)
        )
        assert not paid.duplicate
        s = await healthy(handle)
        assert [f.activity for f in s.activity_failures][:1] == ["record_loan"]
        assert s.activity_failures[0].retry_at is not None
        await ts_env.sleep(timedelta(hours=2))
        s = await healthy(handle)
        assert {f.activity for f in s.activity_failures} == {"record_loan", "record_case_events"}
        assert record_loan.calls == 2 and events.calls >= 3
        with Session(wf_db) as db:
            assert db.get(Loan, start.loan_id) is not None
            assert db.exec(select(Payment).where(Payment.payment_id == "p-1")).first() is not None
        assert len(audit(wf_db, start.loan_id, "activity_failed")) == 3


async def test_a_contact_that_fails_for_good_counts_as_not_delivered(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    contact = Failing(activities_of(wf_db)["send_contact"], times=None)
    async with worker_with(ts_env.client, task_queue, wf_db, contact):
        today = local_today(await ts_env.get_current_time())
        start = loan_start(today - timedelta(days=28), first_due_date=today + timedelta(days=2))
        handle = await start_loan(ts_env.client, task_queue, start)
        await ts_env.sleep(timedelta(days=5))
        s = await healthy(handle)
        assert s.contacts_sent == 0 and s.stage == "GRACE"
        assert s.activity_failures and all(
            f.activity == "send_contact" and f.retry_at is None for f in s.activity_failures
        )
        # One attempt per planned contact (reminders, overdue SMS): never a hot loop.
        assert 2 <= contact.calls <= 6
        assert len(audit(wf_db, start.loan_id, "activity_failed")) == contact.calls


async def test_a_step_that_fails_for_good_is_retried_with_a_backoff(
    ts_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    assign = Failing(activities_of(wf_db)["assign_agent"], times=8)
    async with worker_with(ts_env.client, task_queue, wf_db, assign):
        _, handle = await overdue_loan(ts_env, task_queue, dpd=31, now=await ts_env.get_current_time())
        await ts_env.sleep(timedelta(hours=6))  # backoff 1, 2, 4 ... 128 minutes: 4.25 hours
        s = await healthy(handle)
        assert s.stage == "AGENT" and s.assigned_agent is not None
        assert 9 <= assign.calls <= 11
        waits = [f.retry_at - f.at for f in s.activity_failures if f.retry_at is not None]
        assert waits[:4] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
        assert len((await handle.fetch_history()).events) < 300
