"""The destroyed mark of a project's patient code index on its de-identification runs: when the
last live dataset of the project is destroyed its code index and key go too, and a later attempt
to re-identify is told when and by which destruction (GB/T 39725 §10.2 g–h, §11.7.4.3 a).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deidentifications") as batch:
        batch.add_column(sa.Column("code_index_destroyed_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("code_index_destruction", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deidentifications") as batch:
        batch.drop_column("code_index_destruction")
        batch.drop_column("code_index_destroyed_at")
