"""Recordings and their playback audit log.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("uniqueid", sa.String(length=64), nullable=False),
        sa.Column("ticket", sa.String(length=64), nullable=True),
        sa.Column("recorded_on", sa.Date(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("format", sa.String(length=64), nullable=False),
        sa.Column("ingested_at", _WHEN, nullable=False),
        sa.Column("verified_at", _WHEN, nullable=True),
        sa.Column("integrity", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
        sa.UniqueConstraint("key", name=op.f("uq_recordings_key")),
    )
    for column in ("uniqueid", "ticket", "recorded_on"):
        op.create_index(op.f(f"ix_recordings_{column}"), "recordings", [column])
    op.create_table(
        "recording_access",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("recording_id", sa.Integer(), nullable=True),
        sa.Column("requested_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("remote", sa.String(length=64), nullable=False),
        sa.Column("byte_range", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_recording_access_recording_id_recordings"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_access")),
    )
    for column in ("recording_id", "username", "at"):
        op.create_index(op.f(f"ix_recording_access_{column}"), "recording_access", [column])


def downgrade() -> None:
    for column in ("recording_id", "username", "at"):
        op.drop_index(op.f(f"ix_recording_access_{column}"), table_name="recording_access")
    op.drop_table("recording_access")
    for column in ("uniqueid", "ticket", "recorded_on"):
        op.drop_index(op.f(f"ix_recordings_{column}"), table_name="recordings")
    op.drop_table("recordings")
