"""Database fixtures, for conftest.py (`from tests.db_fixtures import *`) or direct import.

- `db_url` (parametrized "sqlite" / "postgres"): a fresh, EMPTY database per test.
  sqlite: a file in tmp_path. postgres: a new schema in the database of
  TEST_POSTGRES_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/test), selected
  through `search_path` in the URL's `options`, dropped after the test.
  Postgres unreachable: the postgres case fails when CI=true, is skipped otherwise.
- `engine`: `make_engine(db_url)` with the schema migrated to head (`upgrade_schema`).
- `session`: a `sqlmodel.Session` on `engine` (expire_on_commit=False), closed after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from models.db import make_engine, normalize_url, upgrade_schema

DEFAULT_TEST_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgres")


def postgres_base_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL") or DEFAULT_TEST_POSTGRES_URL


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@cache
def _postgres_problem() -> str | None:
    """None when postgres answers, else why not (checked once per session)."""
    try:
        engine = make_engine(postgres_base_url(), connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def postgres_schema_url(schema: str) -> str:
    """The test postgres URL with `search_path` set to `schema`."""
    url = normalize_url(postgres_base_url())
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@contextmanager
def fresh_postgres_schema(prefix: str) -> Iterator[str]:
    """A new schema `<prefix>_<hex>` in the PostgreSQL test database, dropped afterwards.
    PostgreSQL unreachable: the test is skipped, but fails in CI."""
    problem = _postgres_problem()
    if problem is not None:
        msg = f"PostgreSQL at {make_url(postgres_base_url())!r} unreachable: {problem}"
        if _in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    schema = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = make_engine(postgres_base_url())
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "collections.db"
        yield f"sqlite:///{path}"
        return
    with fresh_postgres_schema("t") as schema:
        yield postgres_schema_url(schema)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    upgrade_schema(db_url)
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s
