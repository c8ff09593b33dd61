"""borrower_call: the borrower's call ledger across all loans (the call caps per borrower)

The policy's call caps hold per borrower across all of the borrower's loans (contract
part 3). The outbox checks them against this table and records the attempt in the same
transaction at send time; a collector's logged calls are written here too. A new table
only: plain CREATE TABLE on SQLite and PostgreSQL. Existing calls (kept per loan in each
workflow's case until now) are not back-filled: for the first 7 days after the upgrade a
borrower's earlier calls count only on their own loan, as before.

The downgrade drops the table and its rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "borrower_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("borrower_id", sa.String(length=64), nullable=False),
        sa.Column("loan_id", sa.String(length=64), nullable=False),
        sa.Column("line", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_borrower_call")),
        sa.UniqueConstraint("key", name=op.f("uq_borrower_call_key")),
    )
    op.create_index("ix_borrower_call_borrower_id_at", "borrower_call", ["borrower_id", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_borrower_call_borrower_id_at", table_name="borrower_call")
    op.drop_table("borrower_call")
