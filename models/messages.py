"""The workflow's messages, each described once as an `Intake`: its update and signal
names (models/contract.py), its wire type, how it is checked and taken into the case
(domain/intake.py), what it answers, and what it leaves to write down.

The workflow's update validator, update handler and signal twin all go through the same
`Intake`, so the three agree, and a new message costs a spec here plus three short
handlers in the workflow. Pure (Pydantic and domain/ only): passed through the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from domain import desk
from domain.case import Case
from domain.desk import DeskTaken
from domain.intake import (
    REASON_MAX,
    REF_MAX,
    RestructuringTaken,
    check_payment,
    clip_text,
    take_payment,
    take_restructuring,
)
from domain.ledger import days_past_due, overdue_amount, stage, today_for
from models import contract
from models.views import allocation_of, desk_result, installments_of, outstanding_of, payment_result
from models.wire import (
    ContactLogIn,
    DeskResult,
    DisputeOpenIn,
    DisputeResolveIn,
    HardshipEndIn,
    HardshipStartIn,
    PaymentBooking,
    PaymentIn,
    PaymentResult,
    PreferencesIn,
    PromiseIn,
    RestructuringIn,
    ScheduleSummary,
)

M = TypeVar("M", bound=BaseModel)
A = TypeVar("A")


@dataclass(frozen=True)
class Taken(Generic[A]):
    """A message taken into the case: the answer, and when it changed the case (not a
    duplicate), the new case and what to write down."""

    case: Case
    answer: A
    changed: bool
    audit: tuple[str, str] | None = None  # (event, detail) for the audit log
    bookings: tuple[PaymentBooking, ...] = ()


@dataclass(frozen=True)
class Undecodable:
    """A signal payload that does not have the message's shape."""

    ref: str | None
    reason: str


@dataclass(frozen=True)
class Intake(Generic[M, A]):
    update: str  # the update's name (answered)
    signal: str  # its fire-and-forget twin
    model: type[M]
    id_field: str  # the idempotency id: applied at most once
    error_type: str  # ApplicationError type of a refusal
    check: Callable[[Case, M, datetime], None]  # raises CaseError; changes nothing
    take: Callable[[Case, M, datetime], Taken[A]]  # check and apply; raises CaseError

    def ref(self, message: M) -> str:
        return str(getattr(message, self.id_field))

    def decode(self, raw: object, *extra: object) -> M | Undecodable:
        """The payload as the message, or why not, naming the field. Handlers take their
        payload undecoded (plain JSON), so a payload of any shape, count or type ends here
        as a message or a refusal: never as a decoding error inside the SDK (which fails a
        workflow task, drops a signal unseen or answers only "Failed decoding arguments")."""
        if extra:
            return Undecodable(self._raw_ref(raw), f"payload: expected one argument, got {1 + len(extra)}")
        if isinstance(raw, self.model):
            return raw
        if not isinstance(raw, dict):
            got = "nothing" if raw is None else f"a JSON {_json_kind(raw)}"
            return Undecodable(None, f"payload: expected a JSON object, got {got}")
        try:
            return self.model.model_validate(raw)
        except ValidationError as exc:
            return Undecodable(self._raw_ref(raw), clip_text(validation_reason(exc), REASON_MAX))

    def _raw_ref(self, raw: object) -> str | None:
        ref = raw.get(self.id_field) if isinstance(raw, dict) else None
        return None if ref is None else clip_text(str(ref), REF_MAX)


def validation_reason(exc: ValidationError) -> str:
    """Every problem of a validation error as 'field: message; ...' (never the input)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}" for err in exc.errors()
    )


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


# --- record_payment / payment_received -----------------------------------------------------


def _check_payment(case: Case, p: PaymentIn, now: datetime) -> None:
    check_payment(
        case, payment_id=p.payment_id, amount=p.amount, currency=p.currency, paid_at=p.paid_at, now=now
    )


def _take_payment(case: Case, p: PaymentIn, now: datetime) -> Taken[PaymentResult]:
    taken = take_payment(
        case, payment_id=p.payment_id, amount=p.amount, currency=p.currency, paid_at=p.paid_at, now=now
    )
    answer = payment_result(taken.case, p.payment_id, taken.allocation, now, duplicate=taken.duplicate)
    if taken.duplicate or taken.paid_at is None:
        return Taken(taken.case, answer, changed=False)
    booking = PaymentBooking(
        loan_id=case.loan_id,
        payment_id=p.payment_id,
        amount=p.amount,
        currency=case.currency,
        paid_at=taken.paid_at,
        channel=p.channel,
        allocation=allocation_of(taken.allocation),
    )
    detail = f"payment {p.payment_id} of {p.amount} applied: {taken.allocation.model_dump()}"
    return Taken(taken.case, answer, changed=True, audit=("payment", detail), bookings=(booking,))


PAYMENT: Intake[PaymentIn, PaymentResult] = Intake(
    update=contract.RECORD_PAYMENT,
    signal=contract.PAYMENT_RECEIVED,
    model=PaymentIn,
    id_field="payment_id",
    error_type="InvalidPayment",
    check=_check_payment,
    take=_take_payment,
)


# --- apply_restructuring / restructuring_approved ----------------------------------------


def _restructured(case: Case, r: RestructuringIn, now: datetime) -> RestructuringTaken:
    return take_restructuring(
        case,
        restructuring_id=r.restructuring_id,
        kind=r.kind,
        approved_by=r.approved_by,
        approval_ref=r.approval_ref,
        extension_days=r.extension_days,
        new_term_months=r.new_term_months,
        waive_penalty=r.waive_penalty,
        waive_amount=r.waive_amount,
        now=now,
    )


def _check_restructuring(case: Case, r: RestructuringIn, now: datetime) -> None:
    _restructured(case, r, now)  # validates by computing; the result is dropped


def _take_restructuring(case: Case, r: RestructuringIn, now: datetime) -> Taken[ScheduleSummary]:
    taken = _restructured(case, r, now)
    after, today = taken.case, today_for(taken.case, now)
    answer = ScheduleSummary(
        restructuring_id=r.restructuring_id,
        kind=r.kind,
        duplicate=taken.duplicate,
        outstanding=outstanding_of(after, now),
        overdue=overdue_amount(after, today),
        days_past_due=days_past_due(after, today),
        stage=stage(after, today),
        installments=installments_of(after, now),
    )
    if taken.duplicate:
        return Taken(after, answer, changed=False)
    last = after.restructurings[-1]
    detail = f"{last.detail}; approved by {last.approved_by} ({last.approval_ref})"
    return Taken(after, answer, changed=True, audit=("restructuring", detail))


RESTRUCTURING: Intake[RestructuringIn, ScheduleSummary] = Intake(
    update=contract.APPLY_RESTRUCTURING,
    signal=contract.RESTRUCTURING_APPROVED,
    model=RestructuringIn,
    id_field="restructuring_id",
    error_type="InvalidRestructuring",
    check=_check_restructuring,
    take=_take_restructuring,
)


# --- The collector's desk (contract part 2): one shape for the seven messages ------------


def _desk_intake(
    update: str,
    signal: str,
    model: type[M],
    id_field: str,
    error_type: str,
    apply: Callable[[Case, M, datetime], DeskTaken],
) -> Intake[M, DeskResult]:
    """A desk message: checked by applying it to the case and dropping the result (so the
    validator and the handler cannot disagree), answered with the protections after it."""

    def check(case: Case, message: M, now: datetime) -> None:
        apply(case, message, now)

    def take(case: Case, message: M, now: datetime) -> Taken[DeskResult]:
        taken = apply(case, message, now)
        answer = desk_result(taken, now)
        return Taken(taken.case, answer, changed=not taken.duplicate, audit=taken.audit)

    return Intake(
        update=update,
        signal=signal,
        model=model,
        id_field=id_field,
        error_type=error_type,
        check=check,
        take=take,
    )


PROMISE: Intake[PromiseIn, DeskResult] = _desk_intake(
    contract.RECORD_PROMISE,
    contract.PROMISE_MADE,
    PromiseIn,
    "promise_id",
    "InvalidPromise",
    lambda case, m, now: desk.record_promise(
        case,
        promise_id=m.promise_id,
        amount=m.amount,
        promised_date=m.promised_date,
        agent_id=m.agent_id,
        made_at=m.made_at,
        now=now,
        currency=m.currency,
    ),
)
DISPUTE_OPEN: Intake[DisputeOpenIn, DeskResult] = _desk_intake(
    contract.OPEN_DISPUTE,
    contract.DISPUTE_OPENED,
    DisputeOpenIn,
    "dispute_id",
    "InvalidDispute",
    lambda case, m, now: desk.open_dispute(
        case, dispute_id=m.dispute_id, reason=m.reason, opened_by=m.opened_by, opened_at=m.opened_at, now=now
    ),
)
DISPUTE_RESOLVE: Intake[DisputeResolveIn, DeskResult] = _desk_intake(
    contract.RESOLVE_DISPUTE,
    contract.DISPUTE_RESOLVED,
    DisputeResolveIn,
    "dispute_id",
    "InvalidDispute",
    lambda case, m, now: desk.resolve_dispute(
        case, dispute_id=m.dispute_id, outcome=m.outcome, resolved_by=m.resolved_by, now=now
    ),
)
HARDSHIP_START: Intake[HardshipStartIn, DeskResult] = _desk_intake(
    contract.START_HARDSHIP,
    contract.HARDSHIP_APPROVED,
    HardshipStartIn,
    "hardship_id",
    "InvalidHardship",
    lambda case, m, now: desk.start_hardship(
        case,
        hardship_id=m.hardship_id,
        reason=m.reason,
        until=m.until,
        approved_by=m.approved_by,
        approval_ref=m.approval_ref,
        now=now,
    ),
)
HARDSHIP_END: Intake[HardshipEndIn, DeskResult] = _desk_intake(
    contract.END_HARDSHIP,
    contract.HARDSHIP_ENDED,
    HardshipEndIn,
    "hardship_id",
    "InvalidHardship",
    lambda case, m, now: desk.end_hardship(case, hardship_id=m.hardship_id, ended_by=m.ended_by, now=now),
)
PREFERENCES: Intake[PreferencesIn, DeskResult] = _desk_intake(
    contract.SET_CONTACT_PREFERENCES,
    contract.CONTACT_PREFERENCES_SET,
    PreferencesIn,
    "preference_id",
    "InvalidPreferences",
    lambda case, m, now: desk.set_contact_preferences(
        case, preference_id=m.preference_id, channels=m.channels, set_by=m.set_by, now=now
    ),
)
CONTACT_LOG: Intake[ContactLogIn, DeskResult] = _desk_intake(
    contract.LOG_CONTACT,
    contract.CONTACT_LOGGED,
    ContactLogIn,
    "contact_id",
    "InvalidContactLog",
    lambda case, m, now: desk.log_contact(
        case,
        contact_id=m.contact_id,
        agent_ids=m.agent_ids,
        channel=m.channel,
        result=m.result,
        reason=m.reason,
        at=m.at,
        now=now,
    ),
)
# Every desk message, in the order of DESIGN.md's table (the workflow registers each).
DESK: tuple[Intake[Any, DeskResult], ...] = (
    PROMISE,
    DISPUTE_OPEN,
    DISPUTE_RESOLVE,
    HARDSHIP_START,
    HARDSHIP_END,
    PREFERENCES,
    CONTACT_LOG,
)
