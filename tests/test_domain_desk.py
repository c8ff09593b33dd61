"""The collector's desk and borrower protections as pure rules (domain/protections.py,
domain/desk.py and the planner), driven like the workflow drives them.

The standard loan: 1,200,000 at 1800 bps over 12 months, first due 2024-02-15 in
Asia/Shanghai; DPD n of it is 2024-02-15 + n days.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest

from domain import desk
from domain.case import CallAttempt, Case, Hardship
from domain.enums import (
    ActionKind,
    Channel,
    ContactResult,
    DisputeOutcome,
    DisputeReason,
    HardshipReason,
    HoldReason,
    LoggedChannel,
    PromiseStatus,
    RestructuringKind,
)
from domain.intake import take_payment, take_restructuring
from domain.ledger import CaseError, outstanding, overdue_amount, penalty_accrued, today_for
from domain.planner import Outcome, next_action, next_call_at, plan, reconcile, record_outcome
from domain.protections import broken_promises, holding, lapse, route, strongest_hold
from tests.test_domain_helpers import FIRST_DUE, Executed, as_local, drive, local, make_case

K = ActionKind


def dpd(n: int, hh: int = 0, mm: int = 0) -> datetime:
    return local(FIRST_DUE + timedelta(days=n), hh, mm)


def day(n: int) -> date:
    return FIRST_DUE + timedelta(days=n)


def at(case: Case, now: datetime) -> Case:
    """The standard case driven (never paid) to `now`."""
    driven, _, _ = drive(case, local(date(2024, 1, 15), 10), now)
    return reconcile(driven, now)


def promise(
    case: Case, now: datetime, pid: str = "P-1", amount: int = 10_000, by: int = 3, **kw: Any
) -> Case:
    return desk.record_promise(
        case,
        promise_id=pid,
        amount=amount,
        promised_date=today_for(case, now) + timedelta(days=by),
        agent_id="agent-1",
        made_at=kw.get("made_at"),
        now=now,
    ).case


def dispute(case: Case, now: datetime, did: str = "D-1", opened_at: datetime | None = None) -> Case:
    return desk.open_dispute(
        case, dispute_id=did, reason=DisputeReason.AMOUNT, opened_by="ops", opened_at=opened_at, now=now
    ).case


def hardship(case: Case, now: datetime, until: date, hid: str = "H-1") -> Case:
    return desk.start_hardship(
        case,
        hardship_id=hid,
        reason=HardshipReason.ILLNESS,
        until=until,
        approved_by="supervisor",
        approval_ref="HR-1",
        now=now,
    ).case


def pay(case: Case, pid: str, amount: int, now: datetime, paid_at: datetime | None = None) -> Case:
    return take_payment(case, payment_id=pid, amount=amount, currency=None, paid_at=paid_at, now=now).case


def run(case: Case, now: datetime, until: datetime) -> tuple[Case, list[Executed]]:
    driven, log, _ = drive(case, now, until)
    return driven, log


def ran(log: list[Executed]) -> list[str]:
    """Steps executed (not stopped), without the nightly housekeeping."""
    return [
        e.action.step_id
        for e in log
        if e.action.held_by is None and e.action.kind is not K.REFRESH and e.action.step_id != "agent-check"
    ]


def held(log: list[Executed]) -> dict[str, str]:
    return {e.action.step_id: e.action.held_by or "" for e in log if e.action.held_by is not None}


# --- Which steps each hold holds (DESIGN.md part 2, as a table) --------------------------

HELD_BY: dict[HoldReason, set[ActionKind]] = {
    HoldReason.PROMISE: {
        K.OVERDUE_SMS,
        K.VOICE_CALL,
        K.DEMAND_LETTER,
        K.FIELD_VISIT,
        K.LEGAL_REFERRAL,
        K.CHARGE_OFF,
    },
    HoldReason.DISPUTE: {
        K.OVERDUE_SMS,
        K.CREDIT_NOTICE,
        K.VOICE_CALL,
        K.DEMAND_LETTER,
        K.BROKEN_PROMISE,
        K.CREDIT_REPORT,
        K.ASSIGN_AGENT,
        K.FIELD_VISIT,
        K.LEGAL_REFERRAL,
        K.CHARGE_OFF,
    },
}
HELD_BY[HoldReason.HARDSHIP] = HELD_BY[HoldReason.DISPUTE] | {K.REMINDER}


def with_hold(reason: HoldReason) -> tuple[Case, date]:
    now = dpd(10, 12)
    case = at(make_case(), now)
    if reason is HoldReason.PROMISE:
        case = promise(case, now)
    elif reason is HoldReason.DISPUTE:
        case = dispute(case, now)
    else:
        case = hardship(case, now, day(20))
    return case, day(10)


@pytest.mark.parametrize("reason", list(HoldReason))
@pytest.mark.parametrize("kind", list(ActionKind))
def test_each_hold_stops_exactly_its_steps(reason: HoldReason, kind: ActionKind) -> None:
    case, today = with_hold(reason)
    stopped = holding(case, today, kind)
    assert (stopped is not None) == (kind in HELD_BY[reason])
    if stopped is not None:
        assert stopped.reason is reason


def test_the_strongest_hold_is_shown() -> None:
    now = dpd(10, 12)
    case = promise(at(make_case(), now), now)
    assert strongest_hold(case, day(10)).reason is HoldReason.PROMISE  # type: ignore[union-attr]
    case = hardship(case, now, day(12))
    assert strongest_hold(case, day(10)).reason is HoldReason.HARDSHIP  # type: ignore[union-attr]
    case = dispute(case, now)
    hold = strongest_hold(case, day(10))
    assert hold is not None and (hold.reason, hold.until, hold.ref) == (HoldReason.DISPUTE, None, "D-1")


# --- Promises ------------------------------------------------------------------------------


def test_a_promise_is_kept_the_moment_the_payments_since_it_reach_its_amount() -> None:
    now = dpd(5, 12)
    case = at(make_case(), now)
    earlier = dpd(5, 11)
    case = take_payment(
        case, payment_id="before", amount=5_000, currency=None, paid_at=None, now=earlier
    ).case
    case = promise(case, now, amount=20_000)
    for n, amount in enumerate((15_000, 4_999)):
        case = take_payment(
            case, payment_id=f"p{n}", amount=amount, currency=None, paid_at=None, now=now
        ).case
    assert case.promises[0].status is PromiseStatus.OPEN  # 19,999 since it was made
    case = take_payment(case, payment_id="p3", amount=1, currency=None, paid_at=None, now=now).case
    assert case.promises[0].status is PromiseStatus.KEPT and strongest_hold(case, day(5)) is None


def test_a_promise_is_broken_at_the_local_midnight_after_its_date() -> None:
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now, by=2)
    assert lapse(case, dpd(7, 23, 59)).promises[0].status is PromiseStatus.OPEN
    broken = lapse(case, dpd(8)).promises[0]
    assert broken.status is PromiseStatus.BROKEN and broken.settled_at == dpd(8)


def test_a_cure_keeps_the_open_promise() -> None:
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now, amount=10**6)
    paid = take_payment(
        case, payment_id="cure", amount=overdue_amount(case, day(5)), currency=None, paid_at=None, now=now
    ).case
    assert paid.episode is None and paid.promises[0].status is PromiseStatus.KEPT


def test_a_promise_holds_calls_but_not_reporting_and_the_broken_sms_goes_in_the_next_window() -> None:
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now, by=4)  # through DPD 9
    case, log = run(case, now, dpd(16, 12))
    assert held(log) == {"dpd-7-call": "hold:PROMISE P-1"}
    assert ran(log) == ["broken-promise", "dpd-14-call", "dpd-15-credit-report"]
    sms = next(e for e in log if e.action.kind is K.BROKEN_PROMISE)
    assert as_local(sms.at) == dpd(10, 8) and sms.action.channel is Channel.SMS
    assert case.promises[0].status is PromiseStatus.BROKEN and "dpd-7-call" in case.episode.held  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": 10**9}, "amount"),
        ({"by": -1}, "promised_date"),
        ({"by": 8}, "promised_date"),
    ],
)
def test_a_bad_promise_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    now = dpd(5, 12)
    case = at(make_case(), now)
    with pytest.raises(CaseError) as exc:
        promise(case, now, **change)
    assert exc.value.field == field


def test_promises_only_while_overdue_one_at_a_time_and_a_repeat_is_a_duplicate() -> None:
    before_due = local(date(2024, 2, 10), 12)
    with pytest.raises(CaseError, match="nothing is overdue") as exc:
        promise(at(make_case(), before_due), before_due)
    assert exc.value.field == "loan_id"
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now)
    with pytest.raises(CaseError, match="one open promise at a time"):
        promise(case, now, pid="P-2")
    again = desk.record_promise(
        case, promise_id="P-1", amount=1, promised_date=day(5), agent_id="x", made_at=None, now=now
    )
    assert again.duplicate and again.case == case and again.status == "open"


def test_after_two_broken_promises_none_until_the_loan_is_cured() -> None:
    now = dpd(5, 12)
    case = at(make_case(), now)
    for n in range(2):
        case = promise(case, now, pid=f"P-{n}", by=1)
        now += timedelta(days=2)
        case = reconcile(case, now)
    with pytest.raises(CaseError, match=r"max_broken_promises = 2") as exc:
        promise(case, now, pid="P-3")
    assert exc.value.field == "promise_id"
    cured = take_payment(
        case,
        payment_id="cure",
        amount=overdue_amount(case, today_for(case, now)),
        currency=None,
        paid_at=None,
        now=now,
    ).case
    late = now + timedelta(days=40)  # the next installment missed: a new episode
    assert promise(reconcile(cured, late), late, pid="P-4").promises[-1].status is PromiseStatus.OPEN


def test_a_promise_entered_after_its_date_is_broken_at_once() -> None:
    now = dpd(8, 12)
    case = at(make_case(), now)
    taken = desk.record_promise(
        case,
        promise_id="P-late",
        amount=5_000,
        promised_date=day(6),
        agent_id="agent-1",
        made_at=dpd(5, 15),
        now=now,
    )
    assert taken.status == "broken" and taken.case.promises[0].settled_at == dpd(7)


# --- Disputes -----------------------------------------------------------------------------


def test_a_dispute_from_grace_holds_everything_is_escalated_once_and_resumes_like_onboarding() -> None:
    now = dpd(2, 12)
    case = dispute(at(make_case(), now), now)
    case, log = run(case, now, dpd(40, 12))
    stopped = held(log)
    assert set(stopped) == {
        "dpd-3-sms",
        "dpd-5-credit-notice",
        "dpd-7-call",
        "dpd-14-call",
        "dpd-15-credit-report",
        "dpd-21-call",
        "dpd-31-assign-agent",
    }
    assert all(rule == "hold:DISPUTE D-1" for rule in stopped.values())
    (escalation,) = [e for e in log if e.action.kind is K.DISPUTE_OVERDUE]
    assert escalation.at == now + timedelta(days=20)
    resolved = desk.resolve_dispute(
        case, dispute_id="D-1", outcome=DisputeOutcome.REJECTED, resolved_by="ops", now=dpd(40, 12)
    ).case
    after, log = run(resolved, dpd(40, 12), dpd(60, 12))
    ladder = {s.id for s in case.policy.ladder}
    assert [sid for sid in ran(log) if sid in ladder] == [
        "dpd-5-credit-notice",
        "dpd-31-assign-agent",
        "dpd-15-credit-report",
    ]
    notice, report = (e for e in log if e.action.kind in (K.CREDIT_NOTICE, K.CREDIT_REPORT))
    assert report.at - notice.at >= timedelta(days=10)
    assert after.assigned_agent == "agent-7"


def test_a_dispute_entered_late_is_escalated_from_when_it_was_received() -> None:
    now = dpd(30, 12)
    case = dispute(at(make_case(), now), now, opened_at=dpd(25, 9))
    action = next(a for a in plan(case, case.policy, now) if a.kind is K.DISPUTE_OVERDUE)
    assert action.at == dpd(45, 9)  # 20 days after it was received, not after it was entered
    with pytest.raises(CaseError, match="more than 40 days ago") as exc:
        dispute(case, now, did="D-2", opened_at=dpd(-11, 9))
    assert exc.value.field == "opened_at"


def test_resolving_a_dispute_twice() -> None:
    now = dpd(5, 12)
    case = dispute(at(make_case(), now), now)
    upheld = desk.resolve_dispute(
        case, dispute_id="D-1", outcome=DisputeOutcome.UPHELD, resolved_by="o", now=now
    )
    again = desk.resolve_dispute(
        upheld.case, dispute_id="D-1", outcome=DisputeOutcome.UPHELD, resolved_by="o", now=now
    )
    assert again.duplicate and again.case == upheld.case
    with pytest.raises(CaseError, match="already resolved as upheld") as exc:
        desk.resolve_dispute(
            upheld.case, dispute_id="D-1", outcome=DisputeOutcome.REJECTED, resolved_by="o", now=now
        )
    assert exc.value.field == "outcome"


# --- Hardship ----------------------------------------------------------------------------


def test_a_hardship_freezes_penalty_on_its_days_and_is_reviewed_when_it_ends() -> None:
    now = dpd(10, 12)
    case = hardship(at(make_case(), now), now, until=day(39))
    frozen = [outstanding(case, day(n)).penalty for n in range(10, 41)]
    assert len(set(frozen)) == 1  # not a fen more through the last day of relief
    assert outstanding(case, day(41)).penalty > frozen[-1]
    without = at(make_case(), now)
    thirty_days = sum(
        penalty_accrued(without, i, day(40)) - penalty_accrued(without, i, day(10))
        for i in without.installments
    )
    assert outstanding(without, day(41)).penalty - outstanding(case, day(41)).penalty == thirty_days
    case, log = run(case, now, dpd(45, 12))
    assert [e.at for e in log if e.action.kind is K.HARDSHIP_REVIEW] == [dpd(40)]
    assert "dpd-14-call" in held(log) and "dpd-31-assign-agent" in held(log)
    # The midnight it ends: the review, and the ladder resumes like onboarding (the credit
    # report, its notice long delivered, and the agent of the stage the loan is in).
    resumed = {e.action.step_id for e in log if e.at == dpd(40) and e.action.held_by is None}
    assert {"hardship-review", "dpd-15-credit-report", "dpd-31-assign-agent"} <= resumed
    assert "dpd-21-call" not in ran(log)  # not replayed


def test_a_hardship_ended_early_freezes_only_the_days_before() -> None:
    now = dpd(10, 12)
    case = hardship(at(make_case(), now), now, until=day(60))
    ended = desk.end_hardship(case, hardship_id="H-1", ended_by="ops", now=dpd(15, 9))
    assert ended.case.hardships[0].last_day == day(14)
    assert outstanding(ended.case, day(15)).penalty == outstanding(case, day(15)).penalty
    assert outstanding(ended.case, day(16)).penalty > outstanding(case, day(16)).penalty
    again = desk.end_hardship(ended.case, hardship_id="H-1", ended_by="ops", now=dpd(15, 10))
    assert again.duplicate


@pytest.mark.parametrize(
    ("until", "kw", "field"),
    [
        (day(9), {}, "until"),
        (day(101), {}, "until"),
        (day(20), {"approved_by": None}, "approved_by"),
        (day(20), {"approval_ref": " "}, "approval_ref"),
    ],
)
def test_a_bad_hardship_is_refused_naming_the_field(until: date, kw: dict[str, Any], field: str) -> None:
    now = dpd(10, 12)
    args: dict[str, Any] = {"approved_by": "supervisor", "approval_ref": "HR-1"} | kw
    with pytest.raises(CaseError) as exc:
        desk.start_hardship(
            at(make_case(), now), hardship_id="H", reason=HardshipReason.OTHER, until=until, now=now, **args
        )
    assert exc.value.field == field


def test_one_hardship_at_a_time() -> None:
    now = dpd(10, 12)
    case = hardship(at(make_case(), now), now, until=day(20))
    with pytest.raises(CaseError, match="is active until") as exc:
        hardship(case, now, until=day(30), hid="H-2")
    assert exc.value.field == "hardship_id"


# --- Contact preferences -----------------------------------------------------------------

ROUTES = [
    # (accepted, kind, planned, goes out on)
    ({Channel.SMS, Channel.EMAIL}, K.VOICE_CALL, Channel.VOICE, Channel.SMS),
    ({Channel.EMAIL}, K.VOICE_CALL, Channel.VOICE, Channel.EMAIL),
    ({Channel.EMAIL}, K.OVERDUE_SMS, Channel.SMS, Channel.EMAIL),
    ({Channel.LETTER}, K.VOICE_CALL, Channel.VOICE, None),
    ({Channel.LETTER}, K.REMINDER, Channel.SMS, None),
    ({Channel.LETTER}, K.CREDIT_NOTICE, Channel.SMS, Channel.LETTER),
    ({Channel.VOICE}, K.DEMAND_LETTER, Channel.LETTER, Channel.LETTER),
    ({Channel.VOICE}, K.VOICE_CALL, Channel.VOICE, Channel.VOICE),
]


@pytest.mark.parametrize(("accepted", "kind", "planned", "expected"), ROUTES)
def test_a_contact_falls_back_voice_sms_email_letter_or_is_suppressed(
    accepted: set[Channel], kind: ActionKind, planned: Channel, expected: Channel | None
) -> None:
    now = dpd(5, 12)
    case = desk.set_contact_preferences(
        at(make_case(), now), preference_id="pf", channels=sorted(accepted), set_by="a", now=now
    ).case
    assert route(case, kind, planned) is expected
    assert Channel.LETTER in (case.contact_channels or [])


def test_a_step_with_no_accepted_channel_is_stopped_naming_the_preference() -> None:
    now = dpd(5, 12)
    case = desk.set_contact_preferences(
        at(make_case(), now), preference_id="pf", channels=[Channel.LETTER], set_by="a", now=now
    ).case
    case, log = run(case, now, dpd(8, 12))
    assert held(log) == {"dpd-7-call": "preference:voice not accepted (letter)"}


# --- The contact log ---------------------------------------------------------------------


def log(case: Case, now: datetime, cid: str, when: datetime, **kw: Any) -> desk.DeskTaken:
    fields: dict[str, Any] = {
        "agent_ids": ["agent-1"],
        "channel": LoggedChannel.VOICE,
        "result": ContactResult.REACHED,
        "reason": None,
    } | kw
    return desk.log_contact(case, contact_id=cid, at=when, now=now, **fields)


def test_logged_calls_count_toward_the_caps_and_move_the_robot_call() -> None:
    now = dpd(7, 9, 30)
    case = at(make_case(), dpd(7, 9))
    for n in range(3):
        case = log(case, now, f"c{n}", dpd(7, 9, n)).case
    with pytest.raises(CaseError, match="over the call caps") as exc:
        log(case, now, "c4", dpd(7, 9, 20))
    assert exc.value.field == "at"
    call = next(a for a in plan(case, case.policy, now) if a.kind is K.VOICE_CALL)
    assert as_local(call.at) == dpd(8, 8) and call.delayed_by == "call caps"


def test_the_contact_log_refuses_night_calls_and_lone_visits_but_takes_inbound_at_night() -> None:
    now = dpd(7, 12)
    case = at(make_case(), now)
    with pytest.raises(CaseError, match="outside the contact window") as night:
        log(case, now, "n", dpd(6, 23))
    with pytest.raises(CaseError, match="at least two collectors") as alone:
        log(case, now, "v", dpd(7, 10), channel=LoggedChannel.FIELD_VISIT, agent_ids=["a", "a"])
    assert (night.value.field, alone.value.field) == ("at", "agent_ids")
    visit = log(case, now, "v2", dpd(7, 10), channel=LoggedChannel.FIELD_VISIT, agent_ids=["a", "b"])
    inbound = log(case, now, "i", dpd(6, 23), channel=LoggedChannel.INBOUND)
    assert visit.status == inbound.status == "logged"
    assert inbound.case.call_log == case.call_log  # an inbound call is not a call attempt
    assert log(visit.case, now, "v2", dpd(7, 11)).duplicate


def test_a_logged_call_is_one_attempt_on_the_primary_line() -> None:
    now = dpd(7, 12)
    case = log(at(make_case(), now), now, "c", dpd(7, 11), result=ContactResult.NO_ANSWER).case
    assert case.call_log[-1] == CallAttempt(at=dpd(7, 11), line="mobile", connected=False)


def placed_calls(*when: datetime) -> list[CallAttempt]:
    """Automated calls this loan placed (no answer), keyed by their outbox keys K0, K1, ..."""
    return [CallAttempt(at=w, line="mobile", connected=False, key=f"K{n}") for n, w in enumerate(when)]


def test_the_ivr_report_of_a_placed_call_does_not_count_it_twice() -> None:
    """POST /calls logs `ivr:<outbox key>`: the call counted when it was placed; its report
    only says whether it connected. The 7th call of the week is reported without being
    refused as an 8th, even after the window closed."""
    now = dpd(7, 22)
    case = at(make_case(), now)
    week = placed_calls(*[dpd(n, 10) for n in range(1, 8)])
    case = case.model_copy(update={"call_log": week})
    taken = log(case, now, "ivr:K6", dpd(7, 21, 30), agent_ids=["ivr"])
    assert taken.status == "logged" and "ivr:K6" in taken.case.contact_ids
    assert [c.connected for c in taken.case.call_log] == [False] * 6 + [True]
    assert [c.key for c in taken.case.call_log] == [c.key for c in week]
    # A report of no call of this loan's is a call like any other: over the caps, refused.
    with pytest.raises(CaseError, match="outside the contact window"):
        log(case, now, "ivr:K-other", dpd(7, 21, 30), agent_ids=["ivr"])
    with pytest.raises(CaseError, match="over the call caps") as exc:
        log(case, now, "ivr:K-other", dpd(7, 20), agent_ids=["ivr"])
    assert exc.value.field == "at"


def test_an_unanswered_report_leaves_the_call_not_connected() -> None:
    now = dpd(7, 12)
    case = at(make_case(), now).model_copy(update={"call_log": placed_calls(dpd(7, 10))})
    taken = log(case, now, "ivr:K0", dpd(7, 10, 1), result=ContactResult.NO_ANSWER, agent_ids=["ivr"])
    assert taken.case.call_log == case.call_log


def test_an_ivr_report_that_beats_the_calls_own_outcome_is_that_call() -> None:
    """The IVR's report came before the workflow wrote the call's outcome down (a slow
    send): the report is logged as a call, and the outcome then takes its place: one call,
    connected (found by review: it counted twice)."""
    now = dpd(7, 10)
    case = at(make_case(), dpd(6, 12))
    action = next(a for a in plan(case, case.policy, now) if a.kind is K.VOICE_CALL)
    early = log(case, now, f"ivr:{action.key}", now, agent_ids=["ivr"]).case
    after = record_outcome(early, action, Outcome(dialed=True, line="mobile", call_key=action.key), now)
    assert [(c.key, c.connected) for c in after.call_log] == [(action.key, True)]


def test_the_caps_see_a_call_recorded_just_after_the_instant_checked() -> None:
    """Six calls this week and a seventh recorded a moment after the instant a call is
    checked at: one more would make 8 in 7 days (found by review)."""
    week = placed_calls(*[dpd(n, 10) for n in range(1, 7)], dpd(7, 10, 1))
    policy = make_case().policy
    allowed = next_call_at(policy.call_caps, policy.contact_window, "Asia/Shanghai", week, dpd(7, 10))
    assert allowed == dpd(8, 10) + timedelta(microseconds=1)  # when the first call is a week old


def test_outcomes_of_stopped_steps_are_never_replayed() -> None:
    """A stopped step recorded once is not planned again, even while the hold stands."""
    now = dpd(6, 12)
    case = dispute(at(make_case(), now), now)
    action = next_action(case, case.policy, dpd(7, 10))
    assert action is not None and action.held_by == "hold:DISPUTE D-1"
    case = record_outcome(case, action, Outcome(delivered=False), dpd(7, 10))
    again = next_action(case, case.policy, dpd(7, 10))
    assert again is not None and again.step_id != action.step_id


def test_a_loan_cured_before_the_broken_promise_sms_is_not_sent_it() -> None:
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now, by=1)  # broken at DPD 7 00:00
    morning = dpd(7, 7)
    case = reconcile(case, morning)
    assert case.promises[0].status is PromiseStatus.BROKEN
    cured = take_payment(
        case, payment_id="cure", amount=overdue_amount(case, day(7)), currency=None, paid_at=None, now=morning
    ).case
    _, log = run(cured, morning, dpd(40, 12))
    assert not [e for e in log if e.action.kind is K.BROKEN_PROMISE]


def test_the_state_shows_the_next_step_that_will_really_happen() -> None:
    from models.views import case_view

    now = dpd(6, 12)
    case = dispute(at(make_case(), now), now)
    view = case_view(case, now)
    assert view.hold is not None and view.hold.reason is HoldReason.DISPUTE
    # The DPD 7 call and DPD 14 call will be stopped: the next step that runs is a
    # reminder of the next due date (disputes let those go out).
    assert view.next_action is not None and view.next_action.kind is K.REMINDER


# --- Found by review (each failed before its fix) ----------------------------------------


def test_a_payment_made_on_the_promised_date_and_reported_after_midnight_keeps_it() -> None:
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now, amount=10_000, by=2)  # promised for DPD 7
    case = reconcile(case, dpd(8))  # the workflow wakes at midnight: broken
    assert case.promises[0].status is PromiseStatus.BROKEN
    case = pay(case, "pay", 10_000, dpd(8, 0, 5), paid_at=dpd(7, 23, 50))
    assert case.promises[0].status is PromiseStatus.KEPT
    assert broken_promises(case) == 0


def test_a_payment_made_after_the_promised_date_does_not_keep_it() -> None:
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now, amount=10_000, by=2)
    case = reconcile(case, dpd(7, 23, 59))  # not yet lapsed when the payment is handled
    case = pay(case, "pay", 10_000, dpd(8, 0, 0) + timedelta(seconds=30))
    assert reconcile(case, dpd(8, 1)).promises[0].status is PromiseStatus.BROKEN


def test_a_promise_entered_late_counts_the_payments_made_since_it_was_made() -> None:
    case = pay(at(make_case(), dpd(5, 15)), "pay", 10_000, dpd(6, 11))
    entered = dpd(8, 12)
    taken = desk.record_promise(
        reconcile(case, entered),
        promise_id="P-late",
        amount=10_000,
        promised_date=day(6),
        agent_id="agent-1",
        made_at=dpd(5, 15),
        now=entered,
    )
    assert taken.status == "kept"


def test_a_backdated_logged_call_keeps_the_seven_day_cap() -> None:
    now = dpd(20, 20)
    case = at(make_case(), dpd(20, 19)).model_copy(update={"call_log": []})
    for n in range(7):  # one call a day, DPD 14 ... 20 at 10:00
        case = log(case, now, f"c{n}", dpd(14 + n, 10), result=ContactResult.NO_ANSWER).case
    with pytest.raises(CaseError, match="with the calls made since") as exc:
        log(case, now, "c-late", dpd(14, 9), result=ContactResult.NO_ANSWER)
    assert exc.value.field == "at"


def test_a_second_delinquency_held_by_a_dispute_is_still_noticed_and_reported() -> None:
    case, _, now = drive(make_case(), local(date(2024, 1, 15), 10), dpd(20, 12))
    assert case.credit_reported
    case = pay(case, "cure", overdue_amount(case, day(20)), now)
    due2 = date(2024, 3, 15)
    opened = local(due2 + timedelta(days=2), 12)
    case, _, _ = drive(case, now, opened)
    case = dispute(reconcile(case, opened), opened)
    assert case.episode is not None and case.episode.number == 2
    resolved_at = local(due2 + timedelta(days=20), 12)
    case, _, _ = drive(case, opened, resolved_at)
    case = desk.resolve_dispute(
        case, dispute_id="D-1", outcome=DisputeOutcome.REJECTED, resolved_by="ops", now=resolved_at
    ).case
    _, log_after = run(case, resolved_at, local(due2 + timedelta(days=45), 12))
    kinds = [e.action.kind for e in log_after if e.action.held_by is None]
    assert K.CREDIT_NOTICE in kinds and K.CREDIT_REPORT in kinds


def test_a_case_waiting_in_the_queue_gets_no_agent_while_a_dispute_is_open() -> None:
    def queued(action: Any) -> Outcome:
        return Outcome(agent_id=None) if action.kind is K.ASSIGN_AGENT else Outcome()

    case, _, now = drive(make_case(), local(date(2024, 1, 15), 10), dpd(32, 12), outcome=queued)
    assert case.agent_requested and case.assigned_agent is None
    case = dispute(reconcile(case, now), now)
    case, log_ = run(case, now, dpd(40, 12))  # an agent would be free now
    assert case.assigned_agent is None and not case.agent_requested
    (release,) = [e.action for e in log_ if e.action.kind is K.RELEASE_AGENT]
    assert release.step_id == "queue-release" and "hold:DISPUTE D-1" in release.summary
    case = desk.resolve_dispute(
        case, dispute_id="D-1", outcome=DisputeOutcome.REJECTED, resolved_by="o", now=dpd(40, 12)
    ).case
    case, _ = run(case, dpd(40, 12), dpd(42, 12))
    assert case.assigned_agent == "agent-7"  # picked up once the dispute is over


def test_a_dispute_open_at_payoff_is_still_escalated_and_can_be_resolved() -> None:
    now = dpd(10, 12)
    case = dispute(at(make_case(), now), now)
    case = pay(case, "all", outstanding(case, day(10)).total, now)
    assert case.closed
    action = next_action(case, case.policy, now)
    assert action is not None and action.kind is K.DISPUTE_OVERDUE and action.at == now + timedelta(days=20)
    resolved = desk.resolve_dispute(
        case, dispute_id="D-1", outcome=DisputeOutcome.UPHELD, resolved_by="ops", now=now
    )
    assert resolved.status == "upheld" and next_action(resolved.case, case.policy, now) is None


def test_a_promise_whose_loan_is_cured_by_an_extension_is_cancelled_not_kept() -> None:
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now, amount=50_000, by=3)
    extended = take_restructuring(
        case,
        restructuring_id="X",
        kind=RestructuringKind.EXTENSION,
        approved_by="a",
        approval_ref="r",
        extension_days=10,
        new_term_months=None,
        waive_penalty=False,
        waive_amount=None,
        now=now,
    ).case
    assert extended.promises[0].status is PromiseStatus.CANCELLED and broken_promises(extended) == 0


# --- Edges of the rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("made_at", "match"),
    [
        (datetime(2024, 2, 19, 10), "must carry a UTC offset"),
        (dpd(8, 12), "is in the future"),
    ],
)
def test_when_a_promise_was_made_must_be_a_real_past_moment(made_at: datetime, match: str) -> None:
    now = dpd(5, 12)
    with pytest.raises(CaseError, match=match) as exc:
        promise(at(make_case(), now), now, made_at=made_at)
    assert exc.value.field == "made_at"


def test_nothing_is_dated_before_the_loan_was_disbursed() -> None:
    case = make_case(disbursed=date(2024, 2, 10), first_due=date(2024, 2, 12))
    now = local(date(2024, 2, 16), 12)
    with pytest.raises(CaseError, match="before the loan was disbursed") as exc:
        dispute(at(case, now), now, opened_at=local(date(2024, 2, 9), 12))
    assert exc.value.field == "opened_at"


def test_desk_messages_on_a_paid_off_loan_are_refused_naming_the_loan() -> None:
    now = dpd(5, 12)
    case = at(make_case(), now)
    closed = pay(case, "all", outstanding(case, day(5)).total, now)
    assert closed.closed
    with pytest.raises(CaseError, match="is closed") as exc:
        dispute(closed, now)
    assert exc.value.field == "loan_id"


def test_the_desk_refuses_empty_channel_and_collector_lists_itself() -> None:
    """The wire types refuse them first; the rules do not rely on it."""
    now = dpd(5, 12)
    case = at(make_case(), now)
    with pytest.raises(CaseError) as channels:
        desk.set_contact_preferences(case, preference_id="p", channels=[], set_by="a", now=now)
    with pytest.raises(CaseError) as agents:
        log(case, now, "c", dpd(5, 10), agent_ids=[])
    assert (channels.value.field, agents.value.field) == ("channels", "agent_ids")


def test_a_push_message_the_borrower_refused_is_stopped_not_redirected() -> None:
    now = dpd(5, 12)
    case = desk.set_contact_preferences(
        at(make_case(), now), preference_id="pf", channels=[Channel.SMS], set_by="a", now=now
    ).case
    assert route(case, K.REMINDER, Channel.PUSH) is None


def test_a_broken_promise_sms_stopped_by_a_dispute_is_written_down_once() -> None:
    now = dpd(5, 12)
    case = promise(at(make_case(), now), now, by=1)
    case = dispute(case, dpd(6, 12))
    case, log_ = run(case, dpd(6, 12), dpd(9, 12))
    stopped = [e for e in log_ if e.action.kind is K.BROKEN_PROMISE]
    assert [e.action.held_by for e in stopped] == ["hold:DISPUTE D-1"]
    assert case.promises[0].notified  # not sent, and never sent later


def test_recording_a_stopped_step_twice_changes_nothing() -> None:
    now = dpd(6, 12)
    case = dispute(at(make_case(), now), now)
    action = next_action(case, case.policy, dpd(7, 10))
    assert action is not None and action.held_by is not None
    once = record_outcome(case, action, Outcome(delivered=False), dpd(7, 10))
    assert record_outcome(once, action, Outcome(delivered=False), dpd(7, 10)) == once


def test_a_held_step_owed_after_a_hold_is_not_stopped_twice_by_a_later_one() -> None:
    """The report held by a dispute is owed after it (10 days after the notice the
    resumption sends), but a hold already known to stand on that day does not make it a
    second stopped step (defensive: holds begin on the day they are taken)."""
    case = dispute(at(make_case(), dpd(2, 12)), dpd(2, 12))
    case, _ = run(case, dpd(2, 12), dpd(20, 12))
    case = desk.resolve_dispute(
        case, dispute_id="D-1", outcome=DisputeOutcome.REJECTED, resolved_by="o", now=dpd(20, 12)
    ).case
    case, _ = run(case, dpd(20, 12), dpd(21, 12))  # the notice goes out: the report is owed at DPD 30
    report = next(a for a in plan(case, case.policy, dpd(21, 12)) if a.step_id == "dpd-15-credit-report")
    assert as_local(report.at).date() == day(30) and report.held_by is None
    later = Hardship(
        hardship_id="H-later",
        reason=HardshipReason.OTHER,
        starts_on=day(25),
        until=day(40),
        approved_by="s",
        approval_ref="r",
        approved_at=dpd(21, 12),
    )
    case = case.model_copy(update={"hardships": [later]})
    assert "dpd-15-credit-report" not in [a.step_id for a in plan(case, case.policy, dpd(21, 12))]


# --- Found by the second review (each failed before its fix) -------------------------------


@pytest.mark.parametrize("first_kept", [True, False])
def test_a_promise_entered_late_cannot_reach_back_into_an_earlier_one(first_kept: bool) -> None:
    case = promise(
        at(make_case(), dpd(5, 10)), dpd(5, 10), "P-1", amount=10_000 if first_kept else 20_000, by=3
    )
    case = pay(case, "PAY-1", 10_000, dpd(6, 10))
    entered = dpd(9, 10)  # P-1 kept on DPD 6, or broken at the midnight after DPD 8
    with pytest.raises(CaseError, match="a payment counts toward one promise only") as exc:
        desk.record_promise(
            reconcile(case, entered),
            promise_id="P-2",
            amount=10_000,
            promised_date=day(10),
            agent_id="agent-1",
            made_at=dpd(6, 9),
            now=entered,
        )
    assert exc.value.field == "made_at"


def test_a_promise_cannot_be_dated_before_the_loan_fell_overdue() -> None:
    now = dpd(3, 12)
    with pytest.raises(CaseError, match="fell overdue") as exc:
        promise(at(make_case(), now), now, made_at=local(date(2024, 2, 14), 12))
    assert exc.value.field == "made_at"


def test_a_call_logged_a_week_late_is_checked_against_the_calls_of_that_week() -> None:
    case = at(make_case(), dpd(20, 9))
    times = [dpd(20, 10), dpd(20, 11), dpd(21, 10), dpd(21, 11), dpd(22, 10), dpd(22, 11), dpd(23, 10)]
    for n, t in enumerate(times):
        case = log(case, t, f"C-{n}", t, result=ContactResult.NO_ANSWER).case
    case = log(case, dpd(29, 10), "C-7", dpd(29, 10), result=ContactResult.NO_ANSWER).case  # a week later
    with pytest.raises(CaseError, match="over the call caps"):
        log(case, dpd(30, 10), "C-late", dpd(23, 10, 30), result=ContactResult.NO_ANSWER)


def test_a_late_curing_payment_finds_the_overdue_promise_broken_whether_or_not_the_workflow_woke() -> None:
    case = promise(at(make_case(), dpd(5, 10)), dpd(5, 10), "P-1", amount=10_000, by=1)  # for DPD 6
    owed = overdue_amount(case, day(8))
    asleep = pay(case, "PAY-1", owed + 5_000, dpd(8, 9))  # no wake since DPD 5 (a worker down)
    woke = pay(reconcile(case, dpd(8, 0, 1)), "PAY-1", owed + 5_000, dpd(8, 9))
    assert asleep.promises[0].status is woke.promises[0].status is PromiseStatus.BROKEN


def test_a_promise_read_in_another_currency_is_refused_naming_it() -> None:
    now = dpd(5, 12)
    with pytest.raises(CaseError, match="not the loan's currency CNY") as exc:
        desk.record_promise(
            at(make_case(), now),
            promise_id="P",
            amount=500_000,
            promised_date=day(6),
            agent_id="a",
            made_at=None,
            now=now,
            currency="JPY",
        )
    assert exc.value.field == "currency"
