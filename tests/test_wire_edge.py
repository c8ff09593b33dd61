"""Issue 8, "nothing a caller sends can break a loan": the edge types of models/wire.py
(ids, free text, integers, amounts, dates), the intake's refusals of payloads of any
shape, bounded rejections, payment dates at the edge of the calendar, the principal
bound, and activity errors that can never succeed. Pure: no Temporal."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError

from activities.records import RecordActivities
from client.starts import validate_start
from domain.intake import record_rejection
from domain.ledger import CaseError, payment_date
from domain.policy import load_policy
from domain.schedule import TermsError, validate_loan_terms
from models.messages import PAYMENT, RESTRUCTURING, Undecodable
from models.wire import LoanRecord, LoanStart, PaymentIn, RestructuringIn
from tests.test_domain_helpers import FIRST_DUE, local, make_case

PAYMENT_OK: dict[str, Any] = {"payment_id": "p-1", "amount": 1000}
RESTRUCTURING_OK: dict[str, Any] = {
    "restructuring_id": "r-1",
    "kind": "waiver",
    "waive_penalty": True,
    "approved_by": "risk.lead",
    "approval_ref": "APR-1",
}
START_OK: dict[str, Any] = {
    "loan_id": "L-1",
    "borrower_id": "B-1",
    "product": "credit",
    "principal": 1_200_000,
    "annual_rate_bps": 1800,
    "term_months": 12,
    "repayment_method": "equal_installment",
    "disbursed_on": "2026-01-15",
}
MODELS: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "payment": (PaymentIn, PAYMENT_OK),
    "restructuring": (RestructuringIn, RESTRUCTURING_OK),
    "start": (LoanStart, START_OK),
}

BAD_TEXT = {
    "blank": "   ",
    "empty": "",
    "nul": "p\x001",
    "newline": "p\n1",
    "tab": "p\t1",
    "c1-control": "p\x851",
    "del": "p\x7f1",
    "bidi-override": "p\u202e1",
    "bidi-isolate": "p\u20661",
    "rlm": "p\u200f1",
    "too-long": "x" * 257,
}
# Every id and text field a caller sends.
TEXT_FIELDS = [
    ("payment", "payment_id"),
    ("payment", "channel"),
    ("payment", "currency"),
    ("restructuring", "restructuring_id"),
    ("restructuring", "approved_by"),
    ("restructuring", "approval_ref"),
    ("start", "borrower_id"),
    ("start", "currency"),
    ("start", "timezone"),
    ("start", "policy"),
]


def refusal(model: str, **change: Any) -> list[str]:
    """The fields a payload with `change` is refused for (empty: accepted)."""
    cls, good = MODELS[model]
    try:
        cls.model_validate(good | change)
    except ValidationError as exc:
        return [".".join(str(p) for p in err["loc"]) for err in exc.errors()]
    return []


@pytest.mark.parametrize(("model", "field"), TEXT_FIELDS, ids=[f"{m}.{f}" for m, f in TEXT_FIELDS])
@pytest.mark.parametrize("bad", list(BAD_TEXT), ids=list(BAD_TEXT))
def test_ids_and_text_are_refused_at_the_edge_naming_the_field(model: str, field: str, bad: str) -> None:
    assert refusal(model, **{field: BAD_TEXT[bad]}) == [field]


@pytest.mark.parametrize(
    ("model", "field", "longest"),
    [
        ("payment", "payment_id", 128),
        ("restructuring", "restructuring_id", 128),
        ("start", "borrower_id", 64),
        ("payment", "channel", 256),
        ("restructuring", "approved_by", 256),
    ],
)
def test_ids_and_text_have_a_length_bound(model: str, field: str, longest: int) -> None:
    assert refusal(model, **{field: "x" * longest}) == []
    assert refusal(model, **{field: "x" * (longest + 1)}) == [field]


def test_ids_are_stripped_and_unicode_text_is_kept() -> None:
    p = PaymentIn.model_validate({"payment_id": "  p-1 ", "amount": 1, "channel": " 支付宝 "})
    assert (p.payment_id, p.channel) == ("p-1", "支付宝")


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("payment", "amount", True),
        ("payment", "amount", "100"),
        ("payment", "amount", 100.0),
        ("restructuring", "waive_amount", True),
        ("restructuring", "waive_amount", "5"),
        ("restructuring", "extension_days", "30"),
        ("restructuring", "extension_days", True),
        ("restructuring", "new_term_months", 12.0),
        ("restructuring", "waive_penalty", "yes"),
        ("restructuring", "waive_penalty", 1),
        ("start", "principal", "1200000"),
        ("start", "principal", True),
        ("start", "annual_rate_bps", 1800.0),
        ("start", "term_months", "12"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, str) or v in ("100", "5", "30", "yes") else v,
)
def test_integers_are_integers_and_booleans_are_booleans(model: str, field: str, value: object) -> None:
    assert refusal(model, **{field: value}) == [field]


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("payment", "amount", 10**15 + 1),
        ("payment", "amount", 2**63),
        ("restructuring", "waive_amount", 10**30),
        ("start", "principal", 2**63),
        ("start", "principal", 10**30),
        ("start", "term_months", 10**9),
        ("restructuring", "extension_days", 10**9),
    ],
)
def test_amounts_and_counts_are_bounded(model: str, field: str, value: int) -> None:
    assert refusal(model, **{field: value}) == [field]


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("payment", "paid_at", "0001-01-01T00:00:00+14:00"),
        ("payment", "paid_at", "9999-12-31T23:59:59-14:00"),
        ("payment", "paid_at", "1999-12-31T12:00:00+00:00"),
        ("payment", "paid_at", 0),
        ("start", "disbursed_on", "0001-01-01"),
        ("start", "disbursed_on", "2101-01-01"),
        ("start", "first_due_date", "9999-12-31"),
    ],
)
def test_dates_lie_in_2000_to_2100(model: str, field: str, value: object) -> None:
    assert refusal(model, **{field: value}) == [field]


def test_json_payloads_still_decode_dates_from_iso_strings() -> None:
    """The SDK's pydantic converter hands handlers plain JSON: ISO dates must still pass."""
    raw = json.loads(json.dumps({**PAYMENT_OK, "paid_at": "2026-03-01T10:00:00+08:00", "channel": "alipay"}))
    p = PAYMENT.decode(raw)
    assert isinstance(p, PaymentIn) and p.paid_at == datetime.fromisoformat("2026-03-01T10:00:00+08:00")
    start = LoanStart.model_validate(json.loads(json.dumps({**START_OK, "first_due_date": "2026-02-15"})))
    assert start.disbursed_on == date(2026, 1, 15) and start.first_due_date == date(2026, 2, 15)
    r = RESTRUCTURING.decode(json.loads(json.dumps(RESTRUCTURING_OK)))
    assert isinstance(r, RestructuringIn) and r.waive_penalty is True


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((None,), "payload: expected a JSON object, got nothing"),
        (([1, 2],), "payload: expected a JSON object, got a JSON array"),
        (("text",), "payload: expected a JSON object, got a JSON string"),
        ((7,), "payload: expected a JSON object, got a JSON number"),
        ((PAYMENT_OK, PAYMENT_OK), "payload: expected one argument, got 2"),
        (({"payment_id": "   ", "amount": 1},), "payment_id: "),
        (({"payment_id": "p", "amount": True},), "amount: "),
        (({"payment_id": "p", "amount": 1, "paid_at": "0001-01-01T00:00:00+14:00"},), "paid_at: "),
        (({"payment_id": "p", "amount": 1, "memo": "x"},), "memo: "),
    ],
    ids=["null", "array", "string", "number", "two-arguments", "blank-id", "bool-amount", "year-1", "extra"],
)
def test_a_payload_of_any_shape_is_refused_naming_the_field(args: tuple[Any, ...], reason: str) -> None:
    decoded = PAYMENT.decode(*args)
    assert isinstance(decoded, Undecodable)
    assert decoded.reason.startswith(reason), decoded.reason


def test_a_rejection_keeps_a_bounded_ref_and_reason() -> None:
    case = make_case()
    huge = "x" * 100_000
    for n in range(60):
        case = record_rejection(case, message=huge, ref=f"{n}{huge}", reason=huge, at=local(FIRST_DUE, 12))
    assert len(case.rejections) == 50
    assert all(
        len(r.ref or "") <= 128 and len(r.reason) <= 500 and len(r.message) <= 128 for r in case.rejections
    )
    # What continue-as-new carries stays small however big the refused payloads were.
    assert len(case.model_dump_json()) < 100_000


def test_a_huge_payload_is_refused_with_a_bounded_ref_and_reason() -> None:
    decoded = PAYMENT.decode({"payment_id": "x" * 100_000, "amount": 1, **{f"k{n}": n for n in range(5000)}})
    assert isinstance(decoded, Undecodable)
    assert len(decoded.ref or "") <= 128 and len(decoded.reason) <= 500


@pytest.mark.parametrize("paid_at", ["0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00+00:00"])
def test_a_payment_at_the_edge_of_the_calendar_is_refused_not_raised(paid_at: str) -> None:
    # The domain on its own (the wire type refuses these earlier): never an OverflowError.
    with pytest.raises(CaseError, match=r"^paid_at: "):
        payment_date(make_case(), datetime.fromisoformat(paid_at), local(FIRST_DUE + timedelta(days=2), 12))


TERMS: dict[str, Any] = {
    "principal": 1_200_000,
    "annual_rate_bps": 1800,
    "term_months": 12,
    "disbursed_on": date(2026, 1, 15),
    "first_due_date": None,
    "timezone": "Asia/Shanghai",
    "currency": "CNY",
    "max_annual_rate_bps": 3600,
    "max_term_months": 120,
}


def test_the_principal_is_bounded_by_the_policy_key_max_principal() -> None:
    policy = load_policy("standard")
    assert policy.max_principal == 10_000_000_000  # 100,000,000.00
    kw = TERMS | {"max_principal": policy.max_principal}
    assert validate_loan_terms(**(kw | {"principal": policy.max_principal})) == date(2026, 2, 15)
    with pytest.raises(TermsError, match=r"^principal: .*max_principal 10000000000"):
        validate_loan_terms(**(kw | {"principal": policy.max_principal + 1}))


def test_a_disbursal_far_in_the_future_is_refused() -> None:
    today = date(2026, 1, 15)
    assert validate_loan_terms(**(TERMS | {"disbursed_on": today + timedelta(days=366), "today": today}))
    with pytest.raises(TermsError, match=r"^disbursed_on: "):
        validate_loan_terms(**(TERMS | {"disbursed_on": today + timedelta(days=367), "today": today}))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"borrower_id": "   "}, "borrower_id"),
        ({"borrower_id": "B\x00"}, "borrower_id"),
        ({"borrower_id": "B\u202e1"}, "borrower_id"),
        ({"principal": 2**63}, "principal"),
        ({"principal": 10**30}, "principal"),
        ({"principal": 10_000_000_001}, "principal"),
        ({"disbursed_on": "0001-01-01"}, "disbursed_on"),
    ],
    ids=["blank-borrower", "nul-borrower", "bidi-borrower", "2^63", "10^30", "above-policy", "year-1"],
)
def test_the_cli_refuses_a_bad_start_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        validate_start(START_OK | change)


def test_a_value_the_database_cannot_bind_is_not_retried(engine: Engine) -> None:
    """An integer beyond 64 bits would be retried forever: it is non-retryable."""
    start = LoanStart.model_validate(START_OK).model_copy(update={"principal": 2**63})
    record = LoanRecord(start=start, first_due_date=date(2026, 2, 15), installments=[])
    with pytest.raises(ApplicationError) as info:
        RecordActivities(engine).record_loan(record)
    assert info.value.non_retryable and info.value.type == "InvalidData"


@pytest.mark.parametrize(
    "bad",
    ["p\u061c1", "p\u20281", "p\u20291", "p\u200b1", "p\ufeff1", "p\u00ad1"],
    ids=[
        "arabic-letter-mark",
        "line-separator",
        "paragraph-separator",
        "zero-width-space",
        "bom",
        "soft-hyphen",
    ],
)
def test_ids_refuse_every_format_and_separator_character(bad: str) -> None:
    """Found by the bad-input catalogue: the list of refused characters missed U+061C and
    the Unicode separators; now every control (Cc), format (Cf), line (Zl) and paragraph
    (Zp) character is refused by category."""
    with pytest.raises(ValidationError, match="control or invisible characters"):
        PaymentIn(payment_id=bad, amount=1)


@pytest.mark.parametrize("stamp", [1796048006, 1796048006.5, "1796048006", " 1796048006 "])
def test_a_time_is_iso_text_never_a_unix_timestamp(stamp: object) -> None:
    """Found by the bad-input catalogue: a number (or numeric text) was read as a Unix
    timestamp in UTC."""
    with pytest.raises(ValidationError, match="ISO 8601") as err:
        PaymentIn.model_validate({"payment_id": "p", "amount": 1, "paid_at": stamp})
    assert err.value.errors()[0]["loc"] == ("paid_at",)


def test_iso_dates_still_decode_in_strict_json_mode() -> None:
    start = {
        "loan_id": "L-1",
        "borrower_id": "B-1",
        "product": "credit",
        "principal": 100_000,
        "annual_rate_bps": 1800,
        "term_months": 3,
        "repayment_method": "equal_installment",
        "disbursed_on": "2026-11-30",
    }
    assert LoanStart.model_validate_json(json.dumps(start), strict=True).disbursed_on == date(2026, 11, 30)
    paid = PaymentIn.model_validate_json(
        '{"payment_id": "p", "amount": 1, "paid_at": "2026-11-30T10:00:00+08:00"}'
    )
    assert paid.paid_at is not None and paid.paid_at.utcoffset() == timedelta(hours=8)
