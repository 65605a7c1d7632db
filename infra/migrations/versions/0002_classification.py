"""Classification proposals and their field labels, approved or overridden by a steward.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "classifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"),
                  nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("content_digest", sa.String(64), nullable=False),
        sa.Column("policy_hash", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("proposed_by", sa.String(200), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("labels_key", sa.String(500), nullable=True),
    )
    op.create_index("ix_classifications_version", "classifications", ["dataset_version_id"])
    op.create_table(
        "classification_fields",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("classification_id", sa.Integer, sa.ForeignKey("classifications.id"),
                  nullable=False),
        sa.Column("file", sa.String(500), nullable=False),
        sa.Column("field", sa.String(200), nullable=False),
        sa.Column("identifier", sa.String(20), nullable=False),
        sa.Column("category", sa.String(40), nullable=False),
        sa.Column("grade", sa.Integer, nullable=False),
        sa.Column("detector", sa.String(40), nullable=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("share", sa.Float, nullable=False),
        sa.Column("sampled", sa.Integer, nullable=False),
        sa.Column("name_hint", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("override_reason", sa.Text, nullable=False),
        sa.UniqueConstraint("classification_id", "file", "field"),
    )


def downgrade() -> None:
    op.drop_table("classification_fields")
    op.drop_table("classifications")
