"""contact_attempt (the outbox): the provider's answer and the latest receipt

Outbound delivery (contract part 3) moves an outbox row queued -> accepted (a webhook's
2xx) -> delivered / failed (a receipt, POST /receipts), or straight to delivered (SMTP)
or failed (a 4xx). The status column already holds any of these (String(16), no CHECK);
the new nullable columns keep what the provider said: `provider_answer` when it took or
refused the message, `receipt_at` / `receipt_detail` for the receipt that moved the row.

Nullable columns added: plain ALTER TABLE ADD COLUMN on SQLite and PostgreSQL; existing
rows keep NULL. The downgrade drops them (batch mode on SQLite); rows left `accepted`
stay so (an old worker treats them as not yet sent).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("contact_attempt", sa.Column("provider_answer", sa.String(length=255), nullable=True))
    op.add_column("contact_attempt", sa.Column("receipt_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("contact_attempt", sa.Column("receipt_detail", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contact_attempt") as batch:
        batch.drop_column("receipt_detail")
        batch.drop_column("receipt_at")
        batch.drop_column("provider_answer")
