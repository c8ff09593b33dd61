"""Intake of messages: payments and restructurings are checked, applied once per id, and
refused fire-and-forget messages are remembered (domain/intake.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from domain.case import Case
from domain.enums import CollectionStage, RestructuringKind
from domain.intake import (
    MAX_REJECTIONS_KEPT,
    check_payment,
    record_rejection,
    take_payment,
    take_restructuring,
)
from domain.ledger import CaseError, days_past_due, outstanding, stage, today_for
from tests.test_domain_helpers import FIRST_DUE, local, make_case

AT_DPD_10 = local(FIRST_DUE + timedelta(days=10), 12)


def pay(case: Case, payment_id: str = "p-1", amount: int = 50_000, **kw: Any) -> Any:
    fields: dict[str, Any] = {"currency": None, "paid_at": None, "now": AT_DPD_10, **kw}
    return take_payment(case, payment_id=payment_id, amount=amount, **fields)


def waiver(case: Case, restructuring_id: str = "R-1", **kw: Any) -> Any:
    fields: dict[str, Any] = {
        "kind": RestructuringKind.WAIVER,
        "approved_by": "risk.lead",
        "approval_ref": "APR-1",
        "extension_days": None,
        "new_term_months": None,
        "waive_penalty": True,
        "waive_amount": None,
        "now": AT_DPD_10,
        **kw,
    }
    return take_restructuring(case, restructuring_id=restructuring_id, **fields)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -1}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": 10**12}, "amount"),
        ({"currency": "USD"}, "currency"),
        ({"paid_at": AT_DPD_10 + timedelta(days=1)}, "paid_at"),
        ({"paid_at": AT_DPD_10 - timedelta(days=30)}, "paid_at"),
        ({"paid_at": datetime(2024, 2, 25, 12)}, "paid_at"),  # no UTC offset
    ],
)
def test_a_bad_payment_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    case = make_case()
    fields: dict[str, Any] = {"amount": 50_000, "currency": None, "paid_at": None, **change}
    with pytest.raises(CaseError) as info:
        check_payment(case, payment_id="p", now=AT_DPD_10, **fields)
    assert info.value.field == field
    with pytest.raises(CaseError):
        take_payment(case, payment_id="p", now=AT_DPD_10, **fields)


def test_a_payment_is_applied_once_per_id() -> None:
    case = make_case()
    first = pay(case, currency="CNY")
    assert not first.duplicate and first.allocation.total == 50_000
    assert first.paid_at == AT_DPD_10 and first.case.payments == {"p-1": first.allocation}
    today = today_for(case, AT_DPD_10)
    assert outstanding(first.case, today).total == outstanding(case, today).total - 50_000
    again = pay(first.case, amount=70_000)
    assert again.duplicate and again.allocation == first.allocation and again.case is first.case


def test_a_reused_payment_id_is_a_duplicate_even_after_the_loan_closed() -> None:
    case = make_case()
    payoff = outstanding(case, today_for(case, AT_DPD_10)).total
    closed = pay(case, "all", payoff).case
    assert closed.closed
    with pytest.raises(CaseError, match="closed"):
        check_payment(closed, payment_id="new", amount=100, currency=None, paid_at=None, now=AT_DPD_10)
    assert pay(closed, "all", payoff).duplicate


def test_paying_what_is_overdue_cures_the_case() -> None:
    case = make_case()
    today = today_for(case, AT_DPD_10)
    assert stage(case, today) is CollectionStage.EARLY
    cured = pay(case, amount=outstanding(case, today).total - 1_000_000).case
    assert days_past_due(cured, today) == 0 and cured.episode is None


def test_a_restructuring_is_applied_once_per_id_and_a_reused_id_is_never_reapplied() -> None:
    case = make_case()
    first = waiver(case)
    assert not first.duplicate and [r.restructuring_id for r in first.case.restructurings] == ["R-1"]
    # The same id again, even with terms restructure() would refuse, is a duplicate: the
    # check comes before restructure() is called.
    again = waiver(first.case, waive_penalty=False, approved_by=None)
    assert again.duplicate and again.case is first.case


def test_a_restructuring_without_approval_is_refused_naming_the_field() -> None:
    with pytest.raises(CaseError) as info:
        waiver(make_case(), approved_by="")
    assert info.value.field == "approved_by"


def test_refused_messages_are_remembered_up_to_the_cap() -> None:
    case = make_case()
    for n in range(MAX_REJECTIONS_KEPT + 5):
        case = record_rejection(
            case, message="payment_received", ref=f"p-{n}", reason="amount: x", at=AT_DPD_10
        )
    assert len(case.rejections) == MAX_REJECTIONS_KEPT
    assert case.rejections[0].ref == "p-5" and case.rejections[-1].ref == f"p-{MAX_REJECTIONS_KEPT + 4}"
