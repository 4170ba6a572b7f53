"""hubgrade's test image k8s-hub:4.4.0-broken-migration: one migration after JupyterHub 5.5.0's
head that changes the database, then fails, so that `jupyterhub upgrade-db` really fails halfway.

Revision ID: ffffbroken01
Revises: 4621fec11365
"""

import sqlalchemy as sa
from alembic import op

revision = "ffffbroken01"
down_revision = "4621fec11365"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "hubgrade_broken_migration", sa.Column("id", sa.Integer, primary_key=True)
    )
    raise RuntimeError("hubgrade test image: this migration fails on purpose")


def downgrade():
    op.drop_table("hubgrade_broken_migration")
