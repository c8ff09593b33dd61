"""Narrow data access over the lender's records.

Every function takes an open `Session` and only flushes: the caller owns the
transaction (`models.db.session_scope`). Bad input raises `ValueError` naming the field.

Agents and the unassigned queue:
- An assignment row is *open* while `released_at` IS NULL; a loan has at most one open
  row. An open row with `agent_id` NULL is waiting in the unassigned queue.
- An agent's load is its number of open assignments. An agent is eligible when active
  and below `max_cases` (when set). The least-loaded eligible agent wins, ties by
  `agent_id`.
- Whenever capacity appears (an agent added or reactivated, a case released), queued
  rows are handed out oldest first, each to the then least-loaded eligible agent.
- Deactivating an agent releases its open cases (reason `agent_deactivated`) and
  re-assigns each to another eligible agent or back to the queue.

The collector's desk: `desk_records` reads a loan's promises, disputes, hardships,
contact preferences and logged contacts (as the workflow last wrote them);
`open_case_tasks` the open dispute_overdue / hardship_review tasks of an agent, of the
unassigned queue, or all of them.

The borrower's call ledger (`borrower_call`, the call caps across all of a borrower's
loans): `lock_borrower` serialises the check-and-record of one borrower's calls on
PostgreSQL (SQLite: `session_scope(immediate=True)`), `borrower_calls` reads the recent
ones, `record_call` / `release_call` / `mark_call_connected` keep it.

The outbox: `record_receipt` applies a provider's receipt (POST /receipts) to a
contact_attempt row: queued / accepted -> delivered / failed, never over a final status.

On PostgreSQL, every operation that changes assignments first locks the agent rows
(`lock_agents`), which serialises them; on SQLite use `session_scope(immediate=True)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, col, func, select

from models.tables import (
    FINAL_CONTACT_STATUSES,
    RECEIPT_STATUSES,
    Agent,
    Assignment,
    AuditLog,
    Borrower,
    BorrowerCall,
    BorrowerCreate,
    CaseTask,
    ContactAttempt,
    ContactLog,
    ContactPreference,
    Dispute,
    Hardship,
    InstallmentRow,
    Loan,
    Payment,
    PromiseToPay,
    utcnow,
)


def _require(value: str | None, field: str) -> str:
    if value is None or not str(value).strip():
        raise ValueError(f"{field} must not be empty")
    return value


# --- borrowers -----------------------------------------------------------------------


def upsert_borrower(session: Session, data: BorrowerCreate) -> Borrower:
    """Create or update a borrower's personal data (contact details are read by the
    contact activity at send time, so an update takes effect from the next contact)."""
    data = BorrowerCreate.model_validate(data.model_dump())  # re-validate (also models
    # built with model_construct)
    _require(data.borrower_id, "borrower_id")
    _require(data.name, "name")
    row = session.get(Borrower, data.borrower_id)
    values = data.model_dump(exclude={"borrower_id"})
    if row is None:
        row = Borrower(borrower_id=data.borrower_id, **values)
    else:
        for k, v in values.items():
            setattr(row, k, v)
        row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


def get_borrower(session: Session, borrower_id: str) -> Borrower | None:
    _require(borrower_id, "borrower_id")
    return session.get(Borrower, borrower_id)


# --- agents --------------------------------------------------------------------------


def lock_agents(session: Session) -> None:
    """PostgreSQL: lock every agent row (in agent_id order) until the transaction ends,
    serialising assignment changes. No-op on SQLite (use BEGIN IMMEDIATE there)."""
    if session.get_bind().dialect.name == "postgresql":
        session.exec(select(Agent.agent_id).order_by(col(Agent.agent_id)).with_for_update())


def add_agent(session: Session, agent_id: str, name: str, max_cases: int | None = None) -> Agent:
    """Add an agent (or update and reactivate an existing one), then hand queued cases to
    the active agents, least loaded first, oldest case first."""
    _require(agent_id, "agent_id")
    _require(name, "name")
    if max_cases is not None and max_cases < 1:
        raise ValueError("max_cases must be at least 1 when given")
    lock_agents(session)
    agent = session.get(Agent, agent_id)
    if agent is None:
        agent = Agent(agent_id=agent_id, name=name, max_cases=max_cases, active=True)
    else:
        agent.name = name
        agent.max_cases = max_cases
        agent.active = True
    session.add(agent)
    session.flush()
    assign_queued(session)
    return agent


def get_agent(session: Session, agent_id: str) -> Agent | None:
    _require(agent_id, "agent_id")
    return session.get(Agent, agent_id)


def list_agents(session: Session, *, active_only: bool = False) -> list[Agent]:
    stmt = select(Agent).order_by(col(Agent.agent_id))
    if active_only:
        stmt = stmt.where(col(Agent.active).is_(True))
    return list(session.exec(stmt).all())


def deactivate_agent(session: Session, agent_id: str, *, at: datetime | None = None) -> Agent:
    """Deactivate an agent; its open cases go to other eligible agents or the queue."""
    _require(agent_id, "agent_id")
    lock_agents(session)
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise ValueError(f"agent_id: unknown agent {agent_id!r}")
    now = at or utcnow()
    agent.active = False
    session.add(agent)
    session.flush()
    open_rows = session.exec(
        select(Assignment)
        .where(col(Assignment.agent_id) == agent_id, col(Assignment.released_at).is_(None))
        .order_by(col(Assignment.requested_at), col(Assignment.id))
    ).all()
    for old in open_rows:
        old.released_at = now
        old.release_reason = "agent_deactivated"
        session.add(old)
        session.flush()
        successor = least_loaded_active_agent(session)
        session.add(
            Assignment(
                idempotency_key=f"reassign:{old.id}",
                loan_id=old.loan_id,
                borrower_id=old.borrower_id,
                agent_id=successor.agent_id if successor else None,
                requested_at=old.requested_at,
                assigned_at=now if successor else None,
                days_past_due=old.days_past_due,
                overdue=old.overdue,
            )
        )
        session.flush()
    return agent


def agent_loads(session: Session) -> dict[str, int]:
    """Open assignments per agent (every agent listed, 0 when none)."""
    counts = dict(
        session.exec(
            select(Assignment.agent_id, func.count())
            .where(col(Assignment.agent_id).is_not(None), col(Assignment.released_at).is_(None))
            .group_by(col(Assignment.agent_id))
        ).all()
    )
    return {
        a: int(counts.get(a, 0))
        for a in session.exec(select(Agent.agent_id).order_by(col(Agent.agent_id))).all()
    }


def least_loaded_active_agent(session: Session) -> Agent | None:
    """The active agent with the fewest open assignments (ties: smallest agent_id),
    skipping agents at their `max_cases`; None when nobody is eligible."""
    load = (
        select(func.count(col(Assignment.id)))
        .where(
            col(Assignment.agent_id) == col(Agent.agent_id),
            col(Assignment.released_at).is_(None),
        )
        .correlate(Agent)
        .scalar_subquery()
    )
    stmt = (
        select(Agent)
        .where(col(Agent.active).is_(True))
        .where(sa.or_(col(Agent.max_cases).is_(None), load < col(Agent.max_cases)))
        .order_by(load, col(Agent.agent_id))
        .limit(1)
    )
    return session.exec(stmt).first()


# --- assignments ---------------------------------------------------------------------


def open_assignment(session: Session, loan_id: str) -> Assignment | None:
    """The loan's open assignment (with an agent or queued), if any."""
    _require(loan_id, "loan_id")
    return session.exec(
        select(Assignment).where(col(Assignment.loan_id) == loan_id, col(Assignment.released_at).is_(None))
    ).first()


def assignment_by_key(session: Session, key: str) -> Assignment | None:
    _require(key, "key")
    return session.exec(select(Assignment).where(col(Assignment.idempotency_key) == key)).first()


def queued_assignments(session: Session) -> list[Assignment]:
    """Cases waiting in the unassigned queue, oldest first."""
    stmt = (
        select(Assignment)
        .where(col(Assignment.agent_id).is_(None), col(Assignment.released_at).is_(None))
        .order_by(col(Assignment.requested_at), col(Assignment.id))
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(session.exec(stmt).all())


def assign_queued(session: Session, *, at: datetime | None = None) -> list[Assignment]:
    """Hand queued cases to eligible agents (least loaded first), oldest case first,
    until the queue or the capacity runs out. Returns the rows assigned."""
    now = at or utcnow()
    done: list[Assignment] = []
    for row in queued_assignments(session):
        agent = least_loaded_active_agent(session)
        if agent is None:
            break
        row.agent_id = agent.agent_id
        row.assigned_at = now
        session.add(row)
        session.flush()
        done.append(row)
    return done


def assignments_for_loan(session: Session, loan_id: str) -> list[Assignment]:
    _require(loan_id, "loan_id")
    return list(
        session.exec(
            select(Assignment).where(col(Assignment.loan_id) == loan_id).order_by(col(Assignment.id))
        ).all()
    )


# --- loans, payments, contacts -------------------------------------------------------


def get_loan(session: Session, loan_id: str) -> Loan | None:
    _require(loan_id, "loan_id")
    return session.get(Loan, loan_id)


def installments_for_loan(session: Session, loan_id: str) -> list[InstallmentRow]:
    _require(loan_id, "loan_id")
    return list(
        session.exec(
            select(InstallmentRow)
            .where(col(InstallmentRow.loan_id) == loan_id)
            .order_by(col(InstallmentRow.seq))
        ).all()
    )


def payments_for_loan(session: Session, loan_id: str) -> list[Payment]:
    _require(loan_id, "loan_id")
    return list(
        session.exec(select(Payment).where(col(Payment.loan_id) == loan_id).order_by(col(Payment.id))).all()
    )


def contact_by_key(session: Session, key: str) -> ContactAttempt | None:
    _require(key, "key")
    return session.exec(select(ContactAttempt).where(col(ContactAttempt.idempotency_key) == key)).first()


@dataclass(frozen=True)
class ReceiptResult:
    """What a receipt did: the row's status afterwards, and whether this receipt changed
    it (False: a repeat, or the row was already final)."""

    message_id: str
    status: str
    changed: bool


RECEIPT_DETAIL_LEN = 255


def record_receipt(
    session: Session, message_id: str, status: str, detail: str | None = None, at: datetime | None = None
) -> ReceiptResult:
    """A provider's receipt for the outbox row keyed `message_id` (the outbox key it got
    as its idempotency key). `status` is `delivered` or `failed` (else ValueError naming
    the field); an unknown `message_id` raises LookupError.

    Idempotent, and a final status (delivered / failed / suppressed) is never overwritten:
    receipts can arrive twice or out of order, and the first final word stands. A receipt
    for a row still `queued` (the worker died between sending and recording) settles it;
    the activity's retry then finds it final and does not send again. The row is locked
    (`FOR UPDATE` on PostgreSQL; SQLite: use `session_scope(immediate=True)`) so a receipt
    and the activity's own record of the send never overwrite each other."""
    _require(message_id, "message_id")
    if status not in RECEIPT_STATUSES:
        raise ValueError(f"status must be one of {', '.join(sorted(RECEIPT_STATUSES))}, not {status!r}")
    row = session.exec(
        select(ContactAttempt).where(col(ContactAttempt.idempotency_key) == message_id).with_for_update()
    ).first()
    if row is None:
        raise LookupError(f"message_id: no outbox message {message_id!r}")
    if row.status in FINAL_CONTACT_STATUSES:
        return ReceiptResult(message_id, row.status, changed=False)
    clipped = _clip(detail, RECEIPT_DETAIL_LEN)
    row.status = status
    row.receipt_at = at or utcnow()
    row.receipt_detail = clipped
    if status == "failed":
        row.reason = clipped or "failed"
    session.add(row)
    session.flush()
    return ReceiptResult(message_id, row.status, changed=True)


def _clip(value: str | None, max_len: int) -> str | None:
    if value is None or len(value) <= max_len:
        return value
    return value[: max_len - 1] + "…"


# --- the borrower's call ledger ---------------------------------------------------------

CALL_SOURCES = frozenset({"outbox", "logged"})


def lock_borrower(session: Session, borrower_id: str) -> Borrower | None:
    """The borrower's row, locked until the transaction ends (PostgreSQL `FOR UPDATE`), so
    two loans of one borrower check and record their calls one after the other."""
    _require(borrower_id, "borrower_id")
    return session.get(Borrower, borrower_id, with_for_update=True)


def borrower_calls(session: Session, borrower_id: str, since: datetime) -> list[BorrowerCall]:
    """The borrower's call attempts on all loans from `since` on, oldest first."""
    _require(borrower_id, "borrower_id")
    return list(
        session.exec(
            select(BorrowerCall)
            .where(col(BorrowerCall.borrower_id) == borrower_id, col(BorrowerCall.at) >= since)
            .order_by(col(BorrowerCall.at), col(BorrowerCall.id))
        ).all()
    )


def call_by_key(session: Session, key: str) -> BorrowerCall | None:
    _require(key, "key")
    return session.exec(select(BorrowerCall).where(col(BorrowerCall.key) == key)).first()


def record_call(
    session: Session,
    *,
    key: str,
    borrower_id: str,
    loan_id: str,
    line: str,
    at: datetime,
    connected: bool,
    source: str,
) -> bool:
    """One call attempt in the ledger, once per `key`: True when recorded now, False when
    it already was (a retry of the same call, or a log written again)."""
    for name, value in (("key", key), ("borrower_id", borrower_id), ("loan_id", loan_id), ("line", line)):
        _require(value, name)
    if source not in CALL_SOURCES:
        raise ValueError(f"source must be one of {', '.join(sorted(CALL_SOURCES))}, not {source!r}")
    if call_by_key(session, key) is not None:
        return False
    session.add(
        BorrowerCall(
            key=key,
            borrower_id=borrower_id,
            loan_id=loan_id,
            line=line,
            at=at,
            connected=connected,
            source=source,
        )
    )
    session.flush()
    return True


def release_call(session: Session, key: str) -> bool:
    """Take back a call attempt recorded before the call was placed, when it was not
    placed after all (the provider refused it, or it was deferred past the window)."""
    row = call_by_key(session, key)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def mark_call_connected(session: Session, key: str, connected: bool, loan_id: str | None = None) -> bool:
    """How an automated call went, once the IVR reports it: a connected call counts toward
    the cap on connected calls. False when the call is not in the ledger (or, with
    `loan_id`, is another loan's call)."""
    row = call_by_key(session, key)
    if row is None or (loan_id is not None and row.loan_id != loan_id):
        return False
    if row.connected != connected:
        row.connected = connected
        session.add(row)
        session.flush()
    return True


def contacts_for_loan(session: Session, loan_id: str) -> list[ContactAttempt]:
    _require(loan_id, "loan_id")
    return list(
        session.exec(
            select(ContactAttempt)
            .where(col(ContactAttempt.loan_id) == loan_id)
            .order_by(col(ContactAttempt.id))
        ).all()
    )


# --- the collector's desk and case tasks ---------------------------------------------


_Row = TypeVar("_Row", bound=SQLModel)


@dataclass
class DeskRows:
    """A loan's desk records, each list in the order they happened (then by row id)."""

    promises: list[PromiseToPay] = field(default_factory=list)
    disputes: list[Dispute] = field(default_factory=list)
    hardships: list[Hardship] = field(default_factory=list)
    preferences: list[ContactPreference] = field(default_factory=list)  # the last is in force
    contacts: list[ContactLog] = field(default_factory=list)


def desk_records(session: Session, loan_id: str) -> DeskRows:
    """The promises, disputes, hardships, contact preferences and logged contacts of a
    loan, as the workflow last wrote them."""
    _require(loan_id, "loan_id")

    def rows(table: type[_Row], when: str) -> list[_Row]:
        stmt = (
            select(table)
            .where(getattr(table, "loan_id") == loan_id)  # noqa: B009
            .order_by(getattr(table, when), getattr(table, "id"))  # noqa: B009
        )
        return list(session.exec(stmt).all())

    return DeskRows(
        promises=rows(PromiseToPay, "made_at"),
        disputes=rows(Dispute, "opened_at"),
        hardships=rows(Hardship, "approved_at"),
        preferences=rows(ContactPreference, "at"),
        contacts=rows(ContactLog, "at"),
    )


def open_case_tasks(
    session: Session, agent_id: str | None = None, *, unassigned: bool = False
) -> list[CaseTask]:
    """Open case tasks (dispute_overdue, hardship_review), oldest first: those of
    `agent_id` when given, those waiting in the unassigned queue when `unassigned`, else
    all of them."""
    if agent_id is not None and unassigned:
        raise ValueError("agent_id: give an agent or unassigned=True, not both")
    if agent_id is not None:
        _require(agent_id, "agent_id")
    stmt = select(CaseTask).where(col(CaseTask.status) == "open")
    if agent_id is not None:
        stmt = stmt.where(col(CaseTask.agent_id) == agent_id)
    elif unassigned:
        stmt = stmt.where(col(CaseTask.agent_id).is_(None))
    return list(session.exec(stmt.order_by(col(CaseTask.at), col(CaseTask.id))).all())


def close_case_tasks(
    session: Session,
    *,
    keys: Sequence[str] = (),
    loan_id: str | None = None,
    kind: str | None = None,
    status: str = "done",
) -> int:
    """Close open case tasks by key, or a loan's of one kind; returns how many closed.
    Closing a closed task changes nothing."""
    if not keys and loan_id is None:
        return 0
    stmt = select(CaseTask).where(col(CaseTask.status) == "open")
    if keys:
        stmt = stmt.where(col(CaseTask.idempotency_key).in_(list(keys)))
    if loan_id is not None:
        stmt = stmt.where(col(CaseTask.loan_id) == loan_id)
    if kind is not None:
        stmt = stmt.where(col(CaseTask.kind) == kind)
    rows = list(session.exec(stmt).all())
    for row in rows:
        row.status = status
        session.add(row)
    session.flush()
    return len(rows)


def finish_case_task(session: Session, task_id: int, by: str, *, at: datetime | None = None) -> CaseTask:
    """A collector marks a task done: the row's status, and an audit entry naming who."""
    _require(by, "by")
    task = session.get(CaseTask, task_id)
    if task is None:
        raise ValueError(f"task: no case task {task_id}")
    if task.status == "open":
        when = at or utcnow()
        task.status = "done"
        session.add(task)
        session.add(
            AuditLog(
                idempotency_key=f"{task.loan_id}/audit/task_done/{task.id}",
                loan_id=task.loan_id,
                at=when,
                event="task_done",
                detail=f"{task.kind} task {task.id} done by {by}",
                source=f"cli:{by}"[:128],
            )
        )
        session.flush()
    return task


def audit_log(
    session: Session, loan_id: str, *, events: Sequence[str] = (), limit: int = 1000
) -> list[AuditLog]:
    """A loan's audit log, oldest first (the latest `limit` entries), optionally only the
    given events: what a compliance officer reads to answer "why was this borrower not
    called on the 14th?" (`step_held`, `step_delayed`)."""
    _require(loan_id, "loan_id")
    stmt = select(AuditLog).where(col(AuditLog.loan_id) == loan_id)
    if events:
        stmt = stmt.where(col(AuditLog.event).in_(list(events)))
    rows = session.exec(stmt.order_by(col(AuditLog.at).desc(), col(AuditLog.id).desc()).limit(limit)).all()
    return list(reversed(rows))


def count_rows(session: Session, table: type, **where: object) -> int:
    """Count rows of a table model matching equality filters (for reports and tests)."""
    stmt = select(func.count()).select_from(table)
    for name, value in where.items():
        stmt = stmt.where(getattr(table, name) == value)
    return int(session.exec(stmt).one())


__all__: Sequence[str] = (
    "add_agent",
    "agent_loads",
    "assign_queued",
    "assignment_by_key",
    "assignments_for_loan",
    "contact_by_key",
    "contacts_for_loan",
    "count_rows",
    "deactivate_agent",
    "desk_records",
    "get_agent",
    "get_borrower",
    "get_loan",
    "installments_for_loan",
    "least_loaded_active_agent",
    "list_agents",
    "lock_agents",
    "open_assignment",
    "open_case_tasks",
    "payments_for_loan",
    "queued_assignments",
    "record_receipt",
    "upsert_borrower",
)
