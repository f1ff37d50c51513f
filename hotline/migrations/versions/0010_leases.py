"""Leases (which bridge process ingests each PBX, with fencing tokens), and per-PBX hour rows.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("taken_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )
    # Several PBXs each keep their own hour rows; one PBX (no name) keeps "".
    with op.batch_alter_table("queue_hours") as batch:
        batch.add_column(sa.Column("pbx", sa.String(length=16), nullable=False, server_default=""))
        batch.drop_constraint("uq_queue_hours_queue", type_="unique")
        batch.create_unique_constraint(op.f("uq_queue_hours_pbx"), ["pbx", "queue", "hour_start"])


def downgrade() -> None:
    with op.batch_alter_table("queue_hours") as batch:
        batch.drop_constraint("uq_queue_hours_pbx", type_="unique")
        batch.create_unique_constraint(op.f("uq_queue_hours_queue"), ["queue", "hour_start"])
        batch.drop_column("pbx")
    op.drop_table("leases")
