"""How a case is shown to the outside: the `state` answer, message answers, the
projection the activities store, the search attributes and the Web UI details.

Pure functions of (case, now); the workflow passes them through the sandbox.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from domain.calendar import start_of_day, zone
from domain.case import Case, Components
from domain.desk import DeskTaken
from domain.enums import Channel
from domain.ledger import (
    days_past_due,
    oldest_overdue,
    outstanding,
    overdue_amount,
    stage,
    status_of,
    today_for,
)
from domain.money import format_amount
from domain.planner import PlannedAction, is_housekeeping, plan, reconcile
from domain.protections import allowed_channels, broken_promises, hold_lifts_at, strongest_hold
from models.wire import (
    ActivityFailureView,
    Allocation,
    CaseView,
    DeskResult,
    DisputeView,
    HardshipView,
    HoldView,
    InstallmentView,
    LoanProjection,
    NextActionView,
    Outstanding,
    PaymentResult,
    PromiseView,
)


def allocation_of(c: Components) -> Allocation:
    return Allocation(penalty=c.penalty, fee=c.fee, interest=c.interest, principal=c.principal)


def outstanding_of(case: Case, now: datetime) -> Outstanding:
    o = outstanding(case, today_for(case, now))
    return Outstanding(
        principal=o.principal, interest=o.interest, penalty=o.penalty, fee=o.fee, total=o.total
    )


def installments_of(case: Case, now: datetime) -> list[InstallmentView]:
    today = today_for(case, now)
    return [
        InstallmentView(
            seq=i.seq,
            due_date=i.due_date,
            principal=i.principal,
            interest=i.interest,
            paid=i.paid.total,
            status=status_of(case, i, today),
        )
        for i in case.installments
    ]


def upcoming(case: Case, now: datetime) -> PlannedAction | None:
    """The next step of the case. The nightly housekeeping (the midnight refresh, the
    check of who holds the case) is not a step a collector waits for, nor is a step a
    hold or the borrower's preferences will stop (the `hold` says why)."""
    case = reconcile(case, now)
    steps = plan(case, case.policy, now, complete=False)
    return next((a for a in steps if not is_housekeeping(a) and a.held_by is None), None)


def query_time(last_task_time: datetime) -> datetime:
    """The moment a query answers for. Workflow time stands still between tasks (a loan
    sleeps for weeks), so a query takes the wall clock when it is later: a query is
    read-only and never replayed, so this cannot change the case or its history. Not for
    anything that decides what the workflow does."""
    return max(last_task_time, datetime.now(UTC))


def hold_of(case: Case, now: datetime) -> HoldView | None:
    hold = strongest_hold(case, today_for(case, now))
    return None if hold is None else HoldView(reason=hold.reason, until=hold.until, ref=hold.ref)


def desk_result(taken: DeskTaken, now: datetime) -> DeskResult:
    """The answer of a desk update: the record it touched and the protections after it."""
    case = taken.case
    return DeskResult(
        kind=taken.kind,
        id=taken.ref,
        status=taken.status,
        duplicate=taken.duplicate,
        hold=hold_of(case, now),
        broken_promises=broken_promises(case),
        contact_channels=allowed_channels(case),
    )


def case_view(case: Case, now: datetime) -> CaseView:
    case = reconcile(case, now)  # promises and hardships as they stand now
    today = today_for(case, now)
    nxt = None if case.closed else upcoming(case, now)
    return CaseView(
        loan_id=case.loan_id,
        stage=stage(case, today),
        days_past_due=days_past_due(case, today),
        outstanding=outstanding_of(case, now),
        overdue=overdue_amount(case, today),
        next_action=NextActionView(kind=nxt.kind, at=nxt.at) if nxt else None,
        assigned_agent=case.assigned_agent,
        installments=installments_of(case, now),
        contacts_sent=case.contacts_sent,
        credit_reported=case.credit_reported,
        legal_referred=case.legal_referred,
        closed=case.closed,
        activity_failures=[ActivityFailureView(**f.model_dump()) for f in case.failures],
        hold=hold_of(case, now),
        promises=[
            PromiseView(
                promise_id=p.promise_id, amount=p.amount, promised_date=p.promised_date, status=p.status
            )
            for p in case.promises
        ],
        disputes=[
            DisputeView(dispute_id=d.dispute_id, reason=d.reason, status=d.status, escalated=d.escalated)
            for d in case.disputes
        ],
        hardships=[
            HardshipView(hardship_id=h.hardship_id, until=h.until, status=h.status) for h in case.hardships
        ],
        contact_channels=allowed_channels(case),
        broken_promises=broken_promises(case),
    )


def payment_result(
    case: Case, payment_id: str, allocation: Components, now: datetime, duplicate: bool
) -> PaymentResult:
    today = today_for(case, now)
    return PaymentResult(
        payment_id=payment_id,
        allocation=allocation_of(allocation),
        outstanding=outstanding_of(case, now),
        overdue=overdue_amount(case, today),
        days_past_due=days_past_due(case, today),
        stage=stage(case, today),
        duplicate=duplicate,
    )


def projection(case: Case, now: datetime) -> LoanProjection:
    view = case_view(case, now)
    return LoanProjection(
        loan_id=case.loan_id,
        stage=view.stage,
        days_past_due=view.days_past_due,
        outstanding=view.outstanding,
        overdue=view.overdue,
        assigned_agent=view.assigned_agent,
        next_action_kind=view.next_action.kind if view.next_action else None,
        next_action_at=view.next_action.at if view.next_action else None,
        closed=view.closed,
        installments=view.installments,
        as_of=now,
    )


def projection_fingerprint(p: LoanProjection) -> dict[str, Any]:
    """What makes a projection worth writing down. Interest of a new period appears in
    the payoff as days pass; that alone is not worth a write. The projection is
    rewritten (outstanding included, as of `as_of`) whenever stage, DPD, overdue, agent,
    schedule or payments change."""
    return p.model_dump(exclude={"as_of", "next_action_at", "next_action_kind", "outstanding"})


def overdue_since(case: Case, now: datetime) -> datetime | None:
    oldest = oldest_overdue(case, today_for(case, now))
    return start_of_day(oldest.due_date, case.timezone) if oldest else None


def search_values(case: Case, view: CaseView, now: datetime) -> dict[str, object]:
    """The search attributes of DESIGN.md by name (None: unset)."""
    return {
        "LoanId": case.loan_id,
        "BorrowerId": case.borrower_id,
        "LoanProduct": case.product.value,
        "CollectionStage": view.stage.value,
        "DaysPastDue": view.days_past_due,
        "AmountOverdue": view.overdue,
        "OutstandingBalance": view.outstanding.total,
        "AssignedAgent": view.assigned_agent,
        "NextActionAt": view.next_action.at if view.next_action else None,
        "OverdueSince": overdue_since(case, now),
        "CollectionHold": view.hold.reason.value if view.hold else None,
        "HoldUntil": hold_until(case, now),
        "BrokenPromises": float(view.broken_promises),
    }


def hold_until(case: Case, now: datetime) -> datetime | None:
    """When the strongest hold lifts by itself (the local midnight after its last day);
    None when there is none or it is open-ended (a dispute)."""
    hold = strongest_hold(case, today_for(case, now))
    return None if hold is None else hold_lifts_at(hold, case.timezone)


def details_markdown(view: CaseView, currency: str, timezone: str) -> str:
    """The Web UI's current details: what a collector needs at a glance."""

    def money(v: int) -> str:
        return format_amount(v, currency, symbol=True)

    nxt = (
        f"{view.next_action.kind.value.replace('_', ' ')} at "
        f"{view.next_action.at.astimezone(zone(timezone)).strftime('%Y-%m-%d %H:%M')} ({timezone})"
        if view.next_action
        else "none (closed)"
    )
    paid = sum(1 for i in view.installments if i.status.value == "paid")
    lines = [
        f"## Loan {view.loan_id}: {view.stage.value}",
        "",
        "| | |",
        "|---|---|",
        f"| Stage | **{view.stage.value}** |",
        f"| Days past due | {view.days_past_due} |",
        f"| Overdue | {money(view.overdue)} |",
        f"| Payoff today | {money(view.outstanding.total)} |",
        f"| Assigned agent | {view.assigned_agent or '—'} |",
        f"| Next action | {nxt} |",
        f"| Installments paid | {paid} of {len(view.installments)} |",
        f"| Contacts sent | {view.contacts_sent} |",
        f"| Credit reported | {'yes' if view.credit_reported else 'no'} |",
        f"| Legal referred | {'yes' if view.legal_referred else 'no'} |",
    ]
    if view.hold is not None:
        until = f" through {view.hold.until.isoformat()}" if view.hold.until else " (until resolved)"
        lines.append(f"| Hold | **{view.hold.reason.value}** {view.hold.ref}{until} |")
    if view.broken_promises:
        lines.append(f"| Broken promises (this episode) | {view.broken_promises} |")
    if len(view.contact_channels) < len(Channel):
        lines.append(f"| Contact channels | {', '.join(c.value for c in view.contact_channels)} |")
    return "\n".join(lines)
