"""The loans and the payment traffic of the fault suite, and what must hold afterwards.

- `make_book(rng, n)`: start inputs owing something (overdue by 0-61 days, or due in a
  few days), in time zones where it is now inside the contact window (so contacts go out
  while the faults happen), with their borrowers.
- `plan_payments(rng, starts)`: per loan 3-5 payments, each by update (`record_payment`)
  or by signal (`payment_received`), and deliberate duplicates: the same payment_id sent
  again later by update or by signal, and some sent by both at the same moment.
- `Driver`: sends the plan through the client library like a payment gateway does: an
  answer that does not come (server down, worker killed, timeout) is resent with the
  same payment_id until it is accepted (the update answered, duplicate or not; the
  signal delivered). A refusal by the workflow is recorded (the plan sends only valid
  payments, so any refusal fails the test).
- `verify(...)`: every accepted payment booked exactly once and the workflow agreeing.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from client import ClientError, CollectionsClient, Problem, validate_start
from models.contract import PAYMENT_RECEIVED, RECORD_PAYMENT
from models.tables import BorrowerCreate
from models.wire import LoanStart, PaymentIn, PaymentResult
from tests.faults.harness import until

Channel = Literal["update", "signal"]

# Zones from UTC-10 to UTC+13: at any moment some of them are inside the contact window.
ZONES = [
    "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/Denver",
    "America/Chicago", "America/New_York", "America/Sao_Paulo", "Atlantic/South_Georgia",
    "Atlantic/Azores", "Europe/London", "Europe/Berlin", "Europe/Athens", "Europe/Moscow",
    "Asia/Dubai", "Asia/Karachi", "Asia/Dhaka", "Asia/Bangkok", "Asia/Shanghai",
    "Asia/Tokyo", "Australia/Brisbane", "Pacific/Noumea", "Pacific/Auckland", "Pacific/Tongatapu",
]  # fmt: skip
# Days past due today (negative: due in that many days): reminders, grace, EARLY (credit
# notice, calls), AGENT (a collector is assigned), the demand letter.
DPD = [-3, -1, 0, 1, 3, 5, 7, 14, 31, 61]


def contact_zones(now: datetime) -> list[str]:
    """Zones where it is between 09:00 and 18:00 now: inside the 08:00-21:00 contact
    window, and hours from local midnight (a test never sees its loans' day turn)."""
    zones = [z for z in ZONES if 9 <= now.astimezone(ZoneInfo(z)).hour < 18]
    assert zones, f"no zone of {ZONES} is in the contact window at {now.isoformat()}"
    return zones


def make_book(
    rng: random.Random, n: int, prefix: str, now: datetime | None = None
) -> tuple[list[LoanStart], list[BorrowerCreate]]:
    now = now or datetime.now(UTC)
    zones = contact_zones(now)
    starts: list[LoanStart] = []
    borrowers: list[BorrowerCreate] = []
    for i in range(n):
        tz = rng.choice(zones)
        today = now.astimezone(ZoneInfo(tz)).date()
        first_due = today - timedelta(days=rng.choice(DPD))
        product = rng.choice(["credit", "installment", "auto"])
        borrower_id = f"{prefix}-B{i:03d}"
        record = {
            "loan_id": f"{prefix}-L{i:03d}",
            "borrower_id": borrower_id,
            "product": product,
            "principal": rng.randrange(500_000, 5_000_000, 100),
            "annual_rate_bps": rng.randrange(1200, 2400, 50),
            "term_months": rng.choice([6, 12, 24]),
            "repayment_method": rng.choice(["equal_installment", "equal_principal"]),
            "disbursed_on": (first_due - timedelta(days=30)).isoformat(),
            "first_due_date": first_due.isoformat(),
            "timezone": tz,
        }
        starts.append(validate_start(record))  # as the CLI checks: the workflow accepts it
        borrowers.append(
            BorrowerCreate(
                borrower_id=borrower_id,
                name=f"Fault Borrower {i}",
                phone_mobile=f"+86 100 0000 {i:04d}",
                email=f"{borrower_id.lower()}@example.invalid",
                timezone=tz,
            )
        )
    return starts, borrowers


@dataclass(frozen=True)
class Send:
    loan_id: str
    payment_id: str
    amount: int
    channel: Channel
    duplicate: bool = False  # a deliberate resend of a payment_id sent before


@dataclass
class Plan:
    steps: dict[str, list[list[Send]]]  # per loan, in order; the sends of a step go at once
    amounts: dict[str, dict[str, int]]  # loan -> payment_id -> amount

    @property
    def sends(self) -> list[Send]:
        return [s for steps in self.steps.values() for step in steps for s in step]

    def expected_total(self, loan_id: str) -> int:
        return sum(self.amounts[loan_id].values())


def plan_payments(rng: random.Random, starts: Sequence[LoanStart]) -> Plan:
    """Amounts of 1.00-50.00 each, far below any payoff: every payment is valid and no
    loan closes (a closed loan refuses payments)."""
    steps: dict[str, list[list[Send]]] = {}
    amounts: dict[str, dict[str, int]] = {}
    channels: tuple[Channel, Channel] = ("update", "signal")
    for start in starts:
        loan = start.loan_id
        firsts: list[list[Send]] = []
        resends: list[Send] = []
        amounts[loan] = {}
        for k in range(rng.randint(3, 5)):
            pid = f"PAY-{loan}-{k}"
            amount = rng.randrange(100, 5_000)
            amounts[loan][pid] = amount
            if rng.random() < 0.15:  # the same payment by update and by signal at the same moment
                firsts.append(
                    [Send(loan, pid, amount, "update"), Send(loan, pid, amount, "signal", duplicate=True)]
                )
                continue
            firsts.append([Send(loan, pid, amount, rng.choice(channels))])
            if rng.random() < 0.5:  # the gateway sends it again later, by either door
                resends.append(Send(loan, pid, amount, rng.choice(channels), duplicate=True))
        ordered = list(firsts)
        for resend in resends:  # somewhere after its first send
            first = next(i for i, step in enumerate(ordered) if step[0].payment_id == resend.payment_id)
            ordered.insert(rng.randint(first + 1, len(ordered)), [resend])
        steps[loan] = ordered
    return Plan(steps=steps, amounts=amounts)


@dataclass
class Driver:
    """Sends a plan like a payment gateway: until each message is accepted."""

    client: CollectionsClient
    plan: Plan
    concurrency: int = 12
    timeout: float = 240.0  # the whole plan
    update_wait: float = 20.0  # one update's answer, then it is resent
    signal_wait: float = 10.0
    accepted: int = 0  # messages accepted (progress)
    attempts: Counter[str] = field(default_factory=Counter)  # channel -> calls made
    resent: Counter[str] = field(default_factory=Counter)  # channel -> resends after no answer
    errors: Counter[str] = field(default_factory=Counter)  # Problem -> count
    error_samples: dict[str, str] = field(default_factory=dict)  # Problem -> a first message
    answers: list[tuple[str, PaymentResult]] = field(default_factory=list)  # (payment_id, answer)
    signalled: list[str] = field(default_factory=list)  # payment ids of delivered signals
    refusals: list[str] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)  # monotonic times of acceptances

    @property
    def total(self) -> int:
        return len(self.plan.sends)

    def progress(self) -> float:
        return self.accepted / self.total

    async def run(self, spread: float = 0.0) -> None:
        """Every loan's payments in order, the loans side by side; with `spread`, the
        loans set off one after another over that many seconds (traffic that lasts)."""
        gate = asyncio.Semaphore(self.concurrency)
        deadline = time.monotonic() + self.timeout
        gap = spread / max(1, len(self.plan.steps))

        async def loan(i: int, steps: list[list[Send]]) -> None:
            await asyncio.sleep(i * gap)
            for step in steps:
                await asyncio.gather(*(self._send(s, gate, deadline) for s in step))

        await asyncio.gather(*(loan(i, steps) for i, steps in enumerate(self.plan.steps.values())))

    async def _send(self, s: Send, gate: asyncio.Semaphore, deadline: float) -> None:
        payment = PaymentIn(payment_id=s.payment_id, amount=s.amount, channel="fault-suite")
        pause = 0.2
        while True:
            async with gate:
                self.attempts[s.channel] += 1
                try:
                    if s.channel == "update":
                        answer = await self.client.record_payment(s.loan_id, payment, wait=self.update_wait)
                        assert answer is not None
                        self.answers.append((s.payment_id, answer))
                    else:
                        await self.client.record_payment(
                            s.loan_id, payment, fire_and_forget=True, wait=self.signal_wait
                        )
                        self.signalled.append(s.payment_id)
                    self.accepted += 1
                    self.accepted_at.append(time.monotonic())
                    return
                except ClientError as exc:
                    self.errors[exc.problem.value] += 1
                    rpc = exc.__context__  # the client library's ClientError keeps Temporal's error here
                    status = getattr(getattr(rpc, "status", None), "name", None)
                    self.error_samples.setdefault(exc.problem.value, f"{exc.message[:200]} ({status})")
                    if exc.message.startswith("refused by loan") or exc.problem is Problem.CLOSED:
                        self.refusals.append(f"{s.channel} {s.payment_id}: {exc.message}")
                        self.accepted += 1  # answered: nothing more to send
                        return
                    last = exc.message
            # No answer (server down, worker killed, timeout): the outcome is unknown,
            # so the same payment_id goes again, as a gateway does.
            if time.monotonic() > deadline:
                raise AssertionError(f"{s.channel} {s.payment_id} not accepted in {self.timeout:g}s: {last}")
            self.resent[s.channel] += 1
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    def sent_during(self, start: float, end: float) -> int:
        return sum(1 for t in self.accepted_at if start <= t <= end)


# --- afterwards -----------------------------------------------------------------------------


def booked(engine: Engine) -> dict[str, dict[str, tuple[int, int, int]]]:
    """loan -> payment_id -> (rows, amount, allocation total) from the payment table."""
    query = sa.text(
        "SELECT loan_id, payment_id, COUNT(*), SUM(amount), "
        "SUM(alloc_penalty + alloc_fee + alloc_interest + alloc_principal) "
        "FROM payment GROUP BY loan_id, payment_id"
    )
    out: dict[str, dict[str, tuple[int, int, int]]] = defaultdict(dict)
    with engine.connect() as conn:
        for loan_id, payment_id, rows, amount, alloc in conn.execute(query):
            out[loan_id][payment_id] = (int(rows), int(amount), int(alloc))
    return out


async def settled(engine: Engine, plan: Plan, timeout: float) -> None:
    """Until the payment table holds every planned payment (the workflows write their
    bookings down in a local activity, retried until the database answers)."""

    async def complete() -> bool:
        rows = await asyncio.to_thread(booked, engine)
        return all(set(rows.get(loan, {})) == set(ids) for loan, ids in plan.amounts.items())

    await until(complete, timeout=timeout, what="every accepted payment booked", interval=0.5)


def _payment_id(payloads: Any) -> str | None:
    for payload in payloads:
        data = json.loads(payload.data)
        if isinstance(data, dict) and "payment_id" in data:
            return str(data["payment_id"])
    return None


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


async def _retrying(call: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except Exception as exc:  # the server or the worker may still be catching up
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: {exc}") from exc
            await asyncio.sleep(0.5)


async def verify(client: CollectionsClient, engine: Engine, plan: Plan, driver: Driver) -> Findings:
    """Everything the fault suite promises, as a list of problems (empty: all held)."""
    f = Findings()
    p = f.problems
    p += [f"refused: {r}" for r in driver.refusals]
    rows = await asyncio.to_thread(booked, engine)
    histories: dict[str, set[str]] = {}
    non_duplicate_answers: Counter[str] = Counter()
    task_failures = 0
    sem = asyncio.Semaphore(8)

    async def one_loan(loan: str) -> None:
        nonlocal task_failures
        expected = plan.amounts[loan]
        got = rows.get(loan, {})
        # The payment table: every accepted payment once, with its amount.
        if set(got) != set(expected):
            p.append(f"{loan}: booked {sorted(got)} != accepted {sorted(expected)}")
        for pid, (count, amount, alloc) in got.items():
            if count != 1:
                p.append(f"{loan}: payment {pid} booked {count} times")
            if pid in expected and amount != expected[pid] * count:
                p.append(f"{loan}: payment {pid} booked for {amount}, paid {expected[pid]}")
            if alloc != amount:
                p.append(f"{loan}: payment {pid} allocated {alloc} of {amount}")
        async with sem:
            state = await _retrying(lambda: client.state(loan, wait=10), f"state of {loan}")
            handle = client.handle(loan)
            desc = await _retrying(handle.describe, f"describe {loan}")
            history = await _retrying(handle.fetch_history, f"history of {loan}")
        # The workflow's state: what it holds as paid is the sum of the accepted payments,
        # and of the bookings.
        paid = sum(i["paid"] for i in state["installments"])
        total_booked = sum(amount for _, amount, _ in got.values())
        if not paid == plan.expected_total(loan) == total_booked:
            p.append(
                f"{loan}: state says {paid} paid, accepted {plan.expected_total(loan)}, booked {total_booked}"
            )
        if state["closed"]:
            p.append(f"{loan}: closed, yet every payment was far below the payoff")
        if desc.status != WorkflowExecutionStatus.RUNNING:
            p.append(f"{loan}: workflow {desc.status.name if desc.status else desc.status}, not Running")
        # The workflow's history: the payment ids it took in, and no failed workflow task.
        taken: set[str] = set()
        for event in history.events:
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                task_failures += 1
                attrs = event.workflow_task_failed_event_attributes
                p.append(f"{loan}: WorkflowTaskFailed (event {event.event_id}): {attrs.failure.message}")
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
                attrs_s = event.workflow_execution_signaled_event_attributes
                if attrs_s.signal_name == PAYMENT_RECEIVED:
                    signalled = _payment_id(attrs_s.input.payloads)
                    if signalled:
                        taken.add(signalled)
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
                req = event.workflow_execution_update_accepted_event_attributes.accepted_request
                if req.input.name == RECORD_PAYMENT:
                    updated = _payment_id(req.input.args.payloads)
                    if updated:
                        taken.add(updated)
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
                outcome = event.workflow_execution_update_completed_event_attributes.outcome
                if outcome.HasField("success"):
                    result = json.loads(outcome.success.payloads[0].data)
                    if isinstance(result, dict) and "payment_id" in result and not result.get("duplicate"):
                        non_duplicate_answers[result["payment_id"]] += 1
        histories[loan] = taken
        if taken != set(expected):
            p.append(f"{loan}: the history took in {sorted(taken)}, accepted {sorted(expected)}")

    await asyncio.gather(*(one_loan(loan) for loan in plan.amounts))
    # An update answered 'applied' (duplicate: false) twice would be a payment applied twice.
    p += [f"payment {pid} answered as applied {n} times" for pid, n in non_duplicate_answers.items() if n > 1]
    seen: Counter[str] = Counter()
    for pid, answer in driver.answers:
        if not answer.duplicate:
            seen[pid] += 1
    p += [f"payment {pid}: the driver got {n} 'applied' answers" for pid, n in seen.items() if n > 1]

    def outbox() -> tuple[list[tuple[str, int]], int, Counter[str], int]:
        with engine.connect() as conn:
            twice = [
                (str(k), int(n))
                for k, n in conn.execute(
                    sa.text(
                        "SELECT idempotency_key, COUNT(*) FROM contact_attempt "
                        "GROUP BY idempotency_key HAVING COUNT(*) > 1"
                    )
                )
            ]
            contacts = int(conn.execute(sa.text("SELECT COUNT(*) FROM contact_attempt")).scalar_one())
            audit = Counter(
                {
                    str(e): int(n)
                    for e, n in conn.execute(sa.text("SELECT event, COUNT(*) FROM audit_log GROUP BY event"))
                }
            )
            payment_audits = conn.execute(
                sa.text(
                    "SELECT COUNT(*) FROM (SELECT loan_id, detail FROM audit_log WHERE event = 'payment' "
                    "GROUP BY loan_id, detail HAVING COUNT(*) > 1) AS d"
                )
            ).scalar_one()
        return twice, contacts, audit, int(payment_audits)

    twice, contacts, audit, payment_audits_twice = await asyncio.to_thread(outbox)
    p += [f"contact idempotency key {k} appears {n} times in contact_attempt" for k, n in twice]
    if audit.get("rejected"):
        p.append(f"{audit['rejected']} messages rejected by the workflows (the plan sends only valid ones)")
    if audit.get("payment_id_reused"):
        p.append(f"{audit['payment_id_reused']} payment_id_reused audits (payment ids are unique per loan)")
    sends = plan.sends
    f.figures = {
        "loans": len(plan.amounts),
        "payments": sum(len(ids) for ids in plan.amounts.values()),
        "messages": len(sends),
        "by_update": sum(1 for s in sends if s.channel == "update"),
        "by_signal": sum(1 for s in sends if s.channel == "signal"),
        "deliberate_duplicates": sum(1 for s in sends if s.duplicate),
        "calls": dict(driver.attempts),
        "resent_after_no_answer": dict(driver.resent),
        "client_errors": dict(driver.errors),
        "client_error_samples": driver.error_samples,
        "booked_once": sum(1 for ids in rows.values() for c, _, _ in ids.values() if c == 1),
        "contact_attempts": contacts,
        "workflow_task_failures": task_failures,
        "audit_payment_entries": audit.get("payment", 0),
        "payments_audited_twice": payment_audits_twice,
    }
    return f
