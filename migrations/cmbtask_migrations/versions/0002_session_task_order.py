"""sessions run their tasks one at a time unless they allow parallel tasks;
session phase holds a task phase, not display text

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 05:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TASK_PHASES = (
    "queued",
    "starting",
    "running",
    "waiting_approval",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
)


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("parallel_tasks", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # "planned" and "step 3/5" were display text; the step number is kept in its own column.
    sessions = sa.table("sessions", sa.column("phase", sa.String))
    op.execute(sessions.update().where(sessions.c.phase.not_in(_TASK_PHASES)).values(phase=None))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("parallel_tasks")
