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
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from domain.calendar import at_local, into_contact_window, local_date, next_local_midnight, start_of_day
from domain.case import CallAttempt, Case, Episode
from domain.enums import CONTACT_KINDS, ActionKind, Channel, CollectionStage
from domain.ledger import (
    days_past_due,
    oldest_overdue,
    overdue_amount,
    stage,
    today_for,
    unsettled,
)
from domain.policy import STAGE_ENTRY_KINDS, LadderStep, Policy

CHANNEL_OF = {
    ActionKind.REMINDER: Channel.SMS,
    ActionKind.OVERDUE_SMS: Channel.SMS,
    ActionKind.CREDIT_NOTICE: Channel.SMS,
    ActionKind.VOICE_CALL: Channel.VOICE,
    ActionKind.DEMAND_LETTER: Channel.LETTER,
}
TEMPLATE_OF = {
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

    @property
    def is_contact(self) -> bool:
        return self.kind in CONTACT_KINDS


class Outcome(BaseModel):
    """What executing an action produced, as the workflow reports it back."""

    delivered: bool = True  # contacts: delivered (False: suppressed or failed)
    deferred: bool = False  # contacts: not sent, too late for the window: still owed
    dialed: bool = False
    connected: bool = False
    line: str | None = None
    agent_id: str | None = None


# --- Episodes -------------------------------------------------------------------------


def reconcile(case: Case, now: datetime) -> Case:
    """Bring the delinquency episode in line with the ledger: open one on a missed due
    date, move its anchor on a partial cure, end it on a cure."""
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
    caps = policy.call_caps
    at = in_window(policy, tz, instant)
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
            at = in_window(policy, tz, next_local_midnight(at, tz))
            continue
        week = sorted(c.at for c in log if at - timedelta(days=7) < c.at <= at)
        if len(week) >= caps.call_attempts_per_7_days:
            # Wait until enough of the window's attempts are more than 7 days old.
            oldest_to_expire = week[len(week) - caps.call_attempts_per_7_days]
            at = in_window(policy, tz, oldest_to_expire + timedelta(days=7, microseconds=1))
            continue
        return at
    return at  # pragma: no cover - caps are positive, so deferral converges


def trim_call_log(log: list[CallAttempt], now: datetime) -> list[CallAttempt]:
    """Only the last 8 days matter to the caps; keep history small."""
    return [c for c in log if c.at > now - timedelta(days=8)]


# --- Planning -------------------------------------------------------------------------

AGENT_CHECK = "agent-check"


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


def _reminders(case: Case, policy: Policy, now: datetime) -> list[PlannedAction]:
    today = today_for(case, now)
    if stage(case, today) in (CollectionStage.LEGAL, CollectionStage.CHARGED_OFF):
        # Once with legal or charged off, the case is not reminded of routine due dates
        # (a cure brings it back to CURRENT, and the reminders with it).
        return []
    actions = []
    for inst in unsettled(case, today):
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
            actions.append(
                PlannedAction(
                    kind=ActionKind.REMINDER,
                    at=at,
                    key=key,
                    step_id=reminder.id,
                    installment_seq=inst.seq,
                    channel=Channel.SMS,
                    template=reminder.template,
                    summary=f"{reminder.id} reminder, installment {inst.seq}",
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


def _ladder(case: Case, policy: Policy, now: datetime) -> list[PlannedAction]:
    episode = case.episode
    if episode is None or case.closed:
        return []
    late_owed = _late_start_owed(case, policy, episode, now)
    pending = [
        s
        for s in policy.ladder
        if s.id not in episode.done and (_nominal(case, episode, s) >= case.onboarded_at or s.id in late_owed)
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
        at = max(nominal, now)
        if step.kind is ActionKind.CREDIT_REPORT:
            if episode.credit_noticed_at is None:
                continue  # no notice, no report
            at = max(at, episode.credit_noticed_at + timedelta(days=policy.credit_notice_lead_days))
        if step.is_contact:
            at = in_window(policy, case.timezone, at)
        if step.kind is ActionKind.VOICE_CALL:
            at = call_allowed_at(policy, case.timezone, case.call_log, at)
        actions.append(
            PlannedAction(
                kind=step.kind,
                at=at,
                key=_key(case, episode.anchor_seq, step.id, nominal),
                step_id=step.id,
                installment_seq=episode.anchor_seq,
                channel=CHANNEL_OF.get(step.kind),
                template=TEMPLATE_OF.get(step.kind),
                summary=f"DPD {step.day}: {step.kind.value.replace('_', ' ')}"
                f" (installment {episode.anchor_seq})",
            )
        )
    if case.agent_requested and not case.charged_off and days_past_due(case, today_for(case, now)) > 0:
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


def plan(case: Case, policy: Policy, now: datetime) -> list[PlannedAction]:
    """Every action the case owes from `now` on, earliest first."""
    actions = _followups(case, now) + _ladder(case, policy, now) + _reminders(case, policy, now)
    actions += _refresh(case, now)
    order = {a.key: n for n, a in enumerate(actions)}
    return sorted(actions, key=lambda a: (a.at, order[a.key]))


def next_action(case: Case, policy: Policy, now: datetime) -> PlannedAction | None:
    """The next thing to do, or None once the case is closed and nothing is owed."""
    case = reconcile(case, now)
    actions = plan(case, policy, now)
    return actions[0] if actions else None


# --- Recording outcomes -----------------------------------------------------------------


def record_outcome(case: Case, action: PlannedAction, outcome: Outcome, now: datetime) -> Case:
    """The case after `action` was executed with `outcome`."""
    if outcome.deferred:
        return case  # nothing happened; the step stays owed and is planned into the next window
    update: dict[str, object] = {}
    episode = case.episode
    if action.kind is ActionKind.REMINDER:
        update["done_reminders"] = [*case.done_reminders, action.key]
    elif episode is not None and action.step_id in {s.id for s in case.policy.ladder}:
        changes: dict[str, object] = {"done": [*episode.done, action.step_id]}
        if action.kind is ActionKind.CREDIT_NOTICE and outcome.delivered:
            changes["credit_noticed_at"] = now
        update["episode"] = episode.model_copy(update=changes)
    if action.is_contact and outcome.delivered:
        update["contacts_sent"] = case.contacts_sent + 1
    if outcome.dialed:
        attempt = CallAttempt(at=now, line=outcome.line or "primary", connected=outcome.connected)
        update["call_log"] = [*trim_call_log(case.call_log, now), attempt]
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
    elif kind is ActionKind.CREDIT_UPDATE:
        update["credit_report_open"] = False
    elif kind is ActionKind.REFRESH:
        update["refreshed_on"] = today_for(case, now)
    return case.model_copy(update=update)
