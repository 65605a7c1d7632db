"""Sharing: institutions (blacklist), requests, committee votes, data use agreements, deliveries,
API tokens and calls, enclave exports (SEQ §6, §7.3.2.2; GB/T 39725 §11.4.2.2-11.4.2.5, §8.3
Table 5, App. C; RARE §3.5-§4.11).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "institutions",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("blacklisted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("blacklist_reason", sa.Text, nullable=True),
    )
    op.create_table(
        "share_requests",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("institution", sa.String(200), nullable=False, index=True),
        sa.Column("dataset_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"),
                  nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("findings", sa.JSON, nullable=False),
        sa.Column("reviewers", sa.JSON, nullable=False),
        sa.Column("subjects", sa.JSON, nullable=False),
        sa.Column("excluded_subjects", sa.Integer, nullable=False),
        sa.Column("decision", sa.JSON, nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "review_votes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("request_id", sa.String(40), sa.ForeignKey("share_requests.id"),
                  nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False),
        sa.Column("approve", sa.Boolean, nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("cast_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", "reviewer"),
    )
    op.create_table(
        "agreements",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(40), sa.ForeignKey("share_requests.id"),
                  nullable=False, unique=True),
        sa.Column("institution", sa.String(200), nullable=False),
        sa.Column("starts", sa.Date, nullable=False),
        sa.Column("ends", sa.Date, nullable=False),
        sa.Column("extensions", sa.Integer, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("agreement_id", sa.String(40), sa.ForeignKey("agreements.id"), nullable=False,
                  index=True),
        sa.Column("tier", sa.String(20), nullable=False),
        sa.Column("dataset_version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"),
                  nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("subjects", sa.JSON, nullable=False),
        sa.Column("mark_id", sa.String(40), nullable=False),
        sa.Column("destination_country", sa.String(8), nullable=False),
        sa.Column("location", sa.String(1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "api_tokens",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("agreement_id", sa.String(40), sa.ForeignKey("agreements.id"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "api_calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("agreement_id", sa.String(40), nullable=True, index=True),
        sa.Column("caller", sa.String(100), nullable=False),
        sa.Column("endpoint", sa.String(200), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_table(
        "enclave_exports",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("agreement_id", sa.String(40), sa.ForeignKey("agreements.id"), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("archive_key", sa.String(500), nullable=False),
        sa.Column("archive_version_id", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    for table in ("enclave_exports", "api_calls", "api_tokens", "deliveries", "agreements",
                  "review_votes", "share_requests", "institutions"):
        op.drop_table(table)
