"""Callback tasks (one per caller, with their attempts; return visits too) and the direction
of a journalled call.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False, server_default="callback"),
        sa.Column("ticket", sa.String(length=40), nullable=False),
        sa.Column("caller_number", sa.String(length=32), nullable=False),
        sa.Column("caller_name", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("missed_calls", sa.Integer(), nullable=False),
        sa.Column("requested_at", _WHEN, nullable=False),
        sa.Column("last_missed_at", _WHEN, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _WHEN, nullable=True),
        sa.Column("agent", sa.String(length=128), nullable=True),
        sa.Column("dialling_since", _WHEN, nullable=True),
        sa.Column("last_outcome", sa.String(length=24), nullable=True),
        sa.Column("reached_at", _WHEN, nullable=True),
        sa.Column("closed_at", _WHEN, nullable=True),
        sa.Column("stopped_because", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
    )
    op.create_index(op.f("ix_callbacks_ticket"), "callbacks", ["ticket"])
    op.create_index(op.f("ix_callbacks_caller_number"), "callbacks", ["caller_number"])
    op.create_index(op.f("ix_callbacks_status"), "callbacks", ["status"])
    op.create_index(op.f("ix_callbacks_requested_at"), "callbacks", ["requested_at"])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(
            sa.Column("direction", sa.String(length=8), nullable=False, server_default="inbound")
        )


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("direction")
    for name in ("requested_at", "status", "caller_number", "ticket"):
        op.drop_index(op.f(f"ix_callbacks_{name}"), table_name="callbacks")
    op.drop_table("callbacks")
