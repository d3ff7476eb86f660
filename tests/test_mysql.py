"""recipes.mysql, the MySQL and MariaDB janitor, and what the plugin does about MySQL's implicit
commits and schemas: on the real server this run uses (skipped, saying so, without one)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, URL, insert, select, text

from recipes import mysql
from recipes.databases import DatabaseConfigError, TestDatabase
from recipes.demo.models import User
from recipes.schema import create_tables
from recipes.transactions import ImplicitCommitError

from servers import admin

SECRET = "hunter2"
DEAD_PID = 2**22 + 17  # a pid no process has
# The plugin's own test database of this run is number 1 (and 2 for a second URL naming it):
# the janitor's tests create theirs numbered apart.
OWN = 5


def _databases(url: URL, like: str) -> list[str]:
    (rows,) = asyncio.run(admin(url, f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{like}'"))
    return [name for (name,) in rows]


def _marked(url: URL, name: str, pid: int, host: str | None = None) -> None:
    mark = f"recipes test database; pid={pid}; host={host or socket.gethostname()}"
    asyncio.run(admin(url, f"CREATE DATABASE `{name}`",
                       f"CREATE PROCEDURE `{name}`.recipes_test_database() COMMENT '{mark}' BEGIN END"))


def test_a_test_database_is_created_beside_marked_and_dropped(mysql_server_url):
    url, drop = mysql.create_test_database(mysql_server_url, OWN)
    try:
        assert url.database == f"{mysql_server_url.database}_test_{os.getpid()}_{OWN}"
        assert _databases(mysql_server_url, url.database) == [url.database]
        (rows,) = asyncio.run(admin(url, "SELECT DATABASE()"))
        assert rows == [(url.database,)]
    finally:
        drop()
    assert _databases(mysql_server_url, url.database) == []


def test_a_second_url_naming_the_same_database_is_numbered(mysql_server_url):
    url, drop = mysql.create_test_database(mysql_server_url, number=OWN + 1)
    drop()
    assert url.database == f"{mysql_server_url.database}_test_{os.getpid()}_{OWN + 1}"


def test_the_leftover_of_a_dead_run_is_dropped_and_a_foreign_database_never(mysql_server_url):
    base = mysql_server_url.database
    stale, foreign, elsewhere = (f"{base}_test_{DEAD_PID}", f"{base}_test_{DEAD_PID + 1}",
                                 f"{base}_test_{DEAD_PID + 2}")
    _marked(mysql_server_url, stale, DEAD_PID)
    asyncio.run(admin(mysql_server_url, f"CREATE DATABASE `{foreign}`"))  # not marked: not ours
    _marked(mysql_server_url, elsewhere, DEAD_PID, host="another-host")  # another host's run
    try:
        url, drop = mysql.create_test_database(mysql_server_url, OWN)
        drop()
        assert [name for name in (stale, foreign, elsewhere) if _databases(mysql_server_url, name)] == [
            foreign, elsewhere]
    finally:
        asyncio.run(admin(mysql_server_url, f"DROP DATABASE IF EXISTS `{foreign}`",
                           f"DROP DATABASE IF EXISTS `{elsewhere}`", f"DROP DATABASE IF EXISTS `{stale}`"))


def test_an_existing_database_of_the_name_is_an_error_that_names_it(mysql_server_url):
    name = f"{mysql_server_url.database}_test_{os.getpid()}_{OWN}"
    asyncio.run(admin(mysql_server_url, f"CREATE DATABASE `{name}`", f"CREATE TABLE `{name}`.precious (x int)"))
    try:
        with pytest.raises(DatabaseConfigError) as refused:
            mysql.create_test_database(mysql_server_url, OWN)
        assert str(refused.value) == (
            f"database {name!r} already exists on {mysql_server_url.host}:{mysql_server_url.port or 3306}, "
            "created by someone else: it is left alone; drop or rename it yourself")
        assert _databases(mysql_server_url, name) == [name]  # untouched
    finally:
        asyncio.run(admin(mysql_server_url, f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"port": 1}, "cannot reach MySQL at 127.0.0.1:1 (Can't connect to MySQL server on "),
        ({"username": "no_such_user"}, "refused user 'no_such_user': Access denied for user 'no_such_user'"),
        ({"database": "no_such_database"}, "database 'no_such_database' does not exist on "),
    ],
    ids=["unreachable", "denied", "unknown-database"],
)
def test_connection_failures_are_one_line_without_the_password(mysql_server_url, change, expected):
    # a password where it cannot be right anyway (the unknown database needs a right one)
    url = mysql_server_url.set(**change) if "database" in change else mysql_server_url.set(password=SECRET, **change)
    if "port" in change:
        url = url.set(host="127.0.0.1")
    with pytest.raises(DatabaseConfigError) as refused:
        mysql.create_test_database(url, OWN)
    message = str(refused.value)
    assert expected in message and "\n" not in message
    assert SECRET not in message


def test_a_user_without_create_is_told_what_to_grant(mysql_server_url):
    user = f"recipes_nocreate_{os.getpid()}"
    asyncio.run(admin(mysql_server_url, f"DROP USER IF EXISTS '{user}'@'%'",
                       f"CREATE USER '{user}'@'%' IDENTIFIED BY '{SECRET}'",
                       f"GRANT SELECT ON `{mysql_server_url.database}`.* TO '{user}'@'%'"))
    try:
        with pytest.raises(DatabaseConfigError) as refused:
            mysql.create_test_database(mysql_server_url.set(username=user, password=SECRET), OWN)
        message = str(refused.value)
        assert f"user {user!r} may not create the test database" in message
        assert "GRANT ALL ON" in message and SECRET not in message
    finally:
        asyncio.run(admin(mysql_server_url, f"DROP USER IF EXISTS '{user}'@'%'"))


def test_a_url_without_a_database_is_refused(mysql_server_url):
    with pytest.raises(DatabaseConfigError, match="names no database: name one that exists"):
        mysql.create_test_database(mysql_server_url.set(database=""))


# -- in a test's transaction ----------------------------------------------------------------

@pytest.mark.backends("mysql")
@pytest.mark.asyncio
async def test_ddl_in_the_test_transaction_is_refused_before_it_commits(db_connection, db_url, observe):
    await db_connection.execute(insert(User).values(email="ada@example.com", name="ada"))

    with pytest.raises(ImplicitCommitError, match=r"commit the open transaction before CREATE"):
        await db_connection.execute(text("CREATE TABLE leaked (x int)"))
    with pytest.raises(ImplicitCommitError, match="before TRUNCATE"):
        await db_connection.execute(text("TRUNCATE TABLE users"))

    assert await observe("users") == 0  # nothing was committed: Ada is the test's alone
    (tables,) = await admin(db_url, "SHOW TABLES LIKE 'leaked'")
    assert tables == []
    # A temporary table commits nothing, and goes with the connection.
    await db_connection.execute(text("CREATE TEMPORARY TABLE scratch (x int)"))
    assert await db_connection.scalar(select(User.name)) == "ada"


@pytest.mark.backends("mysql")
def test_a_schema_qualified_model_is_refused_on_mysql(db_url):
    billing = MetaData()
    Table("invoices", billing, Column("id", Integer, primary_key=True), schema="billing")
    with pytest.raises(DatabaseConfigError) as refused:
        create_tables(TestDatabase(str(db_url), db_url), [billing])
    assert str(refused.value) == (
        "table billing.invoices: on MySQL the schema 'billing' is another database, outside the "
        "run's throwaway test database, which the plugin does not create; test the models that "
        "name a schema on PostgreSQL")
    assert _databases(db_url, "billing") == []
