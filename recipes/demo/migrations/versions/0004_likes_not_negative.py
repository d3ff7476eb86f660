"""posts.likes: never negative (a CHECK), after fixing the counts that are

A data migration before a constraint: an "unlike" bug let counts go below zero, and the CHECK
cannot be added while such rows exist. They are set to 0 first; the downgrade drops the CHECK
but cannot bring the wrong counts back (nor should it).

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-14 09:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

posts = sa.table("posts", sa.column("likes", sa.Integer()))


def upgrade() -> None:
    """Upgrade schema."""
    op.execute(posts.update().where(posts.c.likes < 0).values(likes=0))
    with op.batch_alter_table("posts") as batch_op:
        batch_op.create_check_constraint("ck_posts_likes_not_negative", "likes >= 0")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("posts") as batch_op:
        batch_op.drop_constraint("ck_posts_likes_not_negative", type_="check")
