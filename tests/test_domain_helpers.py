"""Shared builders for the domain tests (no tests here).

The standard loan of these tests: 1,200,000 (12,000.00 CNY) at 1800 bps over 12 months,
equal installment, disbursed 2024-01-15 in Asia/Shanghai, first due 2024-02-15. 2024 is
a leap year, so DPD 14 of the first installment falls on Feb 29.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from domain.case import Case
from domain.enums import ActionKind, Product, RepaymentMethod
from domain.ledger import days_past_due, today_for
from domain.onboarding import open_case
from domain.planner import Outcome, PlannedAction, next_action, reconcile, record_outcome
from domain.policy import Policy, load_policy

SH = "Asia/Shanghai"
NY = "America/New_York"
POLICY = load_policy("standard")
DISBURSED = date(2024, 1, 15)
FIRST_DUE = date(2024, 2, 15)


def local(day: date, hh: int = 0, mm: int = 0, tz: str = SH) -> datetime:
    """An aware datetime at a local wall-clock time (the zone's first reading if ambiguous)."""
    return datetime.combine(day, time(hh, mm), tzinfo=ZoneInfo(tz))


def as_local(instant: datetime, tz: str = SH) -> datetime:
    return instant.astimezone(ZoneInfo(tz))


def make_case(
    *,
    principal: int = 1_200_000,
    rate: int = 1800,
    term: int = 12,
    method: RepaymentMethod = RepaymentMethod.EQUAL_INSTALLMENT,
    disbursed: date = DISBURSED,
    first_due: date | None = FIRST_DUE,
    tz: str = SH,
    product: Product = Product.CREDIT,
    currency: str = "CNY",
    onboarded: datetime | None = None,
    policy: Policy = POLICY,
    loan_id: str = "L-1",
) -> Case:
    return open_case(
        loan_id=loan_id,
        borrower_id="B-1",
        product=product,
        currency=currency,
        principal=principal,
        annual_rate_bps=rate,
        term_months=term,
        repayment_method=method,
        disbursed_on=disbursed,
        first_due_date=first_due,
        timezone=tz,
        policy=policy,
        now=onboarded or local(disbursed, 10, 0, tz),
    )


def default_outcome(action: PlannedAction) -> Outcome:
    if action.kind is ActionKind.VOICE_CALL:
        return Outcome(dialed=True, connected=False, line="primary")
    if action.kind is ActionKind.ASSIGN_AGENT:
        return Outcome(agent_id="agent-7")
    return Outcome()


@dataclass
class Executed:
    action: PlannedAction
    at: datetime  # when the driver executed it (max(now, action.at))
    dpd: int


def drive(
    case: Case,
    now: datetime,
    until: datetime,
    outcome: Callable[[PlannedAction], Outcome] = default_outcome,
    limit: int = 2000,
) -> tuple[Case, list[Executed], datetime]:
    """Run the planner like the workflow does: reconcile, ask next_action, sleep until it is
    due, execute it (record_outcome). Stops before the first action due after `until`."""
    log: list[Executed] = []
    for _ in range(limit):
        case = reconcile(case, now)
        action = next_action(case, case.policy, now)
        if action is None or action.at > until:
            break
        if action.at > now:
            # Like the workflow: sleep until it is due, then plan again at that moment
            # (an action that keeps moving away would never run).
            now = action.at
            continue
        case = reconcile(case, now)
        log.append(Executed(action, now, days_past_due(case, today_for(case, now))))
        case = record_outcome(case, action, outcome(action), now)
    else:  # pragma: no cover - a runaway planner
        raise AssertionError("planner did not settle")
    return case, log, now


def utc(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)
