"""users.name: every user gets a name, backfilled from the email

A data migration. The column is added nullable, filled for the users that exist (the part of
the email before the "@", as the sign-up form has proposed all along), then made NOT NULL.
SQLite cannot ALTER a column: batch_alter_table recreates the table there.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-03 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# The table as this revision knows it: never the models, which describe the newest schema.
users = sa.table(
    "users",
    sa.column("id", sa.Integer()),
    sa.column("email", sa.String()),
    sa.column("name", sa.String()),
)


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("users", sa.Column("name", sa.String(length=80), nullable=True))
    # The position of the "@": the one function that differs between the two dialects.
    position = sa.func.instr if op.get_context().dialect.name == "sqlite" else sa.func.strpos
    at = position(users.c.email, "@")
    local_part = sa.case((at > 1, sa.func.substr(users.c.email, 1, at - 1)), else_=users.c.email)
    op.execute(users.update().where(users.c.name.is_(None)).values(name=local_part))
    with op.batch_alter_table("users") as batch_op:
        batch_op.alter_column("name", existing_type=sa.String(length=80), nullable=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("name")
