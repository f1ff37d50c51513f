"""The citizen's rating after the human: on the call row, and the latest on its ticket, with
the agent; a dissatisfied rating puts the ticket on the supervisors' review list. The return
visit's rating of the whole case (一事一评) on the ticket too.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("rating", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("rating_key", sa.String(length=4), nullable=True))
        batch.add_column(sa.Column("rated_at", _WHEN, nullable=True))
        batch.create_index("ix_calls_rating", ["rating"])
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("rating", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("rated_agent", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("rated_call", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("rated_at", _WHEN, nullable=True))
        batch.add_column(sa.Column("review_requested_at", _WHEN, nullable=True))
        batch.add_column(sa.Column("reviewed_at", _WHEN, nullable=True))
        batch.add_column(sa.Column("visit_rating", sa.String(length=24), nullable=True))
        batch.add_column(sa.Column("visit_agent", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("visit_rated_at", _WHEN, nullable=True))
        batch.create_index("ix_tickets_review_requested_at", ["review_requested_at"])


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_index("ix_tickets_review_requested_at")
        for name in (
            "visit_rated_at",
            "visit_agent",
            "visit_rating",
            "reviewed_at",
            "review_requested_at",
            "rated_at",
            "rated_call",
            "rated_agent",
            "rating",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_rating")
        for name in ("rated_at", "rating_key", "rating"):
            batch.drop_column(name)
