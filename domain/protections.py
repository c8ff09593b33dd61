"""Borrower protections as rules: which holds stand, what each one holds, how promises
and hardships lapse with time, and which channel a contact may use.

Pure functions of (case, now). The planner asks them before every step; the message
intake (domain/desk.py) changes the case they read.

- A **promise to pay** holds the overdue SMS, voice calls, the demand letter, the field
  visit, the legal referral and the charge-off until its date has ended; DPD, penalty
  and credit reporting follow the facts. It is kept as soon as the payments taken since
  it was recorded reach its amount, and kept too when the loan is cured before its date
  (nothing is overdue any more); otherwise it is broken at the local midnight after its
  date.
- A **dispute** holds every collection contact, the credit report and every escalation
  step while it is open; reminders of future due dates still go out.
- A **hardship** holds like a dispute, reminders included ("no contact"), from the day it
  is approved through `until`; it ends at the local midnight after `until`, or earlier
  by a message.
- The strongest hold is shown: DISPUTE > HARDSHIP > PROMISE.
- **Contact preferences**: a contact on a channel the borrower does not accept falls back
  along voice -> SMS -> email -> letter. A letter is always allowed, but only notices the
  law requires in writing (the credit notice, the demand letter) fall back to one: a
  reminder or an overdue message that would arrive by post days late is suppressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from domain.calendar import local_date, start_of_day
from domain.case import Case, Promise
from domain.enums import (
    ActionKind,
    Channel,
    DisputeStatus,
    HardshipStatus,
    HoldReason,
    PromiseStatus,
)

_ESCALATION = frozenset(
    {
        ActionKind.ASSIGN_AGENT,
        ActionKind.DEMAND_LETTER,
        ActionKind.FIELD_VISIT,
        ActionKind.LEGAL_REFERRAL,
        ActionKind.CHARGE_OFF,
    }
)
_COLLECTION_CONTACTS = frozenset(
    {
        ActionKind.OVERDUE_SMS,
        ActionKind.CREDIT_NOTICE,
        ActionKind.VOICE_CALL,
        ActionKind.DEMAND_LETTER,
        ActionKind.BROKEN_PROMISE,
    }
)
# What each hold stops. Follow-ups that favour the borrower (releasing the agent,
# updating the credit bureau after a cure) and the case's own filings never hold.
HELD_KINDS: dict[HoldReason, frozenset[ActionKind]] = {
    HoldReason.PROMISE: frozenset(
        {
            ActionKind.OVERDUE_SMS,
            ActionKind.VOICE_CALL,
            ActionKind.DEMAND_LETTER,
            ActionKind.FIELD_VISIT,
            ActionKind.LEGAL_REFERRAL,
            ActionKind.CHARGE_OFF,
        }
    ),
    HoldReason.DISPUTE: _COLLECTION_CONTACTS | _ESCALATION | {ActionKind.CREDIT_REPORT},
    HoldReason.HARDSHIP: _COLLECTION_CONTACTS | _ESCALATION | {ActionKind.CREDIT_REPORT, ActionKind.REMINDER},
}
STRENGTH = (HoldReason.DISPUTE, HoldReason.HARDSHIP, HoldReason.PROMISE)


@dataclass(frozen=True)
class Hold:
    reason: HoldReason
    until: date | None  # the last local day it holds (None: open-ended)
    ref: str  # the id of the promise, dispute or hardship

    @property
    def rule(self) -> str:
        """How the audit log names it: 'hold:DISPUTE D-1'."""
        return f"hold:{self.reason.value} {self.ref}"


def holds(case: Case, today: date) -> list[Hold]:
    """Every hold standing on `today` (the case lapsed to now), strongest first."""
    standing = [
        Hold(HoldReason.DISPUTE, None, d.dispute_id) for d in case.disputes if d.status is DisputeStatus.OPEN
    ]
    standing += [
        Hold(HoldReason.HARDSHIP, h.until, h.hardship_id)
        for h in case.hardships
        if h.status is HardshipStatus.ACTIVE and h.starts_on <= today <= h.until
    ]
    standing += [
        Hold(HoldReason.PROMISE, p.promised_date, p.promise_id)
        for p in case.promises
        if p.status is PromiseStatus.OPEN and today <= p.promised_date
    ]
    return sorted(standing, key=lambda h: STRENGTH.index(h.reason))


def strongest_hold(case: Case, today: date) -> Hold | None:
    standing = holds(case, today)
    return standing[0] if standing else None


def holding(case: Case, today: date, kind: ActionKind) -> Hold | None:
    """The strongest hold that stops a step of `kind` today, or None."""
    return next((h for h in holds(case, today) if kind in HELD_KINDS[h.reason]), None)


def hold_lifts_at(hold: Hold, tz: str) -> datetime | None:
    """When the hold ends by itself: the local midnight after its last day."""
    return None if hold.until is None else start_of_day(hold.until + timedelta(days=1), tz)


def open_disputes(case: Case) -> list[str]:
    """Ids of the disputes still open: a loan paid off with one open is not done yet."""
    return [d.dispute_id for d in case.disputes if d.status is DisputeStatus.OPEN]


def broken_promises(case: Case) -> int:
    """Promises broken in the current delinquency episode (0 when nothing is overdue)."""
    if case.episode is None:
        return 0
    number = case.episode.number
    return sum(1 for p in case.promises if p.status is PromiseStatus.BROKEN and p.episode == number)


# --- Lapsing with time ------------------------------------------------------------------


def lapse(case: Case, now: datetime) -> Case:
    """Promises and hardships as they stand at `now`: an open promise ends when the loan
    is cured (kept when anything was paid since it was made, else cancelled: cured by a
    restructuring) and is broken after its date; a hardship ends after its `until`."""
    today = local_date(now, case.timezone)
    promises = list(case.promises)
    changed = False
    for n, p in enumerate(promises):
        if p.status is not PromiseStatus.OPEN:
            continue
        if case.episode is None or case.closed:
            status = PromiseStatus.KEPT if p.paid_since > 0 else PromiseStatus.CANCELLED
            promises[n] = p.model_copy(update={"status": status, "settled_at": now})
            changed = True
        elif p.promised_date < today:
            broken_at = start_of_day(p.promised_date + timedelta(days=1), case.timezone)
            promises[n] = p.model_copy(update={"status": PromiseStatus.BROKEN, "settled_at": broken_at})
            changed = True
    hardships = list(case.hardships)
    for n, h in enumerate(hardships):
        if h.status is HardshipStatus.ACTIVE and h.until < today:
            ended_at = start_of_day(h.until + timedelta(days=1), case.timezone)
            update = {"status": HardshipStatus.ENDED, "ended_at": ended_at, "last_day": h.until}
            hardships[n] = h.model_copy(update=update)
            changed = True
    if not changed:
        return case
    return case.model_copy(update={"promises": promises, "hardships": hardships})


def counts_toward(case: Case, promise: Promise, counts_at: datetime) -> bool:
    """A payment counts toward a promise when it was made between the promise and the end
    of its date (by when it counts in the ledger, not when it was reported: a payment
    made at 23:50 on the date and reported after midnight keeps it)."""
    return promise.made_at <= counts_at and local_date(counts_at, case.timezone) <= promise.promised_date


def note_payment(case: Case, amount: int, counts_at: datetime, now: datetime) -> Case:
    """A payment taken: it counts toward the promise it was made for (open, or broken at
    midnight while the payment was on its way), which is kept the moment the payments
    counted reach its amount."""
    promises = []
    changed = False
    for p in case.promises:
        live = p.status is PromiseStatus.OPEN or (
            p.status is PromiseStatus.BROKEN and case.episode is not None and p.episode == case.episode.number
        )
        if live and counts_toward(case, p, counts_at):
            paid = p.paid_since + amount
            update: dict[str, object] = {"paid_since": paid}
            if paid >= p.amount:
                update |= {"status": PromiseStatus.KEPT, "settled_at": now}
            p = p.model_copy(update=update)
            changed = True
        promises.append(p)
    return case.model_copy(update={"promises": promises}) if changed else case


# --- Channels ---------------------------------------------------------------------------

ALL_CHANNELS = tuple(Channel)
FALLBACK = (Channel.VOICE, Channel.SMS, Channel.EMAIL, Channel.LETTER)
WRITTEN_NOTICES = frozenset({ActionKind.CREDIT_NOTICE, ActionKind.DEMAND_LETTER})


def allowed_channels(case: Case) -> list[Channel]:
    """The channels the borrower accepts, in a fixed order (a letter is always allowed)."""
    chosen = set(ALL_CHANNELS if case.contact_channels is None else case.contact_channels)
    return [c for c in ALL_CHANNELS if c in chosen or c is Channel.LETTER]


def route(case: Case, kind: ActionKind, channel: Channel) -> Channel | None:
    """The channel a contact of `kind` planned on `channel` goes out on under the
    borrower's preferences, or None: suppressed (no acceptable channel)."""
    allowed = allowed_channels(case)
    if channel in allowed:
        return channel
    if channel not in FALLBACK:
        return None
    for fallback in FALLBACK[FALLBACK.index(channel) + 1 :]:
        if fallback is Channel.LETTER and kind not in WRITTEN_NOTICES:
            return None
        if fallback in allowed:
            return fallback
    return None  # pragma: no cover - a letter is always allowed
