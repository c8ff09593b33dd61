"""Types that cross the workflow boundary (JSON through the Pydantic data converter).

Importing this module never imports SQLModel: the workflow sandbox passes it through.
The names and shapes of the contract types (LoanStart, PaymentIn, RestructuringIn,
PaymentResult, CaseView, ScheduleSummary) are the public interface in DESIGN.md.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from domain.case import Case
from domain.enums import (
    ActionKind,
    Channel,
    CollectionStage,
    ContactResult,
    DisputeOutcome,
    DisputeReason,
    DisputeStatus,
    HardshipReason,
    HardshipStatus,
    HoldReason,
    InstallmentStatus,
    LoggedChannel,
    OverdueReason,
    Product,
    PromiseStatus,
    RepaymentMethod,
    RestructuringKind,
)
from domain.policy import CallCaps, ContactWindow


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Edge types: what a caller may send -------------------------------------------------
#
# Every id and text field a caller sends is checked here, at the edge (the CLI, the
# update validators and the signal intake all decode through these types), so nothing a
# caller sends can reach an activity that would refuse it.

# Characters no id or text may hold, by Unicode category: controls (Cc: C0 and C1, NUL,
# tabs, newlines, DEL), format characters (Cf: the bidi controls that make an id display
# as something else, LRM/RLM/ALM, embeddings, overrides, isolates, and the invisible
# zero-width characters and BOM), and the line and paragraph separators (Zl, Zp).
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
# A date or time comes as ISO 8601 text (or a date/datetime): never a number, which a lax
# parser would read as a Unix timestamp.
NUMERIC = re.compile(r"^\s*[+-]?\d+(\.\d*)?\s*$")
IDENT_MAX = 128  # ids: payment_id, restructuring_id, borrower_id
TEXT_MAX = 256  # free text: channel, approved_by, approval_ref
CODE_MAX = 64  # names: currency, timezone, policy
MAX_AMOUNT = 10**15  # any amount in minor units (10 trillion in major units)
MAX_COUNT = 100_000  # months, days, basis points: far above any policy bound
EARLIEST = date(2000, 1, 1)  # dates and times a caller sends lie in 2000 ... 2100
LATEST = date(2100, 12, 31)


def _text(max_len: int) -> AfterValidator:
    def check(value: str) -> str:
        bad = next((c for c in value if unicodedata.category(c) in REFUSED_CATEGORIES), None)
        if bad is not None:
            raise ValueError(f"must not contain control or invisible characters (found U+{ord(bad):04X})")
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        if len(value) > max_len:
            raise ValueError(f"must be at most {max_len} characters (got {len(value)})")
        return value

    return AfterValidator(check)


def _not_a_number(value: object) -> None:
    if isinstance(value, int | float) or (isinstance(value, str) and NUMERIC.match(value)):
        raise ValueError("must be an ISO 8601 date or time, e.g. 2026-03-01T10:00:00+08:00 (not a number)")


# Parsed here, not left to pydantic: a string then reaches the type's own check as a
# date/datetime, also in strict mode (the CLI validates start files strictly).
def _iso_date(value: object) -> object:
    _not_a_number(value)
    if isinstance(value, str) and not isinstance(value, bool):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"must be an ISO 8601 date like 2026-03-01 (got {value[:40]!r})") from None
    return value


def _iso_instant(value: object) -> object:
    _not_a_number(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"must be an ISO 8601 time like 2026-03-01T10:00:00+08:00 (got {value[:40]!r})"
            ) from None
    return value


def _in_range(value: date) -> date:
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST <= day <= LATEST:
        raise ValueError(f"must lie between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return value


def _day_in_range(value: datetime) -> datetime:
    _in_range(value.date())
    return value


# An id: stripped, non-blank, at most IDENT_MAX characters, no control characters.
Ident = Annotated[str, Field(strict=True), _text(IDENT_MAX)]
# Free text a person or a gateway sends (same rules, a larger bound).
Text = Annotated[str, Field(strict=True), _text(TEXT_MAX)]
Code = Annotated[str, Field(strict=True), _text(CODE_MAX)]
# Integers are integers: true, 1.0 and "100" are refused.
Amount = Annotated[int, Field(strict=True, le=MAX_AMOUNT)]
Count = Annotated[int, Field(strict=True, le=MAX_COUNT)]
# Dates may come as ISO strings (JSON has no date type); years 2000 ... 2100 only.
Day = Annotated[date, BeforeValidator(_iso_date), AfterValidator(_in_range)]
Instant = Annotated[datetime, BeforeValidator(_iso_instant), AfterValidator(_day_in_range)]


# --- The contract -------------------------------------------------------------------


class LoanStart(Wire):
    """`LoanCollection` start input. Business validation lives in domain.schedule
    (validate_loan_terms); the CLI and the workflow both call it."""

    loan_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    borrower_id: Annotated[Ident, Field(max_length=64)]
    product: Product
    currency: Code = "CNY"
    principal: Amount
    annual_rate_bps: Count
    term_months: Count
    repayment_method: RepaymentMethod
    disbursed_on: Day
    first_due_date: Day | None = None
    timezone: Code = "Asia/Shanghai"
    policy: Code = "standard"


class PaymentIn(Wire):
    payment_id: Ident
    amount: Amount
    paid_at: Instant | None = None
    channel: Text | None = None
    # Optional check from the payment gateway: when given it must be the loan's currency.
    currency: Code | None = None


class RestructuringIn(Wire):
    restructuring_id: Ident
    kind: RestructuringKind
    approved_by: Text | None = None
    approval_ref: Text | None = None
    extension_days: Count | None = None
    new_term_months: Count | None = None
    waive_penalty: Annotated[bool, Field(strict=True)] = False
    waive_amount: Amount | None = None


# --- The collector's desk and borrower protections (contract part 2) ------------------

MAX_AGENTS_PER_CONTACT = 10


class PromiseIn(Wire):
    """record_promise / promise_made: a promise to pay (承诺还款)."""

    promise_id: Ident
    amount: Amount
    promised_date: Day  # the borrower's local date
    agent_id: Ident
    # An addition to DESIGN.md: when the promise was made, if it is entered later (a
    # call logged after the fact); at most max_promise_days back. Default: now.
    made_at: Instant | None = None
    # An addition to DESIGN.md, as for payments: the currency the amount was read in; when
    # given it must be the loan's (an amount typed in CNY for a JPY loan is 100x off).
    currency: Code | None = None


class DisputeOpenIn(Wire):
    """open_dispute / dispute_opened: the borrower contests the debt (异议)."""

    dispute_id: Ident
    reason: DisputeReason
    opened_by: Text
    # An addition to DESIGN.md: when the dispute was received (a letter, a branch), if
    # it is entered later: the response deadline counts from then; at most
    # dispute_response_days back. Default: now.
    opened_at: Instant | None = None


class DisputeResolveIn(Wire):
    """resolve_dispute / dispute_resolved."""

    dispute_id: Ident
    outcome: DisputeOutcome
    resolved_by: Text


class HardshipStartIn(Wire):
    """start_hardship / hardship_approved: hardship relief (困难帮扶). The approval is
    checked by the case (refused naming approved_by / approval_ref when missing)."""

    hardship_id: Ident
    reason: HardshipReason
    until: Day  # the borrower's local date, inclusive
    approved_by: Text | None = None
    approval_ref: Text | None = None


class HardshipEndIn(Wire):
    """end_hardship / hardship_ended: ends the relief early."""

    hardship_id: Ident
    ended_by: Text


class PreferencesIn(Wire):
    """set_contact_preferences / contact_preferences_set: the channels the borrower
    accepts (a letter is always allowed)."""

    preference_id: Ident
    channels: Annotated[list[Channel], Field(min_length=1, max_length=len(Channel))]
    set_by: Text


class ContactLogIn(Wire):
    """log_contact / contact_logged: a collector's call or visit."""

    contact_id: Ident
    agent_ids: Annotated[list[Ident], Field(min_length=1, max_length=MAX_AGENTS_PER_CONTACT)]
    channel: LoggedChannel
    result: ContactResult
    reason: OverdueReason | None = None
    at: Instant


class HoldView(Wire):
    """The strongest hold standing (DISPUTE > HARDSHIP > PROMISE): `until` is the last
    local day it holds (null: open-ended), `ref` the id of the message that set it."""

    reason: HoldReason
    until: date | None
    ref: str


class PromiseView(Wire):
    promise_id: str
    amount: int
    promised_date: date
    status: PromiseStatus


class DisputeView(Wire):
    dispute_id: str
    reason: DisputeReason
    status: DisputeStatus
    escalated: bool


class HardshipView(Wire):
    hardship_id: str
    until: date
    status: HardshipStatus


class DeskResult(Wire):
    """The answer of every part-2 update: which message (`kind`: promise / dispute /
    hardship / preferences / contact) and id, its status after the message, whether it
    was already applied (`duplicate`: nothing changed), and the case's protections now."""

    kind: str
    id: str
    status: str
    duplicate: bool = False
    hold: HoldView | None
    broken_promises: int
    contact_channels: list[Channel]


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


class ActivityFailureView(Wire):
    """An activity that refused for good: `retry_at` is when the workflow tries again
    (null: not retried, e.g. a contact counted as not delivered)."""

    at: datetime
    activity: str
    error: str
    retry_at: datetime | None = None


class CaseView(Wire):
    """The `state` query answer. `activity_failures` is an addition to DESIGN.md's shape
    (the latest activities that failed for good; empty when none)."""

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
    activity_failures: list[ActivityFailureView] = Field(default_factory=list)
    # Contract part 2: the collector's desk and borrower protections.
    hold: HoldView | None = None
    promises: list[PromiseView] = Field(default_factory=list)
    disputes: list[DisputeView] = Field(default_factory=list)
    hardships: list[HardshipView] = Field(default_factory=list)
    contact_channels: list[Channel] = Field(default_factory=list)
    broken_promises: int = 0


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
    # The loan's time zone: the borrower's local date (printed on a letter), and for a call
    # the day the caps count in.
    timezone: str | None = None
    # A call: the policy's caps and window, under which the outbox checks the borrower's
    # calls on ALL loans before dialling.
    call_caps: CallCaps | None = None
    contact_window: ContactWindow | None = None


# deferred: nothing was sent and the contact is still owed: retries ran past the contact
# window (due again in the next window), or a call would break the borrower's call caps
# counted across all loans (due again at `not_before`).
ContactStatus = Literal["delivered", "suppressed", "failed", "deferred"]


class ContactOutcome(Wire):
    status: ContactStatus
    reason: str | None = None
    # Voice only: whether a dial attempt was made, whether it connected, and on which line
    # (a contact-detail reference such as "mobile", never the number itself).
    dialed: bool = False
    connected: bool = False
    line: str | None = None
    # deferred by the borrower's call caps across loans: the first instant a call is
    # allowed again (None: deferred by the contact window, to its next opening).
    not_before: datetime | None = None


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
    # Who the filing goes to (a hardship review: the assigned agent; None: the queue).
    agent_id: str | None = None


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


# --- The collector's desk as the lender's records (one row per id, kept current) -------


class PromiseRecord(Wire):
    loan_id: str
    borrower_id: str
    promise_id: str
    amount: int
    currency: str
    promised_date: date
    agent_id: str
    status: PromiseStatus
    made_at: datetime
    settled_at: datetime | None = None  # kept or broken


class DisputeRecord(Wire):
    loan_id: str
    borrower_id: str
    dispute_id: str
    reason: DisputeReason
    opened_by: str
    opened_at: datetime
    status: DisputeStatus
    escalated: bool = False
    resolved_by: str | None = None
    resolved_at: datetime | None = None


class HardshipRecord(Wire):
    loan_id: str
    borrower_id: str
    hardship_id: str
    reason: HardshipReason
    starts_on: date
    until: date
    approved_by: str
    approval_ref: str
    approved_at: datetime
    status: HardshipStatus
    ended_by: str | None = None  # None while active, or when it ran to its end
    ended_at: datetime | None = None


class PreferenceRecord(Wire):
    loan_id: str
    borrower_id: str
    preference_id: str
    channels: list[Channel]  # as allowed after the message (letter always included)
    set_by: str
    at: datetime


class ContactLogRecord(Wire):
    loan_id: str
    borrower_id: str
    contact_id: str
    agent_ids: list[str]
    channel: LoggedChannel
    result: ContactResult
    reason: OverdueReason | None = None
    at: datetime


class DeskRecords(Wire):
    """Promises, disputes, hardships, preferences and logged contacts as they stand: each
    row is written by its id (inserted, or brought up to date when its status changed)."""

    promises: list[PromiseRecord] = Field(default_factory=list)
    disputes: list[DisputeRecord] = Field(default_factory=list)
    hardships: list[HardshipRecord] = Field(default_factory=list)
    preferences: list[PreferenceRecord] = Field(default_factory=list)
    contacts: list[ContactLogRecord] = Field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.promises or self.disputes or self.hardships or self.preferences or self.contacts)


class CaseEvents(Wire):
    """record_case_events: what the workflow has to write down after handling messages
    or acting — payments booked, audit entries and the loan projection — in one call,
    so bookkeeping costs one history event however much happened."""

    payments: list[PaymentBooking] = Field(default_factory=list)
    audit: list[AuditEvent] = Field(default_factory=list)
    projection: LoanProjection | None = None
    desk: DeskRecords | None = None
