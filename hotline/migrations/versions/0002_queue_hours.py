"""Per-hour queue counters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COUNTERS = (
    "offered",
    "answered",
    "abandoned",
    "short_abandoned",
    "timed_out",
    "answered_within_sl",
    "hold_seconds_answered",
    "completed",
    "talk_seconds",
)


def upgrade() -> None:
    op.create_table(
        "queue_hours",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("hour_start", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _COUNTERS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_hours")),
        sa.UniqueConstraint("queue", "hour_start", name=op.f("uq_queue_hours_queue")),
    )
    op.create_index(op.f("ix_queue_hours_hour_start"), "queue_hours", ["hour_start"])


def downgrade() -> None:
    op.drop_index(op.f("ix_queue_hours_hour_start"), table_name="queue_hours")
    op.drop_table("queue_hours")
