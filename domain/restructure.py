"""Approved restructurings: extension (延期还款), re-installment (分期还款), waiver.

Each validates its request and returns the new case; nothing changes on a refusal.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.calendar import add_months
from domain.case import Case, Installment, Restructuring, unpaid_installments
from domain.enums import RestructuringKind
from domain.ledger import (
    CaseError,
    all_settled,
    materialize_penalties,
    oldest_overdue,
    outstanding,
    owed_on,
    penalty_owed,
    remaining_fee,
    remaining_interest,
    remaining_principal,
    today_for,
    unsettled,
)
from domain.schedule import build_schedule


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
    """Shift every unpaid due date by `days`; the loan must come out of it not overdue."""
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
    case = materialize_penalties(case, today)
    open_seqs = {i.seq for i in unsettled(case, today)}
    if not open_seqs:
        raise CaseError("kind", "nothing is left to extend")
    shifted = [
        inst.model_copy(update={"due_date": inst.due_date + timedelta(days=days)})
        if inst.seq in open_seqs
        else inst
        for inst in case.installments
    ]
    return case.model_copy(update={"installments": shifted})


def reinstall(case: Case, new_term_months: int | None, now: datetime) -> Case:
    """Re-amortize all that is outstanding today, overdue included, over `new_term_months`
    new monthly installments from next month, at the contract rate and method."""
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
    case = materialize_penalties(case, today)
    kept: list[Installment] = []
    for inst in case.installments:
        if inst.paid.total == 0 and remaining_principal(inst) > 0:
            continue  # replaced by the new schedule
        # Partly paid: it closes at what was paid; the rest moves into the new schedule.
        kept.append(
            inst.model_copy(
                update={
                    "principal": inst.paid.principal,
                    "interest": inst.paid.interest,
                    "fee": inst.paid.fee,
                    "interest_forgiven": 0,
                    "fee_waived": 0,
                    "penalty_accrued": inst.paid.penalty,
                    "penalty_waived": 0,
                }
            )
        )
    next_seq = max(i.seq for i in case.installments) + 1
    schedule = build_schedule(
        capital,
        case.annual_rate_bps,
        new_term_months,
        case.repayment_method,
        start=today,
        first_due_date=add_months(today, 1),
        first_seq=next_seq,
        day_of_month=today.day,  # restructured on the 31st: due on the 31st or month end
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
    case = materialize_penalties(case, today)
    installments = list(case.installments)
    if waive_penalty:
        installments = [
            inst.model_copy(update={"penalty_waived": inst.penalty_waived + penalty_owed(case, inst, today)})
            for inst in installments
        ]
        case = case.model_copy(update={"installments": installments})
    if waive_amount is not None:
        due = sorted((i for i in case.installments if i.due_date <= today), key=lambda i: (i.due_date, i.seq))
        waivable = sum(o.penalty + o.fee + o.interest for o in (owed_on(case, i, today) for i in due))
        if waive_amount > waivable:
            raise CaseError(
                "waive_amount",
                f"{waive_amount} is above the penalty, fees and interest owed ({waivable})",
            )
        left = waive_amount
        updated: dict[int, Installment] = {}
        for inst in due:
            pen = min(left, penalty_owed(case, inst, today))
            fee = min(left - pen, remaining_fee(inst))
            interest = min(left - pen - fee, remaining_interest(inst))
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
    """Validate and apply one approved restructuring, recording it on the case."""
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
