"""Where a journal row came from: live AMI, or Asterisk's queue_log after the bridge was away.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=16), nullable=False, server_default="ami")
        )


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("source")
