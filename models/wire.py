"""Types that cross the workflow boundary (JSON through the Pydantic data converter).

Importing this module never imports SQLModel: the workflow sandbox passes it through.
The names and shapes of the contract types (LoanStart, PaymentIn, RestructuringIn,
PaymentResult, CaseView, ScheduleSummary) are the public interface in DESIGN.md.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from domain.case import Case
from domain.enums import (
    ActionKind,
    Channel,
    CollectionStage,
    InstallmentStatus,
    Product,
    RepaymentMethod,
    RestructuringKind,
)


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- The contract -------------------------------------------------------------------


class LoanStart(Wire):
    """`LoanCollection` start input. Business validation lives in domain.schedule
    (validate_loan_terms); the CLI and the workflow both call it."""

    loan_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    borrower_id: str = Field(min_length=1, max_length=64)
    product: Product
    currency: str = "CNY"
    principal: int
    annual_rate_bps: int
    term_months: int
    repayment_method: RepaymentMethod
    disbursed_on: date
    first_due_date: date | None = None
    timezone: str = "Asia/Shanghai"
    policy: str = "standard"


class PaymentIn(Wire):
    payment_id: str = Field(min_length=1, max_length=128)
    amount: int
    paid_at: datetime | None = None
    channel: str | None = None
    # Optional check from the payment gateway: when given it must be the loan's currency.
    currency: str | None = None


class RestructuringIn(Wire):
    restructuring_id: str = Field(min_length=1, max_length=128)
    kind: RestructuringKind
    approved_by: str | None = None
    approval_ref: str | None = None
    extension_days: int | None = None
    new_term_months: int | None = None
    waive_penalty: bool = False
    waive_amount: int | None = None


class Allocation(Wire):
    penalty: int = 0
    fee: int = 0
    interest: int = 0
    principal: int = 0


class Outstanding(Wire):
    principal: int
    interest: int
    penalty: int
    fee: int
    total: int


class PaymentResult(Wire):
    payment_id: str
    allocation: Allocation
    outstanding: Outstanding
    overdue: int
    days_past_due: int
    stage: CollectionStage
    duplicate: bool = False


class InstallmentView(Wire):
    seq: int
    due_date: date
    principal: int
    interest: int
    paid: int
    status: InstallmentStatus


class NextActionView(Wire):
    kind: ActionKind
    at: datetime


class CaseView(Wire):
    """The `state` query answer."""

    loan_id: str
    stage: CollectionStage
    days_past_due: int
    outstanding: Outstanding
    overdue: int
    next_action: NextActionView | None
    assigned_agent: str | None
    installments: list[InstallmentView]
    contacts_sent: int
    credit_reported: bool
    legal_referred: bool
    closed: bool


class ScheduleSummary(Wire):
    """`apply_restructuring` answer: the new schedule."""

    restructuring_id: str
    kind: RestructuringKind
    duplicate: bool = False
    outstanding: Outstanding
    overdue: int
    days_past_due: int
    stage: CollectionStage
    installments: list[InstallmentView]


# --- Activity payloads --------------------------------------------------------------


class PolicyRequest(Wire):
    """load_policy: the policy a new loan is collected under (a snapshot kept in its case)."""

    name: str
    product: Product


class LoanRecord(Wire):
    """record_loan: the loan and its schedule as disbursed."""

    start: LoanStart
    first_due_date: date
    installments: list[InstallmentView]


class LoanProjection(Wire):
    """sync_loan: the projection of the case the lender's other systems read."""

    loan_id: str
    stage: CollectionStage
    days_past_due: int
    outstanding: Outstanding
    overdue: int
    assigned_agent: str | None
    next_action_kind: ActionKind | None
    next_action_at: datetime | None
    closed: bool
    installments: list[InstallmentView]
    as_of: datetime


class PaymentBooking(Wire):
    """book_payment: one applied payment, unique by payment_id."""

    loan_id: str
    payment_id: str
    amount: int
    currency: str
    paid_at: datetime
    channel: str | None
    allocation: Allocation


class ContactParams(Wire):
    amount: int = 0
    currency: str = "CNY"
    due_date: date | None = None
    days_past_due: int = 0
    installment_seq: int | None = None
    report_on: date | None = None  # credit notice: the earliest reporting day


class ContactRequest(Wire):
    """send_contact: render a template for the borrower and hand it to a deliverer."""

    key: str  # idempotency key: one outbox row per key
    loan_id: str
    borrower_id: str
    kind: ActionKind
    channel: Channel
    template: str
    scheduled_at: datetime
    params: ContactParams
    # When the borrower's contact window closes that day: past it, the message is
    # suppressed instead of sent (retries must not deliver at night).
    not_after: datetime | None = None


# deferred: retries ran past the contact window; nothing was sent, the contact is due
# again in the next window.
ContactStatus = Literal["delivered", "suppressed", "failed", "deferred"]


class ContactOutcome(Wire):
    status: ContactStatus
    reason: str | None = None
    # Voice only: whether a dial attempt was made, whether it connected, and on which line
    # (a contact-detail reference such as "mobile", never the number itself).
    dialed: bool = False
    connected: bool = False
    line: str | None = None


class AgentRequest(Wire):
    key: str
    loan_id: str
    borrower_id: str
    days_past_due: int
    overdue: int
    at: datetime


class AgentOutcome(Wire):
    agent_id: str | None  # None: no active agent; the case waits in the unassigned queue
    queued: bool = False


class AgentRelease(Wire):
    key: str
    loan_id: str
    agent_id: str | None
    reason: str
    at: datetime


class CaseFiling(Wire):
    """file_case_action: legal referral, credit notice/report/update, charge-off,
    field visit. One row per key."""

    key: str
    loan_id: str
    borrower_id: str
    kind: ActionKind
    at: datetime
    days_past_due: int
    overdue: int
    outstanding: Outstanding
    currency: str
    detail: str = ""


class AuditEvent(Wire):
    key: str  # idempotency key: one row per key
    loan_id: str
    at: datetime
    event: str
    detail: str
    source: str  # which message or rule: "rule:dpd_31", "update:record_payment", ...


class CarriedCase(Wire):
    """The `LoanCollection` input after continue-as-new: the start input and the whole
    case (processed message ids included). The run method takes `LoanStart | CarriedCase`
    as one argument because the SDK decodes typed arguments only when their count
    matches the declared parameters."""

    start: LoanStart
    case: Case


class CaseEvents(Wire):
    """record_case_events: what the workflow has to write down after handling messages
    or acting — payments booked, audit entries and the loan projection — in one call,
    so bookkeeping costs one history event however much happened."""

    payments: list[PaymentBooking] = Field(default_factory=list)
    audit: list[AuditEvent] = Field(default_factory=list)
    projection: LoanProjection | None = None
