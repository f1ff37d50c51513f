"""Tickets, their per-day serials and the enterprise directory.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("caller_number", sa.String(length=32), nullable=False),
        sa.Column("caller_name", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner_agent", sa.String(length=128), nullable=True),
        sa.Column("department", sa.String(length=128), nullable=True),
        sa.Column("emergency", sa.Boolean(), nullable=False),
        sa.Column("satisfaction", sa.Integer(), nullable=True),
        sa.Column("opened_at", _WHEN, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        sa.Column("signed_at", _WHEN, nullable=True),
        sa.Column("contacted_at", _WHEN, nullable=True),
        sa.Column("on_site_at", _WHEN, nullable=True),
        sa.Column("resolved_at", _WHEN, nullable=True),
        sa.Column("closed_at", _WHEN, nullable=True),
        sa.Column("callback_requested_at", _WHEN, nullable=True),
        sa.Column("called_back_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
        sa.UniqueConstraint("number", name=op.f("uq_tickets_number")),
    )
    op.create_index("ix_tickets_caller_open", "tickets", ["caller_number", "status"])
    op.create_index(op.f("ix_tickets_status"), "tickets", ["status"])
    op.create_index(op.f("ix_tickets_owner_agent"), "tickets", ["owner_agent"])
    op.create_index(op.f("ix_tickets_opened_at"), "tickets", ["opened_at"])
    op.create_table(
        "ticket_days",
        sa.Column("day", sa.String(length=8), nullable=False),
        sa.Column("last_serial", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_ticket_days")),
    )
    op.create_table(
        "enterprises",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("added_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enterprises")),
        sa.UniqueConstraint("number", name=op.f("uq_enterprises_number")),
    )


def downgrade() -> None:
    op.drop_table("enterprises")
    op.drop_table("ticket_days")
    op.drop_index(op.f("ix_tickets_opened_at"), table_name="tickets")
    op.drop_index(op.f("ix_tickets_owner_agent"), table_name="tickets")
    op.drop_index(op.f("ix_tickets_status"), table_name="tickets")
    op.drop_index("ix_tickets_caller_open", table_name="tickets")
    op.drop_table("tickets")
