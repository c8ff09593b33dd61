"""Case activities: collector assignment and release, and case filings (legal
referral, credit bureau notice/report/update, charge-off, field visit, and the tasks a
hold leads to: dispute overdue, hardship review). One row per business key: a retry or
a replaced worker never assigns or files twice."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select
from temporalio import activity

from activities._support import as_utc, insert_once, insert_unless_present, non_retryable, require, utcnow
from domain.enums import ActionKind
from models import repo
from models.tables import (
    KEY_LEN,
    Assignment,
    CaseTask,
    ChargeOff,
    CreditBureauRecord,
    FieldVisitTask,
    LegalReferral,
)
from models.wire import AgentOutcome, AgentRelease, AgentRequest, CaseFiling

# --- agents --------------------------------------------------------------------------


def _outcome(row: Assignment) -> AgentOutcome:
    return AgentOutcome(agent_id=row.agent_id, queued=row.agent_id is None)


# --- filings -------------------------------------------------------------------------

_CREDIT_KIND = {
    ActionKind.CREDIT_NOTICE: "notice",
    ActionKind.CREDIT_REPORT: "report",
    ActionKind.CREDIT_UPDATE: "update",
}
# Work for a person, in `case_task`: to the filing's agent_id, or the queue (None).
TASK_KINDS = frozenset({ActionKind.DISPUTE_OVERDUE, ActionKind.HARDSHIP_REVIEW})
FILING_KINDS = frozenset(
    {ActionKind.LEGAL_REFERRAL, ActionKind.CHARGE_OFF, ActionKind.FIELD_VISIT, *_CREDIT_KIND, *TASK_KINDS}
)


def _filing_row(f: CaseFiling) -> SQLModel:
    at = as_utc(f.at)
    o = f.outstanding
    common: dict[str, Any] = {"idempotency_key": f.key, "loan_id": f.loan_id, "borrower_id": f.borrower_id}
    if f.kind == ActionKind.LEGAL_REFERRAL:
        return LegalReferral(
            **common,
            referred_at=at,
            days_past_due=f.days_past_due,
            overdue=f.overdue,
            outstanding_principal=o.principal,
            outstanding_interest=o.interest,
            outstanding_penalty=o.penalty,
            outstanding_fee=o.fee,
            outstanding_total=o.total,
            currency=f.currency,
            detail=f.detail,
        )
    if f.kind in _CREDIT_KIND:
        return CreditBureauRecord(
            **common,
            kind=_CREDIT_KIND[f.kind],
            at=at,
            days_past_due=f.days_past_due,
            overdue=f.overdue,
            outstanding_total=o.total,
            currency=f.currency,
            detail=f.detail,
        )
    if f.kind == ActionKind.CHARGE_OFF:
        return ChargeOff(
            **common,
            at=at,
            days_past_due=f.days_past_due,
            principal=o.principal,
            interest=o.interest,
            penalty=o.penalty,
            fee=o.fee,
            amount=o.total,
            currency=f.currency,
            detail=f.detail,
        )
    if f.kind == ActionKind.FIELD_VISIT:
        return FieldVisitTask(
            **common,
            at=at,
            days_past_due=f.days_past_due,
            overdue=f.overdue,
            currency=f.currency,
            detail=f.detail,
        )
    if f.kind in TASK_KINDS:
        return CaseTask(
            **common,
            kind=f.kind.value,
            agent_id=f.agent_id,
            at=at,
            days_past_due=f.days_past_due,
            overdue=f.overdue,
            currency=f.currency,
            detail=f.detail,
        )
    raise non_retryable(f"kind: {f.kind.value!r} is not a case filing", "UnknownFilingKind")


class CaseActivities:
    """Who holds a case, and what is filed for it (synchronous: run on a
    ThreadPoolExecutor)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="assign_agent")
    def assign_agent(self, req: AgentRequest) -> AgentOutcome:
        """The loan's collector. An open assignment (from an earlier call, or a queued row
        that an agent has picked up since) is returned as it is; a queued one is offered to
        the least-loaded eligible agent again. Otherwise the least-loaded active agent gets
        the case, or, with nobody eligible, it waits in the unassigned queue
        (AgentOutcome(agent_id=None, queued=True))."""
        require(req.key, "key", KEY_LEN)
        require(req.loan_id, "loan_id")

        def work(session: Session) -> AgentOutcome:
            # The nightly check of a case that has its agent reads without locking the
            # agents: only a case that needs an agent competes for one.
            held = repo.open_assignment(session, req.loan_id)
            if held is not None and held.agent_id is not None:
                return _outcome(held)
            repo.lock_agents(session)
            row = repo.open_assignment(session, req.loan_id)
            if row is not None:
                if row.agent_id is None:
                    repo.assign_queued(session)
                    session.refresh(row)
                return _outcome(row)
            by_key = repo.assignment_by_key(session, req.key)
            if by_key is not None:  # same request after the case was released: answer as then
                return _outcome(by_key)
            agent = repo.least_loaded_active_agent(session)
            at = as_utc(req.at)
            row = Assignment(
                idempotency_key=req.key,
                loan_id=req.loan_id,
                borrower_id=req.borrower_id,
                agent_id=agent.agent_id if agent else None,
                requested_at=at,
                assigned_at=at if agent else None,
                days_past_due=req.days_past_due,
                overdue=req.overdue,
            )
            session.add(row)
            session.flush()
            return _outcome(row)

        return insert_once(self.engine, work)

    @activity.defn(name="release_agent")
    def release_agent(self, rel: AgentRelease) -> None:
        """Close the loan's open assignment (with an agent or queued). Idempotent: a repeat
        with the same key, or with nothing open, changes nothing. Freed capacity goes to
        the unassigned queue."""
        require(rel.key, "key", KEY_LEN)
        require(rel.loan_id, "loan_id")

        def work(session: Session) -> None:
            repo.lock_agents(session)
            done = session.exec(select(Assignment).where(col(Assignment.release_key) == rel.key)).first()
            if done is not None:
                return
            open_rows = session.exec(
                select(Assignment).where(
                    col(Assignment.loan_id) == rel.loan_id, col(Assignment.released_at).is_(None)
                )
            ).all()
            if not open_rows:
                return
            for row in open_rows:
                row.released_at = as_utc(rel.at)
                row.release_reason = rel.reason
                row.release_key = rel.key
                session.add(row)
            session.flush()
            repo.assign_queued(session, at=utcnow())

        insert_once(self.engine, work)

    @activity.defn(name="file_case_action")
    def file_case_action(self, filing: CaseFiling) -> None:
        """One row per key in the table for `filing.kind` (a dispute_overdue or
        hardship_review filing: a `case_task` for `filing.agent_id`, or the unassigned
        queue when None); a repeat adds nothing."""
        require(filing.key, "key", KEY_LEN)
        require(filing.loan_id, "loan_id")
        table = type(_filing_row(filing))  # validates the kind before touching the database
        insert_unless_present(self.engine, table, "idempotency_key", lambda: _filing_row(filing))
