"""The leaky handlers of the README's story, in the Python forms that leak for real.

Each keeps a reference the way real code does by accident, so CPython's refcounting
never closes the socket: an atexit "cleanup", a module-level cache, an Engine per call.
Configured from the environment by run_story.py.
"""

from __future__ import annotations

import atexit
import json
import os
from typing import Any

import pymysql
import requests
import sqlalchemy as sa

DB: dict[str, Any] = json.loads(os.environ.get("STORY_DB", "{}"))
HTTP_URL = os.environ.get("STORY_HTTP", "")
SA_URL = os.environ.get("STORY_SA_URL", "")
CACHE: list[Any] = []


def pymysql_atexit(event: dict[str, Any], context: Any) -> int:
    conn = pymysql.connect(**DB)
    atexit.register(conn.close)  # "cleanup" that runs only at exit: keeps conn alive
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])


def mysql_and_http_cached(event: dict[str, Any], context: Any) -> int:
    conn = pymysql.connect(**DB)
    session = requests.Session()
    CACHE.append((conn, session))  # a module-level cache "for later"
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    return session.get(HTTP_URL, timeout=5).status_code


def sqlalchemy_engine_per_call(event: dict[str, Any], context: Any) -> int:
    engine = sa.create_engine(SA_URL)
    CACHE.append(engine)
    with engine.connect() as conn:  # closed properly: back to the QueuePool, socket open
        return int(conn.execute(sa.text("SELECT 1")).scalar_one())


def raising_after_connect(event: dict[str, Any], context: Any) -> int:
    conn = pymysql.connect(**DB)
    session = requests.Session()
    session.get(HTTP_URL, timeout=5)
    CACHE.append((conn, session))
    raise RuntimeError(f"invocation {event['i']} failed after connecting")


# One per database driver: a connection per invocation, kept in a module-level cache.
# The servers come as JSON keyword arguments (STORY_DB: PyMySQL's, STORY_PG: libpq's).
PG: dict[str, Any] = json.loads(os.environ.get("STORY_PG", "{}"))


def _mysql() -> dict[str, Any]:
    return {k: DB[k] for k in ("host", "port", "user", "password")}


def psycopg2_kept(event: dict[str, Any], context: Any) -> int:
    import psycopg2

    conn = psycopg2.connect(**PG)
    CACHE.append(conn)
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])


async def asyncpg_kept(event: dict[str, Any], context: Any) -> int:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG["host"],
        port=PG["port"],
        user=PG["user"],
        password=PG["password"],
        database=PG["dbname"],
        ssl=False,
    )
    CACHE.append(conn)
    return int(await conn.fetchval("SELECT 1"))


def mysqlclient_kept(event: dict[str, Any], context: Any) -> int:
    import MySQLdb

    conn = MySQLdb.connect(**_mysql(), database=DB["database"])
    CACHE.append(conn)
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    return int(cursor.fetchone()[0])


def mysql_connector_kept(event: dict[str, Any], context: Any) -> int:
    import mysql.connector

    conn = mysql.connector.connect(**_mysql(), database=DB["database"], ssl_disabled=True)
    CACHE.append(conn)
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    return int(cursor.fetchone()[0])


async def aiomysql_kept(event: dict[str, Any], context: Any) -> int:
    import aiomysql

    conn = await aiomysql.connect(**_mysql(), db=DB["database"])
    CACHE.append(conn)
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT 1")
        return int((await cursor.fetchone())[0])
