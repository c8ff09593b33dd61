"""initial schema: every table of models/tables.py

Generated with `alembic revision --autogenerate` against an empty database, then edited
by hand: plain SQLAlchemy types (String, DateTime(timezone=True)) instead of the SQLModel
/ application types, and plain create_index instead of batch blocks. Works on SQLite and
PostgreSQL.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("max_cases", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_agent")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_audit_log_idempotency_key")),
    )
    op.create_index(op.f("ix_audit_log_loan_id"), "audit_log", ["loan_id"], unique=False)

    op.create_table(
        "borrower",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone_mobile", sa.String(length=32), nullable=True),
        sa.Column("phone_alt", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("preferred_language", sa.String(length=16), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("borrower_id", name=op.f("pk_borrower")),
    )
    op.create_table(
        "charge_off",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("principal", sa.BigInteger(), nullable=False),
        sa.Column("interest", sa.BigInteger(), nullable=False),
        sa.Column("penalty", sa.BigInteger(), nullable=False),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charge_off")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_charge_off_idempotency_key")),
    )
    op.create_index(op.f("ix_charge_off_loan_id"), "charge_off", ["loan_id"], unique=False)

    op.create_table(
        "contact_attempt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("rendered_text", sa.Text(), nullable=True),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("line", sa.String(length=16), nullable=True),
        sa.Column("dialed", sa.Boolean(), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_attempt")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_contact_attempt_idempotency_key")),
    )
    op.create_index(op.f("ix_contact_attempt_borrower_id"), "contact_attempt", ["borrower_id"], unique=False)
    op.create_index(op.f("ix_contact_attempt_loan_id"), "contact_attempt", ["loan_id"], unique=False)

    op.create_table(
        "credit_bureau_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("overdue", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_total", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_bureau_record")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_credit_bureau_record_idempotency_key")),
    )
    op.create_index(
        op.f("ix_credit_bureau_record_loan_id"), "credit_bureau_record", ["loan_id"], unique=False
    )

    op.create_table(
        "field_visit_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("overdue", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("collectors_required", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_field_visit_task")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_field_visit_task_idempotency_key")),
    )
    op.create_index(op.f("ix_field_visit_task_loan_id"), "field_visit_task", ["loan_id"], unique=False)

    op.create_table(
        "legal_referral",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("referred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("overdue", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_principal", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_interest", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_penalty", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_fee", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_total", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_referral")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_legal_referral_idempotency_key")),
    )
    op.create_index(op.f("ix_legal_referral_loan_id"), "legal_referral", ["loan_id"], unique=False)

    op.create_table(
        "loan",
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("product", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("principal", sa.BigInteger(), nullable=False),
        sa.Column("annual_rate_bps", sa.Integer(), nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("repayment_method", sa.String(length=32), nullable=False),
        sa.Column("disbursed_on", sa.Date(), nullable=False),
        sa.Column("first_due_date", sa.Date(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("outstanding_principal", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_interest", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_penalty", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_fee", sa.BigInteger(), nullable=False),
        sa.Column("outstanding_total", sa.BigInteger(), nullable=False),
        sa.Column("overdue", sa.BigInteger(), nullable=False),
        sa.Column("assigned_agent", sa.String(length=64), nullable=True),
        sa.Column("next_action_kind", sa.String(length=32), nullable=True),
        sa.Column("next_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("loan_id", name=op.f("pk_loan")),
    )
    op.create_index(op.f("ix_loan_borrower_id"), "loan", ["borrower_id"], unique=False)
    op.create_index(op.f("ix_loan_stage"), "loan", ["stage"], unique=False)

    op.create_table(
        "payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.String(length=128), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("alloc_penalty", sa.BigInteger(), nullable=False),
        sa.Column("alloc_fee", sa.BigInteger(), nullable=False),
        sa.Column("alloc_interest", sa.BigInteger(), nullable=False),
        sa.Column("alloc_principal", sa.BigInteger(), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment")),
        sa.UniqueConstraint("payment_id", name=op.f("uq_payment_payment_id")),
    )
    op.create_index(op.f("ix_payment_loan_id"), "payment", ["loan_id"], unique=False)

    op.create_table(
        "assignment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("overdue", sa.BigInteger(), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("release_reason", sa.String(length=255), nullable=True),
        sa.Column("release_key", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agent.agent_id"], name=op.f("fk_assignment_agent_id_agent")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assignment")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_assignment_idempotency_key")),
    )
    op.create_index(op.f("ix_assignment_agent_id"), "assignment", ["agent_id"], unique=False)
    op.create_index(op.f("ix_assignment_loan_id"), "assignment", ["loan_id"], unique=False)
    op.create_index(
        "uq_assignment_open_loan",
        "assignment",
        ["loan_id"],
        unique=True,
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    )

    op.create_table(
        "installment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("principal", sa.BigInteger(), nullable=False),
        sa.Column("interest", sa.BigInteger(), nullable=False),
        sa.Column("paid", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["loan_id"],
            ["loan.loan_id"],
            name=op.f("fk_installment_loan_id_loan"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installment")),
        sa.UniqueConstraint("loan_id", "seq", name="uq_installment_loan_seq"),
    )


def downgrade() -> None:
    op.drop_table("installment")
    op.drop_index(
        "uq_assignment_open_loan",
        table_name="assignment",
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.drop_index(op.f("ix_assignment_loan_id"), table_name="assignment")
    op.drop_index(op.f("ix_assignment_agent_id"), table_name="assignment")

    op.drop_table("assignment")
    op.drop_index(op.f("ix_payment_loan_id"), table_name="payment")

    op.drop_table("payment")
    op.drop_index(op.f("ix_loan_stage"), table_name="loan")
    op.drop_index(op.f("ix_loan_borrower_id"), table_name="loan")

    op.drop_table("loan")
    op.drop_index(op.f("ix_legal_referral_loan_id"), table_name="legal_referral")

    op.drop_table("legal_referral")
    op.drop_index(op.f("ix_field_visit_task_loan_id"), table_name="field_visit_task")

    op.drop_table("field_visit_task")
    op.drop_index(op.f("ix_credit_bureau_record_loan_id"), table_name="credit_bureau_record")

    op.drop_table("credit_bureau_record")
    op.drop_index(op.f("ix_contact_attempt_loan_id"), table_name="contact_attempt")
    op.drop_index(op.f("ix_contact_attempt_borrower_id"), table_name="contact_attempt")

    op.drop_table("contact_attempt")
    op.drop_index(op.f("ix_charge_off_loan_id"), table_name="charge_off")

    op.drop_table("charge_off")
    op.drop_table("borrower")
    op.drop_index(op.f("ix_audit_log_loan_id"), table_name="audit_log")

    op.drop_table("audit_log")
    op.drop_table("agent")
