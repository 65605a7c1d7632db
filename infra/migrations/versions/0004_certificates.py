"""Signed derived-data certificates (DER §5).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("dataset_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"),
                  nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("certificate_key", sa.String(500), nullable=False),
        sa.Column("issued_by", sa.String(200), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_certificates_version", "certificates", ["dataset_version_id"])


def downgrade() -> None:
    op.drop_table("certificates")
