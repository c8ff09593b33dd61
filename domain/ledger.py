"""Balances, penalty accrual, days past due and payment allocation.

Rules (DESIGN.md, and the choices this module makes where DESIGN.md is silent):
- An installment is *due* on its due date (local) and *overdue* from the next day.
- Penalty interest accrues daily on the installment's unpaid principal from its due date
  at annual_rate_bps x penalty_rate_multiplier_pct / 100 / penalty_day_basis, rounded
  half-up once per accrual span. A span ends only when the installment's unpaid
  principal changes (a payment of its principal) or its due date moves (an extension):
  payments of penalty, fees or interest, and waivers, never end one, so the number of
  payments never changes the total cost. It is *charged* only once the installment is
  still unpaid after the grace days; paid within grace, it is never owed. Every due
  date gets its grace: an extension carries the penalty already charged (owed for good)
  and the moved due date starts a fresh accrual with its own grace.
- Hardship relief: penalty does not accrue on the local days of an approved hardship
  (from the day it is approved through its last day), when the policy says so
  (`hardship_freezes_penalty`). Nothing else is forgiven by it.
- Interest is earned by the contract period: once an installment's period has begun,
  its full interest is owed by an early settlement (as is usual for Chinese consumer
  loans). An extension moves due dates, never periods, so it forgives nothing.
- Payoff amount today = penalty charged + fees due + the interest of every installment
  whose period has begun (those due, and the running one) + all unpaid principal. The
  payoff is the same however a day's payments are split: paying the running installment
  early does not bring the next period's interest forward.
- Allocation: installments due (oldest first), each penalty -> fee -> interest ->
  principal; then those whose period has begun (interest -> principal); anything beyond
  is a prepayment of principal: the later installments are re-amortized over the same
  due dates on the lower balance (same term, smaller installments). A penalty charged
  before an extension moved an installment's due date ahead is taken first from that
  installment.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from domain.calendar import local_date
from domain.case import Case, Components, Installment
from domain.enums import CollectionStage, InstallmentStatus
from domain.money import round_half_up
from domain.schedule import amortize

BPS = 10_000
PCT = 100
# Clock skew accepted between a payment gateway's paid_at and the workflow's time.
PAID_AT_SKEW = timedelta(minutes=5)


class CaseError(ValueError):
    """A request the case refuses; `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def today_for(case: Case, now: datetime) -> date:
    return local_date(now, case.timezone)


# --- One installment -----------------------------------------------------------------


def remaining_principal(inst: Installment) -> int:
    return inst.principal - inst.paid.principal


def remaining_interest(inst: Installment) -> int:
    return inst.interest - inst.paid.interest - inst.interest_forgiven


def remaining_fee(inst: Installment) -> int:
    return inst.fee - inst.paid.fee - inst.fee_waived


def _contract_unpaid(inst: Installment) -> bool:
    return remaining_principal(inst) > 0 or remaining_interest(inst) > 0 or remaining_fee(inst) > 0


def period_end(inst: Installment) -> date:
    """The end of the installment's contract period (an extension moves only its due date)."""
    return inst.period_end or inst.due_date


def has_begun(inst: Installment, today: date) -> bool:
    """Its period has begun: its full interest is earned (owed by an early settlement)."""
    return inst.period_start <= today


def relief_days(case: Case, start: date, end: date) -> int:
    """How many local days in [start, end) fall within an approved hardship's relief,
    when the policy freezes penalty for them (each day counted once, however many
    hardships cover it)."""
    if not case.policy.hardship_freezes_penalty or end <= start:
        return 0
    spans = sorted(
        (max(h.starts_on, start), min(h.last_day or h.until, end - timedelta(days=1))) for h in case.hardships
    )
    days, covered_to = 0, start - timedelta(days=1)
    for first, last in spans:
        first = max(first, covered_to + timedelta(days=1))
        if last >= first:
            days += (last - first).days + 1
            covered_to = last
    return days


def penalty_accrued(case: Case, inst: Installment, today: date) -> int:
    """Penalty accrued since the current due date through `today` (charged or not). No
    penalty accrues on the local days of an approved hardship (policy
    `hardship_freezes_penalty`): the day count leaves them out."""
    start = max(inst.due_date, inst.penalty_through or inst.due_date)
    days = (today - start).days
    if case.hardships:
        days -= relief_days(case, start, today)
    unpaid = remaining_principal(inst)
    if days <= 0 or unpaid <= 0:
        return inst.penalty_accrued
    policy = case.policy
    span = round_half_up(
        unpaid * case.annual_rate_bps * policy.penalty_rate_multiplier_pct * days,
        BPS * PCT * policy.penalty_day_basis,
    )
    return inst.penalty_accrued + span


def penalty_is_charged(case: Case, inst: Installment, today: date) -> bool:
    if inst.penalty_charged:
        return True
    return _contract_unpaid(inst) and (today - inst.due_date).days > case.policy.grace_days


def penalty_owed(case: Case, inst: Installment, today: date) -> int:
    charged = penalty_accrued(case, inst, today) if penalty_is_charged(case, inst, today) else 0
    return inst.penalty_carried + charged - inst.paid.penalty - inst.penalty_waived


def is_settled(case: Case, inst: Installment, today: date) -> bool:
    return not _contract_unpaid(inst) and penalty_owed(case, inst, today) <= 0


def owed_on(case: Case, inst: Installment, today: date) -> Components:
    """What the installment asks for today if it is due (all its components)."""
    return Components(
        penalty=penalty_owed(case, inst, today),
        fee=remaining_fee(inst),
        interest=remaining_interest(inst),
        principal=remaining_principal(inst),
    )


def status_of(case: Case, inst: Installment, today: date) -> InstallmentStatus:
    if is_settled(case, inst, today):
        return InstallmentStatus.PAID
    if inst.due_date > today:
        return InstallmentStatus.SCHEDULED
    if inst.due_date == today:
        return InstallmentStatus.DUE
    return InstallmentStatus.OVERDUE


# --- The whole loan ------------------------------------------------------------------


def unsettled(case: Case, today: date) -> list[Installment]:
    return [i for i in case.installments if not is_settled(case, i, today)]


def oldest_overdue(case: Case, today: date) -> Installment | None:
    late = [i for i in unsettled(case, today) if i.due_date < today]
    return min(late, key=lambda i: (i.due_date, i.seq), default=None)


def days_past_due(case: Case, today: date) -> int:
    oldest = oldest_overdue(case, today)
    return (today - oldest.due_date).days if oldest else 0


def outstanding(case: Case, today: date) -> Components:
    """The payoff amount today, by component (see the module docstring). Paying an
    installment early never makes the next period's interest owed before it begins."""
    total = Components()
    for inst in case.installments:
        due = inst.due_date <= today
        total = total + Components(
            penalty=penalty_owed(case, inst, today),
            fee=remaining_fee(inst) if due else 0,
            interest=remaining_interest(inst) if due or has_begun(inst, today) else 0,
            principal=remaining_principal(inst),
        )
    return total


def overdue_amount(case: Case, today: date) -> int:
    """Everything past due today, penalty included."""
    return sum(owed_on(case, i, today).total for i in case.installments if i.due_date < today)


def stage(case: Case, today: date) -> CollectionStage:
    if case.closed:
        return CollectionStage.PAID_OFF
    if case.charged_off:
        return CollectionStage.CHARGED_OFF
    return case.policy.stage_for_dpd(days_past_due(case, today))


def all_settled(case: Case, today: date) -> bool:
    return not unsettled(case, today)


# --- Changing the ledger -------------------------------------------------------------


def mark_charged(case: Case, today: date) -> Case:
    """Record which penalties are charged as of today, before a payment or waiver settles
    an installment's contract amounts: a penalty charged stays charged."""
    installments = [
        inst.model_copy(update={"penalty_charged": True})
        if not inst.penalty_charged and penalty_is_charged(case, inst, today)
        else inst
        for inst in case.installments
    ]
    return case.model_copy(update={"installments": installments})


def end_penalty_span(case: Case, inst: Installment, today: date) -> Installment:
    """Fix the penalty accrued so far into the installment (one rounding), so that a
    change of its unpaid principal from today on accrues at the new balance."""
    if today < inst.due_date:  # nothing accrues before the due date
        return inst
    return inst.model_copy(
        update={
            "penalty_accrued": penalty_accrued(case, inst, today),
            "penalty_through": max(today, inst.penalty_through or today),
        }
    )


def _take(amount: int, wanted: int) -> int:
    return max(0, min(amount, wanted))


def reamortize(case: Case, later: list[Installment], prepaid: int) -> list[Installment]:
    """`later` installments (not yet begun) after a prepayment of `prepaid` principal:
    the remaining balance is re-amortized over their due dates, so interest is charged
    on what is still borrowed and nothing else."""
    balance = sum(remaining_principal(i) for i in later) - prepaid
    rows = amortize(balance, case.annual_rate_bps, len(later), case.repayment_method)
    changed = []
    for n, (inst, (part, interest)) in enumerate(zip(later, rows, strict=True)):
        # The prepayment is booked on the first of them, so that the installments'
        # principal still adds up to the loan and every minor unit stays traceable.
        paid = inst.paid + Components(principal=prepaid) if n == 0 else inst.paid
        changed.append(
            inst.model_copy(
                update={
                    "paid": paid,
                    "principal": paid.principal + part,
                    "interest": paid.interest + interest,
                    # An approved waiver of its interest still stands, up to the new amount.
                    "interest_forgiven": min(inst.interest_forgiven, interest),
                }
            )
        )
    return changed


def reported_instant(
    case: Case, field: str, value: datetime, now: datetime, max_days_back: int, *, late: str
) -> datetime:
    """A moment a caller reports (a payment made, a promise made, a dispute received, a
    call): never later than now (a caller's clock a little ahead). Refused, naming
    `field`: no UTC offset, in the future beyond the clock skew, out of the calendar,
    before disbursal, or more than `max_days_back` days `late` (e.g. "ago")."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise CaseError(field, "must carry a UTC offset, e.g. 2026-03-01T10:00:00+08:00")
    if value > now + PAID_AT_SKEW:
        raise CaseError(field, f"{value.isoformat()} is in the future")
    try:
        day = today_for(case, value)
    except (OverflowError, ValueError):
        # A time at the edge of the calendar (0001-01-01T00:00+14:00) has no local date:
        # refused naming the field, never raised out of a message handler.
        raise CaseError(field, f"{value.isoformat()} is out of range") from None
    if day < case.disbursed_on:
        raise CaseError(field, "is before the loan was disbursed")
    if value < now - timedelta(days=max_days_back):
        raise CaseError(field, f"{value.isoformat()} is more than {max_days_back} days {late}")
    return min(value, now)


def payment_date(case: Case, paid_at: datetime, now: datetime) -> datetime:
    """When a payment counts: when it was made (a due date is met by paying any time that
    local day), but never later than now nor earlier than the last change already applied
    (ledger events stay in order). Refused as `reported_instant` refuses, naming
    `paid_at` (at most `payment_backdate_days` before it was reported)."""
    limit = case.policy.payment_backdate_days
    dated = reported_instant(case, "paid_at", paid_at, now, limit, late="before it was reported")
    return max(dated, case.ledger_at) if case.ledger_at is not None else dated


def apply_payment(case: Case, amount: int, paid_at: datetime) -> tuple[Case, Components]:
    """Allocate a payment; returns the new case and where every minor unit went."""
    if case.closed:
        raise CaseError("loan_id", f"loan {case.loan_id} is closed (paid off)")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise CaseError("amount", f"must be an integer > 0 in minor units (got {amount!r})")
    today = today_for(case, paid_at)
    payoff = outstanding(case, today).total
    if amount > payoff:
        raise CaseError("amount", f"{amount} is above the payoff amount {payoff}")

    case = mark_charged(case, today)
    left = amount
    allocation = Components()
    by_seq: dict[int, Installment] = {}
    later: list[Installment] = []
    for inst in sorted(case.installments, key=lambda i: (i.due_date, i.seq)):
        # Penalty first whatever the installment's due date: a penalty charged before an
        # extension moved the due date ahead is still owed (and counted in the payoff).
        penalty = _take(left, penalty_owed(case, inst, today))
        share = Components(penalty=penalty)
        if inst.due_date <= today:
            fee = _take(left - penalty, remaining_fee(inst))
            interest = _take(left - penalty - fee, remaining_interest(inst))
            principal = _take(left - penalty - fee - interest, remaining_principal(inst))
            share = Components(penalty=penalty, fee=fee, interest=interest, principal=principal)
        elif has_begun(inst, today):
            interest = _take(left - penalty, remaining_interest(inst))
            principal = _take(left - penalty - interest, remaining_principal(inst))
            share = Components(penalty=penalty, interest=interest, principal=principal)
        else:
            # Every installment not yet begun, even one with nothing left: a prepayment
            # re-amortizes over all of them, so two prepayments on one day come to the
            # same schedule as one of their sum.
            later.append(inst)
        left -= share.total
        allocation = allocation + share
        if share.principal:  # its balance changes: the penalty span so far ends today
            inst = end_penalty_span(case, inst, today)
        by_seq[inst.seq] = inst.model_copy(update={"paid": inst.paid + share})
    if left > 0:
        prepaid = min(left, sum(remaining_principal(by_seq[i.seq]) for i in later))
        for inst in reamortize(case, [by_seq[i.seq] for i in later], prepaid):
            by_seq[inst.seq] = inst
        allocation = allocation + Components(principal=prepaid)
        left -= prepaid
    assert left == 0, "payment not fully allocated below the payoff amount"
    installments = [by_seq[i.seq] for i in case.installments]
    case = case.model_copy(update={"installments": installments})
    case = case.model_copy(update={"ledger_at": max(paid_at, case.ledger_at or paid_at)})
    if all_settled(case, today):
        case = case.model_copy(update={"closed": True})
    return case, allocation
