"""The one state object of a loan's collection case.

Everything the workflow carries across continue-as-new lives here, and every rule is a
pure function of (case, policy, now) in domain/ledger.py and domain/planner.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime

from pydantic import BaseModel, Field

from domain.enums import (
    Channel,
    ContactResult,
    DisputeReason,
    DisputeStatus,
    HardshipReason,
    HardshipStatus,
    LoggedChannel,
    OverdueReason,
    Product,
    PromiseStatus,
    RepaymentMethod,
)
from domain.policy import Policy
from domain.schedule import ScheduledInstallment


class Components(BaseModel):
    """An amount split by component, in minor units."""

    penalty: int = 0
    fee: int = 0
    interest: int = 0
    principal: int = 0

    @property
    def total(self) -> int:
        return self.penalty + self.fee + self.interest + self.principal

    def __add__(self, other: Components) -> Components:
        return Components(
            penalty=self.penalty + other.penalty,
            fee=self.fee + other.fee,
            interest=self.interest + other.interest,
            principal=self.principal + other.principal,
        )


class Installment(BaseModel):
    seq: int
    # The contract period whose interest this installment carries. Interest is earned by
    # the period: once it has begun, its full interest is in the payoff. An extension
    # moves the due date, never the period (period_end keeps the original due date).
    period_start: date
    due_date: date
    period_end: date | None = None  # None: the period ends on the due date
    principal: int
    interest: int
    fee: int = 0
    paid: Components = Components()
    # Interest waived (only a waiver forgives; a prepayment lowers `interest` instead).
    interest_forgiven: int = 0
    fee_waived: int = 0
    # Penalty accrued since the current due date up to (not including) penalty_through;
    # contingent until charged (the installment still unpaid after the grace days), and
    # once charged it stays charged.
    penalty_accrued: int = 0
    penalty_through: date | None = None
    penalty_charged: bool = False
    # Penalty charged before an extension moved the due date: always owed. The moved due
    # date starts a fresh accrual with its own grace.
    penalty_carried: int = 0
    penalty_waived: int = 0


def unpaid_installments(rows: Iterable[ScheduledInstallment]) -> list[Installment]:
    """Scheduled rows as installments with nothing paid yet."""
    return [Installment(**row.model_dump()) for row in rows]


class CallAttempt(BaseModel):
    at: datetime
    line: str
    connected: bool
    # The outbox key of an automated call (its provider's message id): the IVR's later
    # report of how that call went is matched to it, so one call counts once.
    key: str | None = None


class Episode(BaseModel):
    """A delinquency episode: from a missed due date until the loan is cured."""

    number: int
    anchor_seq: int  # the oldest unpaid installment; DPD counts from its due date
    anchor_due: date
    done: list[str] = Field(default_factory=list)  # ladder step ids executed
    credit_noticed_at: datetime | None = None
    # Ladder step ids stopped by a hold or a contact preference (written down, never
    # replayed; when the hold ends only the current stage's entry step and the credit
    # notice/report still owed run).
    held: list[str] = Field(default_factory=list)


class Rejection(BaseModel):
    at: datetime
    message: str  # "payment_received" / "restructuring_approved"
    ref: str | None
    reason: str


class ActivityFailure(BaseModel):
    """An activity that refused for good (non-retryable): what failed, why, and when the
    workflow tries again (None: not retried, e.g. a contact counted as not delivered)."""

    at: datetime
    activity: str
    error: str
    retry_at: datetime | None = None


# --- The collector's desk and borrower protections (DESIGN.md contract part 2) -----------


class Promise(BaseModel):
    """A promise to pay (承诺还款): holds the ladder until its date has ended."""

    promise_id: str
    amount: int
    promised_date: date  # local
    agent_id: str
    made_at: datetime
    episode: int  # the delinquency episode it was made in (the broken-promise limit)
    paid_since: int = 0  # payments taken since it was recorded
    status: PromiseStatus = PromiseStatus.OPEN
    settled_at: datetime | None = None  # kept or broken
    notified: bool = False  # broken: the broken_promise SMS went out (or was stopped)


class PaymentMark(BaseModel):
    """When a payment counts in the ledger and how much: the recent ones, so a promise
    entered after the fact counts the payments made since it was made."""

    at: datetime
    amount: int


class Dispute(BaseModel):
    """A dispute (异议): every collection contact, report and escalation holds while open."""

    dispute_id: str
    reason: DisputeReason
    opened_by: str
    opened_at: datetime
    status: DisputeStatus = DisputeStatus.OPEN
    escalated: bool = False  # still open after dispute_response_days: filed once
    resolved_by: str | None = None
    resolved_at: datetime | None = None


class Hardship(BaseModel):
    """Hardship relief (困难帮扶): holds like a dispute from `starts_on` through `until`
    (local days), and penalty does not accrue on those days."""

    hardship_id: str
    reason: HardshipReason
    starts_on: date
    until: date
    approved_by: str
    approval_ref: str
    approved_at: datetime
    status: HardshipStatus = HardshipStatus.ACTIVE
    ended_by: str | None = None  # ended early by a message (None: ran to its end)
    ended_at: datetime | None = None
    last_day: date | None = None  # the last local day of relief once it has ended
    reviewed: bool = False  # the hardship_review filing is done


class Preferences(BaseModel):
    preference_id: str
    channels: list[Channel]  # as allowed after it (letter always included)
    set_by: str
    at: datetime


class LoggedContact(BaseModel):
    """A collector's call or visit (the contact log)."""

    contact_id: str
    agent_ids: list[str]
    channel: LoggedChannel
    result: ContactResult
    reason: OverdueReason | None
    at: datetime


class Restructuring(BaseModel):
    restructuring_id: str
    kind: str
    approved_by: str
    approval_ref: str
    at: datetime
    detail: str


class Case(BaseModel):
    # The loan as disbursed.
    loan_id: str
    borrower_id: str
    product: Product
    currency: str
    principal: int
    annual_rate_bps: int
    term_months: int
    repayment_method: RepaymentMethod
    disbursed_on: date
    first_due_date: date
    timezone: str
    policy: Policy
    onboarded_at: datetime

    installments: list[Installment]

    # The collection case.
    episode: Episode | None = None
    episodes_started: int = 0
    done_reminders: list[str] = Field(default_factory=list)  # keys of the reminders sent
    assigned_agent: str | None = None
    agent_requested: bool = False  # an assignment is open (possibly queued without agent)
    agent_tried_on: date | None = None  # local day of the last assignment attempt
    refreshed_on: date | None = None  # local day of the last midnight refresh
    credit_reported: bool = False
    credit_report_open: bool = False  # reported and not yet updated after cure/payoff
    legal_referred: bool = False
    charged_off: bool = False
    closed: bool = False
    contacts_sent: int = 0
    call_log: list[CallAttempt] = Field(default_factory=list)
    # The borrower's calls on all loans reached a cap (the database said so at send time):
    # no automated call on this loan before this instant.
    calls_deferred_until: datetime | None = None

    # When the ledger last changed (a payment's paid_at, a restructuring): ledger events
    # are applied in time order, so a backdated payment cannot undo penalty already due.
    ledger_at: datetime | None = None

    # Messages already applied, by id (carried across continue-as-new).
    payments: dict[str, Components] = Field(default_factory=dict)
    restructurings: list[Restructuring] = Field(default_factory=list)
    rejections: list[Rejection] = Field(default_factory=list)
    # Activities that failed for good (the latest few; the audit log keeps them all).
    failures: list[ActivityFailure] = Field(default_factory=list)

    # The collector's desk and borrower protections.
    promises: list[Promise] = Field(default_factory=list)
    payment_marks: list[PaymentMark] = Field(default_factory=list)  # the last days' payments
    disputes: list[Dispute] = Field(default_factory=list)
    hardships: list[Hardship] = Field(default_factory=list)
    # The channels the borrower accepts (None: every channel; a letter is always allowed).
    contact_channels: list[Channel] | None = None
    preferences: list[Preferences] = Field(default_factory=list)  # applied, by id
    # Logged contacts: ids of all (idempotency), the entries of the last days.
    contact_ids: list[str] = Field(default_factory=list)
    contact_log: list[LoggedContact] = Field(default_factory=list)
