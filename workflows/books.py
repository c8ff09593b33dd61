"""The workflow's books: what it still has to write down, and what it last wrote.

Payments to book, audit entries and the case's projection and desk records go to the
lender's database in one `record_case_events` call per pass. `Books` gathers them between
calls, hands out one batch at a time, and forgets a batch only once it is written (a
failed batch goes back to the front of the queue, with anything handled meanwhile behind
it). Pure and deterministic: workflow code, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.case import Case
from models import actions
from models.views import projection, projection_fingerprint
from models.wire import AuditEvent, CaseEvents, PaymentBooking


@dataclass(frozen=True)
class Batch:
    """One `record_case_events` call, and what is known to be written once it succeeds."""

    events: CaseEvents
    fingerprint: object
    desk_written: dict[str, object]


@dataclass
class Books:
    journal: list[AuditEvent] = field(default_factory=list)  # audit entries not yet written
    bookings: list[PaymentBooking] = field(default_factory=list)  # payments not yet booked
    audit_seq: int = 0  # audit entries made by this run (part of their keys)
    synced: object = None  # fingerprint of the projection last written
    desk_written: dict[str, object] = field(default_factory=dict)  # desk records last written

    def audit(
        self, loan_id: str, event: str, detail: str, source: str, now: datetime, once_per: str | None
    ) -> None:
        """`once_per`: the message id of an event that happens once per id (a payment or a
        desk message applied): its key is the id, so a message handled again after a
        worker died mid-task (redelivered at another workflow time) is written once."""
        # The sequence number is unique within the run (the index in the unwritten batch was
        # not: two batches written at one workflow time collided and one entry was lost).
        self.audit_seq += 1
        key = (
            f"{loan_id}/audit/{event}/{once_per}"
            if once_per is not None
            else f"{loan_id}/audit/{event}/{source[:64]}/{now.isoformat()}/{self.audit_seq}"
        )
        self.journal.append(
            AuditEvent(key=key, loan_id=loan_id, at=now, event=event, detail=detail, source=source)
        )

    def book(self, bookings: tuple[PaymentBooking, ...]) -> None:
        self.bookings += bookings

    @property
    def queued(self) -> bool:
        return bool(self.bookings or self.journal)

    def take(self, case: Case, now: datetime) -> Batch | None:
        """What to write now (None: nothing changed since the last write): the queued
        payments and audit entries, the projection if it changed, the desk records that
        changed. The queue is emptied; `failed` puts it back."""
        snapshot = projection(case, now)
        fingerprint = projection_fingerprint(snapshot)
        changed = fingerprint != self.synced
        desk, desk_now = actions.desk_changes(case, self.desk_written)
        if not (self.queued or changed or desk):
            return None
        events = CaseEvents(
            payments=self.bookings,
            audit=self.journal,
            projection=snapshot if changed else None,
            desk=desk or None,
        )
        self.bookings, self.journal = [], []
        return Batch(events, fingerprint, desk_now)

    def written(self, batch: Batch) -> None:
        self.synced, self.desk_written = batch.fingerprint, batch.desk_written

    def failed(self, batch: Batch) -> None:
        """Kept queued, ahead of anything handled meanwhile, and written once it works."""
        self.bookings = batch.events.payments + self.bookings
        self.journal = batch.events.audit + self.journal
