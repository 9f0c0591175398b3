"""task retries: attempt count, retry limit and backoff, next attempt's time

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults: the tasks stored before this revision are on their first
    # attempt and allow no retry, as they were submitted.
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default=sa.text("1"), nullable=False))
        batch_op.add_column(sa.Column("retries", sa.Integer(), server_default=sa.text("0"), nullable=False))
        batch_op.add_column(
            sa.Column("retry_backoff_s", sa.Float(), server_default=sa.text("5"), nullable=False)
        )
        batch_op.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("retry_at")
        batch_op.drop_column("retry_backoff_s")
        batch_op.drop_column("retries")
        batch_op.drop_column("attempt")
