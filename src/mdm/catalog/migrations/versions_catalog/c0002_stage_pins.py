"""per-request pins: a request's disk lifetime, a file's release, files found by path

Revision ID: c0002
Revises: c0001
Create Date: 2026-11-22 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import mdm.catalog.models

revision = "c0002"
down_revision = "c0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("st_request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("disk_lifetime", sa.Float(), nullable=True))
    with op.batch_alter_table("st_file", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("released", mdm.catalog.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index("ix_st_file_path", ["path"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("st_file", schema=None) as batch_op:
        batch_op.drop_index("ix_st_file_path")
        batch_op.drop_column("released")
    with op.batch_alter_table("st_request", schema=None) as batch_op:
        batch_op.drop_column("disk_lifetime")
