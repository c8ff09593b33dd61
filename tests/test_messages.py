"""The message intakes the workflow's handlers share (models/messages.py): what each
update and signal answers, what it leaves to write down, and how a signal payload that
does not decode is refused. No Temporal here: pure functions of (case, message, now)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.ledger import CaseError, outstanding, today_for
from models import contract
from models.messages import PAYMENT, RESTRUCTURING, Undecodable
from models.wire import PaymentIn, RestructuringIn
from tests.test_domain_helpers import FIRST_DUE, local, make_case

NOW = local(FIRST_DUE + timedelta(days=10), 12)
WAIVER = RestructuringIn(
    restructuring_id="R-1", kind="waiver", waive_penalty=True, approved_by="risk.lead", approval_ref="APR-1"
)


def test_the_intakes_carry_the_contract_names() -> None:
    assert (PAYMENT.update, PAYMENT.signal) == (contract.RECORD_PAYMENT, contract.PAYMENT_RECEIVED)
    assert (RESTRUCTURING.update, RESTRUCTURING.signal) == (
        contract.APPLY_RESTRUCTURING,
        contract.RESTRUCTURING_APPROVED,
    )


def test_a_payment_answers_its_allocation_and_leaves_a_booking_and_an_audit_entry() -> None:
    case = make_case()
    payment = PaymentIn(payment_id="p-1", amount=50_000, channel="alipay")
    taken = PAYMENT.take(case, payment, NOW)
    answer = taken.answer
    assert taken.changed and not answer.duplicate and answer.payment_id == "p-1"
    assert sum(answer.allocation.model_dump().values()) == 50_000
    assert answer.outstanding.total == outstanding(case, today_for(case, NOW)).total - 50_000
    (booking,) = taken.bookings
    assert (booking.payment_id, booking.amount, booking.currency, booking.channel) == (
        "p-1",
        50_000,
        "CNY",
        "alipay",
    )
    assert booking.allocation == answer.allocation and booking.paid_at == NOW
    assert taken.audit is not None and taken.audit[0] == "payment" and "p-1" in taken.audit[1]
    again = PAYMENT.take(taken.case, payment, NOW)
    assert not again.changed and again.answer.duplicate and not again.bookings and again.audit is None
    assert again.answer.allocation == answer.allocation and again.answer.outstanding == answer.outstanding


def test_a_refused_payment_names_the_field_in_check_and_take() -> None:
    case = make_case()
    bad = PaymentIn(payment_id="p-1", amount=1_000, currency="USD")
    for step in (PAYMENT.check, PAYMENT.take):
        with pytest.raises(CaseError, match=r"^currency:"):
            step(case, bad, NOW)
    assert PAYMENT.error_type == "InvalidPayment"


def test_a_restructuring_answers_the_new_schedule_once() -> None:
    case = make_case()
    taken = RESTRUCTURING.take(case, WAIVER, NOW)
    assert taken.changed and not taken.answer.duplicate and taken.answer.kind == "waiver"
    assert taken.answer.outstanding.penalty == 0 and len(taken.answer.installments) == 12
    assert taken.audit == ("restructuring", "waiver of penalty; approved by risk.lead (APR-1)")
    assert not taken.bookings
    again = RESTRUCTURING.take(taken.case, WAIVER, NOW)
    assert not again.changed and again.answer.duplicate and again.case is taken.case
    RESTRUCTURING.check(taken.case, WAIVER, NOW)  # a duplicate passes the validator


def test_a_restructuring_without_approval_is_refused() -> None:
    with pytest.raises(CaseError, match=r"^approval_ref:"):
        RESTRUCTURING.check(make_case(), WAIVER.model_copy(update={"approval_ref": None}), NOW)


def test_a_signal_payload_that_does_not_decode_is_refused_with_its_id_and_reasons() -> None:
    refused = PAYMENT.decode({"payment_id": "odd", "amount": "lots", "memo": 1})
    assert isinstance(refused, Undecodable) and refused.ref == "odd"
    assert "amount:" in refused.reason and "memo:" in refused.reason
    assert PAYMENT.decode({"amount": 5}) == Undecodable(None, "payment_id: Field required")
    message = PaymentIn(payment_id="p", amount=5)
    assert PAYMENT.decode(message) is message
    assert PAYMENT.decode({"payment_id": "p", "amount": 5}) == message
    assert PAYMENT.ref(message) == "p"
