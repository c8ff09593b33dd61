"""Start inputs: reading a JSON object, array or JSON lines, validating every record
the way the workflow will (fields, then the policy's terms), and what a started loan
shows in the Web UI (summary, details, search attributes). No personal data."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import ValidationError
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from client.errors import bad_input
from domain.enums import CollectionStage
from domain.money import format_amount
from domain.policy import PolicyError, load_policy
from domain.schedule import TermsError, validate_loan_terms
from models.search import BORROWER_ID, COLLECTION_STAGE, LOAN_ID, LOAN_PRODUCT
from models.wire import LoanStart

__all__ = [
    "StartRecord",
    "parse_start_records",
    "pydantic_message",
    "record_label",
    "start_search_attributes",
    "static_details",
    "static_summary",
    "validate_start",
]


@dataclass(frozen=True)
class StartRecord:
    number: int  # 1-based record number in the file
    line: int | None  # line number for JSON lines
    start: LoanStart

    @property
    def where(self) -> str:
        return record_label(self.number, self.line)


def record_label(number: int, line: int | None) -> str:
    return f"record {number}" + (f" (line {line})" if line is not None else "")


def _raw_records(text: str, source: str) -> list[tuple[int, int | None, Any]]:
    """(record number, line or None, decoded JSON) for a JSON object, a JSON array of
    objects, or JSON lines."""
    stripped = text.strip()
    if not stripped:
        raise bad_input(f"{source}: empty file, expected a JSON object, an array or JSON lines")
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError as whole_error:
        if stripped.startswith("["):
            raise bad_input(f"{source}: not valid JSON: {whole_error}") from None
        records: list[tuple[int, int | None, Any]] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            number = len(records) + 1
            try:
                records.append((number, lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise bad_input(
                    f"{source}: {record_label(number, lineno)}: not valid JSON: {exc.msg} "
                    f"(column {exc.colno})"
                ) from None
        return records
    if isinstance(whole, list):
        if not whole:
            raise bad_input(f"{source}: the array is empty, no loans to start")
        return [(i, None, item) for i, item in enumerate(whole, start=1)]
    return [(1, None, whole)]


def pydantic_message(exc: ValidationError) -> str:
    """The first problem of a validation error as 'field: message'."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(record)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field (not part of the start input)"
    more = len(exc.errors()) - 1
    return f"{loc}: {msg}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def validate_start(data: Any) -> LoanStart:
    """A LoanStart that the workflow will accept, or ValueError('field: message')."""
    if not isinstance(data, dict):
        raise ValueError(f"(record): expected a JSON object, got {type(data).__name__}")
    try:
        # Strict: "12000" or 12000.0 for an amount is a mistake to report, not to guess.
        start = LoanStart.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise ValueError(pydantic_message(exc)) from None
    try:
        policy = load_policy(start.policy, product=start.product.value)
    except PolicyError as exc:
        raise ValueError(f"policy: {exc}") from None
    try:
        validate_loan_terms(
            principal=start.principal,
            annual_rate_bps=start.annual_rate_bps,
            term_months=start.term_months,
            disbursed_on=start.disbursed_on,
            first_due_date=start.first_due_date,
            timezone=start.timezone,
            currency=start.currency,
            max_annual_rate_bps=policy.max_annual_rate_bps,
            max_term_months=policy.max_term_months,
            max_principal=policy.max_principal,
        )
    except TermsError as exc:
        raise ValueError(str(exc)) from None
    return start


def parse_start_records(text: str, source: str = "input") -> list[StartRecord]:
    """Every record validated; the first bad one raises ClientError (bad input) naming
    the record and the field. A loan id twice in one file is refused too."""
    out: list[StartRecord] = []
    seen: dict[str, int] = {}
    for number, line, data in _raw_records(text, source):
        where = record_label(number, line)
        try:
            start = validate_start(data)
        except ValueError as exc:
            raise bad_input(f"{source}: {where}: {exc}") from None
        if start.loan_id in seen:
            raise bad_input(
                f"{source}: {where}: loan_id: {start.loan_id!r} already appears in record "
                f"{seen[start.loan_id]}"
            )
        seen[start.loan_id] = number
        out.append(StartRecord(number, line, start))
    return out


# --- what a loan looks like in the Web UI ----------------------------------------------

METHOD_LABEL = {
    "equal_installment": "equal installment (等额本息)",
    "equal_principal": "equal principal (等额本金)",
}


def _rate(bps: int) -> str:
    return f"{bps // 100}.{bps % 100:02d}%"


def static_summary(start: LoanStart) -> str:
    """One line in the Web UI's list and header. No personal data."""
    principal = format_amount(start.principal, start.currency, symbol=True)
    return (
        f"Loan {start.loan_id} · {start.product.value} · {principal} · "
        f"{start.term_months} mo at {_rate(start.annual_rate_bps)} · policy {start.policy}"
    )


def static_details(start: LoanStart, first_due: date | None = None) -> str:
    """Markdown for the Web UI's workflow page. Ids and terms only, no personal data."""
    due = first_due or start.first_due_date
    rows = [
        ("Loan", f"`{start.loan_id}`"),
        ("Borrower", f"`{start.borrower_id}` (contact details in the lender's database)"),
        ("Product", start.product.value),
        ("Principal", f"{format_amount(start.principal, start.currency, symbol=True)} {start.currency}"),
        ("Rate", f"{_rate(start.annual_rate_bps)} a year ({start.annual_rate_bps} bps)"),
        ("Term", f"{start.term_months} months, {METHOD_LABEL[start.repayment_method.value]}"),
        ("Disbursed", start.disbursed_on.isoformat()),
        ("First due", due.isoformat() if due else "one month after disbursal"),
        ("Time zone", start.timezone),
        ("Policy", start.policy),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"### Loan {start.loan_id}\n\n| | |\n|---|---|\n{table}\n"


def start_search_attributes(start: LoanStart) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(LOAN_ID, start.loan_id),
            SearchAttributePair(BORROWER_ID, start.borrower_id),
            SearchAttributePair(LOAN_PRODUCT, start.product.value),
            SearchAttributePair(COLLECTION_STAGE, CollectionStage.CURRENT.value),
        ]
    )
