"""recipes.mocks: a mock AsyncSession whose results behave like real ones."""

from unittest.mock import AsyncMock, MagicMock

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Result
from sqlalchemy.exc import MultipleResultsFound, ResourceClosedError

from recipes.demo.models import User
from recipes.mocks import make_mock_session, result_of

QUERY = select(User)


def test_result_of_single_column_rows():
    user = User(email="ada@example.com")
    assert result_of(user).scalar_one_or_none() is user
    assert result_of(user, "x").scalars().all() == [user, "x"]
    assert result_of().scalar_one_or_none() is None
    assert result_of().scalars().first() is None


def test_result_of_tuple_rows_are_whole_rows():
    result = result_of((1, "ada"), (2, "grace"))
    assert [tuple(row) for row in result.all()] == [(1, "ada"), (2, "grace")]
    assert tuple(result_of((1, "ada")).one()) == (1, "ada")


def test_result_of_keeps_the_real_semantics():
    with pytest.raises(MultipleResultsFound):
        result_of("a", "b").scalar_one_or_none()
    result = result_of("a")
    assert result.scalar_one() == "a"
    with pytest.raises(ResourceClosedError):
        result.scalar_one()


def test_the_spec_gives_async_and_sync_methods_and_refuses_typos():
    session = make_mock_session()
    assert isinstance(session, AsyncMock)
    for name in ("execute", "scalars", "scalar", "commit", "flush", "rollback", "get", "close"):
        assert isinstance(getattr(session, name), AsyncMock), name
    for name in ("add", "add_all", "expunge", "begin"):
        member = getattr(session, name)
        assert isinstance(member, MagicMock) and not isinstance(member, AsyncMock), name
    with pytest.raises(AttributeError):
        session.comit  # noqa: B018


@pytest.mark.asyncio
async def test_execute_returns_a_real_result_of_the_rows():
    user = User(email="ada@example.com")
    session = make_mock_session(user)
    result = await session.execute(QUERY)
    assert isinstance(result, Result)
    assert result.scalar_one_or_none() is user
    session.execute.assert_awaited_once_with(QUERY)


@pytest.mark.asyncio
async def test_every_execute_returns_a_fresh_result():
    session = make_mock_session("a")
    assert (await session.execute(QUERY)).scalar_one() == "a"
    assert (await session.execute(QUERY)).scalar_one() == "a"
    assert session.execute.await_count == 2


@pytest.mark.asyncio
async def test_scalars_and_scalar_read_through_execute():
    session = make_mock_session("a", "b")
    assert (await session.scalars(QUERY)).all() == ["a", "b"]
    assert await session.scalar(QUERY) == "a"
    assert session.execute.await_count == 2
    assert await make_mock_session().scalar(QUERY) is None


@pytest.mark.asyncio
async def test_return_value_and_side_effect_replace_the_default():
    session = make_mock_session("default")
    session.execute.return_value = result_of("configured")
    assert await session.scalar(QUERY) == "configured"

    session.execute.side_effect = [result_of("first"), result_of("second")]
    assert await session.scalar(QUERY) == "first"
    assert (await session.scalars(QUERY)).all() == ["second"]
    with pytest.raises(StopAsyncIteration):
        await session.execute(QUERY)

    session.execute.side_effect = RuntimeError("database went away")
    with pytest.raises(RuntimeError, match="went away"):
        await session.execute(QUERY)


@pytest.mark.asyncio
async def test_get_finds_nothing_and_calls_are_recorded():
    session = make_mock_session()
    assert await session.get(User, 1) is None
    session.add("x")
    await session.commit()
    session.add.assert_called_once_with("x")
    session.commit.assert_awaited_once_with()


def test_a_forgotten_await_is_called_but_not_awaited():
    session = make_mock_session()
    coroutine = session.commit()  # the bug: no await
    session.commit.assert_called_once()
    with pytest.raises(AssertionError, match="Awaited 0 times"):
        session.commit.assert_awaited_once()
    coroutine.close()


def test_the_plugin_gives_a_fresh_mock_session(mock_session):
    assert isinstance(mock_session, AsyncMock)
    assert mock_session.mock_calls == []
    assert isinstance(mock_session.add, MagicMock)


def test_a_plain_function_is_not_a_fixture(pytester):
    pytester.makepyfile(
        """
        from unittest.mock import AsyncMock

        def mocked_session():
            return AsyncMock()

        def test_uses_it(mocked_session):
            assert mocked_session
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:asyncio")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'mocked_session' not found*"])
