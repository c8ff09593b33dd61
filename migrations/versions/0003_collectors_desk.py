"""the collector's desk: promise_to_pay, dispute, hardship, contact_preference,
contact_log, and case_task (dispute_overdue / hardship_review filings)

Written by hand in the style of 0001 (plain SQLAlchemy types: String, DateTime(timezone=
True), BigInteger for money, JSON for the lists). The desk tables are keyed per loan by
(loan_id, <id>), like payment since 0002; case_task by its idempotency key. New tables
only: plain CREATE TABLE on SQLite and PostgreSQL (no batch mode needed).
The downgrade drops the six tables and their rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _stamps() -> list[sa.Column]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "case_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("days_past_due", sa.Integer(), nullable=False),
        sa.Column("overdue", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_task")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_case_task_idempotency_key")),
    )
    op.create_index(op.f("ix_case_task_loan_id"), "case_task", ["loan_id"], unique=False)
    op.create_index(op.f("ix_case_task_agent_id"), "case_task", ["agent_id"], unique=False)

    op.create_table(
        "promise_to_pay",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("promise_id", sa.String(length=128), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("promised_date", sa.Date(), nullable=False),
        sa.Column("agent_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_promise_to_pay")),
        sa.UniqueConstraint("loan_id", "promise_id", name=op.f("uq_promise_to_pay_loan_id_promise_id")),
    )
    op.create_index(op.f("ix_promise_to_pay_agent_id"), "promise_to_pay", ["agent_id"], unique=False)

    op.create_table(
        "dispute",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("dispute_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("opened_by", sa.String(length=256), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("escalated", sa.Boolean(), nullable=False),
        sa.Column("resolved_by", sa.String(length=256), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute")),
        sa.UniqueConstraint("loan_id", "dispute_id", name=op.f("uq_dispute_loan_id_dispute_id")),
    )

    op.create_table(
        "hardship",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("hardship_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("until", sa.Date(), nullable=False),
        sa.Column("approved_by", sa.String(length=256), nullable=False),
        sa.Column("approval_ref", sa.String(length=256), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ended_by", sa.String(length=256), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hardship")),
        sa.UniqueConstraint("loan_id", "hardship_id", name=op.f("uq_hardship_loan_id_hardship_id")),
    )

    op.create_table(
        "contact_preference",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("preference_id", sa.String(length=128), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("set_by", sa.String(length=256), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_preference")),
        sa.UniqueConstraint(
            "loan_id", "preference_id", name=op.f("uq_contact_preference_loan_id_preference_id")
        ),
    )

    op.create_table(
        "contact_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("agent_ids", sa.JSON(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact_log")),
        sa.UniqueConstraint("loan_id", "contact_id", name=op.f("uq_contact_log_loan_id_contact_id")),
    )


def downgrade() -> None:
    op.drop_table("contact_log")
    op.drop_table("contact_preference")
    op.drop_table("hardship")
    op.drop_table("dispute")
    op.drop_index(op.f("ix_promise_to_pay_agent_id"), table_name="promise_to_pay")
    op.drop_table("promise_to_pay")
    op.drop_index(op.f("ix_case_task_agent_id"), table_name="case_task")
    op.drop_index(op.f("ix_case_task_loan_id"), table_name="case_task")
    op.drop_table("case_task")
