"""Record-keeping activities: the loan as disbursed, its projection, booked payments, the
audit log, the collector's desk (promises, disputes, hardships, contact preferences,
logged contacts) and the policy a new loan is collected under.

Each write is idempotent by a business key (loan_id, payment_id, the audit key, the
projection's `as_of`, (loan_id, id) of a desk record), so a retry or a replaced worker
never writes a record twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, func, select
from temporalio import activity

from activities._support import (
    as_utc,
    clip,
    insert_once,
    insert_unless_present,
    non_retryable,
    require,
    unit_of_work,
    upsert_by_key,
)
from domain.desk import CALL_RESULT_PREFIX, LOGGED_CALL_LINE
from domain.enums import CollectionStage, ContactResult, DisputeStatus, LoggedChannel
from domain.planner import dispute_overdue_key
from domain.policy import Policy, PolicyError, load_policy
from models import repo
from models.tables import (
    ID_LEN,
    KEY_LEN,
    REF_LEN,
    AuditLog,
    ContactLog,
    ContactPreference,
    Dispute,
    Hardship,
    InstallmentRow,
    Loan,
    Payment,
    PromiseToPay,
)
from models.wire import (
    AuditEvent,
    CaseEvents,
    ContactLogRecord,
    DeskRecords,
    InstallmentView,
    LoanProjection,
    LoanRecord,
    PaymentBooking,
    PolicyRequest,
)


def _upsert_installments(
    session: Session, loan_id: str, views: list[InstallmentView], *, overwrite: bool
) -> None:
    existing = {
        row.seq: row
        for row in session.exec(select(InstallmentRow).where(col(InstallmentRow.loan_id) == loan_id))
    }
    wanted = {v.seq for v in views}
    for v in views:
        row = existing.get(v.seq)
        if row is None:
            row = InstallmentRow(loan_id=loan_id, seq=v.seq, due_date=v.due_date, principal=0, interest=0)
        elif not overwrite:
            continue
        row.due_date = v.due_date
        row.principal = v.principal
        row.interest = v.interest
        row.paid = v.paid
        row.status = v.status.value
        session.add(row)
    if overwrite:
        for seq, row in existing.items():
            if seq not in wanted:  # the schedule shrank (restructuring)
                session.delete(row)
    session.flush()


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


# A desk record as a row: (table, its id column, the record's id, the other columns).
DeskRow = tuple[type[SQLModel], str, str, dict[str, Any]]


def _desk_rows(desk: DeskRecords) -> list[DeskRow]:
    rows: list[DeskRow] = []
    for p in desk.promises:
        rows.append(
            (
                PromiseToPay,
                "promise_id",
                p.promise_id,
                {
                    "loan_id": p.loan_id,
                    "borrower_id": p.borrower_id,
                    "amount": p.amount,
                    "currency": p.currency,
                    "promised_date": p.promised_date,
                    "agent_id": p.agent_id,
                    "status": p.status.value,
                    "made_at": as_utc(p.made_at),
                    "settled_at": _opt_utc(p.settled_at),
                },
            )
        )
    for d in desk.disputes:
        rows.append(
            (
                Dispute,
                "dispute_id",
                d.dispute_id,
                {
                    "loan_id": d.loan_id,
                    "borrower_id": d.borrower_id,
                    "reason": d.reason.value,
                    "opened_by": d.opened_by,
                    "opened_at": as_utc(d.opened_at),
                    "status": d.status.value,
                    "escalated": d.escalated,
                    "resolved_by": d.resolved_by,
                    "resolved_at": _opt_utc(d.resolved_at),
                },
            )
        )
    for h in desk.hardships:
        rows.append(
            (
                Hardship,
                "hardship_id",
                h.hardship_id,
                {
                    "loan_id": h.loan_id,
                    "borrower_id": h.borrower_id,
                    "reason": h.reason.value,
                    "starts_on": h.starts_on,
                    "until": h.until,
                    "approved_by": h.approved_by,
                    "approval_ref": h.approval_ref,
                    "approved_at": as_utc(h.approved_at),
                    "status": h.status.value,
                    "ended_by": h.ended_by,
                    "ended_at": _opt_utc(h.ended_at),
                },
            )
        )
    for pref in desk.preferences:
        rows.append(
            (
                ContactPreference,
                "preference_id",
                pref.preference_id,
                {
                    "loan_id": pref.loan_id,
                    "borrower_id": pref.borrower_id,
                    "channels": [c.value for c in pref.channels],
                    "set_by": pref.set_by,
                    "at": as_utc(pref.at),
                },
            )
        )
    for c in desk.contacts:
        rows.append(
            (
                ContactLog,
                "contact_id",
                c.contact_id,
                {
                    "loan_id": c.loan_id,
                    "borrower_id": c.borrower_id,
                    "agent_ids": list(c.agent_ids),
                    "channel": c.channel.value,
                    "result": c.result.value,
                    "reason": c.reason.value if c.reason is not None else None,
                    "at": as_utc(c.at),
                },
            )
        )
    return rows


def _ledger_calls(session: Session, contacts: Sequence[ContactLogRecord]) -> None:
    """Logged calls into the borrower's call ledger, so the caps hold across loans for
    people too: a collector's call is a new attempt; the IVR's report of an automated call
    (contact `ivr:<outbox key>`) only says whether that call, already in the ledger,
    connected. Idempotent: each call is keyed."""
    for c in contacts:
        if c.channel is not LoggedChannel.VOICE:
            continue
        reached = c.result is ContactResult.REACHED
        if c.contact_id.startswith(CALL_RESULT_PREFIX):
            placed = c.contact_id.removeprefix(CALL_RESULT_PREFIX)
            # Only this loan's own call (a report naming another loan's is a call logged
            # on this one, found by review).
            if repo.mark_call_connected(session, placed, reached, loan_id=c.loan_id):
                continue
        repo.record_call(
            session,
            key=f"log:{c.loan_id}/{c.contact_id}",
            borrower_id=c.borrower_id,
            loan_id=c.loan_id,
            line=LOGGED_CALL_LINE,
            at=as_utc(c.at),
            connected=reached,
            source="logged",
        )


class RecordActivities:
    """The lender's records of a loan (synchronous: run on a ThreadPoolExecutor)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="record_loan")
    def record_loan(self, rec: LoanRecord) -> None:
        """Insert the loan and its schedule as disbursed. Idempotent: a second call updates
        the contract terms and adds missing installments, but never touches the projection
        (stage, balances, installment progress) written by sync_loan."""
        s = rec.start
        require(s.loan_id, "loan_id", ID_LEN)
        require(s.borrower_id, "borrower_id")

        def work(session: Session) -> None:
            loan = session.get(Loan, s.loan_id)
            if loan is None:
                loan = Loan(
                    loan_id=s.loan_id,
                    borrower_id=s.borrower_id,
                    product=s.product.value,
                    currency=s.currency,
                    principal=s.principal,
                    annual_rate_bps=s.annual_rate_bps,
                    term_months=s.term_months,
                    repayment_method=s.repayment_method.value,
                    disbursed_on=s.disbursed_on,
                    first_due_date=rec.first_due_date,
                    timezone=s.timezone,
                    policy=s.policy,
                    stage=CollectionStage.CURRENT.value,
                    outstanding_principal=s.principal,
                    outstanding_total=s.principal,
                )
            elif loan.closed:
                # A loan id is never reused: a second workflow for a loan already collected
                # (started without the client's reject-duplicate policy) stops here.
                raise non_retryable(
                    f"loan_id: loan {s.loan_id!r} is closed; a loan id is never reused", "LoanConflict"
                )
            elif loan.borrower_id != s.borrower_id:
                raise non_retryable(
                    f"loan_id: loan {s.loan_id!r} is already recorded for another borrower",
                    "LoanConflict",
                )
            else:
                loan.product = s.product.value
                loan.currency = s.currency
                loan.principal = s.principal
                loan.annual_rate_bps = s.annual_rate_bps
                loan.term_months = s.term_months
                loan.repayment_method = s.repayment_method.value
                loan.disbursed_on = s.disbursed_on
                loan.first_due_date = rec.first_due_date
                loan.timezone = s.timezone
                loan.policy = s.policy
            session.add(loan)
            session.flush()
            _upsert_installments(session, s.loan_id, rec.installments, overwrite=False)

        insert_once(self.engine, work)

    @activity.defn(name="sync_loan")
    def sync_loan(self, proj: LoanProjection) -> None:
        """Update the loan projection and its installments. Last writer by `as_of`: a
        projection older than the stored one is ignored; an equal one is re-applied."""
        require(proj.loan_id, "loan_id")
        as_of = as_utc(proj.as_of)
        with unit_of_work(self.engine) as session:
            stmt = select(Loan).where(col(Loan.loan_id) == proj.loan_id)
            if self.engine.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            loan = session.exec(stmt).first()
            if loan is None:
                raise non_retryable(
                    f"loan_id: loan {proj.loan_id!r} is not recorded (record_loan first)",
                    "LoanNotRecorded",
                )
            if loan.updated_at is not None and as_of < loan.updated_at:
                return
            o = proj.outstanding
            loan.stage = proj.stage.value
            loan.days_past_due = proj.days_past_due
            loan.outstanding_principal = o.principal
            loan.outstanding_interest = o.interest
            loan.outstanding_penalty = o.penalty
            loan.outstanding_fee = o.fee
            loan.outstanding_total = o.total
            loan.overdue = proj.overdue
            loan.assigned_agent = proj.assigned_agent
            loan.next_action_kind = proj.next_action_kind.value if proj.next_action_kind else None
            loan.next_action_at = as_utc(proj.next_action_at) if proj.next_action_at else None
            loan.closed = proj.closed
            loan.updated_at = as_of
            if proj.closed:  # paid off: a hardship's review has nothing left to review
                repo.close_case_tasks(session, loan_id=proj.loan_id, kind="hardship_review", status="closed")
            session.add(loan)
            session.flush()
            _upsert_installments(session, proj.loan_id, proj.installments, overwrite=True)

    @activity.defn(name="book_payment")
    def book_payment(self, p: PaymentBooking) -> bool:
        """Book a payment, unique per loan by (loan_id, payment_id), the key the workflow
        deduplicates by. True when booked now, False when this loan had it already
        (nothing is written twice). A payment_id already booked for ANOTHER loan is still
        booked for this one (its workflow applied it: the ledger must agree), with an
        audit entry `payment_id_reused` naming both loans for reconciliation, in the same
        transaction (so exactly once)."""
        require(p.payment_id, "payment_id", 128)
        require(p.loan_id, "loan_id", ID_LEN)
        postgres = self.engine.dialect.name == "postgresql"

        def work(session: Session) -> bool:
            if postgres:
                # Serialise bookings of one payment_id across loans, so that of two loans
                # booking it at once the second sees the first (SQLite: BEGIN IMMEDIATE).
                # Two-key advisory lock (class 0x10A9, hashtext of the id): two-key locks
                # never collide with the one-key migration lock of models/db.py.
                session.exec(select(func.pg_advisory_xact_lock(0x10A9, func.hashtext(p.payment_id))))
            booked = set(session.exec(select(Payment.loan_id).where(col(Payment.payment_id) == p.payment_id)))
            if p.loan_id in booked:
                return False
            session.add(
                Payment(
                    payment_id=p.payment_id,
                    loan_id=p.loan_id,
                    amount=p.amount,
                    currency=p.currency,
                    paid_at=as_utc(p.paid_at),
                    channel=clip(p.channel, 64),
                    alloc_penalty=p.allocation.penalty,
                    alloc_fee=p.allocation.fee,
                    alloc_interest=p.allocation.interest,
                    alloc_principal=p.allocation.principal,
                )
            )
            if booked:
                others = ", ".join(sorted(booked))
                session.add(
                    AuditLog(
                        idempotency_key=f"{p.loan_id}/audit/payment_id_reused/{p.payment_id}",
                        loan_id=p.loan_id,
                        at=as_utc(p.paid_at),  # recorded_at: when it was noticed
                        event="payment_id_reused",
                        detail=(
                            f"payment_id {p.payment_id!r} ({p.amount} {p.currency} minor units) booked for "
                            f"loan {p.loan_id} is also booked for loan {others}: one gateway id on two "
                            "loans; reconcile with the payment gateway"
                        ),
                        source="activity:book_payment",
                    )
                )
            session.flush()
            return True

        return insert_once(self.engine, work)

    @activity.defn(name="write_audit")
    def write_audit(self, ev: AuditEvent) -> None:
        """The case's audit log, one row per key."""
        require(ev.key, "key", KEY_LEN)
        require(ev.loan_id, "loan_id")
        require(ev.event, "event")
        insert_unless_present(
            self.engine,
            AuditLog,
            "idempotency_key",
            lambda: AuditLog(
                idempotency_key=ev.key,
                loan_id=ev.loan_id,
                at=as_utc(ev.at),
                event=clip(ev.event, 64) or "",
                detail=ev.detail,
                source=clip(ev.source, 128) or "",
            ),
        )

    def write_desk(self, desk: DeskRecords) -> None:
        """The collector's desk records as the workflow sends them (each as it stands), in
        one transaction: a row per (loan_id, id) is inserted, or brought up to date
        (status, escalated, resolved_*/ended_*, settled_at, channels...). Latest wins: the
        workflow always sends the current state, never an older one. Writing the same
        records again changes nothing (not even `updated_at`)."""
        rows = _desk_rows(desk)
        for _table, id_field, ident, values in rows:
            require(values["loan_id"], "loan_id", ID_LEN)
            require(ident, id_field, REF_LEN)

        resolved = [
            dispute_overdue_key(d.loan_id, d.dispute_id)
            for d in desk.disputes
            if d.status is not DisputeStatus.OPEN
        ]

        def work(session: Session) -> None:
            for table, id_field, ident, values in rows:
                key = {"loan_id": values["loan_id"], id_field: ident}
                upsert_by_key(session, table, key, {k: v for k, v in values.items() if k != "loan_id"})
            # A dispute resolved: its escalation task is done.
            repo.close_case_tasks(session, keys=resolved, status="resolved")
            _ledger_calls(session, desk.contacts)

        insert_once(self.engine, work)

    @activity.defn(name="record_case_events")
    def record_case_events(self, events: CaseEvents) -> None:
        """What the workflow writes down after handling messages or acting: payments
        booked, audit entries, the collector's desk records and the loan projection. Each
        part is idempotent by its own key (the desk rows are written together in one
        transaction), so a retry after a partial write completes the rest and duplicates
        nothing."""
        for booking in events.payments:
            self.book_payment(booking)
        for entry in events.audit:
            self.write_audit(entry)
        if events.desk:
            self.write_desk(events.desk)
        if events.projection is not None:
            self.sync_loan(events.projection)

    @activity.defn(name="load_policy")
    def load_policy(self, req: PolicyRequest) -> Policy:
        """The policy a new loan is collected under (recorded in its history)."""
        try:
            return load_policy(req.name, req.product.value)
        except PolicyError as exc:
            raise non_retryable(str(exc), "InvalidPolicy") from exc
