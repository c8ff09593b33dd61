"""The collector's desk taken into a case: promises to pay, disputes, hardship relief,
contact preferences and the contact log (DESIGN.md contract part 2).

Pure functions of (case, message fields, now), like domain/intake.py: each checks its
message (raising CaseError naming the field; nothing changes on a refusal) and returns
the new case. An id already applied is answered as a duplicate before anything else is
checked, so a repeated message is never refused for what the case has become since.
What the rules hold and when promises and hardships lapse is domain/protections.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from domain.calendar import in_contact_window, local_date, start_of_day, zone
from domain.case import CallAttempt, Case, Dispute, Hardship, LoggedContact, Preferences, Promise
from domain.enums import (
    Channel,
    ContactResult,
    DisputeOutcome,
    DisputeReason,
    DisputeStatus,
    HardshipReason,
    HardshipStatus,
    LoggedChannel,
    OverdueReason,
    PromiseStatus,
)
from domain.ledger import CaseError, outstanding, reported_instant, today_for
from domain.money import format_amount
from domain.planner import (
    CALL_RESULT_PREFIX,
    call_allowed_at,
    first_full_later_week,
    reconcile,
    trim_call_log,
)
from domain.protections import ALL_CHANNELS, broken_promises, counts_toward

# A logged call or visit may be entered up to this many days after it happened (the call
# caps look back 7 days; older contacts could no longer be checked against them).
CONTACT_LOG_BACKDATE_DAYS = 7
CONTACT_LOG_KEPT = 50  # logged contacts kept on the case (the database keeps them all)
# The line a collector's logged call counts against for the per-number cap: the
# borrower's primary number, the one collectors dial (the conservative choice).
LOGGED_CALL_LINE = "mobile"


@dataclass(frozen=True)
class DeskTaken:
    """A desk message taken: the case after it, which record it touched and its status,
    and the audit entry (None for a duplicate: nothing changed)."""

    case: Case
    kind: str  # promise / dispute / hardship / preferences / contact
    ref: str
    status: str
    duplicate: bool
    audit: tuple[str, str] | None = None


def _duplicate(case: Case, kind: str, ref: str, status: str) -> DeskTaken:
    return DeskTaken(case, kind, ref, status, duplicate=True)


def _taken(case: Case, kind: str, ref: str, status: str, event: str, detail: str) -> DeskTaken:
    return DeskTaken(case, kind, ref, status, duplicate=False, audit=(event, detail))


def _require_open(case: Case) -> None:
    if case.closed:
        raise CaseError("loan_id", f"loan {case.loan_id} is closed (paid off)")


def _instant(case: Case, field: str, value: datetime | None, now: datetime, max_days_back: int) -> datetime:
    """When something happened, as the caller says (default now): see `reported_instant`."""
    if value is None:
        return now
    return reported_instant(case, field, value, now, max_days_back, late="ago")


def _status_of(case: Case, promise_id: str) -> str:
    return next(p.status.value for p in case.promises if p.promise_id == promise_id)


# --- Promises to pay ----------------------------------------------------------------------


def record_promise(
    case: Case,
    *,
    promise_id: str,
    amount: int,
    promised_date: date,
    agent_id: str,
    made_at: datetime | None,
    now: datetime,
    currency: str | None = None,
) -> DeskTaken:
    """Only while something is overdue, one open promise at a time, and not after
    `max_broken_promises` were broken in this delinquency episode. A promise entered
    after the fact (`made_at`) whose date has passed is broken at once."""
    if any(p.promise_id == promise_id for p in case.promises):
        return _duplicate(case, "promise", promise_id, _status_of(case, promise_id))
    _require_open(case)
    policy = case.policy
    case = reconcile(case, now)
    made = _instant(case, "made_at", made_at, now, policy.max_promise_days)
    if case.episode is None:
        raise CaseError("loan_id", "nothing is overdue: a promise to pay is taken only on an overdue loan")
    standing = next((p for p in case.promises if p.status is PromiseStatus.OPEN), None)
    if standing is not None:
        raise CaseError(
            "promise_id",
            f"promise {standing.promise_id} is open until {standing.promised_date.isoformat()}: "
            "one open promise at a time",
        )
    broken = broken_promises(case)
    if broken >= policy.max_broken_promises:
        raise CaseError(
            "promise_id",
            f"{broken} promises broken in this delinquency episode (max_broken_promises = "
            f"{policy.max_broken_promises}): no new promise until the loan is cured",
        )
    if currency is not None and currency != case.currency:
        raise CaseError("currency", f"{currency} is not the loan's currency {case.currency}")
    if isinstance(amount, bool) or amount <= 0:
        raise CaseError("amount", f"must be an integer > 0 in minor units (got {amount})")
    payoff = outstanding(case, today_for(case, now)).total
    if amount > payoff:
        raise CaseError("amount", f"{amount} is above the payoff amount {payoff}")
    # A payment counts toward one promise only: a promise entered after the fact cannot
    # reach back before the previous promise of this delinquency ended, nor before the
    # loan was overdue (found by review).
    floor = max(
        [start_of_day(case.episode.anchor_due + timedelta(days=1), case.timezone)]
        + [
            p.settled_at
            for p in case.promises
            if p.episode == case.episode.number and p.settled_at is not None
        ]
    )
    if made < floor:
        raise CaseError(
            "made_at",
            f"{made.isoformat()} is before {floor.isoformat()}, when the previous promise of this "
            "delinquency ended or the loan fell overdue: a payment counts toward one promise only",
        )
    first = local_date(made, case.timezone)
    last = first + timedelta(days=policy.max_promise_days)
    if not first <= promised_date <= last:
        raise CaseError(
            "promised_date",
            f"must lie between {first.isoformat()} and {last.isoformat()} "
            f"(max_promise_days = {policy.max_promise_days}; got {promised_date.isoformat()})",
        )
    promise = Promise(
        promise_id=promise_id,
        amount=amount,
        promised_date=promised_date,
        agent_id=agent_id,
        made_at=made,
        episode=case.episode.number,
    )
    # Entered after the fact: the payments made since it was made count (found by review).
    paid = sum(m.amount for m in case.payment_marks if counts_toward(case, promise, m.at))
    if paid:
        kept = paid >= amount
        promise = promise.model_copy(
            update={"paid_since": paid} | ({"status": PromiseStatus.KEPT, "settled_at": now} if kept else {})
        )
    case = reconcile(case.model_copy(update={"promises": [*case.promises, promise]}), now)
    status = _status_of(case, promise_id)
    money = format_amount(amount, case.currency)
    detail = f"promise {promise_id}: {money} by {promised_date.isoformat()} (agent {agent_id}); {status}"
    return _taken(case, "promise", promise_id, status, "promise", detail)


# --- Disputes ----------------------------------------------------------------------------


def open_dispute(
    case: Case,
    *,
    dispute_id: str,
    reason: DisputeReason,
    opened_by: str,
    opened_at: datetime | None,
    now: datetime,
) -> DeskTaken:
    """A dispute holds the ladder while open. Entered after the fact (`opened_at`, at
    most twice `dispute_response_days` back), its response deadline counts from then."""
    found = next((d for d in case.disputes if d.dispute_id == dispute_id), None)
    if found is not None:
        return _duplicate(case, "dispute", dispute_id, found.status.value)
    _require_open(case)
    opened = _instant(case, "opened_at", opened_at, now, 2 * case.policy.dispute_response_days)
    dispute = Dispute(dispute_id=dispute_id, reason=reason, opened_by=opened_by, opened_at=opened)
    case = reconcile(case.model_copy(update={"disputes": [*case.disputes, dispute]}), now)
    detail = f"dispute {dispute_id} opened ({reason.value}) by {opened_by}: collection holds"
    return _taken(case, "dispute", dispute_id, "open", "dispute_opened", detail)


def resolve_dispute(
    case: Case, *, dispute_id: str, outcome: DisputeOutcome, resolved_by: str, now: datetime
) -> DeskTaken:
    """Ends a dispute, also once the loan is paid off. The same outcome again is a
    duplicate; another one is refused."""
    found = next((d for d in case.disputes if d.dispute_id == dispute_id), None)
    if found is None:
        raise CaseError("dispute_id", f"no dispute {dispute_id} on this loan")
    if found.status is not DisputeStatus.OPEN:
        if found.status.value == outcome.value:
            return _duplicate(case, "dispute", dispute_id, found.status.value)
        raise CaseError("outcome", f"dispute {dispute_id} was already resolved as {found.status.value}")
    # Also on a paid-off loan: a borrower may pay under protest, and the dispute is still
    # heard (the workflow stays open until it is resolved).
    resolved = found.model_copy(
        update={"status": DisputeStatus(outcome.value), "resolved_by": resolved_by, "resolved_at": now}
    )
    disputes = [resolved if d.dispute_id == dispute_id else d for d in case.disputes]
    case = reconcile(case.model_copy(update={"disputes": disputes}), now)
    detail = f"dispute {dispute_id} {outcome.value} by {resolved_by}"
    return _taken(case, "dispute", dispute_id, outcome.value, "dispute_resolved", detail)


# --- Hardship relief ---------------------------------------------------------------------


def start_hardship(
    case: Case,
    *,
    hardship_id: str,
    reason: HardshipReason,
    until: date,
    approved_by: str | None,
    approval_ref: str | None,
    now: datetime,
) -> DeskTaken:
    """Approved relief from today through `until` (at most `max_hardship_days` ahead),
    one at a time."""
    found = next((h for h in case.hardships if h.hardship_id == hardship_id), None)
    if found is not None:
        return _duplicate(case, "hardship", hardship_id, found.status.value)
    _require_open(case)
    if not (approved_by or "").strip():
        raise CaseError("approved_by", "hardship relief needs the approver (approved_by)")
    if not (approval_ref or "").strip():
        raise CaseError("approval_ref", "hardship relief needs the approval reference")
    assert approved_by is not None and approval_ref is not None
    case = reconcile(case, now)
    today = today_for(case, now)
    last = today + timedelta(days=case.policy.max_hardship_days)
    if not today <= until <= last:
        raise CaseError(
            "until",
            f"must lie between {today.isoformat()} and {last.isoformat()} "
            f"(max_hardship_days = {case.policy.max_hardship_days}; got {until.isoformat()})",
        )
    active = next((h for h in case.hardships if h.status is HardshipStatus.ACTIVE), None)
    if active is not None:
        raise CaseError(
            "hardship_id",
            f"hardship {active.hardship_id} is active until {active.until.isoformat()}: end it first",
        )
    hardship = Hardship(
        hardship_id=hardship_id,
        reason=reason,
        starts_on=today,
        until=until,
        approved_by=approved_by,
        approval_ref=approval_ref,
        approved_at=now,
    )
    case = case.model_copy(update={"hardships": [*case.hardships, hardship]})
    detail = (
        f"hardship {hardship_id} ({reason.value}) from {today.isoformat()} through {until.isoformat()}; "
        f"approved by {approved_by} ({approval_ref})"
    )
    return _taken(case, "hardship", hardship_id, "active", "hardship_started", detail)


def end_hardship(case: Case, *, hardship_id: str, ended_by: str, now: datetime) -> DeskTaken:
    """Ends the relief early: the day it is ended is a normal day again."""
    case = reconcile(case, now)
    found = next((h for h in case.hardships if h.hardship_id == hardship_id), None)
    if found is None:
        raise CaseError("hardship_id", f"no hardship {hardship_id} on this loan")
    if found.status is HardshipStatus.ENDED:
        return _duplicate(case, "hardship", hardship_id, found.status.value)
    _require_open(case)
    today = today_for(case, now)
    ended = found.model_copy(
        update={
            "status": HardshipStatus.ENDED,
            "ended_by": ended_by,
            "ended_at": now,
            "last_day": today - timedelta(days=1),
        }
    )
    hardships = [ended if h.hardship_id == hardship_id else h for h in case.hardships]
    case = case.model_copy(update={"hardships": hardships})
    detail = f"hardship {hardship_id} ended early by {ended_by} (relief through {ended.last_day})"
    return _taken(case, "hardship", hardship_id, "ended", "hardship_ended", detail)


# --- Contact preferences -----------------------------------------------------------------


def set_contact_preferences(
    case: Case, *, preference_id: str, channels: Sequence[Channel], set_by: str, now: datetime
) -> DeskTaken:
    """The channels the borrower accepts from now on; a letter is always allowed."""
    if any(p.preference_id == preference_id for p in case.preferences):
        return _duplicate(case, "preferences", preference_id, "set")
    _require_open(case)
    if not channels:
        raise CaseError("channels", "must name at least one channel")
    chosen = {*channels, Channel.LETTER}
    allowed = [c for c in ALL_CHANNELS if c in chosen]
    entry = Preferences(preference_id=preference_id, channels=allowed, set_by=set_by, at=now)
    case = case.model_copy(update={"contact_channels": allowed, "preferences": [*case.preferences, entry]})
    detail = f"contact preferences {preference_id} by {set_by}: {', '.join(c.value for c in allowed)}"
    return _taken(case, "preferences", preference_id, "set", "preferences", detail)


# --- The contact log ---------------------------------------------------------------------


def _placed_call(case: Case, contact_id: str) -> CallAttempt | None:
    """The automated call whose result `contact_id` reports, if it is one of this loan's."""
    if not contact_id.startswith(CALL_RESULT_PREFIX):
        return None
    key = contact_id.removeprefix(CALL_RESULT_PREFIX)
    return next((c for c in case.call_log if c.key == key), None)


def log_contact(
    case: Case,
    *,
    contact_id: str,
    agent_ids: Sequence[str],
    channel: LoggedChannel,
    result: ContactResult,
    reason: OverdueReason | None,
    at: datetime,
    now: datetime,
) -> DeskTaken:
    """The workflow is the compliance gate for people too: an outbound call or a visit
    outside the contact window is refused, so is a call over the call caps, and a field
    visit by fewer than two collectors. A logged call counts toward the caps."""
    if contact_id in case.contact_ids:
        return _duplicate(case, "contact", contact_id, "logged")
    _require_open(case)
    policy, tz = case.policy, case.timezone
    when = _instant(case, "at", at, now, CONTACT_LOG_BACKDATE_DAYS)
    agents = list(dict.fromkeys(agent_ids))
    if not agents:
        raise CaseError("agent_ids", "must name at least one collector")
    if channel is LoggedChannel.FIELD_VISIT and len(agents) < 2:
        raise CaseError("agent_ids", f"a field visit needs at least two collectors (got {len(agents)})")
    window = policy.contact_window
    placed = _placed_call(case, contact_id) if channel is LoggedChannel.VOICE else None
    outbound = channel is not LoggedChannel.INBOUND and placed is None
    if outbound and not in_contact_window(when, tz, window.opens, window.closes):
        local = when.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M")
        raise CaseError(
            "at",
            f"{local} is outside the contact window {window.opens:%H:%M}-{window.closes:%H:%M} "
            f"({tz}): no {channel.value.replace('_', ' ')} then",
        )
    update: dict[str, object] = {}
    if placed is not None:
        # How an automated call went: the call counted toward the caps when it was placed
        # (and passed the window and caps then); it does not count a second time.
        reached = result is ContactResult.REACHED
        update["call_log"] = [
            c.model_copy(update={"connected": reached}) if c is placed else c for c in case.call_log
        ]
    elif channel is LoggedChannel.VOICE:
        # A call logged after the fact must also fit every later 7-day window that holds
        # it: calls made since count too (found by review).
        full = first_full_later_week(policy.call_caps, case.call_log, when)
        if full is not None:
            cap = policy.call_caps.call_attempts_per_7_days
            raise CaseError(
                "at",
                f"over the call caps: with the calls made since, more than {cap} calls in the "
                f"7 days up to {full.isoformat()}",
            )
        allowed = call_allowed_at(policy, tz, case.call_log, when)
        if allowed != when:
            raise CaseError(
                "at",
                f"over the call caps: the next call to this borrower is allowed at {allowed.isoformat()}",
            )
        # A report of a call whose own outcome is not written down yet (it arrived first)
        # keeps its id, so the call's outcome replaces it rather than counting twice.
        key = contact_id if contact_id.startswith(CALL_RESULT_PREFIX) else None
        attempt = CallAttempt(
            at=when, line=LOGGED_CALL_LINE, connected=result is ContactResult.REACHED, key=key
        )
        update["call_log"] = [*trim_call_log(case.call_log, now), attempt]
    entry = LoggedContact(
        contact_id=contact_id, agent_ids=agents, channel=channel, result=result, reason=reason, at=when
    )
    update["contact_ids"] = [*case.contact_ids, contact_id]
    update["contact_log"] = [*case.contact_log, entry][-CONTACT_LOG_KEPT:]
    case = case.model_copy(update=update)
    why = f", reason {reason.value}" if reason is not None else ""
    detail = f"{channel.value} by {', '.join(agents)} at {when.isoformat()}: {result.value}{why}"
    return _taken(case, "contact", contact_id, "logged", "contact_logged", detail)
