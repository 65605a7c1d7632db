"""Destructions (resumable, with their verification and signed certificate), requesters'
destruction proofs, and the destroyed mark on dataset versions (GB/T 39725 §11.4.2.6,
§11.7.4.3; RARE §4.4).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "destructions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("target", sa.String(300), nullable=False, index=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("certificate", sa.JSON, nullable=True),
    )
    op.create_table(
        "destruction_proofs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("agreement_id", sa.String(40), sa.ForeignKey("agreements.id"), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("archive_key", sa.String(500), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_by", sa.String(200), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("destroyed_at")
    op.drop_table("destruction_proofs")
    op.drop_table("destructions")
