"""Crypt4GH copies of stored files and signed integrity manifests (GB/T 39725 §10.1 h,
§11.3.4.6 a 3).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("files") as batch:
        batch.add_column(sa.Column("encrypted_key", sa.String(500), nullable=True))
        batch.add_column(sa.Column("encrypted_version_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("cipher_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("cipher_size", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("header_size", sa.Integer, nullable=True))
        batch.add_column(sa.Column("plaintext_purged", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.create_table(
        "integrity_manifests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"),
                  nullable=False, unique=True),
        sa.Column("manifest_key", sa.String(500), nullable=False),
        sa.Column("manifest_version_id", sa.String(100), nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("data_key_fingerprint", sa.String(16), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("integrity_manifests")
    with op.batch_alter_table("files") as batch:
        for column in ("plaintext_purged", "header_size", "cipher_size", "cipher_sha256",
                       "encrypted_version_id", "encrypted_key"):
            batch.drop_column(column)
