"""Call journal: one row per call.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_INDEXED = (
    "agent_interface",
    "caller_number",
    "linkedid",
    "outcome",
    "queue",
    "started_at",
    "ticket",
)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uniqueid", sa.String(length=64), nullable=False),
        sa.Column("linkedid", sa.String(length=64), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=False),
        sa.Column("caller_number", sa.String(length=64), nullable=False),
        sa.Column("caller_name", sa.String(length=128), nullable=False),
        sa.Column("dialled_number", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.Column("agent_interface", sa.String(length=128), nullable=True),
        sa.Column("agent_name", sa.String(length=128), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entered_queue_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hold_seconds", sa.Integer(), nullable=True),
        sa.Column("talk_seconds", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("hangup_cause", sa.Integer(), nullable=True),
        sa.Column("ticket", sa.String(length=64), nullable=True),
        sa.Column("routing_reason", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
        sa.UniqueConstraint("uniqueid", name=op.f("uq_calls_uniqueid")),
    )
    for column in _INDEXED:
        op.create_index(op.f(f"ix_calls_{column}"), "calls", [column])


def downgrade() -> None:
    for column in _INDEXED:
        op.drop_index(op.f(f"ix_calls_{column}"), table_name="calls")
    op.drop_table("calls")
