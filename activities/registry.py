"""The worker's activities, bound to a database engine and a deliverer.

    acts = CollectionActivities(make_engine(url), LoggingDeliverer())
    Worker(client, task_queue=..., workflows=[...], activities=acts.all(),
           activity_executor=ThreadPoolExecutor(max_workers=...))

The activities are SYNCHRONOUS (`def`): they use blocking SQLAlchemy sessions and a
blocking deliverer, so the worker MUST be given an `activity_executor`
(a `concurrent.futures.ThreadPoolExecutor`). Every activity is idempotent by its
payload's key (payment_id for book_payment, loan_id + as_of for sync_loan); input that
can never succeed raises `ApplicationError(non_retryable=True)`, database outages and
deliverer exceptions are retryable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity

from activities import audit, cases, contacts, ledger, names
from activities._support import non_retryable
from activities.delivery import Deliverer, LoggingDeliverer
from domain.policy import Policy, PolicyError, load_policy
from models.wire import (
    AgentOutcome,
    AgentRelease,
    AgentRequest,
    AuditEvent,
    CaseEvents,
    CaseFiling,
    ContactOutcome,
    ContactRequest,
    LoanProjection,
    LoanRecord,
    PaymentBooking,
    PolicyRequest,
)


class CollectionActivities:
    """All activities of the loan workflow (synchronous `def`; run them on a
    ThreadPoolExecutor). `deliverer` defaults to `LoggingDeliverer()`."""

    def __init__(self, engine: Engine, deliverer: Deliverer | None = None) -> None:
        self.engine = engine
        self.deliverer: Deliverer = deliverer if deliverer is not None else LoggingDeliverer()

    @activity.defn(name=names.RECORD_LOAN)
    def record_loan(self, rec: LoanRecord) -> None:
        ledger.record_loan(self.engine, rec)

    @activity.defn(name=names.SYNC_LOAN)
    def sync_loan(self, proj: LoanProjection) -> None:
        ledger.sync_loan(self.engine, proj)

    @activity.defn(name=names.BOOK_PAYMENT)
    def book_payment(self, booking: PaymentBooking) -> bool:
        return ledger.book_payment(self.engine, booking)

    @activity.defn(name=names.SEND_CONTACT)
    def send_contact(self, req: ContactRequest) -> ContactOutcome:
        return contacts.send_contact(self.engine, self.deliverer, req)

    @activity.defn(name=names.ASSIGN_AGENT)
    def assign_agent(self, req: AgentRequest) -> AgentOutcome:
        return cases.assign_agent(self.engine, req)

    @activity.defn(name=names.RELEASE_AGENT)
    def release_agent(self, rel: AgentRelease) -> None:
        cases.release_agent(self.engine, rel)

    @activity.defn(name=names.FILE_CASE_ACTION)
    def file_case_action(self, filing: CaseFiling) -> None:
        cases.file_case_action(self.engine, filing)

    @activity.defn(name=names.WRITE_AUDIT)
    def write_audit(self, ev: AuditEvent) -> None:
        audit.write_audit(self.engine, ev)

    @activity.defn(name=names.LOAD_POLICY)
    def load_policy(self, req: PolicyRequest) -> Policy:
        try:
            return load_policy(req.name, req.product.value)
        except PolicyError as exc:
            raise non_retryable(str(exc), "InvalidPolicy") from exc

    @activity.defn(name=names.RECORD_CASE_EVENTS)
    def record_case_events(self, events: CaseEvents) -> None:
        # Each part is idempotent by its own key, so a retry after a partial write
        # completes the rest and duplicates nothing.
        for booking in events.payments:
            ledger.book_payment(self.engine, booking)
        for entry in events.audit:
            audit.write_audit(self.engine, entry)
        if events.projection is not None:
            ledger.sync_loan(self.engine, events.projection)

    def all(self) -> list[Callable[..., Any]]:
        """The bound activity callables, for `Worker(activities=...)`."""
        return [
            self.record_loan,
            self.sync_loan,
            self.book_payment,
            self.send_contact,
            self.assign_agent,
            self.release_agent,
            self.file_case_action,
            self.write_audit,
            self.record_case_events,
            self.load_policy,
        ]
