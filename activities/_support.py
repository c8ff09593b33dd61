"""Small helpers shared by the activity modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError, StatementError
from sqlmodel import Session, SQLModel, and_, select
from temporalio.exceptions import ApplicationError

from models.db import session_scope

T = TypeVar("T")

INVALID_INPUT = "InvalidInput"


def non_retryable(message: str, error_type: str = INVALID_INPUT) -> ApplicationError:
    """An error that will never succeed on retry."""
    return ApplicationError(message, type=error_type, non_retryable=True)


def require(value: str | None, field: str, max_len: int | None = None) -> str:
    """Non-empty (and at most `max_len` characters), else a non-retryable error naming
    the field."""
    if value is None or not value.strip():
        raise non_retryable(f"{field} must not be empty")
    if max_len is not None and len(value) > max_len:
        raise non_retryable(f"{field} must be at most {max_len} characters")
    return value


def clip(value: str | None, max_len: int) -> str | None:
    return value if value is None or len(value) <= max_len else value[: max_len - 1] + "…"


def as_utc(value: datetime) -> datetime:
    """Aware UTC (a naive value is taken to be UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """A write transaction (SQLite: BEGIN IMMEDIATE). A value the database or its driver
    refuses (DataError: too long, out of range; OverflowError / ValueError: an integer
    beyond 64 bits, a NUL character) will never fit: non-retryable."""
    try:
        with session_scope(engine, immediate=True) as session:
            yield session
    except DataError as e:
        raise non_retryable(f"invalid data: {clip(str(e.orig), 500)}", "InvalidData") from e
    except StatementError as e:
        # A value the driver cannot even bind (an int beyond 64 bits, a NUL in a string
        # on PostgreSQL) will never fit either.
        if isinstance(e.orig, OverflowError | ValueError):
            raise non_retryable(f"invalid data: {clip(str(e.orig), 500)}", "InvalidData") from e
        raise
    except (OverflowError, ValueError) as e:
        raise non_retryable(f"invalid data: {clip(str(e), 500)}", "InvalidData") from e


def insert_once(engine: Engine, work: Callable[[Session], T], attempts: int = 3) -> T:
    """Run `work` in a write transaction; when it loses a race on a unique key
    (IntegrityError), run it again so it finds the winner's row."""
    for attempt in range(attempts):
        try:
            with unit_of_work(engine) as session:
                return work(session)
        except IntegrityError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def insert_unless_present(
    engine: Engine, table: type[SQLModel], key_field: str, build: Callable[[], SQLModel]
) -> bool:
    """Idempotent insert by business key: the row of `table` whose unique `key_field`
    equals that of `build()` is left as it is; otherwise `build()` is inserted. True when
    inserted now, False when it was already there. A writer that loses the race on the
    unique key rereads and finds the winner's row (False)."""
    key = getattr(build(), key_field)
    column = getattr(table, key_field)

    def work(session: Session) -> bool:
        if session.exec(select(table).where(column == key)).first() is not None:
            return False
        session.add(build())  # a fresh row per attempt: a rolled-back one is not reused
        session.flush()
        return True

    return insert_once(engine, work)


def upsert_by_key(
    session: Session, table: type[SQLModel], key: dict[str, Any], values: dict[str, Any]
) -> bool:
    """Insert the row of `table` identified by the unique columns `key` with `values`, or
    bring the existing one up to date (latest wins). Only flushes: run it in
    `insert_once`, so a writer that loses the race on the unique key runs again and
    updates the winner's row. A row that already holds `values` is left untouched (and
    its `updated_at`, when the table has one, only moves when a value changed). True when
    something was written."""
    where = and_(*(getattr(table, name) == value for name, value in key.items()))
    row = session.exec(select(table).where(where)).first()
    if row is None:
        session.add(table(**key, **values))
        session.flush()
        return True
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    if not changed:
        return False
    for name, value in changed.items():
        setattr(row, name, value)
    if "updated_at" in table.model_fields:
        setattr(row, "updated_at", utcnow())  # noqa: B010
    session.add(row)
    session.flush()
    return True
