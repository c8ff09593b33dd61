"""payment: unique per loan by (loan_id, payment_id), no longer by payment_id alone

The workflow deduplicates a payment_id per loan. With payment_id unique across all loans,
the same gateway id applied by two loans' workflows was booked only for the first, and
the ledger disagreed with the second workflow. Existing rows are kept (they are unique by
payment_id, so also by (loan_id, payment_id)); payment_id keeps an index for the
cross-loan check of book_payment.

Batch mode (table copy) on SQLite, plain ALTER TABLE on PostgreSQL.
The downgrade restores the global unique key: it fails while a payment_id is booked for
two loans (resolve those rows first).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment") as batch:
        batch.drop_constraint("uq_payment_payment_id", type_="unique")
        batch.create_unique_constraint("uq_payment_loan_id_payment_id", ["loan_id", "payment_id"])
        batch.create_index("ix_payment_payment_id", ["payment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payment") as batch:
        batch.drop_index("ix_payment_payment_id")
        batch.drop_constraint("uq_payment_loan_id_payment_id", type_="unique")
        batch.create_unique_constraint("uq_payment_payment_id", ["payment_id"])
