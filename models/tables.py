"""The lender's records: SQLModel tables (and their Create/Base models where useful).

Conventions:
- Money is integer minor units (fen/cents) in BIGINT columns.
- Timestamps are timezone-aware UTC (`UTCDateTime`: TIMESTAMP WITH TIME ZONE on
  PostgreSQL; on SQLite, where the column type has no zone, values are normalised to
  UTC on the way in and come back aware UTC).
- Enumerations are stored as their string values (no database enum types), so adding a
  value never needs a migration.
- Personal data (name, phones, email) lives ONLY in `borrower`. Every other table refers
  to a borrower by `borrower_id`.
- Every table written by an activity has a UNIQUE idempotency key.
- The collector's desk (promise_to_pay, dispute, hardship, contact_preference,
  contact_log) is the workflow's record of each message, one row per (loan_id, id)
  brought up to date as its status changes; lists (channels, agent ids) are JSON.

Foreign keys are kept to the relations the application itself guarantees
(installment -> loan, assignment -> agent). Loans, payments and case records refer to
borrowers and loans by id without a foreign key: the loan workflow may run before the
borrower's record arrives from origination, and an activity must never be stuck on it.

Importing this module imports SQLModel: never import it from workflow code
(use models.wire there).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import field_validator
from sqlmodel import Field, SQLModel

from domain.enums import CollectionStage
from models.wire import IDENT_MAX, TEXT_MAX

# Deterministic constraint names on every backend (Alembic batch mode on SQLite needs
# named constraints to alter them later).
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# --- column types -------------------------------------------------------------------


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    Naive datetimes are taken to be UTC. Aware datetimes are converted to UTC. Values
    read back are always aware (tzinfo=UTC), also on SQLite.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite stores text; keep it naive-UTC so ordering/comparison is textual-safe.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - defensive, drivers parse already
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _money(**kw: Any) -> Any:
    return Field(sa_type=sa.BigInteger, **kw)


def _ts(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


ID_LEN = 64
KEY_LEN = 255
# The bounds the wire types put on what a caller sends (ids of desk messages, and who
# opened / approved / set them), so nothing the edge accepts is refused here.
REF_LEN = IDENT_MAX
BY_LEN = TEXT_MAX

LANGUAGES = ("zh-CN", "en")

# --- borrowers (the only personal data) ----------------------------------------------


class BorrowerBase(SQLModel):
    name: str = Field(max_length=200)
    phone_mobile: str | None = Field(default=None, max_length=32)
    phone_alt: str | None = Field(default=None, max_length=32)
    email: str | None = Field(default=None, max_length=320)
    preferred_language: str = Field(default="zh-CN", max_length=16)
    timezone: str = Field(default="Asia/Shanghai", max_length=64)


class BorrowerCreate(BorrowerBase):
    borrower_id: str = Field(min_length=1, max_length=ID_LEN)

    @field_validator("preferred_language")
    @classmethod
    def _known_language(cls, v: str) -> str:
        if v not in LANGUAGES:
            raise ValueError(f"preferred_language must be one of {', '.join(LANGUAGES)}")
        return v

    @field_validator("borrower_id")
    @classmethod
    def _non_blank_id(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("borrower_id must not be blank")
        return v


class Borrower(BorrowerBase, table=True):
    __tablename__ = "borrower"

    borrower_id: str = Field(primary_key=True, max_length=ID_LEN)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


# --- loans (projection of the case) --------------------------------------------------


class Loan(SQLModel, table=True):
    __tablename__ = "loan"

    loan_id: str = Field(primary_key=True, max_length=ID_LEN)
    borrower_id: str = Field(index=True, max_length=ID_LEN)
    product: str = Field(max_length=32)
    currency: str = Field(default="CNY", max_length=3)
    principal: int = _money()
    annual_rate_bps: int
    term_months: int
    repayment_method: str = Field(max_length=32)
    disbursed_on: date
    first_due_date: date
    timezone: str = Field(default="Asia/Shanghai", max_length=64)
    policy: str = Field(default="standard", max_length=64)
    # projection, written by sync_loan
    stage: str = Field(default=CollectionStage.CURRENT.value, max_length=32, index=True)
    days_past_due: int = 0
    outstanding_principal: int = _money(default=0)
    outstanding_interest: int = _money(default=0)
    outstanding_penalty: int = _money(default=0)
    outstanding_fee: int = _money(default=0)
    outstanding_total: int = _money(default=0)
    overdue: int = _money(default=0)
    assigned_agent: str | None = Field(default=None, max_length=ID_LEN)
    next_action_kind: str | None = Field(default=None, max_length=32)
    next_action_at: datetime | None = _ts(default=None)
    closed: bool = False
    recorded_at: datetime = _ts(default_factory=utcnow)
    # `as_of` of the last applied projection; NULL until the first sync_loan.
    updated_at: datetime | None = _ts(default=None)


class InstallmentRow(SQLModel, table=True):
    """A loan's installment as last projected (domain.case.Installment is the case's own)."""

    __tablename__ = "installment"
    __table_args__ = (sa.UniqueConstraint("loan_id", "seq", name="uq_installment_loan_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    loan_id: str = Field(foreign_key="loan.loan_id", ondelete="CASCADE", max_length=ID_LEN)
    seq: int
    due_date: date
    principal: int = _money()
    interest: int = _money()
    paid: int = _money(default=0)
    status: str = Field(default="scheduled", max_length=16)


class Payment(SQLModel, table=True):
    """A payment as booked for one loan. Unique per loan by (loan_id, payment_id), the
    workflow's own deduplication key: the same gateway id applied by two loans' workflows
    is booked for each (and audited as `payment_id_reused`), so ledger and workflow agree."""

    __tablename__ = "payment"
    __table_args__ = (sa.UniqueConstraint("loan_id", "payment_id", name="uq_payment_loan_id_payment_id"),)

    id: int | None = Field(default=None, primary_key=True)
    payment_id: str = Field(index=True, max_length=128)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    amount: int = _money()
    currency: str = Field(max_length=3)
    paid_at: datetime = _ts()
    channel: str | None = Field(default=None, max_length=64)
    alloc_penalty: int = _money(default=0)
    alloc_fee: int = _money(default=0)
    alloc_interest: int = _money(default=0)
    alloc_principal: int = _money(default=0)
    booked_at: datetime = _ts(default_factory=utcnow)


# --- contacts (outbox) ---------------------------------------------------------------

# queued: written before the provider is called. accepted: the provider took it and a
# receipt will follow (a webhook's 2xx). delivered / failed: final, from the provider's
# answer or a receipt. suppressed: never sent (no borrower, no detail for the channel).
CONTACT_STATUSES = ("queued", "accepted", "delivered", "suppressed", "failed")
FINAL_CONTACT_STATUSES = frozenset({"delivered", "suppressed", "failed"})
# Handed over (or never to be): a repeat of the contact never sends it again.
SENT_CONTACT_STATUSES = FINAL_CONTACT_STATUSES | {"accepted"}
RECEIPT_STATUSES = frozenset({"delivered", "failed"})


class ContactAttempt(SQLModel, table=True):
    """The outbox: one row per idempotency key. `line` is a reference to the contact
    detail used ('mobile', 'alt', 'email', ...), never the address itself."""

    __tablename__ = "contact_attempt"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=KEY_LEN)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    borrower_id: str = Field(index=True, max_length=ID_LEN)
    kind: str = Field(max_length=32)
    channel: str = Field(max_length=16)
    template: str = Field(max_length=64)
    language: str | None = Field(default=None, max_length=16)
    rendered_text: str | None = Field(default=None, sa_type=sa.Text)
    scheduled_at: datetime = _ts()
    created_at: datetime = _ts(default_factory=utcnow)
    sent_at: datetime | None = _ts(default=None)
    status: str = Field(default="queued", max_length=16)
    reason: str | None = Field(default=None, max_length=255)
    line: str | None = Field(default=None, max_length=16)
    dialed: bool = False
    connected: bool = False
    # The provider's answer when it took or refused the message (migration 0004), and
    # the latest receipt that moved the row (POST /receipts).
    provider_answer: str | None = Field(default=None, max_length=255)
    receipt_at: datetime | None = _ts(default=None)
    receipt_detail: str | None = Field(default=None, max_length=255)


class BorrowerCall(SQLModel, table=True):
    """The borrower's call ledger across ALL loans: one row per call attempt (an automated
    call, by its outbox key; a collector's logged call, `log:<loan>/<contact id>`). The
    outbox checks the policy's call caps against it and records the attempt in the same
    transaction, under a lock on the borrower (PostgreSQL `FOR UPDATE` on the borrower
    row; SQLite: the write lock of BEGIN IMMEDIATE), so two loans never both take the
    last allowed call. `line` is a detail reference ('mobile', 'alt'), never a number."""

    __tablename__ = "borrower_call"
    __table_args__ = (sa.Index("ix_borrower_call_borrower_id_at", "borrower_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=KEY_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    loan_id: str = Field(max_length=ID_LEN)
    line: str = Field(max_length=16)
    at: datetime = _ts()
    connected: bool = False
    source: str = Field(max_length=16)  # outbox / logged


# --- agents and assignments ----------------------------------------------------------


class AgentBase(SQLModel):
    name: str = Field(max_length=200)
    active: bool = True
    max_cases: int | None = None


class AgentCreate(AgentBase):
    agent_id: str = Field(min_length=1, max_length=ID_LEN)


class Agent(AgentBase, table=True):
    __tablename__ = "agent"

    agent_id: str = Field(primary_key=True, max_length=ID_LEN)
    created_at: datetime = _ts(default_factory=utcnow)


class Assignment(SQLModel, table=True):
    """A loan's collector. `agent_id` NULL = waiting in the unassigned queue.
    Open = `released_at` IS NULL; at most one open row per loan (partial unique index)."""

    __tablename__ = "assignment"
    __table_args__ = (
        sa.Index(
            "uq_assignment_open_loan",
            "loan_id",
            unique=True,
            sqlite_where=sa.text("released_at IS NULL"),
            postgresql_where=sa.text("released_at IS NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=KEY_LEN)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    borrower_id: str | None = Field(default=None, max_length=ID_LEN)
    agent_id: str | None = Field(default=None, foreign_key="agent.agent_id", index=True, max_length=ID_LEN)
    requested_at: datetime = _ts()
    assigned_at: datetime | None = _ts(default=None)
    days_past_due: int = 0
    overdue: int = _money(default=0)
    released_at: datetime | None = _ts(default=None)
    release_reason: str | None = Field(default=None, max_length=255)
    release_key: str | None = Field(default=None, max_length=KEY_LEN)


# --- case filings --------------------------------------------------------------------


class LegalReferral(SQLModel, table=True):
    __tablename__ = "legal_referral"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=KEY_LEN)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    referred_at: datetime = _ts()
    days_past_due: int
    overdue: int = _money()
    outstanding_principal: int = _money()
    outstanding_interest: int = _money()
    outstanding_penalty: int = _money()
    outstanding_fee: int = _money()
    outstanding_total: int = _money()
    currency: str = Field(max_length=3)
    detail: str = Field(default="", sa_type=sa.Text)
    status: str = Field(default="open", max_length=16)


class CreditBureauRecord(SQLModel, table=True):
    __tablename__ = "credit_bureau_record"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=KEY_LEN)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    kind: str = Field(max_length=16)  # notice / report / update
    at: datetime = _ts()
    days_past_due: int
    overdue: int = _money()
    outstanding_total: int = _money(default=0)
    currency: str = Field(default="CNY", max_length=3)
    detail: str = Field(default="", sa_type=sa.Text)


class ChargeOff(SQLModel, table=True):
    __tablename__ = "charge_off"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=KEY_LEN)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    at: datetime = _ts()
    days_past_due: int
    principal: int = _money()
    interest: int = _money()
    penalty: int = _money()
    fee: int = _money()
    amount: int = _money()  # total charged off
    currency: str = Field(max_length=3)
    detail: str = Field(default="", sa_type=sa.Text)


class FieldVisitTask(SQLModel, table=True):
    __tablename__ = "field_visit_task"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=KEY_LEN)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    at: datetime = _ts()
    days_past_due: int
    overdue: int = _money()
    currency: str = Field(default="CNY", max_length=3)
    collectors_required: int = 2
    status: str = Field(default="open", max_length=16)
    detail: str = Field(default="", sa_type=sa.Text)


class CaseTask(SQLModel, table=True):
    """Work for a person that a hold leads to: `dispute_overdue` (a dispute still open
    after dispute_response_days) and `hardship_review` (a hardship ended). `agent_id` is
    the loan's collector when it has one; NULL = the unassigned queue. `at` is when the
    workflow filed it, `created_at` when the row was written. No foreign key to `agent`:
    a filing must never be stuck on an agent row."""

    __tablename__ = "case_task"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=KEY_LEN)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    kind: str = Field(max_length=32)  # dispute_overdue / hardship_review
    agent_id: str | None = Field(default=None, index=True, max_length=ID_LEN)
    at: datetime = _ts()
    created_at: datetime = _ts(default_factory=utcnow)
    days_past_due: int
    overdue: int = _money()
    currency: str = Field(default="CNY", max_length=3)
    detail: str = Field(default="", sa_type=sa.Text)
    status: str = Field(default="open", max_length=16)


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True, max_length=KEY_LEN)
    loan_id: str = Field(index=True, max_length=ID_LEN)
    at: datetime = _ts()
    event: str = Field(max_length=64)
    detail: str = Field(default="", sa_type=sa.Text)
    source: str = Field(max_length=128)
    recorded_at: datetime = _ts(default_factory=utcnow)


# --- the collector's desk ------------------------------------------------------------
#
# One row per (loan_id, <id>): ids are the workflow's deduplication keys, unique per loan
# (like payment_id), so two loans may use the same id. The workflow sends each record as
# it stands; a row is inserted, or brought up to date (latest wins). `updated_at` moves
# only when a value changed. Nothing here is personal data: borrowers are referred to by
# `borrower_id`, staff by the ids and names the messages carried.


class PromiseToPay(SQLModel, table=True):
    """A promise to pay (承诺还款): open, then kept or broken (`settled_at`)."""

    __tablename__ = "promise_to_pay"
    __table_args__ = (
        sa.UniqueConstraint("loan_id", "promise_id", name="uq_promise_to_pay_loan_id_promise_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    loan_id: str = Field(max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    promise_id: str = Field(max_length=REF_LEN)
    amount: int = _money()
    currency: str = Field(max_length=3)
    promised_date: date  # the borrower's local date
    agent_id: str = Field(index=True, max_length=REF_LEN)
    status: str = Field(max_length=16)  # open / kept / broken
    made_at: datetime = _ts()
    settled_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


class Dispute(SQLModel, table=True):
    """A dispute (异议): open, then upheld or rejected; `escalated` once it was still open
    after dispute_response_days."""

    __tablename__ = "dispute"
    __table_args__ = (sa.UniqueConstraint("loan_id", "dispute_id", name="uq_dispute_loan_id_dispute_id"),)

    id: int | None = Field(default=None, primary_key=True)
    loan_id: str = Field(max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    dispute_id: str = Field(max_length=REF_LEN)
    reason: str = Field(max_length=32)
    opened_by: str = Field(max_length=BY_LEN)
    opened_at: datetime = _ts()
    status: str = Field(max_length=16)  # open / upheld / rejected
    escalated: bool = False
    resolved_by: str | None = Field(default=None, max_length=BY_LEN)
    resolved_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


class Hardship(SQLModel, table=True):
    """Hardship relief (困难帮扶) from `starts_on` to `until` (local dates, inclusive):
    active, then ended (`ended_by`/`ended_at` only when ended early)."""

    __tablename__ = "hardship"
    __table_args__ = (sa.UniqueConstraint("loan_id", "hardship_id", name="uq_hardship_loan_id_hardship_id"),)

    id: int | None = Field(default=None, primary_key=True)
    loan_id: str = Field(max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    hardship_id: str = Field(max_length=REF_LEN)
    reason: str = Field(max_length=32)
    starts_on: date
    until: date
    approved_by: str = Field(max_length=BY_LEN)
    approval_ref: str = Field(max_length=BY_LEN)
    approved_at: datetime = _ts()
    status: str = Field(max_length=16)  # active / ended
    ended_by: str | None = Field(default=None, max_length=BY_LEN)
    ended_at: datetime | None = _ts(default=None)
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


class ContactPreference(SQLModel, table=True):
    """The channels a borrower accepts, as set by one message (the latest `at` is the one
    in force). `channels` is a JSON list of channel values."""

    __tablename__ = "contact_preference"
    __table_args__ = (
        sa.UniqueConstraint("loan_id", "preference_id", name="uq_contact_preference_loan_id_preference_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    loan_id: str = Field(max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    preference_id: str = Field(max_length=REF_LEN)
    channels: list[str] = Field(sa_type=sa.JSON)
    set_by: str = Field(max_length=BY_LEN)
    at: datetime = _ts()
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)


class ContactLog(SQLModel, table=True):
    """A collector's call or visit as logged (the outcome only, never the number dialled
    or the address visited). `agent_ids` is a JSON list (two or more for a field visit)."""

    __tablename__ = "contact_log"
    __table_args__ = (sa.UniqueConstraint("loan_id", "contact_id", name="uq_contact_log_loan_id_contact_id"),)

    id: int | None = Field(default=None, primary_key=True)
    loan_id: str = Field(max_length=ID_LEN)
    borrower_id: str = Field(max_length=ID_LEN)
    contact_id: str = Field(max_length=REF_LEN)
    agent_ids: list[str] = Field(sa_type=sa.JSON)
    channel: str = Field(max_length=16)  # voice / field_visit / inbound
    result: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=32)
    at: datetime = _ts()
    created_at: datetime = _ts(default_factory=utcnow)
    updated_at: datetime = _ts(default_factory=utcnow)
