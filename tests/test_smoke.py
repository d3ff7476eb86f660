import pytest
from sqlalchemy import text

pytestmark = pytest.mark.asyncio


async def test_session_works(db_session):
    assert await db_session.scalar(text("select 1")) == 1
