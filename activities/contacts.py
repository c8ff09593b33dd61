"""send_contact: render a template for the borrower and hand it to a deliverer.

`ContactActivities(engine, deliverer).send_contact` is the activity.

One outbox row (`contact_attempt`) per idempotency key, and the row is the record:
1. In a write transaction: a row already handed over (accepted) or final (delivered /
   suppressed / failed) is answered from the row, nothing is sent again. Otherwise the
   borrower's contact details are read NOW (so a changed phone number is used from the
   next contact on), the template is rendered and the row is stored `queued` (or
   `suppressed` when there is no borrower or no detail for the channel).
2. Outside any transaction: the deliverer is called with an `OutboundMessage` whose
   `message_id` is the outbox key: the provider's idempotency key (webhook
   `Idempotency-Key`, SMTP `Message-ID`), the same on every retry.
3. In a write transaction: the row becomes `accepted` (the provider took it; a receipt
   follows), `delivered` or `failed` (with the provider's answer), with `sent_at`.
If the worker dies between 2 and 3 the row stays `queued` and the retry sends again with
the same key, which the provider deduplicates (exactly-once per key in our records, and
towards a provider that honours the key). A provider that cannot take the message now
raises (5xx, timeout, refused connection): the activity retries with backoff, and past
the contact window (`not_after`) the contact is deferred to the next window.

A call is also checked against the policy's call caps counted over the borrower's calls
on ALL loans (`borrower_call`), and recorded there, in step 1's transaction under a lock
on the borrower: over a cap it is not sent but deferred (`not_before`: when the caps
allow the next call); a provider's refusal or a deferral past the window takes the
recorded attempt back.

`line` is a reference to the detail used ('mobile', 'alt', 'email', 'postal', 'app'),
never the address itself; the address is never logged unmasked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity

from activities._support import (
    as_utc,
    clip,
    insert_once,
    non_retryable,
    require,
    unit_of_work,
    utcnow,
)
from activities.delivery import (
    Deliverer,
    DeliveryReceipt,
    LoggingDeliverer,
    OutboundMessage,
    mails_letters,
    redact_contacts,
)
from activities.templates import TEMPLATE_NAMES, TemplateError, render
from domain.calendar import local_date
from domain.case import CallAttempt
from domain.enums import Channel
from domain.planner import next_call_at
from models import repo
from models.tables import (
    FINAL_CONTACT_STATUSES,
    KEY_LEN,
    SENT_CONTACT_STATUSES,
    Borrower,
    ContactAttempt,
)
from models.wire import ContactOutcome, ContactRequest

log = logging.getLogger(__name__)

PHONE_CHANNELS = frozenset({Channel.SMS, Channel.VOICE})


@dataclass(frozen=True)
class Target:
    address: str
    line: str


def pick_target(
    borrower: Borrower | None, channel: Channel, *, letters_by_mail: bool = False
) -> Target | str:
    """Where to send on `channel`: a Target, or the suppression reason. A letter goes to
    a postal reference the print house resolves, or, when letters are sent by mail, to
    the borrower's email address if there is one."""
    if borrower is None:
        return "no_borrower"
    if channel in PHONE_CHANNELS:
        if borrower.phone_mobile and borrower.phone_mobile.strip():
            return Target(borrower.phone_mobile.strip(), "mobile")
        if borrower.phone_alt and borrower.phone_alt.strip():
            return Target(borrower.phone_alt.strip(), "alt")
        return "no_phone"
    if channel == Channel.EMAIL:
        if borrower.email and borrower.email.strip():
            return Target(borrower.email.strip(), "email")
        return "no_email"
    if channel == Channel.LETTER:
        if letters_by_mail and borrower.email and borrower.email.strip():
            return Target(borrower.email.strip(), "email")
        return Target(f"borrower:{borrower.borrower_id}", "postal")
    if channel == Channel.PUSH:
        return Target(f"borrower:{borrower.borrower_id}", "app")
    return f"unsupported_channel:{channel}"  # pragma: no cover


def outcome_of(row: ContactAttempt) -> ContactOutcome:
    # `accepted` is "delivered" to the workflow: the message left our hands and the
    # provider took responsibility for it (and deduplicates it by its key). What the
    # workflow decides on a contact (a credit notice counted as given, a voice attempt
    # counted toward the caps, no resend) must not wait for a receipt that may come hours
    # later or never; a later failed receipt is kept on the outbox row for the records.
    status = "delivered" if row.status == "accepted" else row.status
    if status not in FINAL_CONTACT_STATUSES:
        status = "failed"
    voice = row.channel == Channel.VOICE.value
    return ContactOutcome(
        status=status,
        # The workflow's history gets no number or address, whatever a provider's receipt
        # said (found by review: a fast failed receipt's words reached it).
        reason=redact_contacts(row.reason) if row.reason else row.reason,
        dialed=row.dialed,
        connected=row.connected,
        line=row.line if (voice or row.channel == Channel.SMS.value) else None,
    )


CAPS_REASON = "call caps across the borrower's loans"
# The caps look at most 7 days back from the instant checked (and a day more for the
# local day of a far time zone).
CALL_LOOKBACK = timedelta(days=8)


def _take_call_slot(session: Session, req: ContactRequest, line: str) -> datetime | None:
    """Check the call caps against the borrower's calls on ALL loans and record this call
    in the ledger, under the borrower's lock: None when the call may be placed (recorded),
    else the first instant the caps allow one. The call counts from the moment of the
    check (its planned instant, or later on a late run or a retry: a check at a stale
    instant would miss calls other loans recorded since, found by review). A retry of a
    call already recorded (a 5xx, a worker restart) goes ahead: it is the same call."""
    if repo.call_by_key(session, req.key) is not None:
        return None
    at = max(as_utc(req.scheduled_at), utcnow())
    if req.not_after is not None and at > as_utc(req.not_after):
        return None  # too late for today's window: deferred as such by send_contact, not counted
    if req.call_caps is not None and req.contact_window is not None and req.timezone is not None:
        calls = repo.borrower_calls(session, req.borrower_id, at - CALL_LOOKBACK)
        log = [CallAttempt(at=as_utc(c.at), line=c.line, connected=c.connected) for c in calls]
        allowed = next_call_at(req.call_caps, req.contact_window, req.timezone, log, at)
        if allowed > at:
            return allowed
    repo.record_call(
        session,
        key=req.key,
        borrower_id=req.borrower_id,
        loan_id=req.loan_id,
        line=line,
        at=at,
        connected=False,
        source="outbox",
    )
    return None


@dataclass(frozen=True)
class _Pending:
    row_id: int
    message: OutboundMessage


def _prepare(session: Session, req: ContactRequest, letters_by_mail: bool) -> ContactOutcome | _Pending:
    row = repo.contact_by_key(session, req.key)
    if row is not None and row.status in SENT_CONTACT_STATUSES:
        return outcome_of(row)
    call = req.channel == Channel.VOICE
    # A call locks the borrower (PostgreSQL; SQLite: BEGIN IMMEDIATE already serialises
    # writers) so the caps are checked and the attempt recorded as one step across loans.
    if call:
        borrower = repo.lock_borrower(session, req.borrower_id)
    else:
        borrower = session.get(Borrower, req.borrower_id)
    target = pick_target(borrower, req.channel, letters_by_mail=letters_by_mail)
    if row is None:
        row = ContactAttempt(
            idempotency_key=req.key,
            loan_id=req.loan_id,
            borrower_id=req.borrower_id,
            kind=req.kind.value,
            channel=req.channel.value,
            template=req.template,
            scheduled_at=as_utc(req.scheduled_at),
        )
    if isinstance(target, str):
        if call:  # recorded by an earlier attempt, but no call will be placed now
            repo.release_call(session, req.key)
        row.status = "suppressed"
        row.reason = target
        row.line = None
        row.rendered_text = None
        session.add(row)
        session.flush()
        return outcome_of(row)
    if call:
        not_before = _take_call_slot(session, req, target.line)
        if not_before is not None:
            # Not sent, still owed: the row stays queued and says why; the workflow plans
            # the call again at `not_before` (same key, same row).
            reason = f"{CAPS_REASON}: next call allowed at {not_before.isoformat()}"
            row.status, row.reason, row.line = "queued", clip(reason, 255), target.line
            session.add(row)
            session.flush()
            return ContactOutcome(status="deferred", reason=reason, line=target.line, not_before=not_before)
    rendered = render(
        req.template, borrower.preferred_language if borrower else None, req.params, req.loan_id
    )
    row.language = rendered.language
    row.rendered_text = rendered.text
    row.line = target.line
    row.status = "queued"
    row.reason = None
    session.add(row)
    session.flush()
    assert row.id is not None
    message = OutboundMessage(
        message_id=req.key,
        channel=req.channel,
        to=target.address,
        text=rendered.text,
        language=rendered.language,
        loan_id=req.loan_id,
        subject=rendered.subject,
        kind=req.kind.value,
        # The day the letter is dated: the borrower's local day of the planned send (the
        # same on every retry).
        local_date=local_date(req.scheduled_at, req.timezone) if req.timezone else None,
    )
    return _Pending(row.id, message)


def _record(session: Session, row_id: int, channel: Channel, receipt: DeliveryReceipt) -> ContactOutcome:
    # Locked (PostgreSQL FOR UPDATE; SQLite: the write transaction), so a receipt that
    # arrived meanwhile (repo.record_receipt) is seen and never overwritten.
    row = session.get(ContactAttempt, row_id, with_for_update=True)
    if row is None:  # pragma: no cover - rows are never deleted
        raise non_retryable("contact row vanished", "OutboxError")
    if row.status in SENT_CONTACT_STATUSES and row.sent_at is not None:
        return outcome_of(row)  # a concurrent attempt recorded this send first
    if row.status in SENT_CONTACT_STATUSES:
        # The provider's receipt (POST /receipts) came before this record of the send (a
        # fast provider): its status stands, but the send's own facts are written, so a
        # call still counts as dialed (found by the local inbox's review).
        _send_facts(row, channel, receipt)
        if channel == Channel.VOICE:
            _ledger_send(session, row, receipt)
        session.add(row)
        session.flush()
        return outcome_of(row)
    if not receipt.delivered:
        row.status = "failed"
    else:
        row.status = "accepted" if receipt.awaiting_receipt else "delivered"
    row.reason = None if receipt.delivered else clip(receipt.detail or "not_delivered", 255)
    _send_facts(row, channel, receipt)
    if channel == Channel.VOICE:
        _ledger_send(session, row, receipt)
    session.add(row)
    session.flush()
    return outcome_of(row)


def _ledger_send(session: Session, row: ContactAttempt, receipt: DeliveryReceipt) -> None:
    """The borrower's call ledger after the provider answered: a refused call was not
    placed and does not count; a placed one counts (recorded again if a concurrent attempt
    deferred past the window took it back meanwhile, found by review), connected or not."""
    key = row.idempotency_key
    if not receipt.delivered:
        repo.release_call(session, key)
        return
    if repo.call_by_key(session, key) is None:
        repo.record_call(
            session,
            key=key,
            borrower_id=row.borrower_id,
            loan_id=row.loan_id,
            line=row.line or "mobile",
            at=max(as_utc(row.scheduled_at), utcnow()),
            connected=row.connected,
            source="outbox",
        )
    elif row.connected:
        repo.mark_call_connected(session, key, True)


def _send_facts(row: ContactAttempt, channel: Channel, receipt: DeliveryReceipt) -> None:
    """What the provider answered when it was handed the message, and when."""
    row.provider_answer = clip(receipt.detail, 255)
    row.sent_at = utcnow()
    if channel == Channel.VOICE:
        row.dialed = receipt.delivered
        row.connected = row.connected or (receipt.delivered and receipt.connected)


DEFERRED_REASON = "outside the contact window: deferred to the next window"


def _too_late(session: Session, row_id: int) -> ContactOutcome:
    row = session.get(ContactAttempt, row_id, with_for_update=True)
    if row is None:  # pragma: no cover - rows are never deleted
        raise non_retryable("contact row vanished", "OutboxError")
    if row.status in SENT_CONTACT_STATUSES:
        return outcome_of(row)
    # Not final: the workflow plans the same contact (same key) into the next window,
    # and that attempt delivers it (a call is checked against the caps again then).
    row.reason = DEFERRED_REASON
    repo.release_call(session, row.idempotency_key)
    session.add(row)
    session.flush()
    return ContactOutcome(status="deferred", reason=DEFERRED_REASON, line=row.line)


class ContactActivities:
    """Contacts with the borrower (synchronous: run on a ThreadPoolExecutor).
    `deliverer` defaults to `LoggingDeliverer()`; `activities.providers.deliverer_from_settings`
    builds the configured one."""

    def __init__(self, engine: Engine, deliverer: Deliverer | None = None) -> None:
        self.engine = engine
        self.deliverer: Deliverer = deliverer if deliverer is not None else LoggingDeliverer()

    @activity.defn(name="send_contact")
    def send_contact(self, req: ContactRequest) -> ContactOutcome:
        require(req.key, "key", KEY_LEN)
        require(req.loan_id, "loan_id")
        require(req.borrower_id, "borrower_id")
        if req.template not in TEMPLATE_NAMES:
            raise non_retryable(f"template: unknown template {req.template!r}", "UnknownTemplate")
        try:
            letters_by_mail = mails_letters(self.deliverer)
            prepared = insert_once(self.engine, lambda s: _prepare(s, req, letters_by_mail))
        except TemplateError as e:  # pragma: no cover - checked above
            raise non_retryable(str(e), "UnknownTemplate") from e
        if isinstance(prepared, ContactOutcome):
            return prepared
        if req.not_after is not None and utcnow() > as_utc(req.not_after):
            # Retries (a gateway outage, a worker restart) ran past the contact window: the
            # message is not sent at night; the row says why.
            with unit_of_work(self.engine) as session:
                return _too_late(session, prepared.row_id)
        receipt = self.deliverer.deliver(prepared.message)
        with unit_of_work(self.engine) as session:
            outcome = _record(session, prepared.row_id, req.channel, receipt)
        log.info(
            "contact key=%s loan=%s channel=%s status=%s line=%s",
            req.key,
            req.loan_id,
            req.channel.value,
            outcome.status,
            outcome.line,
        )
        return outcome
