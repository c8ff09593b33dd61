"""Approved restructurings: extension (延期还款), re-installment (分期还款), waiver.

Each validates its request and returns the new case; nothing changes on a refusal.
Only a waiver forgives: an extension moves due dates (the interest already earned and
the penalty already charged stay owed), and a re-installment moves what is owed into a
new plan (the same-day payoff neither rises nor falls).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from domain.calendar import add_months
from domain.case import Case, Installment, Restructuring, unpaid_installments
from domain.enums import RestructuringKind
from domain.ledger import (
    CaseError,
    all_settled,
    has_begun,
    mark_charged,
    oldest_overdue,
    outstanding,
    penalty_accrued,
    penalty_is_charged,
    penalty_owed,
    period_end,
    remaining_fee,
    remaining_interest,
    remaining_principal,
    today_for,
    unsettled,
)
from domain.schedule import build_schedule


def already_applied(case: Case, restructuring_id: str) -> bool:
    return any(r.restructuring_id == restructuring_id for r in case.restructurings)


def require_approval(approved_by: str | None, approval_ref: str | None) -> None:
    if not (approved_by or "").strip():
        raise CaseError("approved_by", "a restructuring needs the approver (approved_by)")
    if not (approval_ref or "").strip():
        raise CaseError("approval_ref", "a restructuring needs the approval reference")


def _open(case: Case) -> None:
    if case.closed:
        raise CaseError("loan_id", f"loan {case.loan_id} is closed (paid off)")
    if case.charged_off:
        raise CaseError("loan_id", f"loan {case.loan_id} is charged off; only payments apply")


def extend(case: Case, days: int | None, now: datetime) -> Case:
    """Shift every unpaid due date by `days`; the loan must come out of it not overdue.
    Periods stay where they are (interest already earned stays owed); the penalty charged
    so far is carried, and each moved due date accrues afresh after its own grace."""
    _open(case)
    policy = case.policy
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= policy.max_extension_days:
        raise CaseError("extension_days", f"must be 1 to {policy.max_extension_days} days (got {days!r})")
    today = today_for(case, now)
    oldest = oldest_overdue(case, today)
    if oldest is not None and oldest.due_date + timedelta(days=days) < today:
        needed = (today - oldest.due_date).days
        raise CaseError(
            "extension_days",
            f"{days} days leaves installment {oldest.seq} overdue; at least {needed} are needed",
        )
    open_seqs = {i.seq for i in unsettled(case, today)}
    if not open_seqs:
        raise CaseError("kind", "nothing is left to extend")
    shifted = [
        _moved(case, inst, days, today) if inst.seq in open_seqs else inst for inst in case.installments
    ]
    return case.model_copy(update={"installments": shifted})


def _moved(case: Case, inst: Installment, days: int, today: date) -> Installment:
    charged = penalty_accrued(case, inst, today) if penalty_is_charged(case, inst, today) else 0
    return inst.model_copy(
        update={
            "due_date": inst.due_date + timedelta(days=days),
            "period_end": period_end(inst),
            # Charged penalty stays owed; a penalty still in grace was never owed.
            "penalty_carried": inst.penalty_carried + charged,
            "penalty_accrued": 0,
            "penalty_through": None,
            "penalty_charged": False,
        }
    )


def reinstall(case: Case, new_term_months: int | None, now: datetime) -> Case:
    """Re-amortize the payoff of the day (overdue, penalty, and the interest of every
    period already begun) over `new_term_months` new monthly installments at the
    contract rate and method. The new plan's interest starts where the interest already
    charged ends: at the end of the last begun period, and never before tomorrow. So no
    day's interest is charged twice and the same-day payoff is unchanged."""
    _open(case)
    policy = case.policy
    if (
        isinstance(new_term_months, bool)
        or not isinstance(new_term_months, int)
        or not 1 <= new_term_months <= policy.max_new_term_months
    ):
        raise CaseError(
            "new_term_months",
            f"must be 1 to {policy.max_new_term_months} months (got {new_term_months!r})",
        )
    today = today_for(case, now)
    capital = outstanding(case, today).total
    if capital <= 0:
        raise CaseError("kind", "nothing is outstanding to re-install")
    kept: list[Installment] = []
    for inst in case.installments:
        touched = inst.paid.total or inst.interest_forgiven or inst.fee_waived or inst.penalty_waived
        if not touched and remaining_principal(inst) > 0:
            continue  # replaced by the new schedule
        # Touched: it closes at what was paid (and waived, which stays on record); the
        # rest moves into the new schedule.
        kept.append(
            inst.model_copy(
                update={
                    "principal": inst.paid.principal,
                    "interest": inst.paid.interest + inst.interest_forgiven,
                    "fee": inst.paid.fee + inst.fee_waived,
                    "penalty_carried": inst.paid.penalty + inst.penalty_waived,
                    "penalty_accrued": 0,
                    "penalty_through": None,
                    "penalty_charged": False,
                }
            )
        )
    # Interest is charged through the end of the last begun period, and further when a
    # plan not yet begun (an earlier re-installment) starts later still.
    begun_ends = [period_end(i) for i in case.installments if has_begun(i, today)]
    next_starts = [i.period_start for i in case.installments if not has_begun(i, today)]
    charged_through = [*begun_ends, *([min(next_starts)] if next_starts else [])]
    start = max([today + timedelta(days=1), *charged_through])
    next_seq = max(i.seq for i in case.installments) + 1
    schedule = build_schedule(
        capital,
        case.annual_rate_bps,
        new_term_months,
        case.repayment_method,
        start=start,
        first_due_date=add_months(start, 1),
        first_seq=next_seq,
        day_of_month=start.day,  # a plan starting on the 31st: due on the 31st or month end
    )
    fresh = unpaid_installments(schedule)
    return case.model_copy(update={"installments": kept + fresh})


def waive(case: Case, waive_penalty: bool, waive_amount: int | None, now: datetime) -> Case:
    """Waive the penalty charged so far and/or an amount of penalty, fees and interest
    owed (oldest first, never principal)."""
    _open(case)
    if not waive_penalty and waive_amount is None:
        raise CaseError("waive_penalty", "a waiver needs waive_penalty or waive_amount")
    if waive_amount is not None and (
        isinstance(waive_amount, bool) or not isinstance(waive_amount, int) or waive_amount <= 0
    ):
        raise CaseError("waive_amount", f"must be an integer > 0 (got {waive_amount!r})")
    today = today_for(case, now)
    case = mark_charged(case, today)
    installments = list(case.installments)
    if waive_penalty:
        installments = [
            inst.model_copy(update={"penalty_waived": inst.penalty_waived + penalty_owed(case, inst, today)})
            for inst in installments
        ]
        case = case.model_copy(update={"installments": installments})
    if waive_amount is not None:
        # Penalty wherever it is owed (also penalty carried on a moved installment), fees
        # and interest of the installments due; oldest first, never principal.
        ordered = sorted(case.installments, key=lambda i: (i.due_date, i.seq))

        def waivable_of(inst: Installment) -> tuple[int, int, int]:
            due = inst.due_date <= today
            return (
                penalty_owed(case, inst, today),
                remaining_fee(inst) if due else 0,
                remaining_interest(inst) if due else 0,
            )

        waivable = sum(sum(waivable_of(i)) for i in ordered)
        if waive_amount > waivable:
            raise CaseError(
                "waive_amount",
                f"{waive_amount} is above the penalty, fees and interest owed ({waivable})",
            )
        left = waive_amount
        updated: dict[int, Installment] = {}
        for inst in ordered:
            owed_penalty, owed_fee, owed_interest = waivable_of(inst)
            pen = min(left, owed_penalty)
            fee = min(left - pen, owed_fee)
            interest = min(left - pen - fee, owed_interest)
            left -= pen + fee + interest
            updated[inst.seq] = inst.model_copy(
                update={
                    "penalty_waived": inst.penalty_waived + pen,
                    "fee_waived": inst.fee_waived + fee,
                    "interest_forgiven": inst.interest_forgiven + interest,
                }
            )
        case = case.model_copy(update={"installments": [updated.get(i.seq, i) for i in case.installments]})
    if all_settled(case, today):
        case = case.model_copy(update={"closed": True})
    return case


def restructure(
    case: Case,
    *,
    restructuring_id: str,
    kind: RestructuringKind,
    approved_by: str | None,
    approval_ref: str | None,
    extension_days: int | None = None,
    new_term_months: int | None = None,
    waive_penalty: bool = False,
    waive_amount: int | None = None,
    now: datetime,
) -> Case:
    """Validate and apply one approved restructuring, recording it on the case. A
    restructuring id is applied once: a reused one is refused (callers that answer
    duplicates, like the workflow, check `already_applied` first)."""
    if not isinstance(restructuring_id, str) or not restructuring_id.strip():
        raise CaseError("restructuring_id", "must not be blank")
    if already_applied(case, restructuring_id):
        raise CaseError("restructuring_id", f"{restructuring_id!r} was already applied to this loan")
    require_approval(approved_by, approval_ref)
    if kind is RestructuringKind.EXTENSION:
        changed = extend(case, extension_days, now)
        detail = f"extension by {extension_days} days"
    elif kind is RestructuringKind.REINSTALLMENT:
        changed = reinstall(case, new_term_months, now)
        detail = f"re-installment over {new_term_months} months"
    else:
        changed = waive(case, waive_penalty, waive_amount, now)
        parts = (["penalty"] if waive_penalty else []) + ([f"amount {waive_amount}"] if waive_amount else [])
        detail = "waiver of " + " and ".join(parts)
    record = Restructuring(
        restructuring_id=restructuring_id,
        kind=kind.value,
        approved_by=(approved_by or "").strip(),
        approval_ref=(approval_ref or "").strip(),
        at=now,
        detail=detail,
    )
    ledger_at = max(now, case.ledger_at) if case.ledger_at else now
    return changed.model_copy(
        update={"restructurings": [*changed.restructurings, record], "ledger_at": ledger_at}
    )
