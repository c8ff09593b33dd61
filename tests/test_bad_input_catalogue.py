"""Issue 8, the catalogue: bad input through every door a caller has, one table row each.

Four doors, each with ONE dev-server loan (an overdue loan: 10 days past due, penalty
charged, an agent not yet assigned) shared by its rows, so the catalogue stays fast:

- **updates** (`record_payment`, `apply_restructuring`) sent raw through an untyped
  handle, as any caller's JSON: refused with `WorkflowUpdateFailedError` whose cause
  names the field;
- **signals** (`payment_received`, `restructuring_approved`, names the workflow does not
  handle) sent raw: recorded as rejected in the audit table naming the field (the
  `state` answer does not expose rejections); the rejection is polled for, never slept on;
- **the CLI** (`starter.py pay / restructure / disburse / borrowers`, in-process): exit 2
  with one line naming the option, or exit 1 with the workflow's reason naming the field;
- **the HTTP API** (api.py, contract part 3: `POST /payments`, `POST /receipts`,
  `POST /calls`, `GET /loans/{id}`), the real app over the same worker and database, driven
  in-process by httpx: its status (401 signature or bearer, 404 unknown loan or message,
  413 body too large, 422 bad input or refused by the loan) and a JSON error whose
  `problem` says which and whose `detail` (and `errors`, when refused at the edge) names
  the field; the loan's outbox messages the receipts and calls name are unchanged too
  (its closed-loan row pays the CLI door's paid-off loan).

The update and signal doors also carry the collector's desk messages (contract part 2).
For every row: the refusal names the field, the loan's money is unchanged (the `state`
answer's outstanding and installments paid, and the payments booked), the workflow is
still Running (a closed loan: still Completed), and its history has no failed workflow
task. A row that shows a defect is an `xfail(strict=True)` naming it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from _pytest.capture import CaptureFixture
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

import starter
from api import create_app
from client import CollectionsClient
from models import repo
from models.db import make_engine, upgrade_schema
from models.tables import AuditLog, Payment
from settings import Settings
from tests.conftest import running_worker
from tests.loans import SHANGHAI, STARTED, loan_start
from tests.test_api import PAYMENT_SECRET, TOKEN, WEBHOOK_SECRET, api_settings, encode, outbox_row, sign
from tests.test_workflow_edge import task_failures
from tests.test_workflow_ladder import seed

pytestmark = pytest.mark.temporal

DPD = 10  # the door loans are this many days past due (stage EARLY, penalty charged)
NOW = datetime.now(SHANGHAI)
TODAY = NOW.date()
DISBURSED = TODAY - timedelta(days=DPD + 31)
DEADLINE = 30.0  # seconds to wait for something asynchronous (a busy machine)


# --- The loans the doors share ----------------------------------------------------------


@dataclass
class Door:
    client: Client
    db: Engine
    settings: Settings
    loan_id: str
    handle: WorkflowHandle[Any, Any]  # untyped: raw JSON in, raw JSON out
    closed_id: str = ""  # the CLI door's second loan, paid off


@dataclass
class World:
    client: Client
    db: Engine
    settings: Settings
    tmp: Path


@pytest_asyncio.fixture(scope="module")
async def world(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """One worker and one database for the whole catalogue."""
    tmp = tmp_path_factory.mktemp("catalogue")
    url = f"sqlite:///{tmp / 'collections.db'}"
    upgrade_schema(url)
    db = make_engine(url)
    seed(db)
    task_queue = f"tq-cat-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        temporal_task_queue=task_queue,
        database_url=url,
    )
    async with running_worker(dev_env.client, task_queue, db):  # terminates STARTED at the end
        yield World(dev_env.client, db, settings, tmp)
    db.dispose()


async def overdue_loan(w: World) -> tuple[str, WorkflowHandle[Any, Any]]:
    start = loan_start(DISBURSED, first_due_date=TODAY - timedelta(days=DPD))
    typed = await w.client.start_workflow(
        "LoanCollection",
        start.model_dump(mode="json"),
        id=f"loan-{start.loan_id}",
        task_queue=w.settings.temporal_task_queue,
    )
    STARTED.append(typed)
    await until(lambda: audit(w.db, start.loan_id, "opened"))  # its first pass is written down
    return start.loan_id, w.client.get_workflow_handle(typed.id)


@pytest_asyncio.fixture(scope="module")
async def update_door(world: World) -> Door:
    loan_id, handle = await overdue_loan(world)
    return Door(world.client, world.db, world.settings, loan_id, handle)


@pytest_asyncio.fixture(scope="module")
async def signal_door(world: World) -> Door:
    loan_id, handle = await overdue_loan(world)
    return Door(world.client, world.db, world.settings, loan_id, handle)


@pytest_asyncio.fixture(scope="module")
async def cli_door(world: World) -> Door:
    loan_id, handle = await overdue_loan(world)
    closed_id, closed = await overdue_loan(world)
    total = (await closed.query("state"))["outstanding"]["total"]
    await closed.execute_update("record_payment", {"payment_id": "PAYOFF", "amount": total})
    await until(lambda: status_of(closed), expect=WorkflowExecutionStatus.COMPLETED)
    return Door(world.client, world.db, world.settings, loan_id, handle, closed_id=closed_id)


# --- Helpers ----------------------------------------------------------------------------


async def until(check: Any, expect: Any = None, timeout: float = DEADLINE) -> Any:
    """Poll `check` until it answers something truthy (or `expect`, when given)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if (last == expect) if expect is not None else last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting; last answer: {last!r}")
        await asyncio.sleep(0.1)


def audit(db: Engine, loan_id: str, event: str, after: int = 0) -> list[AuditLog]:
    with Session(db) as s:
        rows = s.exec(
            select(AuditLog)
            .where(AuditLog.loan_id == loan_id, AuditLog.event == event, AuditLog.id > after)  # type: ignore[operator]
            .order_by(AuditLog.id)  # type: ignore[arg-type]
        )
        return list(rows)


def last_audit_id(db: Engine) -> int:
    with Session(db) as s:
        return s.exec(select(func.max(AuditLog.id))).one() or 0


def payments_booked(db: Engine, loan_id: str) -> int:
    with Session(db) as s:
        return int(s.exec(select(func.count()).select_from(Payment).where(Payment.loan_id == loan_id)).one())


async def status_of(handle: WorkflowHandle[Any, Any]) -> WorkflowExecutionStatus | None:
    return (await handle.describe()).status


@dataclass(frozen=True)
class Money:
    """What bad input must never change: the payoff and its parts, what each installment
    has been paid, and the payments booked; `day` is the loan's local day it was read on
    (the `state` answer is for the moment it is asked, and penalty accrues per day)."""

    day: date
    outstanding: dict[str, int]
    paid: list[int]
    payments: int
    desk: dict[str, Any]  # the protections: hold, promises, disputes, hardships, channels


async def money(door: Door, handle: WorkflowHandle[Any, Any] | None = None, loan_id: str = "") -> Money:
    s = await (handle or door.handle).query("state")
    return Money(
        datetime.now(SHANGHAI).date(),
        s["outstanding"],
        [i["paid"] for i in s["installments"]],
        payments_booked(door.db, loan_id or door.loan_id),
        {k: s.get(k) for k in DESK_FIELDS},
    )


DESK_FIELDS = ("hold", "promises", "disputes", "hardships", "contact_channels", "broken_promises")


async def unharmed(
    door: Door,
    before: Money,
    *,
    handle: WorkflowHandle[Any, Any] | None = None,
    loan_id: str = "",
    closed: bool = False,
) -> None:
    h = handle or door.handle
    after = await money(door, h, loan_id)
    assert (after.paid, after.payments) == (before.paid, before.payments)
    assert after.desk == before.desk
    if after.day == before.day:  # (across a local midnight a day's penalty accrues)
        assert after.outstanding == before.outstanding
    want = WorkflowExecutionStatus.COMPLETED if closed else WorkflowExecutionStatus.RUNNING
    assert await status_of(h) == want
    assert await task_failures(h) == []  # (a benign UNHANDLED_COMMAND retry is not a failure)


# --- The table: raw payloads of payments and restructurings -----------------------------


@dataclass(frozen=True)
class Raw:
    """One bad message: which message (`payment` / `restructuring`), its raw arguments
    (any JSON, any count), and the field its refusal must name."""

    name: str
    message: str
    args: Sequence[Any]
    field: str
    xfail: str | None = None
    only: str | None = None  # "update" / "signal": a row for one door only

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=f"{self.message}-{self.name}", marks=marks)


def pay(**fields: Any) -> list[Any]:
    return [{"payment_id": "P-bad", "amount": 10_000, **fields}]


def restr(**fields: Any) -> list[Any]:
    base = {"restructuring_id": "R-bad", "approved_by": "supervisor.li", "approval_ref": "APR-1"}
    return [{**base, **fields}]


def at(day: date, hour: int = 10, tz: Any = SHANGHAI) -> str:
    return datetime.combine(day, time(hour), tzinfo=tz).isoformat()


ID_VALUES = {
    "empty": "",
    "whitespace": "   ",
    "129-chars": "x" * 129,
    "nul": "p\x00",
    "newline": "p\n1",
    "tab": "p\t1",
    "bidi-rlo": "p\u202e1",
    "bidi-isolate": "p\u20661",
    "zero-width-space": "p\u200b1",
    "bom": "p\ufeff1",
    "paragraph-separator": "p\u20291",
}
# Found by this catalogue and fixed (models/wire.py refuses every control, format and
# line-separator character by Unicode category, and dates that are numbers): U+061C
# ARABIC LETTER MARK, U+2028/U+2029 separators, and paid_at as a Unix timestamp.
EPOCH = int(NOW.timestamp()) - 60  # a minute ago: a payment the loan would accept

NOT_ONE_OBJECT: dict[str, list[Any]] = {
    "null": [None],
    "array": [[]],
    "text": ["text"],
    "number": [42],
    "no-argument": [],
}

RAW: list[Raw] = [
    *(Raw(f"id-{n}", "payment", pay(payment_id=v), "payment_id") for n, v in ID_VALUES.items()),
    Raw("amount-0", "payment", pay(amount=0), "amount"),
    Raw("amount-minus-1", "payment", pay(amount=-1), "amount"),
    Raw("amount-true", "payment", pay(amount=True), "amount"),
    Raw("amount-string", "payment", pay(amount="100"), "amount"),
    Raw("amount-1.5", "payment", pay(amount=1.5), "amount"),
    Raw("amount-10^16", "payment", pay(amount=10**16), "amount"),
    Raw("amount-above-payoff", "payment", pay(amount=10**12), "amount"),
    Raw("currency-wrong", "payment", pay(currency="USD"), "currency"),
    Raw("currency-lowercase", "payment", pay(currency="cny"), "currency"),
    Raw("currency-unknown", "payment", pay(currency="XYZ"), "currency"),
    Raw("currency-nul", "payment", pay(currency="CN\x00"), "currency"),
    Raw("channel-newline", "payment", pay(channel="ali\npay"), "channel"),
    Raw("paid-at-no-offset", "payment", pay(paid_at=at(TODAY, tz=None)), "paid_at"),
    Raw("paid-at-year-1", "payment", pay(paid_at="0001-01-01T00:00:00+14:00"), "paid_at"),
    Raw("paid-at-year-2999", "payment", pay(paid_at="2999-01-01T10:00:00+08:00"), "paid_at"),
    Raw("paid-at-future", "payment", pay(paid_at=at(TODAY + timedelta(days=2))), "paid_at"),
    Raw("paid-at-before-disbursal", "payment", pay(paid_at=at(DISBURSED - timedelta(days=1))), "paid_at"),
    Raw("paid-at-backdated", "payment", pay(paid_at=at(TODAY - timedelta(days=8))), "paid_at"),
    Raw("paid-at-not-a-date", "payment", pay(paid_at="yesterday"), "paid_at"),
    *(Raw(n, "payment", v, "payload") for n, v in NOT_ONE_OBJECT.items()),
    Raw("empty-object", "payment", [{}], "payment_id"),
    Raw("unknown-field", "payment", pay(note="hi"), "note"),
    Raw("two-arguments", "payment", [pay()[0], pay()[0]], "payload"),
    # Defects this catalogue found, now fixed (each would apply a small payment under its
    # own id if accepted, so the other rows' ids stay unused):
    Raw("id-bidi-alm", "payment", pay(payment_id="P-alm\u061c1", amount=100), "payment_id"),
    Raw("id-line-separator", "payment", pay(payment_id="P-ls\u20281", amount=100), "payment_id"),
    Raw(
        "paid-at-unix-number",
        "payment",
        pay(payment_id="P-epoch", amount=100, paid_at=EPOCH),
        "paid_at",
    ),
    Raw(
        "paid-at-unix-string",
        "payment",
        pay(payment_id="P-epoch-s", amount=100, paid_at=str(EPOCH)),
        "paid_at",
    ),
    *(
        Raw(
            f"id-{n}",
            "restructuring",
            restr(kind="waiver", waive_penalty=True, restructuring_id=v),
            "restructuring_id",
        )
        for n, v in ID_VALUES.items()
    ),
    Raw(
        "no-approved-by",
        "restructuring",
        [{"restructuring_id": "R-bad", "kind": "waiver", "waive_penalty": True, "approval_ref": "A"}],
        "approved_by",
    ),
    Raw(
        "no-approval-ref",
        "restructuring",
        [{"restructuring_id": "R-bad", "kind": "waiver", "waive_penalty": True, "approved_by": "A"}],
        "approval_ref",
    ),
    Raw(
        "blank-approved-by",
        "restructuring",
        restr(kind="waiver", waive_penalty=True, approved_by="  "),
        "approved_by",
    ),
    Raw("unknown-kind", "restructuring", restr(kind="forgiveness"), "kind"),
    Raw("extension-days-0", "restructuring", restr(kind="extension", extension_days=0), "extension_days"),
    Raw("extension-days-181", "restructuring", restr(kind="extension", extension_days=181), "extension_days"),
    Raw(
        "extension-leaves-overdue",
        "restructuring",
        restr(kind="extension", extension_days=DPD - 5),
        "extension_days",
    ),
    Raw(
        "extension-days-true", "restructuring", restr(kind="extension", extension_days=True), "extension_days"
    ),
    Raw("extension-days-missing", "restructuring", restr(kind="extension"), "extension_days"),
    Raw("new-term-0", "restructuring", restr(kind="reinstallment", new_term_months=0), "new_term_months"),
    Raw("new-term-61", "restructuring", restr(kind="reinstallment", new_term_months=61), "new_term_months"),
    Raw(
        "new-term-string",
        "restructuring",
        restr(kind="reinstallment", new_term_months="6"),
        "new_term_months",
    ),
    Raw("waive-amount-true", "restructuring", restr(kind="waiver", waive_amount=True), "waive_amount"),
    Raw("waive-amount-0", "restructuring", restr(kind="waiver", waive_amount=0), "waive_amount"),
    Raw("waive-amount-above-owed", "restructuring", restr(kind="waiver", waive_amount=10**9), "waive_amount"),
    Raw("waiver-neither-flag", "restructuring", restr(kind="waiver"), "waive_penalty"),
    Raw("waive-penalty-string", "restructuring", restr(kind="waiver", waive_penalty="yes"), "waive_penalty"),
    *(Raw(n, "restructuring", v, "payload") for n, v in NOT_ONE_OBJECT.items()),
    Raw("empty-object", "restructuring", [{}], "restructuring_id"),
    Raw("unknown-field", "restructuring", restr(kind="waiver", waive_penalty=True, note="hi"), "note"),
    Raw("two-arguments", "restructuring", [restr(kind="waiver", waive_penalty=True)[0], {}], "payload"),
]


# --- The collector's desk (contract part 2): every message, refused naming the field ----


def promise(**fields: Any) -> list[Any]:
    base = {
        "promise_id": "PR-bad",
        "amount": 10_000,
        "promised_date": (TODAY + timedelta(days=3)).isoformat(),
    }
    return [{**base, "agent_id": "agent-1", **fields}]


def dispute(**fields: Any) -> list[Any]:
    return [{"dispute_id": "D-bad", "reason": "amount", "opened_by": "ops.wang", **fields}]


def resolve(**fields: Any) -> list[Any]:
    return [{"dispute_id": "D-none", "outcome": "rejected", "resolved_by": "ops.wang", **fields}]


def hardship(**fields: Any) -> list[Any]:
    base = {"hardship_id": "H-bad", "reason": "illness", "until": (TODAY + timedelta(days=30)).isoformat()}
    return [{**base, "approved_by": "supervisor.li", "approval_ref": "HR-1", **fields}]


def prefs(**fields: Any) -> list[Any]:
    return [{"preference_id": "PF-bad", "channels": ["sms"], "set_by": "agent-1", **fields}]


def contact(**fields: Any) -> list[Any]:
    base = {"contact_id": "C-bad", "agent_ids": ["agent-1"], "channel": "voice", "result": "reached"}
    return [{**base, "at": at(TODAY - timedelta(days=1), 23), **fields}]


DESK_RAW: list[Raw] = [
    *(Raw(f"id-{n}", "promise", promise(promise_id=v), "promise_id") for n, v in ID_VALUES.items()),
    Raw("amount-0", "promise", promise(amount=0), "amount"),
    Raw("amount-minus-1", "promise", promise(amount=-1), "amount"),
    Raw("amount-true", "promise", promise(amount=True), "amount"),
    Raw("amount-string", "promise", promise(amount="100"), "amount"),
    Raw("amount-above-payoff", "promise", promise(amount=10**12), "amount"),
    Raw(
        "date-yesterday",
        "promise",
        promise(promised_date=(TODAY - timedelta(days=1)).isoformat()),
        "promised_date",
    ),
    Raw(
        "date-8-days-ahead",
        "promise",
        promise(promised_date=(TODAY + timedelta(days=8)).isoformat()),
        "promised_date",
    ),
    Raw("date-not-a-date", "promise", promise(promised_date="friday"), "promised_date"),
    Raw("date-a-number", "promise", promise(promised_date=20260301), "promised_date"),
    Raw("agent-blank", "promise", promise(agent_id="  "), "agent_id"),
    Raw("currency-wrong", "promise", promise(currency="JPY"), "currency"),
    Raw("made-at-future", "promise", promise(made_at=at(TODAY + timedelta(days=2))), "made_at"),
    Raw("made-at-8-days-ago", "promise", promise(made_at=at(TODAY - timedelta(days=8))), "made_at"),
    Raw("made-at-no-offset", "promise", promise(made_at=at(TODAY, tz=None)), "made_at"),
    *(Raw(n, "promise", v, "payload") for n, v in NOT_ONE_OBJECT.items()),
    Raw("empty-object", "promise", [{}], "promise_id"),
    Raw("unknown-field", "promise", promise(note="hi"), "note"),
    *(Raw(f"id-{n}", "dispute", dispute(dispute_id=v), "dispute_id") for n, v in ID_VALUES.items()),
    Raw("reason-unknown", "dispute", dispute(reason="annoyed"), "reason"),
    Raw("opened-by-blank", "dispute", dispute(opened_by=""), "opened_by"),
    Raw("opened-at-future", "dispute", dispute(opened_at=at(TODAY + timedelta(days=2))), "opened_at"),
    Raw("opened-at-41-days-ago", "dispute", dispute(opened_at=at(TODAY - timedelta(days=41))), "opened_at"),
    Raw("opened-at-not-a-time", "dispute", dispute(opened_at="last week"), "opened_at"),
    *(Raw(n, "dispute", v, "payload") for n, v in NOT_ONE_OBJECT.items()),
    Raw("unknown-dispute", "resolve", resolve(), "dispute_id"),
    Raw("outcome-unknown", "resolve", resolve(outcome="maybe"), "outcome"),
    Raw("resolved-by-blank", "resolve", resolve(resolved_by=" "), "resolved_by"),
    Raw("empty-object", "resolve", [{}], "dispute_id"),
    *(Raw(f"id-{n}", "hardship", hardship(hardship_id=v), "hardship_id") for n, v in ID_VALUES.items()),
    Raw("reason-unknown", "hardship", hardship(reason="bored"), "reason"),
    Raw("until-yesterday", "hardship", hardship(until=(TODAY - timedelta(days=1)).isoformat()), "until"),
    Raw("until-91-days", "hardship", hardship(until=(TODAY + timedelta(days=91)).isoformat()), "until"),
    Raw("until-not-a-date", "hardship", hardship(until="soon"), "until"),
    Raw("no-approved-by", "hardship", hardship(approved_by=None), "approved_by"),
    Raw("no-approval-ref", "hardship", hardship(approval_ref=None), "approval_ref"),
    Raw("blank-approval-ref", "hardship", hardship(approval_ref="  "), "approval_ref"),
    *(Raw(n, "hardship", v, "payload") for n, v in NOT_ONE_OBJECT.items()),
    Raw("unknown-hardship", "hardship_end", [{"hardship_id": "H-none", "ended_by": "ops"}], "hardship_id"),
    Raw("ended-by-blank", "hardship_end", [{"hardship_id": "H-none", "ended_by": ""}], "ended_by"),
    *(Raw(f"id-{n}", "preferences", prefs(preference_id=v), "preference_id") for n, v in ID_VALUES.items()),
    Raw("channels-empty", "preferences", prefs(channels=[]), "channels"),
    Raw("channels-fax", "preferences", prefs(channels=["fax"]), "channels.0"),
    Raw("channels-a-string", "preferences", prefs(channels="sms"), "channels"),
    Raw("set-by-blank", "preferences", prefs(set_by=""), "set_by"),
    *(Raw(n, "preferences", v, "payload") for n, v in NOT_ONE_OBJECT.items()),
    *(Raw(f"id-{n}", "contact", contact(contact_id=v), "contact_id") for n, v in ID_VALUES.items()),
    Raw("call-at-23h", "contact", contact(), "at"),
    Raw("call-at-7h", "contact", contact(at=at(TODAY - timedelta(days=1), 7)), "at"),
    Raw(
        "visit-one-collector",
        "contact",
        contact(channel="field_visit", at=at(TODAY - timedelta(days=1))),
        "agent_ids",
    ),
    Raw(
        "visit-same-collector-twice",
        "contact",
        contact(channel="field_visit", agent_ids=["a", "a"]),
        "agent_ids",
    ),
    Raw("no-collector", "contact", contact(agent_ids=[]), "agent_ids"),
    Raw("channel-sms", "contact", contact(channel="sms"), "channel"),
    Raw("result-unknown", "contact", contact(result="maybe"), "result"),
    Raw("reason-unknown", "contact", contact(reason="lazy"), "reason"),
    Raw("at-future", "contact", contact(at=at(TODAY + timedelta(days=2))), "at"),
    Raw("at-8-days-ago", "contact", contact(at=at(TODAY - timedelta(days=8))), "at"),
    Raw("at-no-offset", "contact", contact(at=at(TODAY, tz=None)), "at"),
    Raw("at-missing", "contact", [{k: v for k, v in contact()[0].items() if k != "at"}], "at"),
    *(Raw(n, "contact", v, "payload") for n, v in NOT_ONE_OBJECT.items()),
]
RAW += DESK_RAW

UPDATE = {
    "payment": "record_payment",
    "restructuring": "apply_restructuring",
    "promise": "record_promise",
    "dispute": "open_dispute",
    "resolve": "resolve_dispute",
    "hardship": "start_hardship",
    "hardship_end": "end_hardship",
    "preferences": "set_contact_preferences",
    "contact": "log_contact",
}
SIGNAL = {
    "payment": "payment_received",
    "restructuring": "restructuring_approved",
    "promise": "promise_made",
    "dispute": "dispute_opened",
    "resolve": "dispute_resolved",
    "hardship": "hardship_approved",
    "hardship_end": "hardship_ended",
    "preferences": "contact_preferences_set",
    "contact": "contact_logged",
}
# Audit events of a message applied (a signal that should have been rejected).
APPLIED_EVENTS = (
    "payment",
    "restructuring",
    "promise",
    "dispute_opened",
    "dispute_resolved",
    "hardship_started",
    "hardship_ended",
    "preferences",
    "contact_logged",
)


# --- Door 1: raw updates ----------------------------------------------------------------


@pytest.mark.parametrize("row", [r.param() for r in RAW if r.only in (None, "update")])
async def test_raw_update_is_refused_naming_the_field(update_door: Door, row: Raw) -> None:
    door = update_door
    before = await money(door)
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await door.handle.execute_update(UPDATE[row.message], args=list(row.args))
    cause = info.value.cause
    assert isinstance(cause, ApplicationError), cause
    assert cause.message.startswith(f"{row.field}:"), cause.message
    await unharmed(door, before)


# --- Door 2: raw signals ----------------------------------------------------------------


@dataclass(frozen=True)
class Unknown:
    """A signal the workflow has no handler for (an update's name sent as a signal too)."""

    name: str
    args: Sequence[Any] = field(default_factory=list)


UNKNOWN = [
    Unknown("no_such_signal", pay()),
    Unknown("no_such_signal"),
    Unknown("PaymentReceived", pay()),  # names are case-sensitive
    Unknown("record_payment", pay()),  # an update's name
    Unknown("state"),  # the query's name
]


class Accepted(AssertionError):
    """A signal that should have been rejected was applied."""


async def rejection(door: Door, after: int, expect: str) -> AuditLog:
    """The rejection recorded for the signal just sent: polled for (the audit entry is
    written by the workflow's next write-down)."""

    def found() -> AuditLog | None:
        applied = [r.detail for e in APPLIED_EVENTS for r in audit(door.db, door.loan_id, e, after)]
        if applied:  # accepted: no rejection will come
            raise Accepted(f"accepted instead of rejected: {applied}")
        return next((r for r in audit(door.db, door.loan_id, "rejected", after) if expect in r.detail), None)

    try:
        row: AuditLog = await until(found)
    except Accepted:
        raise
    except AssertionError:
        seen = [r.detail for r in audit(door.db, door.loan_id, "rejected", after)]
        raise AssertionError(f"no rejection naming {expect!r}; recorded since: {seen}") from None
    return row


@pytest.mark.parametrize("row", [r.param() for r in RAW if r.only in (None, "signal")])
async def test_raw_signal_is_recorded_as_rejected_naming_the_field(signal_door: Door, row: Raw) -> None:
    door = signal_door
    before, mark = await money(door), last_audit_id(door.db)
    name = SIGNAL[row.message]
    await door.handle.signal(name, args=list(row.args))
    found = await rejection(door, mark, f"rejected: {row.field}:")
    assert found.detail.startswith(f"{name} ")
    await unharmed(door, before)


@pytest.mark.parametrize("row", UNKNOWN, ids=lambda u: f"{u.name}-{len(u.args)}-args")
async def test_an_unknown_signal_is_recorded_as_rejected_naming_it(signal_door: Door, row: Unknown) -> None:
    door = signal_door
    before, mark = await money(door), last_audit_id(door.db)
    await door.handle.signal(row.name, args=list(row.args))
    found = await rejection(door, mark, f"{row.name}  rejected: unknown signal ({len(row.args)} argument(s))")
    assert found.detail.startswith(row.name)
    await unharmed(door, before)


@pytest.mark.parametrize(
    ("send", "name", "args"),
    [
        ("update", "record_payment", pay()),
        ("update", "apply_restructuring", restr(kind="waiver", waive_penalty=True)),
        ("signal", "payment_received", pay()),
        ("signal", "restructuring_approved", restr(kind="waiver", waive_penalty=True)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_a_raw_message_to_a_closed_loan_is_refused_by_the_server(
    cli_door: Door, send: str, name: str, args: list[Any]
) -> None:
    """A closed loan's workflow has completed: the server refuses the message (the CLI
    turns that into 'loan X is closed', below) and the closed case stays as it was."""
    door = cli_door
    closed = door.client.get_workflow_handle(f"loan-{door.closed_id}")
    before = await money(door, closed, door.closed_id)
    with pytest.raises(RPCError) as info:
        if send == "update":
            await closed.execute_update(name, args=args)
        else:
            await closed.signal(name, args=args)
    assert "completed" in str(info.value).lower(), info.value
    await unharmed(door, before, handle=closed, loan_id=door.closed_id, closed=True)


# --- Door 3: the CLI --------------------------------------------------------------------


@dataclass(frozen=True)
class Cmd:
    """A CLI command (`{loan}` / `{closed}` stand for the door's loans) and what it must
    answer: its exit code and the option or field its one error line names."""

    name: str
    argv: Sequence[str]
    code: int
    names: str
    xfail: str | None = None

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.name, marks=marks)


APPROVAL = ["--approved-by", "supervisor.li", "--approval-ref", "APR-1"]


def pay_cmd(amount: str = "100.00", *extra: str, loan: str = "{loan}", pid: str = "P-cli") -> list[str]:
    return ["pay", loan, amount, "--payment-id", pid, *extra]


def restr_cmd(
    *kind: str, loan: str = "{loan}", rid: str = "R-cli", approval: Sequence[str] = APPROVAL
) -> list[str]:
    return ["restructure", loan, *kind, "--restructuring-id", rid, *approval]


CLI: list[Cmd] = [
    Cmd("amount-decimal-comma", pay_cmd("12,50"), 2, "amount"),
    Cmd("amount-1,2,3", pay_cmd("1,2,3"), 2, "amount"),
    Cmd("amount-minus-5", pay_cmd("-5"), 2, "amount"),
    Cmd("amount-1e3", pay_cmd("1e3"), 2, "amount"),
    Cmd("amount-3-decimals", pay_cmd("12.345"), 2, "amount"),
    Cmd("amount-0", pay_cmd("0"), 2, "amount"),
    Cmd("amount-above-payoff", pay_cmd("99999999"), 1, "amount:"),
    Cmd("amount-above-max", pay_cmd("100000000000000"), 2, "AMOUNT"),
    Cmd("payment-id-empty", pay_cmd(pid=""), 2, "--payment-id"),
    Cmd("payment-id-129", pay_cmd(pid="P" * 129), 2, "--payment-id"),
    Cmd("payment-id-newline", pay_cmd(pid="P\n1"), 2, "--payment-id"),
    Cmd("payment-id-bidi", pay_cmd(pid="P\u202e1"), 2, "--payment-id"),
    Cmd("payment-id-bidi-alm", pay_cmd("1.00", pid="P-alm\u061c1"), 2, "--payment-id"),
    Cmd("channel-tab", pay_cmd("100", "--channel", "ali\tpay"), 2, "--channel"),
    Cmd("paid-at-no-offset", pay_cmd("100", "--paid-at", f"{TODAY}T10:00"), 2, "--paid-at"),
    Cmd("paid-at-not-a-date", pay_cmd("100", "--paid-at", "yesterday"), 2, "--paid-at"),
    Cmd("paid-at-year-2999", pay_cmd("100", "--paid-at", "2999-01-01T10:00:00+08:00"), 2, "--paid-at"),
    Cmd("paid-at-future", pay_cmd("100", "--paid-at", at(TODAY + timedelta(days=2))), 1, "paid_at:"),
    Cmd(
        "paid-at-before-disbursal",
        pay_cmd("100", "--paid-at", at(DISBURSED - timedelta(days=1))),
        1,
        "paid_at:",
    ),
    Cmd("currency-wrong", pay_cmd("100", "--currency", "USD"), 1, "currency:"),
    Cmd("currency-unknown", pay_cmd("100", "--currency", "XYZ"), 2, "--currency"),
    Cmd("restructuring-id-empty", restr_cmd("extension", "--days", "30", rid=""), 2, "--restructuring-id"),
    Cmd(
        "restructuring-id-129", restr_cmd("extension", "--days", "30", rid="R" * 129), 2, "--restructuring-id"
    ),
    Cmd("restructuring-id-nul", restr_cmd("waiver", "--waive-penalty", rid="R\x00"), 2, "--restructuring-id"),
    Cmd(
        "no-approved-by",
        restr_cmd("extension", "--days", "30", approval=["--approval-ref", "A"]),
        2,
        "--approved-by",
    ),
    Cmd(
        "no-approval-ref",
        restr_cmd("extension", "--days", "30", approval=["--approved-by", "A"]),
        2,
        "--approval-ref",
    ),
    Cmd(
        "approved-by-blank",
        restr_cmd("waiver", "--waive-penalty", approval=["--approved-by", " ", "--approval-ref", "A"]),
        2,
        "--approved-by",
    ),
    Cmd("unknown-kind", restr_cmd("forgiveness"), 2, "KIND"),
    Cmd("extension-days-0", restr_cmd("extension", "--days", "0"), 2, "--days"),
    Cmd("extension-days-999", restr_cmd("extension", "--days", "999"), 1, "extension_days:"),
    Cmd("extension-leaves-overdue", restr_cmd("extension", "--days", str(DPD - 5)), 1, "extension_days:"),
    Cmd("extension-days-not-a-number", restr_cmd("extension", "--days", "ten"), 2, "--days"),
    Cmd("new-term-0", restr_cmd("reinstallment", "--months", "0"), 2, "--months"),
    Cmd("new-term-61", restr_cmd("reinstallment", "--months", "61"), 1, "new_term_months:"),
    Cmd("waiver-neither-flag", restr_cmd("waiver"), 2, "--waive-penalty"),
    Cmd("waive-amount-above-owed", restr_cmd("waiver", "--amount", "9999999"), 1, "waive_amount:"),
    Cmd("waive-amount-1,5", restr_cmd("waiver", "--amount", "1,5"), 2, "--amount"),
    Cmd(
        "borrower-id-empty",
        ["borrowers", "upsert", "--borrower-id", "", "--name", "王芳"],
        2,
        "--borrower-id",
    ),
    Cmd(
        "borrower-id-65",
        ["borrowers", "upsert", "--borrower-id", "B" * 65, "--name", "王芳"],
        2,
        "--borrower-id",
    ),
    Cmd(
        "borrower-name-201", ["borrowers", "upsert", "--borrower-id", "B-1", "--name", "x" * 201], 2, "--name"
    ),
    Cmd("disburse-principal-0", ["disburse", "{file:principal=0}"], 2, "principal:"),
    Cmd("disburse-borrower-nul", ["disburse", "{file:borrower_id=B\x00}"], 2, "borrower_id:"),
    Cmd("pay-unknown-loan", pay_cmd(loan="NO-SUCH-LOAN"), 1, "unknown loan NO-SUCH-LOAN"),
    Cmd(
        "restructure-unknown-loan",
        restr_cmd("waiver", "--waive-penalty", loan="NO-SUCH-LOAN"),
        1,
        "unknown loan NO-SUCH-LOAN",
    ),
    Cmd("pay-closed-loan", pay_cmd(loan="{closed}"), 1, "loan {closed} is closed"),
    Cmd(
        "restructure-closed-loan",
        restr_cmd("waiver", "--waive-penalty", loan="{closed}"),
        1,
        "loan {closed} is closed",
    ),
]

# The collector's desk commands (contract part 2).
PROMISE_CMD = ["promise", "{loan}", "--id", "PR-cli", "--agent", "agent-1"]
SOON = (TODAY + timedelta(days=3)).isoformat()
CLI += [
    Cmd("promise-amount-0", [*PROMISE_CMD, "--amount", "0", "--date", SOON], 2, "--amount"),
    Cmd(
        "promise-amount-in-another-currency",
        [*PROMISE_CMD, "--amount", "5,000", "--currency", "JPY", "--date", SOON],
        1,
        "currency:",
    ),
    Cmd("promise-amount-above-payoff", [*PROMISE_CMD, "--amount", "99999999", "--date", SOON], 1, "amount:"),
    Cmd("promise-date-not-a-date", [*PROMISE_CMD, "--amount", "100", "--date", "friday"], 2, "--date"),
    Cmd(
        "promise-date-too-far",
        [*PROMISE_CMD, "--amount", "100", "--date", (TODAY + timedelta(days=9)).isoformat()],
        1,
        "promised_date:",
    ),
    Cmd(
        "promise-id-newline",
        ["promise", "{loan}", "--id", "P\n1", "--agent", "a", "--amount", "1", "--date", SOON],
        2,
        "--id",
    ),
    Cmd(
        "promise-unknown-loan",
        [*PROMISE_CMD[:1], "NO-SUCH-LOAN", *PROMISE_CMD[2:], "--amount", "1", "--date", SOON],
        1,
        "unknown loan NO-SUCH-LOAN",
    ),
    Cmd(
        "dispute-reason-unknown",
        ["dispute", "open", "{loan}", "--id", "D-cli", "--reason", "bored", "--by", "ops"],
        2,
        "--reason",
    ),
    Cmd(
        "dispute-by-blank",
        ["dispute", "open", "{loan}", "--id", "D-cli", "--reason", "amount", "--by", " "],
        2,
        "--by",
    ),
    Cmd(
        "dispute-resolve-unknown",
        ["dispute", "resolve", "{loan}", "--id", "D-none", "--outcome", "upheld", "--by", "ops"],
        1,
        "dispute_id:",
    ),
    Cmd(
        "dispute-outcome-unknown",
        ["dispute", "resolve", "{loan}", "--id", "D-none", "--outcome", "maybe", "--by", "ops"],
        2,
        "--outcome",
    ),
    Cmd(
        "hardship-until-too-far",
        [
            "hardship",
            "start",
            "{loan}",
            "--id",
            "H-cli",
            "--reason",
            "illness",
            "--until",
            (TODAY + timedelta(days=120)).isoformat(),
            "--approved-by",
            "s",
            "--approval-ref",
            "A",
        ],
        1,
        "until:",
    ),
    Cmd(
        "hardship-end-unknown",
        ["hardship", "end", "{loan}", "--id", "H-none", "--by", "ops"],
        1,
        "hardship_id:",
    ),
    Cmd(
        "preferences-fax",
        ["preferences", "{loan}", "--id", "PF-cli", "--channels", "fax", "--by", "a"],
        2,
        "--channels",
    ),
    Cmd(
        "log-contact-at-night",
        [
            "log-contact",
            "{loan}",
            "--id",
            "C-cli",
            "--agent",
            "a",
            "--channel",
            "voice",
            "--result",
            "reached",
            "--at",
            at(TODAY - timedelta(days=1), 23),
        ],
        1,
        "at:",
    ),
    Cmd(
        "log-contact-visit-alone",
        [
            "log-contact",
            "{loan}",
            "--id",
            "C-cli",
            "--agent",
            "a",
            "--channel",
            "field_visit",
            "--result",
            "reached",
            "--at",
            at(TODAY - timedelta(days=1)),
        ],
        1,
        "agent_ids:",
    ),
    Cmd(
        "log-contact-result-unknown",
        ["log-contact", "{loan}", "--id", "C-cli", "--agent", "a", "--channel", "voice", "--result", "maybe"],
        2,
        "--result",
    ),
    Cmd(
        "promise-closed-loan",
        [*PROMISE_CMD[:1], "{closed}", *PROMISE_CMD[2:], "--amount", "1", "--date", SOON],
        1,
        "loan {closed} is closed",
    ),
]

CLI += [
    Cmd("worklist-agent-blank", ["worklist", "--agent", ""], 2, "--agent"),
    Cmd("tasks-done-by-blank", ["tasks", "done", "1", "--by", " "], 2, "--by"),
]


def disburse_file(tmp: Path, spec: str) -> str:
    """`{file:key=value}`: a JSON lines file of a good record and one with key=value."""
    key, value = spec[len("{file:") : -1].split("=", 1)
    good = loan_start(TODAY).model_dump(mode="json")
    bad = loan_start(TODAY).model_dump(mode="json") | {key: int(value) if value.isdigit() else value}
    path = tmp / f"{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    return str(path)


@pytest.mark.parametrize("row", [c.param() for c in CLI])
async def test_cli_refuses_naming_the_option_or_field(
    cli_door: Door, world: World, row: Cmd, capsys: CaptureFixture[str]
) -> None:
    door = cli_door
    argv = [
        disburse_file(world.tmp, a)
        if a.startswith("{file:")
        else a.format(loan=door.loan_id, closed=door.closed_id)
        for a in row.argv
    ]
    closed_handle = door.client.get_workflow_handle(f"loan-{door.closed_id}")
    before = await money(door)
    closed_before = await money(door, closed_handle, door.closed_id)
    capsys.readouterr()
    code = await starter.amain(argv, settings=door.settings)
    out, err = capsys.readouterr()
    names = row.names.format(closed=door.closed_id)
    assert code == row.code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert names in err, err
    if row.code == 1 and names.endswith(":") and "{loan}" in row.argv:
        assert f"refused by loan {door.loan_id}: {names}" in err, err
    assert out == ""
    await unharmed(door, before)
    await unharmed(door, closed_before, handle=closed_handle, loan_id=door.closed_id, closed=True)


# --- Door 4: the inbound HTTP API (contract part 3) ---------------------------------------


@dataclass
class ApiDoor:
    """The API over the catalogue's worker and database (api.create_app with a client of
    the dev server), its loan, and two outbox messages of that loan (a voice call and an
    SMS) that the receipts and calls rows name."""

    door: Door
    http: httpx.AsyncClient
    voice: str
    sms: str


@pytest_asyncio.fixture(scope="module")
async def api_door(world: World) -> AsyncIterator[ApiDoor]:
    loan_id, handle = await overdue_loan(world)
    door = Door(world.client, world.db, world.settings, loan_id, handle)
    voice, sms = f"cat-api:{loan_id}:voice", f"cat-api:{loan_id}:sms"
    outbox_row(world.db, voice, loan_id, "voice")
    outbox_row(world.db, sms, loan_id, "sms")
    settings = api_settings(  # secrets and a 2048-byte body limit, the catalogue's server
        temporal_address=world.settings.temporal_address,
        temporal_namespace=world.settings.temporal_namespace,
        temporal_task_queue=world.settings.temporal_task_queue,
        database_url=world.settings.database_url,
    )
    app = create_app(settings, client=CollectionsClient(world.client, settings), engine=world.db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield ApiDoor(door, http, voice, sms)


@dataclass(frozen=True)
class Http:
    """One request and the answer it must get. `body` is JSON (sent encoded) or bytes
    (sent as is); in it and in `path`, `{loan}` / `{closed}` stand for the door's loan and
    the CLI door's paid-off loan, `{voice}` / `{sms}` for the loan's outbox messages.
    `auth` is what is sent as X-Signature (`good`, `none`, `wrong-secret`, `other-route`:
    the other secret, `other-body`: a good signature of another body) or, for a GET, as
    Authorization (`good`, `none`, `wrong`, `basic`). The answer: `status`, its `problem`
    and the field (or header) the refusal names; `names` is what its detail must say
    (default `<field>: `)."""

    name: str
    method: str
    path: str
    body: Any
    status: int
    problem: str
    field: str
    names: str = ""
    auth: str = "good"
    xfail: str | None = None

    def param(self) -> Any:
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.name, marks=marks)


def paid(**fields: Any) -> dict[str, Any]:
    return {"loan_id": "{loan}", "payment_id": "P-api-bad", "amount": 10_000, **fields}


def receipt(**fields: Any) -> dict[str, Any]:
    return {"message_id": "{sms}", "status": "delivered", **fields}


def call(**fields: Any) -> dict[str, Any]:
    return {"message_id": "{voice}", "result": "reached", "at": at(TODAY - timedelta(days=1)), **fields}


def without(body: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != key}


def post(
    name: str, path: str, body: Any, status: int, problem: str, fld: str, names: str = "", **kw: Any
) -> Http:
    return Http(name, "POST", path, body, status, problem, fld, names, **kw)


def get(name: str, loan: str, status: int, problem: str, fld: str, names: str = "", **kw: Any) -> Http:
    return Http(name, "GET", f"/loans/{loan}", None, status, problem, fld, names, **kw)


BIG = "x" * 4000  # the door's app takes bodies of at most 2048 bytes
SIGNATURE = ("X-Signature", "X-Signature")  # (field, names) of a refused signature
TOO_LARGE = ("body", "body too large: at most 2048 bytes")

API: list[Http] = [
    # POST /payments: bodies refused at the edge (422 bad_input, `errors` names the field)
    post("pay-amount-missing", "/payments", without(paid(), "amount"), 422, "bad_input", "amount"),
    post("pay-amount-string", "/payments", paid(amount="100"), 422, "bad_input", "amount"),
    post("pay-amount-empty", "/payments", paid(amount=""), 422, "bad_input", "amount"),
    post("pay-amount-null", "/payments", paid(amount=None), 422, "bad_input", "amount"),
    post("pay-amount-true", "/payments", paid(amount=True), 422, "bad_input", "amount"),
    post("pay-amount-1.5", "/payments", paid(amount=1.5), 422, "bad_input", "amount"),
    post("pay-amount-100.0", "/payments", paid(amount=100.0), 422, "bad_input", "amount"),
    post("pay-amount-10^16", "/payments", paid(amount=10**16), 422, "bad_input", "amount"),
    post("pay-amount-10^30", "/payments", paid(amount=10**30), 422, "bad_input", "amount"),
    post("pay-currency-unknown-nul", "/payments", paid(currency="CN\x00"), 422, "bad_input", "currency"),
    post(
        "pay-paid-at-year-2999",
        "/payments",
        paid(paid_at="2999-01-01T10:00:00+08:00"),
        422,
        "bad_input",
        "paid_at",
    ),
    post("pay-paid-at-unix-number", "/payments", paid(paid_at=EPOCH), 422, "bad_input", "paid_at"),
    post("pay-paid-at-not-a-time", "/payments", paid(paid_at="yesterday"), 422, "bad_input", "paid_at"),
    post("pay-payment-id-empty", "/payments", paid(payment_id=""), 422, "bad_input", "payment_id"),
    post("pay-payment-id-blank", "/payments", paid(payment_id="   "), 422, "bad_input", "payment_id"),
    post("pay-payment-id-129", "/payments", paid(payment_id="P" * 129), 422, "bad_input", "payment_id"),
    post("pay-payment-id-bidi", "/payments", paid(payment_id="P\u202e1"), 422, "bad_input", "payment_id"),
    post("pay-payment-id-number", "/payments", paid(payment_id=42), 422, "bad_input", "payment_id"),
    post(
        "pay-payment-id-missing", "/payments", without(paid(), "payment_id"), 422, "bad_input", "payment_id"
    ),
    post("pay-channel-newline", "/payments", paid(channel="ali\npay"), 422, "bad_input", "channel"),
    post("pay-loan-id-missing", "/payments", without(paid(), "loan_id"), 422, "bad_input", "loan_id"),
    post("pay-loan-id-space", "/payments", paid(loan_id="L 1"), 422, "bad_input", "loan_id"),
    post("pay-loan-id-65", "/payments", paid(loan_id="L" * 65), 422, "bad_input", "loan_id"),
    post("pay-loan-id-number", "/payments", paid(loan_id=7), 422, "bad_input", "loan_id"),
    # (the wire types forbid unknown fields: a misspelt or extra field is refused, never ignored)
    post("pay-unknown-field", "/payments", paid(tip=5), 422, "bad_input", "tip"),
    post(
        "pay-misspelt-field",
        "/payments",
        {**without(paid(), "amount"), "amout": 100},
        422,
        "bad_input",
        "amout",
    ),
    post(
        "pay-malformed-json", "/payments", b'{"loan_id": "{loan}", "amount": 100,', 422, "bad_input", "body"
    ),
    post("pay-json-array", "/payments", [paid()], 422, "bad_input", "body"),
    post("pay-json-null", "/payments", None, 422, "bad_input", "body"),
    post("pay-json-string", "/payments", "pay", 422, "bad_input", "body"),
    post("pay-empty-body", "/payments", b"", 422, "bad_input", "body"),
    post("pay-not-utf8", "/payments", b'{"loan_id": "\xff"}', 422, "bad_input", "body"),
    # POST /payments: refused by the loan's workflow (422 refused, the detail names the field)
    post("pay-amount-0", "/payments", paid(amount=0), 422, "refused", "amount"),
    post("pay-amount-minus-1", "/payments", paid(amount=-1), 422, "refused", "amount"),
    post("pay-amount-above-payoff", "/payments", paid(amount=10**12), 422, "refused", "amount"),
    post("pay-currency-wrong", "/payments", paid(currency="USD"), 422, "refused", "currency"),
    post("pay-currency-lowercase", "/payments", paid(currency="cny"), 422, "refused", "currency"),
    post("pay-paid-at-no-offset", "/payments", paid(paid_at=at(TODAY, tz=None)), 422, "refused", "paid_at"),
    post(
        "pay-paid-at-future",
        "/payments",
        paid(paid_at=at(TODAY + timedelta(days=2))),
        422,
        "refused",
        "paid_at",
    ),
    post(
        "pay-paid-at-before-disbursal",
        "/payments",
        paid(paid_at=at(DISBURSED - timedelta(days=1))),
        422,
        "refused",
        "paid_at",
    ),
    post(
        "pay-paid-at-backdated",
        "/payments",
        paid(paid_at=at(TODAY - timedelta(days=8))),
        422,
        "refused",
        "paid_at",
    ),
    # POST /payments: the loan
    post(
        "pay-unknown-loan",
        "/payments",
        paid(loan_id="NO-SUCH-LOAN"),
        404,
        "unknown_loan",
        "loan_id",
        "unknown loan NO-SUCH-LOAN",
    ),
    post(
        "pay-closed-loan",
        "/payments",
        paid(loan_id="{closed}"),
        422,
        "closed",
        "loan_id",
        "loan {closed} is closed",
    ),
    # POST /payments: the signature and the size, checked before the body is read as JSON
    post("pay-unsigned", "/payments", paid(), 401, "unauthorized", *SIGNATURE, auth="none"),
    post("pay-wrong-secret", "/payments", paid(), 401, "unauthorized", *SIGNATURE, auth="wrong-secret"),
    post("pay-webhook-secret", "/payments", paid(), 401, "unauthorized", *SIGNATURE, auth="other-route"),
    post("pay-other-body-signed", "/payments", paid(), 401, "unauthorized", *SIGNATURE, auth="other-body"),
    post("pay-garbage-signature", "/payments", paid(), 401, "unauthorized", *SIGNATURE, auth="garbage"),
    post("pay-unsigned-bad-json", "/payments", b"{nope", 401, "unauthorized", *SIGNATURE, auth="none"),
    post("pay-oversized", "/payments", paid(channel=BIG), 413, "too_large", *TOO_LARGE),
    post(
        "pay-oversized-unsigned", "/payments", paid(channel=BIG), 401, "unauthorized", *SIGNATURE, auth="none"
    ),
    # POST /receipts
    post(
        "receipt-unknown-message",
        "/receipts",
        receipt(message_id="no-such-message"),
        404,
        "unknown_message",
        "message_id",
        "unknown message no-such-message",
    ),
    post("receipt-status-read", "/receipts", receipt(status="read"), 422, "bad_input", "status"),
    post("receipt-status-uppercase", "/receipts", receipt(status="DELIVERED"), 422, "bad_input", "status"),
    post("receipt-status-missing", "/receipts", without(receipt(), "status"), 422, "bad_input", "status"),
    post("receipt-message-id-empty", "/receipts", receipt(message_id=""), 422, "bad_input", "message_id"),
    post("receipt-detail-newline", "/receipts", receipt(detail="DELIV\nRD"), 422, "bad_input", "detail"),
    post("receipt-unknown-field", "/receipts", receipt(extra=1), 422, "bad_input", "extra"),
    post("receipt-json-array", "/receipts", [receipt()], 422, "bad_input", "body"),
    post("receipt-unsigned", "/receipts", receipt(), 401, "unauthorized", *SIGNATURE, auth="none"),
    post(
        "receipt-payment-secret", "/receipts", receipt(), 401, "unauthorized", *SIGNATURE, auth="other-route"
    ),
    post(
        "receipt-other-body-signed",
        "/receipts",
        receipt(),
        401,
        "unauthorized",
        *SIGNATURE,
        auth="other-body",
    ),
    post("receipt-oversized", "/receipts", receipt(detail=BIG), 413, "too_large", *TOO_LARGE),
    # POST /calls
    post("call-result-maybe", "/calls", call(result="maybe"), 422, "bad_input", "result"),
    post(
        "call-unknown-message",
        "/calls",
        call(message_id="no-such-message"),
        404,
        "unknown_message",
        "message_id",
        "unknown message no-such-message",
    ),
    post("call-at-missing", "/calls", without(call(), "at"), 422, "bad_input", "at"),
    post("call-at-not-a-time", "/calls", call(at="yesterday"), 422, "bad_input", "at"),
    post("call-at-unix-number", "/calls", call(at=EPOCH), 422, "bad_input", "at"),
    post(
        "call-at-no-offset",
        "/calls",
        call(at=at(TODAY - timedelta(days=1), tz=None)),
        422,
        "bad_input",
        "at",
    ),
    post(
        "call-at-future",
        "/calls",
        call(at=at(TODAY + timedelta(days=2))),
        422,
        "bad_input",
        "at",
    ),
    post("call-at-8-days-ago", "/calls", call(at=at(TODAY - timedelta(days=8))), 422, "bad_input", "at"),
    post("call-an-sms-message", "/calls", call(message_id="{sms}"), 422, "bad_input", "message_id"),
    post("call-unknown-field", "/calls", call(agent_ids=["a"]), 422, "bad_input", "agent_ids"),
    post("call-unsigned", "/calls", call(), 401, "unauthorized", *SIGNATURE, auth="none"),
    post("call-payment-secret", "/calls", call(), 401, "unauthorized", *SIGNATURE, auth="other-route"),
    post("call-oversized", "/calls", call(result=BIG), 413, "too_large", *TOO_LARGE),
    # GET /loans/{loan_id}
    get("loan-no-bearer", "{loan}", 401, "unauthorized", "Authorization", "bearer token", auth="none"),
    get("loan-wrong-bearer", "{loan}", 401, "unauthorized", "Authorization", "bearer token", auth="wrong"),
    get("loan-basic-scheme", "{loan}", 401, "unauthorized", "Authorization", "bearer token", auth="basic"),
    get("loan-unknown", "NO-SUCH-LOAN", 404, "unknown_loan", "loan_id", "unknown loan NO-SUCH-LOAN"),
    get("loan-id-space", "bad%20id", 422, "bad_input", "loan_id"),
    get("loan-id-65", "L" * 65, 422, "bad_input", "loan_id"),
    get(
        "loan-unknown-no-bearer",
        "NO-SUCH-LOAN",
        401,
        "unauthorized",
        "Authorization",
        "bearer token",
        auth="none",
    ),
]


def fill(value: Any, subs: dict[str, str]) -> Any:
    """`value` with the door's placeholders replaced, in any JSON or bytes."""
    if isinstance(value, bytes):
        for k, v in subs.items():
            value = value.replace(k.encode(), v.encode())
        return value
    if isinstance(value, str):
        for k, v in subs.items():
            value = value.replace(k, v)
        return value
    if isinstance(value, dict):
        return {fill(k, subs): fill(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, subs) for v in value]
    return value


async def request(api: ApiDoor, row: Http, subs: dict[str, str]) -> httpx.Response:
    path = fill(row.path, subs)
    if row.method == "GET":
        token = {"good": f"Bearer {TOKEN}", "wrong": "Bearer not-the-token", "basic": f"Basic {TOKEN}"}
        headers = {"Authorization": token[row.auth]} if row.auth in token else {}
        return await api.http.get(path, headers=headers)
    body = fill(row.body, subs)
    raw = body if isinstance(body, bytes) else encode(body)
    secret, other = (
        (PAYMENT_SECRET, WEBHOOK_SECRET) if row.path == "/payments" else (WEBHOOK_SECRET, PAYMENT_SECRET)
    )
    signatures = {
        "good": sign(raw, secret),
        "wrong-secret": sign(raw, "not-the-secret"),
        "other-route": sign(raw, other),
        "other-body": sign(raw + b" ", secret),
        "garbage": "sha256=zz",
    }
    headers = {"Content-Type": "application/json"}
    if row.auth in signatures:
        headers["X-Signature"] = signatures[row.auth]
    return await api.http.post(path, content=raw, headers=headers)


def outbox_state(db: Engine, key: str) -> tuple[Any, ...]:
    with Session(db) as s:
        row = repo.contact_by_key(s, key)
        assert row is not None, key
        return (row.status, row.receipt_at, row.receipt_detail, row.reason)


@pytest.mark.parametrize("row", [r.param() for r in API])
async def test_api_refuses_naming_the_field(api_door: ApiDoor, cli_door: Door, row: Http) -> None:
    api, door = api_door, api_door.door
    closed = cli_door.client.get_workflow_handle(f"loan-{cli_door.closed_id}")
    subs = {"{loan}": door.loan_id, "{closed}": cli_door.closed_id, "{voice}": api.voice, "{sms}": api.sms}
    before, closed_before = await money(door), await money(cli_door, closed, cli_door.closed_id)
    outbox_before = [outbox_state(door.db, k) for k in (api.voice, api.sms)]
    mark = last_audit_id(door.db)

    answer = await request(api, row, subs)

    assert answer.status_code == row.status, answer.text
    content = answer.json()
    assert content["problem"] == row.problem, content
    detail = content["detail"]
    assert isinstance(detail, str) and "\n" not in detail, content
    assert fill(row.names or f"{row.field}: ", subs) in detail, content
    if "errors" in content:  # refused at the edge: every field named, one by one
        assert row.field in [e["field"] for e in content["errors"]], content
    if row.problem == "refused":
        assert detail.startswith(f"refused by loan {door.loan_id}: {row.field}: "), detail
    if row.status == 401:
        assert answer.headers["WWW-Authenticate"] in ("Signature", "Bearer"), answer.headers
    await unharmed(door, before)
    await unharmed(cli_door, closed_before, handle=closed, loan_id=cli_door.closed_id, closed=True)
    assert [outbox_state(door.db, k) for k in (api.voice, api.sms)] == outbox_before
    applied = [r.detail for e in APPLIED_EVENTS for r in audit(door.db, door.loan_id, e, mark)]
    assert applied == [], applied
