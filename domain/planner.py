"""The planner: what the loan's workflow should do next, and when.

`next_action(case, policy, now)` is a pure function. The workflow asks it, sleeps until
the action is due (or a message changes the case), executes it, records the outcome with
`record_outcome`, and asks again. Rules:
- Ladder thresholds are anchored to absolute dates (the oldest unpaid due date + N days),
  so a late wake-up runs what is due, in order, and never skips a stage. No action is
  planned before `now`: what is overdue is due now, so successive actions never go back
  in time.
- Contacts happen only inside the contact window (borrower local time): an action due at
  03:00 moves to the window's opening, never dropped.
- Voice calls respect the call caps; a call over a cap is deferred to the first moment
  it is allowed.
- The credit report goes out only once the notice is at least `credit_notice_lead_days`
  old.
- Starting late: steps that fell before the case was onboarded are not replayed, except
  the entry step of the stage the loan is in and the compliance steps still owed (the
  credit notice before any report). Reminders are never replayed.
- After onboarding, a contact whose moment has been overtaken by a later contact that is
  also due is dropped as stale: one message, not a burst of old ones.
- A cure (nothing overdue) ends the episode: the agent is released and the credit bureau
  updated; payoff closes the case after the same follow-ups.
- Routine reminders pause while the case is with legal or charged off. A contact too late
  for the window (Outcome.deferred) stays owed and goes out in the next window.
- From the earliest unpaid due date on, the workflow also wakes at each local midnight
  (REFRESH) so status, DPD and the search attributes are true to the day; while an agent
  holds the case it also checks, each night, who that is (the DB is the truth).
- Borrower protections (domain/protections.py): a step that a hold (promise, dispute,
  hardship) or the borrower's contact preferences stop is still planned at its moment,
  with `held_by` naming the rule; the workflow writes it down and it is never replayed.
  When the hold ends, the ladder resumes like a loan onboarded that day: the entry step
  of the stage the loan is in and the credit notice/report still owed run, nothing else.
  A step moved later by the contact window or the call caps carries `delayed_by`.
- The collector's desk owes its own steps: the `broken_promise` SMS in the next window
  after a promise is broken, the `dispute_overdue` filing once a dispute has been open
  `dispute_response_days`, and the `hardship_review` filing when a hardship ends.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from pydantic import BaseModel

from domain.calendar import at_local, into_contact_window, local_date, next_local_midnight, start_of_day
from domain.case import CallAttempt, Case, Episode
from domain.enums import (
    CONTACT_KINDS,
    ActionKind,
    Channel,
    CollectionStage,
    DisputeStatus,
    PromiseStatus,
)
from domain.ledger import (
    days_past_due,
    oldest_overdue,
    overdue_amount,
    stage,
    today_for,
    unsettled,
)
from domain.policy import STAGE_ENTRY_KINDS, CallCaps, ContactWindow, LadderStep, Policy
from domain.protections import allowed_channels, holding, lapse, route

CHANNEL_OF = {
    ActionKind.REMINDER: Channel.SMS,
    ActionKind.OVERDUE_SMS: Channel.SMS,
    ActionKind.CREDIT_NOTICE: Channel.SMS,
    ActionKind.VOICE_CALL: Channel.VOICE,
    ActionKind.DEMAND_LETTER: Channel.LETTER,
    ActionKind.BROKEN_PROMISE: Channel.SMS,
}
TEMPLATE_OF = {
    ActionKind.BROKEN_PROMISE: "broken_promise",
    ActionKind.OVERDUE_SMS: "overdue_sms",
    ActionKind.CREDIT_NOTICE: "credit_notice",
    ActionKind.VOICE_CALL: "voice_call",
    ActionKind.DEMAND_LETTER: "demand_letter",
}
_MAX_DEFERRALS = 64


class PlannedAction(BaseModel):
    kind: ActionKind
    at: datetime  # when it is due (already moved into the window and past the caps)
    key: str  # idempotency key: loan / installment / step / nominal due instant
    step_id: str
    installment_seq: int | None = None
    channel: Channel | None = None
    template: str | None = None
    summary: str  # one line for the Web UI timeline
    # Stopped: the rule that stops it ('hold:DISPUTE D-1', 'preference:...'). The workflow
    # writes it down instead of acting, and it is not replayed.
    held_by: str | None = None
    # Moved later than it fell due by the contact window or the call caps: which, and
    # when it fell due.
    delayed_by: str | None = None
    due_at: datetime | None = None
    ref: str | None = None  # the desk's steps: the promise, dispute or hardship id

    @property
    def is_contact(self) -> bool:
        return self.kind in CONTACT_KINDS


class Outcome(BaseModel):
    """What executing an action produced, as the workflow reports it back."""

    delivered: bool = True  # contacts: delivered (False: suppressed or failed)
    deferred: bool = False  # contacts: not sent, too late for the window: still owed
    # A call deferred because the borrower's calls on all loans reached a cap: the first
    # instant another call is allowed.
    not_before: datetime | None = None
    call_key: str | None = None  # a dialed call: its outbox key (see CallAttempt.key)
    dialed: bool = False
    connected: bool = False
    line: str | None = None
    agent_id: str | None = None


# --- Episodes -------------------------------------------------------------------------


def reconcile(case: Case, now: datetime) -> Case:
    """Bring the delinquency episode in line with the ledger (open one on a missed due
    date, move its anchor on a partial cure, end it on a cure), then let promises and
    hardships lapse as time and the ledger say."""
    return lapse(_reconcile_episode(case, now), now)


def _reconcile_episode(case: Case, now: datetime) -> Case:
    today = today_for(case, now)
    oldest = None if case.closed else oldest_overdue(case, today)
    episode = case.episode
    if oldest is None:
        return case if episode is None else case.model_copy(update={"episode": None})
    if episode is None:
        number = case.episodes_started + 1
        fresh = Episode(number=number, anchor_seq=oldest.seq, anchor_due=oldest.due_date)
        return case.model_copy(update={"episode": fresh, "episodes_started": number})
    if (episode.anchor_seq, episode.anchor_due) != (oldest.seq, oldest.due_date):
        moved = episode.model_copy(update={"anchor_seq": oldest.seq, "anchor_due": oldest.due_date})
        return case.model_copy(update={"episode": moved})
    return case


# --- Contact window and call caps ------------------------------------------------------


def in_window(policy: Policy, tz: str, instant: datetime) -> datetime:
    return into_contact_window(instant, tz, policy.contact_window.opens, policy.contact_window.closes)


def window_close(policy: Policy, tz: str, instant: datetime) -> datetime:
    """When the contact window closes on the local day of `instant`."""
    return at_local(local_date(instant, tz), policy.contact_window.closes, tz)


def call_allowed_at(policy: Policy, tz: str, log: list[CallAttempt], instant: datetime) -> datetime:
    """The first instant >= `instant` at which one more call attempt keeps every cap, inside
    the contact window."""
    return next_call_at(policy.call_caps, policy.contact_window, tz, log, instant)


def next_call_at(
    caps: CallCaps, window: ContactWindow, tz: str, log: list[CallAttempt], instant: datetime
) -> datetime:
    """`call_allowed_at` for the caps and window alone: the outbox checks a borrower's
    calls on all loans with it, under the caps and window the workflow sends."""
    at = into_contact_window(instant, tz, window.opens, window.closes)
    for _ in range(_MAX_DEFERRALS):
        day = local_date(at, tz)
        same_day = [c for c in log if local_date(c.at, tz) == day]
        per_line: dict[str, int] = {}
        for c in same_day:
            per_line[c.line] = per_line.get(c.line, 0) + 1
        connected = sum(1 for c in same_day if c.connected)
        if connected >= caps.connected_calls_per_day or (
            per_line and max(per_line.values()) >= caps.dial_attempts_per_line_per_day
        ):
            at = into_contact_window(next_local_midnight(at, tz), tz, window.opens, window.closes)
            continue
        week = sorted(c.at for c in log if at - timedelta(days=7) < c.at <= at)
        if len(week) >= caps.call_attempts_per_7_days:
            # Wait until enough of the window's attempts are more than 7 days old.
            oldest_to_expire = week[len(week) - caps.call_attempts_per_7_days]
            at = into_contact_window(
                oldest_to_expire + timedelta(days=7, microseconds=1), tz, window.opens, window.closes
            )
            continue
        # Calls already recorded after `at` (another loan's, checked a moment later): one
        # more call must also fit every 7-day window that holds it and them (found by
        # review). Then try from that call on.
        later = first_full_later_week(caps, log, at)
        if later is not None:
            at = into_contact_window(later, tz, window.opens, window.closes)
            continue
        return at
    return at  # pragma: no cover - caps are positive, so deferral converges


def first_full_later_week(caps: CallCaps, log: list[CallAttempt], at: datetime) -> datetime | None:
    """The first call after `at` whose 7 days up to it would hold more than the cap with a
    call at `at` added, or None."""
    week = timedelta(days=7)
    for end in sorted(c.at for c in log if at < c.at < at + week):
        if sum(1 for c in log if end - week < c.at <= end) + 1 > caps.call_attempts_per_7_days:
            return end
    return None


# The IVR provider's report of an automated call is logged as contact "ivr:<outbox key>"
# (POST /calls): the result of a call already counted when it was placed.
CALL_RESULT_PREFIX = "ivr:"
CALL_LOG_KEPT = timedelta(days=15)


def trim_call_log(log: list[CallAttempt], now: datetime) -> list[CallAttempt]:
    """Keep what the caps can still ask about: a call logged up to 7 days late is checked
    against the 7 days before it (found by review: 8 days were too few); keep history
    small."""
    return [c for c in log if c.at > now - CALL_LOG_KEPT]


# --- Planning -------------------------------------------------------------------------

AGENT_CHECK = "agent-check"
QUEUE_RELEASE = "queue-release"  # a queued case taken out of the queue while a hold stands


def is_housekeeping(action: PlannedAction) -> bool:
    """Nightly upkeep rather than a step of the ladder: the midnight refresh and the check
    of who holds the case."""
    return action.kind is ActionKind.REFRESH or action.step_id == AGENT_CHECK


def _key(case: Case, seq: int | None, step_id: str, nominal: datetime) -> str:
    return f"{case.loan_id}/{seq if seq is not None else '-'}/{step_id}/{nominal.isoformat()}"


def _followups(case: Case, now: datetime) -> list[PlannedAction]:
    """Owed once nothing is overdue any more (a cure) or the loan is paid off."""
    today = today_for(case, now)
    if not case.closed and days_past_due(case, today) > 0:
        return []
    tag = "payoff" if case.closed else f"cure-{case.episodes_started}"
    actions = []
    if case.agent_requested:
        actions.append(
            PlannedAction(
                kind=ActionKind.RELEASE_AGENT,
                at=now,
                key=f"{case.loan_id}/-/release-agent/{tag}",
                step_id="release-agent",
                summary=f"release agent {case.assigned_agent or '(queued)'}: {tag}",
            )
        )
    if case.credit_report_open:
        actions.append(
            PlannedAction(
                kind=ActionKind.CREDIT_UPDATE,
                at=now,
                key=f"{case.loan_id}/-/credit-update/{tag}",
                step_id="credit-update",
                summary=f"credit bureau update: {tag}",
            )
        )
    return actions


class Gate(BaseModel):
    """What stands between a step and its moment: a hold or the preferences stop it
    (`held_by`); otherwise it goes out on `channel` at `at`, moved later than `due_at`
    by the window or the caps (`delayed_by`)."""

    at: datetime
    channel: Channel | None
    held_by: str | None = None
    delayed_by: str | None = None


ACROSS_LOANS = "call caps across the borrower's loans"


def _gate(
    case: Case, policy: Policy, kind: ActionKind, due_at: datetime, nominal: datetime | None = None
) -> Gate:
    """The step of `kind` that falls due at `due_at` (never before now) under the holds,
    the contact preferences, the contact window and the call caps. `nominal` is the moment
    it fell due, when that was earlier: a step the window or the caps moved is planned
    again when its time comes (then due now), and still says which rule moved it."""
    hold = holding(case, local_date(due_at, case.timezone), kind)
    planned = CHANNEL_OF.get(kind)
    if hold is not None:
        return Gate(at=due_at, channel=planned, held_by=hold.rule)
    if kind not in CONTACT_KINDS:
        return Gate(at=due_at, channel=planned)
    assert planned is not None
    channel = route(case, kind, planned)
    if channel is None:
        accepted = ",".join(c.value for c in allowed_channels(case))
        return Gate(
            at=due_at, channel=planned, held_by=f"preference:{planned.value} not accepted ({accepted})"
        )
    at, delayed_by = _moved(case, policy, channel, due_at)
    if delayed_by is None and nominal is not None and nominal < due_at:
        _, delayed_by = _moved(case, policy, channel, nominal)
    return Gate(at=at, channel=channel, delayed_by=delayed_by)


def _moved(case: Case, policy: Policy, channel: Channel, due_at: datetime) -> tuple[datetime, str | None]:
    """When a contact on `channel` due at `due_at` may go, and the rule that moved it."""
    at = in_window(policy, case.timezone, due_at)
    delayed_by = "contact window" if at > due_at else None
    if channel is Channel.VOICE:
        across = case.calls_deferred_until
        if across is not None and across > at:
            at, delayed_by = in_window(policy, case.timezone, across), ACROSS_LOANS
        capped = call_allowed_at(policy, case.timezone, case.call_log, at)
        if capped > at:
            at, delayed_by = capped, "call caps"
    return at, delayed_by


def _reminders(case: Case, policy: Policy, now: datetime, complete: bool = True) -> list[PlannedAction]:
    """The reminders owed from now on. Not `complete`: only as far as the first one that
    will really happen, when every later installment's reminders fall after it (they
    cannot come first: enough for the next step, and the planner's largest cost)."""
    today = today_for(case, now)
    if stage(case, today) in (CollectionStage.LEGAL, CollectionStage.CHARGED_OFF):
        # Once with legal or charged off, the case is not reminded of routine due dates
        # (a cure brings it back to CURRENT, and the reminders with it).
        return []
    actions: list[PlannedAction] = []
    earliest_day = min((r.day for r in policy.reminders), default=0)
    for inst in unsettled(case, today):
        if not complete:
            first = at_local(inst.due_date + timedelta(days=earliest_day), time(0), case.timezone)
            if any(a.held_by is None and a.at < first for a in actions):
                break
        for reminder in policy.reminders:
            day = inst.due_date + timedelta(days=reminder.day)
            nominal = at_local(day, reminder.at, case.timezone)
            key = _key(case, inst.seq, reminder.id, nominal)
            if key in case.done_reminders:
                continue  # keyed by the due date it reminds of: a moved due date is reminded anew
            send_day = local_date(in_window(policy, case.timezone, nominal), case.timezone)
            # Never before now: a late wake-up must not send at a past (in-window) instant,
            # which would really go out now, possibly after the window closed.
            at = in_window(policy, case.timezone, max(nominal, now))
            if nominal < case.onboarded_at or local_date(at, case.timezone) > send_day:
                continue  # missed before onboarding, or its day has passed: never replayed
            gate = _gate(case, policy, ActionKind.REMINDER, max(nominal, now), nominal)
            actions.append(
                PlannedAction(
                    kind=ActionKind.REMINDER,
                    at=gate.at,
                    key=key,
                    step_id=reminder.id,
                    installment_seq=inst.seq,
                    channel=gate.channel,
                    template=reminder.template,
                    summary=f"{reminder.id} reminder, installment {inst.seq}",
                    held_by=gate.held_by,
                    delayed_by=gate.delayed_by,
                    due_at=nominal,
                )
            )
    return actions


def _nominal(case: Case, episode: Episode, step: LadderStep) -> datetime:
    return at_local(episode.anchor_due + timedelta(days=step.day), step.at, case.timezone)


def _late_start_owed(case: Case, policy: Policy, episode: Episode, now: datetime) -> set[str]:
    """Ids of steps that fell before onboarding and are still owed: the entry step of
    the stage the loan is in and the compliance steps (credit notice and report)."""
    missed = [s for s in policy.ladder if _nominal(case, episode, s) < case.onboarded_at]
    owed = {s.id for s in missed if s.kind in (ActionKind.CREDIT_NOTICE, ActionKind.CREDIT_REPORT)}
    entries = [s for s in missed if s.kind in STAGE_ENTRY_KINDS]
    if entries:
        owed.add(entries[-1].id)
    return owed


def _applies(case: Case, policy: Policy, step: LadderStep, nominal: datetime) -> bool:
    if step.kind is ActionKind.FIELD_VISIT:
        # Judged on the step's own day (DPD 61), like every threshold: not on the evening
        # before it is planned, nor weeks later when penalty or a newly missed installment
        # lifts the overdue over the line (a visit would then pop up at DPD 62 or 90).
        day = local_date(nominal, case.timezone)
        return overdue_amount(case, day) >= policy.field_visit_min_overdue
    if step.kind is ActionKind.CHARGE_OFF:
        return not case.charged_off
    if step.kind is ActionKind.LEGAL_REFERRAL:
        return not case.legal_referred
    return True


def _resume_owed(case: Case, policy: Policy, episode: Episode, today: date) -> set[str]:
    """Ids of held steps still owed once no hold stops them: like a loan onboarded that
    day, the entry step of the stage the loan is in and the credit notice and report
    (unless the loan is reported already). No other held step is replayed."""
    held = [s for s in policy.ladder if s.id in episode.held and s.id not in episode.done]
    owed = set()
    # Judged by the report standing at the bureau (reported and not yet updated after a
    # cure), not by "ever reported": a loan reported in an earlier delinquency, cured and
    # updated, is noticed and reported again in this one (found by review).
    if not case.credit_report_open:
        owed = {s.id for s in held if s.kind in (ActionKind.CREDIT_NOTICE, ActionKind.CREDIT_REPORT)}
        if episode.credit_noticed_at is not None:
            owed -= {s.id for s in held if s.kind is ActionKind.CREDIT_NOTICE}
    entries = [s for s in held if s.kind in STAGE_ENTRY_KINDS]
    if entries:
        owed.add(entries[-1].id)
    # Only once nothing stops them any more (a step still held is not planned again).
    return {sid for sid in owed if holding(case, today, policy_step(policy, sid).kind) is None}


def policy_step(policy: Policy, step_id: str) -> LadderStep:
    return next(s for s in policy.ladder if s.id == step_id)


def _ladder(case: Case, policy: Policy, now: datetime) -> list[PlannedAction]:
    episode = case.episode
    if episode is None or case.closed:
        return []
    late_owed = _late_start_owed(case, policy, episode, now)
    resume_owed = _resume_owed(case, policy, episode, today_for(case, now))
    pending = [
        s
        for s in policy.ladder
        if s.id not in episode.done
        and (s.id not in episode.held or s.id in resume_owed)
        and (_nominal(case, episode, s) >= case.onboarded_at or s.id in late_owed)
    ]
    # Stale is judged against the done steps too: once the latest due contact went out, the
    # older ones it overtook stay dropped (not replayed one by one, newest first).
    pending_ids = {s.id for s in pending}
    due_contacts = [
        s
        for s in policy.ladder
        if s.is_contact
        and (s.id in pending_ids or s.id in episode.done)
        and _nominal(case, episode, s) <= now
    ]
    stale = {s.id for s in due_contacts[:-1] if s.kind is not ActionKind.CREDIT_NOTICE}
    actions = []
    for step in pending:
        nominal = _nominal(case, episode, step)
        if step.id in stale or not _applies(case, policy, step, nominal):
            continue
        # Never before now: a step owed since a past moment (a late wake-up or a late start)
        # is due now, and successive actions never go back in time.
        due_at = max(nominal, now)
        if (
            step.kind is ActionKind.CREDIT_REPORT
            and holding(case, local_date(due_at, case.timezone), step.kind) is None
        ):
            if episode.credit_noticed_at is None:
                continue  # no notice, no report
            due_at = max(due_at, episode.credit_noticed_at + timedelta(days=policy.credit_notice_lead_days))
        gate = _gate(case, policy, step.kind, due_at, nominal)
        if gate.held_by is not None and step.id in episode.held:
            continue  # stopped once already: written down, not again
        actions.append(
            PlannedAction(
                kind=step.kind,
                at=gate.at,
                key=_key(case, episode.anchor_seq, step.id, nominal),
                step_id=step.id,
                installment_seq=episode.anchor_seq,
                channel=gate.channel,
                template=TEMPLATE_OF.get(step.kind),
                summary=f"DPD {step.day}: {step.kind.value.replace('_', ' ')}"
                f" (installment {episode.anchor_seq})",
                held_by=gate.held_by,
                delayed_by=gate.delayed_by,
                due_at=nominal if gate.delayed_by else due_at,
            )
        )
    # A case waiting in the unassigned queue is not handed to a collector while a hold
    # stops the escalation (a dispute, a hardship): it leaves the queue (the database's
    # queue hands rows out whenever an agent frees up), and the assignment is owed again
    # when the hold ends (found by review).
    hold = holding(case, today_for(case, now), ActionKind.ASSIGN_AGENT)
    waiting_held = case.assigned_agent is None and hold is not None
    if waiting_held and case.agent_requested and hold is not None:
        actions.append(
            PlannedAction(
                kind=ActionKind.RELEASE_AGENT,
                at=now,
                key=f"{case.loan_id}/{episode.anchor_seq}/{QUEUE_RELEASE}/{hold.reason.value}-{hold.ref}",
                step_id=QUEUE_RELEASE,
                installment_seq=episode.anchor_seq,
                summary=f"out of the unassigned queue while {hold.rule} holds escalation",
            )
        )
    if (
        case.agent_requested
        and not case.charged_off
        and not waiting_held
        and days_past_due(case, today_for(case, now)) > 0
    ):
        # Each local midnight after the last look, ask again who holds the case: a case
        # waiting in the unassigned queue is picked up when an agent is added, and one
        # whose agent was deactivated has moved to another (the DB is the truth).
        last_try = case.agent_tried_on or today_for(case, now)
        check = start_of_day(last_try + timedelta(days=1), case.timezone)
        waiting = case.assigned_agent is None
        actions.append(
            PlannedAction(
                kind=ActionKind.ASSIGN_AGENT,
                at=max(check, now),
                key=f"{case.loan_id}/{episode.anchor_seq}/{AGENT_CHECK}/{check.isoformat()}",
                step_id=AGENT_CHECK,
                installment_seq=episode.anchor_seq,
                summary="assign agent: retry from the unassigned queue"
                if waiting
                else f"confirm agent {case.assigned_agent}",
            )
        )
    return actions


def dispute_overdue_key(loan_id: str, dispute_id: str) -> str:
    """The key of a dispute's escalation (its case task): the records close the task by it
    once the dispute is resolved."""
    return f"{loan_id}/-/dispute-overdue/{dispute_id}"


def _desk(case: Case, policy: Policy, now: datetime) -> list[PlannedAction]:
    """The collector's desk's own steps: the broken-promise SMS, the escalation of a
    dispute left open too long (also once the loan is paid off), and the review of a
    hardship that ended."""
    actions = []
    episode = case.episode.number if case.episode is not None and not case.closed else None
    for p in case.promises:
        # Only while its episode lasts: a loan cured before the SMS went out is not told
        # that its payment has not arrived.
        if p.status is PromiseStatus.BROKEN and not p.notified and p.episode == episode:
            assert p.settled_at is not None
            gate = _gate(case, policy, ActionKind.BROKEN_PROMISE, max(p.settled_at, now), p.settled_at)
            actions.append(
                PlannedAction(
                    kind=ActionKind.BROKEN_PROMISE,
                    at=gate.at,
                    key=f"{case.loan_id}/-/broken-promise/{p.promise_id}",
                    ref=p.promise_id,
                    step_id="broken-promise",
                    channel=gate.channel,
                    template=TEMPLATE_OF[ActionKind.BROKEN_PROMISE],
                    summary=f"broken promise {p.promise_id}: SMS",
                    held_by=gate.held_by,
                    delayed_by=gate.delayed_by,
                    due_at=p.settled_at,
                )
            )
    for d in case.disputes:
        if d.status is DisputeStatus.OPEN and not d.escalated:
            due = d.opened_at + timedelta(days=policy.dispute_response_days)
            actions.append(
                PlannedAction(
                    kind=ActionKind.DISPUTE_OVERDUE,
                    at=max(due, now),
                    key=dispute_overdue_key(case.loan_id, d.dispute_id),
                    ref=d.dispute_id,
                    step_id="dispute-overdue",
                    summary=f"dispute {d.dispute_id} open {policy.dispute_response_days} days: escalate",
                )
            )
    for h in case.hardships:
        if h.reviewed or case.closed:
            continue
        # An active hardship's review is planned for the midnight it ends: waking then
        # ends it (lapse) and files the review.
        ends = h.ended_at or start_of_day(h.until + timedelta(days=1), case.timezone)
        actions.append(
            PlannedAction(
                kind=ActionKind.HARDSHIP_REVIEW,
                at=max(ends, now),
                key=f"{case.loan_id}/-/hardship-review/{h.hardship_id}",
                ref=h.hardship_id,
                step_id="hardship-review",
                summary=f"hardship {h.hardship_id} ended: review",
            )
        )
    return actions


def _refresh(case: Case, now: datetime) -> list[PlannedAction]:
    today = today_for(case, now)
    open_items = [] if case.closed else unsettled(case, today)
    if not open_items:
        return []
    # The case changes at local midnights only from the earliest unpaid due date on (it
    # falls due, then overdue, DPD and penalty grow). Due at the first such midnight
    # after the last refresh, counted from absolute days, never from `now`: waking at
    # that midnight must find it due, not a day away. A due date moved by an extension
    # moves this wake with it.
    day = max(
        min(i.due_date for i in open_items),
        local_date(case.onboarded_at, case.timezone) + timedelta(days=1),
    )
    if case.refreshed_on is not None:
        day = max(day, case.refreshed_on + timedelta(days=1))
    midnight = start_of_day(day, case.timezone)
    return [
        PlannedAction(
            kind=ActionKind.REFRESH,
            at=max(midnight, now),
            key=f"{case.loan_id}/-/refresh/{midnight.isoformat()}",
            step_id="refresh",
            summary=f"midnight refresh ({local_date(midnight, case.timezone).isoformat()})",
        )
    ]


def plan(case: Case, policy: Policy, now: datetime, complete: bool = True) -> list[PlannedAction]:
    """Every action the case owes from `now` on, earliest first. Not `complete`: the same
    first actions (the first one, and the first that a hold does not stop), without
    reminders of installments further off."""
    reminders = _reminders(case, policy, now, complete)
    actions = _followups(case, now) + _ladder(case, policy, now) + reminders
    actions += _desk(case, policy, now) + _refresh(case, now)
    order = {a.key: n for n, a in enumerate(actions)}
    return sorted(actions, key=lambda a: (a.at, order[a.key]))


def next_action(case: Case, policy: Policy, now: datetime) -> PlannedAction | None:
    """The next thing to do, or None once the case is closed and nothing is owed."""
    case = reconcile(case, now)
    actions = plan(case, policy, now, complete=False)
    return actions[0] if actions else None


# --- Recording outcomes -----------------------------------------------------------------


def record_outcome(case: Case, action: PlannedAction, outcome: Outcome, now: datetime) -> Case:
    """The case after `action` was executed with `outcome`."""
    if outcome.deferred:
        # Nothing happened; the step stays owed: planned into the next window, or, when
        # the borrower's calls on all loans reached a cap, not before that cap allows.
        if outcome.not_before is None:
            return case
        until = max(outcome.not_before, case.calls_deferred_until or outcome.not_before)
        return case.model_copy(update={"calls_deferred_until": until})
    if action.held_by is not None:
        return _record_held(case, action)
    update: dict[str, object] = {}
    episode = case.episode
    if action.kind in _DESK_STEPS:
        update = _record_desk_step(case, action)
    elif action.kind is ActionKind.REMINDER:
        update["done_reminders"] = [*case.done_reminders, action.key]
    elif episode is not None and action.step_id in {s.id for s in case.policy.ladder}:
        changes: dict[str, object] = {"done": [*episode.done, action.step_id]}
        if action.kind is ActionKind.CREDIT_NOTICE and outcome.delivered:
            changes["credit_noticed_at"] = now
        update["episode"] = episode.model_copy(update=changes)
    if action.is_contact and outcome.delivered:
        update["contacts_sent"] = case.contacts_sent + 1
    if outcome.dialed:
        if case.calls_deferred_until is not None and now >= case.calls_deferred_until:
            update["calls_deferred_until"] = None  # served: the call it waited for went out
        attempt = CallAttempt(
            at=now, line=outcome.line or "primary", connected=outcome.connected, key=outcome.call_key
        )
        kept = trim_call_log(case.call_log, now)
        if outcome.call_key is not None:
            # The IVR's report of this very call came first and was logged as a call of
            # its own: it is this call (found by review), not a second one.
            reported = CALL_RESULT_PREFIX + outcome.call_key
            early = [c for c in kept if c.key == reported]
            if early:
                kept = [c for c in kept if c.key != reported]
                attempt = attempt.model_copy(update={"connected": attempt.connected or early[0].connected})
        update["call_log"] = [*kept, attempt]
    kind = action.kind
    if kind is ActionKind.CREDIT_REPORT:
        update |= {"credit_reported": True, "credit_report_open": True}
    elif kind is ActionKind.ASSIGN_AGENT:
        update |= {
            "agent_requested": True,
            "assigned_agent": outcome.agent_id,
            "agent_tried_on": today_for(case, now),
        }
    elif kind is ActionKind.LEGAL_REFERRAL:
        update["legal_referred"] = True
    elif kind is ActionKind.CHARGE_OFF:
        update["charged_off"] = True
    elif kind is ActionKind.RELEASE_AGENT:
        update |= {"agent_requested": False, "assigned_agent": None}
        if action.step_id == QUEUE_RELEASE and episode is not None:
            # The assignment is owed again once the hold ends (see _resume_owed).
            assign = next(s.id for s in case.policy.ladder if s.kind is ActionKind.ASSIGN_AGENT)
            update["episode"] = episode.model_copy(
                update={
                    "done": [d for d in episode.done if d != assign],
                    "held": [*[h for h in episode.held if h != assign], assign],
                }
            )
    elif kind is ActionKind.CREDIT_UPDATE:
        update["credit_report_open"] = False
    elif kind is ActionKind.REFRESH:
        update["refreshed_on"] = today_for(case, now)
    return case.model_copy(update=update)


_DESK_STEPS = frozenset({ActionKind.BROKEN_PROMISE, ActionKind.DISPUTE_OVERDUE, ActionKind.HARDSHIP_REVIEW})


def _record_desk_step(case: Case, action: PlannedAction) -> dict[str, object]:
    ref = action.ref
    if action.kind is ActionKind.BROKEN_PROMISE:
        promises = [
            p.model_copy(update={"notified": True}) if p.promise_id == ref else p for p in case.promises
        ]
        return {"promises": promises}
    if action.kind is ActionKind.DISPUTE_OVERDUE:
        disputes = [
            d.model_copy(update={"escalated": True}) if d.dispute_id == ref else d for d in case.disputes
        ]
        return {"disputes": disputes}
    hardships = [
        h.model_copy(update={"reviewed": True}) if h.hardship_id == ref else h for h in case.hardships
    ]
    return {"hardships": hardships}


def _record_held(case: Case, action: PlannedAction) -> Case:
    """A step a hold or a preference stopped: done for good (never replayed), except
    what resuming after a hold owes (see _resume_owed)."""
    episode = case.episode
    if action.kind is ActionKind.REMINDER:
        return case.model_copy(update={"done_reminders": [*case.done_reminders, action.key]})
    if action.kind in _DESK_STEPS:
        return case.model_copy(update=_record_desk_step(case, action))
    if episode is not None and action.step_id not in episode.held:
        return case.model_copy(
            update={"episode": episode.model_copy(update={"held": [*episode.held, action.step_id]})}
        )
    return case
