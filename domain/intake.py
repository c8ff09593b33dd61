"""Messages taken into a case: payments, approved restructurings, and the log of the
fire-and-forget messages that were refused.

Pure functions of (case, message fields, now). A message id is applied at most once: a
second message with the same id changes nothing and is answered as a duplicate (checked
before anything else, so a reused id is never refused for what the case has become since).
The workflow's update validator, update handler and signal twin all call these, so the
three always agree on what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.case import ActivityFailure, Case, Components, PaymentMark, Rejection
from domain.enums import RestructuringKind
from domain.ledger import CaseError, apply_payment, outstanding, payment_date, today_for
from domain.planner import reconcile
from domain.protections import lapse, note_payment
from domain.restructure import already_applied, restructure

# Refused signals kept on the case (the audit log keeps them all), each bounded: a caller
# sending huge ids must not grow the case (carried across continue-as-new) or the logs.
MAX_REJECTIONS_KEPT = 50
MAX_FAILURES_KEPT = 20  # activity failures kept on the case
REF_MAX = 128  # a rejection's message name and ref (the id), in characters
REASON_MAX = 500  # a rejection's reason
# Payments remembered by when they count (for a promise entered after the fact: at most
# max_promise_days back, bounded by the policy).
PAYMENT_MARKS_KEPT = timedelta(days=400)


def clip_text(text: str, max_len: int) -> str:
    """`text` cut to at most `max_len` characters (an ellipsis marks a cut)."""
    return text if len(text) <= max_len else text[: max_len - 1] + "…"


# --- Payments ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentTaken:
    case: Case  # reconciled: the episode follows the ledger
    allocation: Components
    paid_at: datetime | None  # when the payment counts; None for a duplicate
    duplicate: bool


def check_payment(
    case: Case, *, payment_id: str, amount: int, currency: str | None, paid_at: datetime | None, now: datetime
) -> None:
    """Raises CaseError naming the field when the payment cannot be applied; changes
    nothing. A payment id already applied passes (it is answered as a duplicate)."""
    if payment_id in case.payments:
        return
    if case.closed:
        raise CaseError("loan_id", f"loan {case.loan_id} is closed (paid off)")
    if currency is not None and currency != case.currency:
        raise CaseError("currency", f"{currency} is not the loan's currency {case.currency}")
    if isinstance(amount, bool) or amount <= 0:
        raise CaseError("amount", f"must be an integer > 0 in minor units (got {amount})")
    counts_at = payment_date(case, paid_at or now, now)
    payoff = outstanding(case, today_for(case, counts_at)).total
    if amount > payoff:
        raise CaseError("amount", f"{amount} is above the payoff amount {payoff}")


def take_payment(
    case: Case, *, payment_id: str, amount: int, currency: str | None, paid_at: datetime | None, now: datetime
) -> PaymentTaken:
    """Check and apply a payment, remembering its id; a payment id already applied
    answers with its first allocation and changes nothing. Raises CaseError."""
    check_payment(case, payment_id=payment_id, amount=amount, currency=currency, paid_at=paid_at, now=now)
    if payment_id in case.payments:
        return PaymentTaken(case, case.payments[payment_id], None, duplicate=True)
    counts_at = payment_date(case, paid_at or now, now)
    # Promises lapse first, as at the midnight the workflow may not have woken for yet (a
    # worker down overnight): a late payment must find an overdue promise broken, not
    # cancel it by curing the loan (found by review).
    case = lapse(case, now)
    case, allocation = apply_payment(case, amount, counts_at)
    case = case.model_copy(update={"payments": {**case.payments, payment_id: allocation}})
    case = note_payment(case, amount, counts_at, now)  # toward the promise it was made for
    marks = [m for m in case.payment_marks if m.at > now - PAYMENT_MARKS_KEPT]
    case = case.model_copy(update={"payment_marks": [*marks, PaymentMark(at=counts_at, amount=amount)]})
    return PaymentTaken(reconcile(case, now), allocation, counts_at, duplicate=False)


# --- Restructurings ----------------------------------------------------------------------


@dataclass(frozen=True)
class RestructuringTaken:
    case: Case  # reconciled
    duplicate: bool


def take_restructuring(
    case: Case,
    *,
    restructuring_id: str,
    kind: RestructuringKind,
    approved_by: str | None,
    approval_ref: str | None,
    extension_days: int | None,
    new_term_months: int | None,
    waive_penalty: bool,
    waive_amount: int | None,
    now: datetime,
) -> RestructuringTaken:
    """Apply an approved restructuring (domain/restructure.py validates it, raising
    CaseError naming the field). A restructuring id already applied is a duplicate and is
    never handed to `restructure` again."""
    if already_applied(case, restructuring_id):
        return RestructuringTaken(case, duplicate=True)
    changed = restructure(
        case,
        restructuring_id=restructuring_id,
        kind=kind,
        approved_by=approved_by,
        approval_ref=approval_ref,
        extension_days=extension_days,
        new_term_months=new_term_months,
        waive_penalty=waive_penalty,
        waive_amount=waive_amount,
        now=now,
    )
    return RestructuringTaken(reconcile(changed, now), duplicate=False)


# --- Refusals ----------------------------------------------------------------------------


def record_rejection(case: Case, *, message: str, ref: str | None, reason: str, at: datetime) -> Case:
    """Remember a refused fire-and-forget message (the latest MAX_REJECTIONS_KEPT, each
    clipped to REF_MAX / REASON_MAX characters)."""
    rejection = Rejection(
        at=at,
        message=clip_text(message, REF_MAX),
        ref=None if ref is None else clip_text(ref, REF_MAX),
        reason=clip_text(reason, REASON_MAX),
    )
    return case.model_copy(update={"rejections": [*case.rejections, rejection][-MAX_REJECTIONS_KEPT:]})


def record_failure(case: Case, *, activity: str, error: str, at: datetime, retry_at: datetime | None) -> Case:
    """Remember an activity that failed for good (the latest MAX_FAILURES_KEPT, clipped)."""
    failure = ActivityFailure(
        at=at, activity=clip_text(activity, REF_MAX), error=clip_text(error, REASON_MAX), retry_at=retry_at
    )
    return case.model_copy(update={"failures": [*case.failures, failure][-MAX_FAILURES_KEPT:]})
