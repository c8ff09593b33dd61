"""Engine, sessions and schema migrations.

- `default_database_url()`: env `DATABASE_URL`, else a SQLite file `./collections.db`.
- `make_engine(url)`: SQLite (WAL, foreign keys, busy timeout, serialised writers) or
  PostgreSQL through psycopg 3 (`postgresql://` is rewritten to `postgresql+psycopg://`).
- `upgrade_schema(url_or_engine)`: Alembic `upgrade head` from `migrations/`,
  programmatically (no alembic.ini needed; one is provided at the repo root for the CLI).
- `session_scope(engine)`: a session that commits on success and rolls back on error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

DEFAULT_DATABASE_URL = "sqlite:///./collections.db"
SQLITE_BUSY_TIMEOUT_MS = 10_000
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Arbitrary constant: serialises concurrent `upgrade head` runs on one PostgreSQL database.
_PG_MIGRATION_LOCK_ID = 0x10A9C011


def default_database_url() -> str:
    """`DATABASE_URL` from the environment, else a SQLite file in the working directory."""
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; plain `postgresql://` / `postgres://` become
    `postgresql+psycopg://` (psycopg 3 is the only PostgreSQL driver installed)."""
    if isinstance(url, str):
        if not url.strip():
            raise ValueError("database url must not be empty")
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def _is_memory_sqlite(u: URL) -> bool:
    return u.get_backend_name() == "sqlite" and (u.database in (None, "", ":memory:"))


def make_engine(url: str | URL | None = None, **kwargs: Any) -> Engine:
    """Create an engine for `url` (default: `default_database_url()`).

    SQLite: WAL journal, `foreign_keys=ON`, `busy_timeout`, usable from worker threads.
    Transactions keep pysqlite's default (reads outside a transaction, a write lock
    only from the first write on) except on connections carrying the execution option
    `sqlite_begin="IMMEDIATE"` (see `session_scope(..., immediate=True)`): those take
    the write lock at BEGIN, so read-then-write units (idempotency checks,
    least-loaded agent) are serialised between threads and processes.
    An in-memory SQLite URL uses one shared connection (StaticPool).
    PostgreSQL: psycopg 3, `pool_pre_ping`.
    """
    u = normalize_url(url if url is not None else default_database_url())
    backend = u.get_backend_name()
    if backend == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        if _is_memory_sqlite(u):
            kwargs.setdefault("poolclass", StaticPool)
        else:
            Path(u.database or "").expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(u, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine, wal=not _is_memory_sqlite(u))
        return engine
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        return sa.create_engine(u, **kwargs)
    raise ValueError(f"database url: unsupported backend {backend!r} (use sqlite or postgresql)")


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cur = dbapi_connection.cursor()
        try:
            if wal:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION)
        if mode in ("IMMEDIATE", "EXCLUSIVE", "DEFERRED"):
            conn.exec_driver_sql(f"BEGIN {mode}")


SQLITE_BEGIN_OPTION = "sqlite_begin"


@contextmanager
def session_scope(engine: Engine, *, immediate: bool = False) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any exception.
    Objects stay readable after commit (`expire_on_commit=False`).

    `immediate=True`: on SQLite the transaction starts with `BEGIN IMMEDIATE` (the
    write lock is taken first, so a read-check-write sequence cannot interleave with
    another writer); no effect on PostgreSQL (use row locks there)."""
    session = Session(engine, expire_on_commit=False)
    try:
        if immediate and engine.dialect.name == "sqlite":
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str | URL | None = None) -> Any:
    """An Alembic Config pointing at `migrations/`, independent of the working directory."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option(
            "sqlalchemy.url",
            normalize_url(url).render_as_string(hide_password=False).replace("%", "%%"),
        )
    return cfg


def upgrade_schema(url: str | URL | Engine | None = None, revision: str = "head") -> None:
    """Bring the schema up to `revision` (default head). Idempotent; safe to run at every
    worker start. On PostgreSQL concurrent callers are serialised by an advisory lock."""
    from alembic import command

    engine = url if isinstance(url, Engine) else make_engine(url)
    try:
        cfg = alembic_config()
        conn_cm = (
            engine.connect().execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            if engine.dialect.name == "sqlite"
            else engine.connect()
        )
        with conn_cm as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK_ID)))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if not isinstance(url, Engine):
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The schema revision stamped in the database (None on an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
