"""Hypothesis properties of the ledger and the planner."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.calendar import local_date
from domain.case import CallAttempt, Case, Components
from domain.desk import end_hardship, start_hardship
from domain.enums import ActionKind, HardshipReason, HardshipStatus, RepaymentMethod, RestructuringKind
from domain.ledger import (
    CaseError,
    apply_payment,
    days_past_due,
    is_settled,
    outstanding,
    overdue_amount,
    penalty_accrued,
    penalty_owed,
    remaining_fee,
    remaining_interest,
    remaining_principal,
    today_for,
)
from domain.planner import (
    Outcome,
    PlannedAction,
    is_housekeeping,
    next_action,
    plan,
    reconcile,
    record_outcome,
)
from domain.restructure import restructure
from tests.test_domain_helpers import NY, POLICY, SH, as_local, local, make_case

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DISBURSED = date(2024, 1, 31)  # month ends and Feb 29 in the schedule

loans = st.builds(
    lambda principal, rate, term, method, tz: make_case(
        principal=principal, rate=rate, term=term, method=method, tz=tz, disbursed=DISBURSED, first_due=None
    ),
    principal=st.integers(1, 10**9),
    rate=st.integers(0, 3600),
    term=st.integers(1, 36),
    method=st.sampled_from(list(RepaymentMethod)),
    tz=st.sampled_from([SH, NY]),
)


def moment(case: Case, day_offset: int, minute: int) -> datetime:
    return local(case.disbursed_on + timedelta(days=day_offset), tz=case.timezone) + timedelta(minutes=minute)


def assert_never_negative(case: Case, today: date) -> None:
    for inst in case.installments:
        assert remaining_principal(inst) >= 0
        assert remaining_interest(inst) >= 0
        assert remaining_fee(inst) >= 0
        assert penalty_owed(case, inst, today) >= 0
    owed = outstanding(case, today)
    assert min(owed.penalty, owed.fee, owed.interest, owed.principal) >= 0
    assert overdue_amount(case, today) >= 0


def paid_total(case: Case) -> Components:
    total = Components()
    for inst in case.installments:
        total = total + inst.paid
    return total


@FAST
@given(
    case=loans,
    payments=st.lists(
        st.tuples(st.integers(0, 60), st.integers(0, 24 * 60 - 1), st.floats(0, 1)), min_size=1, max_size=6
    ),
)
def test_allocation_conserves_every_minor_unit_and_balances_stay_non_negative(
    case: Case, payments: list[tuple[int, int, float]]
) -> None:
    day = 0
    for gap, minute, share in payments:
        if case.closed:
            break
        day += gap
        when = moment(case, day, minute)
        today = today_for(case, when)
        before = outstanding(case, today)
        amount = max(1, round(share * before.total))
        paid_before = paid_total(case)
        case, alloc = apply_payment(case, amount, when)
        assert alloc.total == amount
        moved = paid_total(case)
        assert (moved.penalty, moved.fee, moved.interest, moved.principal) == (
            paid_before.penalty + alloc.penalty,
            paid_before.fee + alloc.fee,
            paid_before.interest + alloc.interest,
            paid_before.principal + alloc.principal,
        )
        assert min(alloc.penalty, alloc.fee, alloc.interest, alloc.principal) >= 0
        # The payoff falls by exactly the payment: however a day's payments are split,
        # closing the loan that day costs the same.
        assert outstanding(case, today).total == before.total - amount
        assert_never_negative(case, today)
        assert_never_negative(case, today + timedelta(days=45))
    assert paid_total(case).principal <= case.principal


@FAST
@given(case=loans, day=st.integers(0, 500), minute=st.integers(0, 24 * 60 - 1), first=st.floats(0, 0.9))
def test_paying_the_payoff_leaves_zero_and_closes(case: Case, day: int, minute: int, first: float) -> None:
    when = moment(case, day, minute)
    today = today_for(case, when)
    if first:  # a partial payment some days earlier
        earlier = moment(case, max(0, day - 20), minute)
        then = outstanding(case, today_for(case, earlier)).total
        part = min(round(first * then), then - 1)  # partial: leaves something to pay off
        if part > 0:
            case, _ = apply_payment(case, part, earlier)
    payoff = outstanding(case, today)
    case, alloc = apply_payment(case, payoff.total, when)
    assert alloc == payoff
    assert case.closed
    assert outstanding(case, today).total == 0
    assert outstanding(case, today + timedelta(days=90)).total == 0
    assert paid_total(case).principal == case.principal


# --- Planner --------------------------------------------------------------------------


def in_window(instant: datetime, tz: str) -> bool:
    clock = as_local(instant, tz).time()
    return POLICY.contact_window.opens <= clock < POLICY.contact_window.closes


def within_caps(log: list[CallAttempt], at: datetime, tz: str) -> bool:
    caps = POLICY.call_caps
    day = local_date(at, tz)
    same_day = [c for c in log if local_date(c.at, tz) == day]
    per_line: dict[str, int] = {}
    for c in same_day:
        per_line[c.line] = per_line.get(c.line, 0) + 1
    week = [c for c in log if at - timedelta(days=7) < c.at <= at]
    return (
        sum(c.connected for c in same_day) < caps.connected_calls_per_day
        and all(n < caps.dial_attempts_per_line_per_day for n in per_line.values())
        and len(week) < caps.call_attempts_per_7_days
    )


call_logs = st.lists(
    st.tuples(st.integers(1, 8 * 24 * 60), st.sampled_from(["primary", "mobile"]), st.booleans()),
    max_size=16,
)


@FAST
@given(
    tz=st.sampled_from([SH, NY]),
    now_minutes=st.integers(-6 * 24 * 60, 200 * 24 * 60),
    done=st.sets(st.sampled_from([s.id for s in POLICY.ladder])),
    log=call_logs,
    onboard_days=st.integers(-40, 150),
)
def test_planner_never_contacts_outside_the_window_nor_over_a_cap(
    tz: str, now_minutes: int, done: set[str], log: list[tuple[int, str, bool]], onboard_days: int
) -> None:
    first_due = date(2024, 3, 10)  # the spring-forward day in New York
    onboarded = local(first_due + timedelta(days=onboard_days), 11, tz=tz)
    now = max(onboarded, local(first_due, tz=tz) + timedelta(minutes=now_minutes))
    case = make_case(tz=tz, disbursed=date(2024, 2, 10), first_due=first_due, onboarded=onboarded)
    case = reconcile(case, now)
    calls = [CallAttempt(at=now - timedelta(minutes=m), line=line, connected=c) for m, line, c in log]
    update: dict[str, object] = {"call_log": calls}
    if case.episode is not None:
        update["episode"] = case.episode.model_copy(
            update={"done": sorted(done), "credit_noticed_at": now - timedelta(days=3)}
        )
    case = case.model_copy(update=update)
    for action in plan(case, POLICY, now):
        assert action.at >= now
        if action.is_contact:
            assert in_window(action.at, tz), (action.step_id, as_local(action.at, tz))
        if action.kind is ActionKind.VOICE_CALL:
            assert within_caps(calls, action.at, tz), (action.step_id, as_local(action.at, tz))


events = st.lists(
    st.tuples(
        st.sampled_from(["act", "act", "act", "sleep", "pay-overdue", "pay-part"]),
        st.integers(0, 30 * 24),  # hours asleep past the action (a late wake-up)
        st.booleans(),  # delivered
        st.booleans(),  # connected
    ),
    min_size=1,
    max_size=80,
)


@FAST
@given(tz=st.sampled_from([SH, NY]), steps=events)
def test_successive_actions_never_go_back_in_time(tz: str, steps: list[tuple[str, int, bool, bool]]) -> None:
    case = make_case(tz=tz, term=6)
    now = local(case.disbursed_on, 10, tz=tz)
    last: datetime | None = None
    for what, hours, delivered, connected in steps:
        case = reconcile(case, now)
        today = today_for(case, now)
        if what.startswith("pay") and not case.closed:
            owed = (
                overdue_amount(case, today) if what == "pay-overdue" else outstanding(case, today).total // 3
            )
            if owed > 0:
                case, _ = apply_payment(case, owed, now)
                case = reconcile(case, now)
        action = next_action(case, POLICY, now)
        if action is None:
            assert case.closed
            break
        assert action.at >= now
        if last is not None:
            assert action.at >= last
        if action.is_contact:
            assert in_window(action.at, tz)
        if action.kind is ActionKind.VOICE_CALL:
            assert within_caps(case.call_log, action.at, tz)
        last = action.at
        now = action.at + (timedelta(hours=hours) if what == "sleep" else timedelta(0))
        if what == "sleep":
            continue  # woke up late: plan again from the later now, nothing executed
        case = reconcile(case, now)
        dialed = action.kind is ActionKind.VOICE_CALL
        outcome = Outcome(
            delivered=delivered or not action.is_contact,
            dialed=dialed,
            connected=dialed and connected,
            line="primary" if connected else "mobile",
            agent_id="agent-1" if delivered else None,
        )
        case = record_outcome(case, action, outcome, now)


# --- Money through every kind of restructuring -----------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "pay",
                "pay",
                "pay",
                "extend",
                "reinstall",
                "waive-amount",
                "waive-penalty",
                "hardship",
                "end-hardship",
            ]
        ),
        st.integers(0, 75),  # days since the previous operation
        st.integers(0, 24 * 60 - 1),  # minute of that day
        st.floats(0, 1),  # share of the payoff / penalty / fees and interest owed
        st.integers(1, 200),  # extension days / new term months (clipped to the policy)
    ),
    min_size=1,
    max_size=12,
)


def waivable(case: Case, today: date) -> int:
    return sum(
        penalty_owed(case, i, today)
        + (remaining_fee(i) + remaining_interest(i) if i.due_date <= today else 0)
        for i in case.installments
    )


def operate(
    case: Case, what: str, when: datetime, share: float, n: int, rid: str
) -> tuple[Case, int, int] | None:
    """One operation; returns the new case, what it paid and what it waived, or None when
    the case refused it (a refusal changes nothing: the case is immutable)."""
    today = today_for(case, when)
    try:
        if what == "pay":
            amount = max(1, round(share * outstanding(case, today).total))
            after, alloc = apply_payment(case, amount, when)
            assert alloc.total == amount
            return after, amount, 0
        if what == "extend":
            days = days_past_due(case, today) + n % 60  # enough to leave nothing overdue
            return approve(case, RestructuringKind.EXTENSION, when, rid, extension_days=days), 0, 0
        if what == "reinstall":
            months = 1 + n % POLICY.max_new_term_months
            return approve(case, RestructuringKind.REINSTALLMENT, when, rid, new_term_months=months), 0, 0
        if what == "hardship":  # relief from today for n days: forgives nothing already owed
            until = today + timedelta(days=n % (POLICY.max_hardship_days + 1))
            return (
                start_hardship(
                    case,
                    hardship_id=rid,
                    reason=HardshipReason.OTHER,
                    until=until,
                    approved_by="risk",
                    approval_ref="HR",
                    now=when,
                ).case,
                0,
                0,
            )
        if what == "end-hardship":
            active = [h.hardship_id for h in case.hardships if h.status is HardshipStatus.ACTIVE]
            if not active:
                return None
            return end_hardship(case, hardship_id=active[0], ended_by="risk", now=when).case, 0, 0
        if what == "waive-penalty":
            owed = outstanding(case, today).penalty
            return approve(case, RestructuringKind.WAIVER, when, rid, waive_penalty=True), 0, owed
        amount = max(1, round(share * waivable(case, today)))
        return approve(case, RestructuringKind.WAIVER, when, rid, waive_amount=amount), 0, amount
    except CaseError:
        return None


def approve(case: Case, kind: RestructuringKind, now: datetime, rid: str, **kw: Any) -> Case:
    return restructure(
        case, restructuring_id=rid, kind=kind, approved_by="risk", approval_ref="APP", now=now, **kw
    )


@FAST
@given(case=loans, ops=operations, split=st.floats(0.05, 0.95), later=st.integers(0, 40))
def test_only_payments_and_waivers_lower_the_payoff_and_the_split_never_matters(
    case: Case, ops: list[tuple[str, int, int, float, int]], split: float, later: int
) -> None:
    """Across random mixes of payments, extensions, re-installments, waivers and hardship
    relief (started and ended early):
    - a payment lowers the same-day payoff by exactly its amount, a waiver by exactly what
      it waives, an extension or a re-installment not at all (only a waiver forgives);
    - with nothing happening, the payoff never falls as days pass;
    - on any day, closing the loan costs the same paid at once or split in two."""
    day = 0
    for k, (what, gap, minute, share, n) in enumerate(ops):
        if case.closed:
            break
        earlier = today_for(case, moment(case, day, 0))
        day += gap
        when = moment(case, day, minute)
        today = today_for(case, when)
        before = outstanding(case, today).total
        assert before >= outstanding(case, earlier).total  # time alone never forgives
        done = operate(case, what, when, share, n, f"R-{k}")
        if done is None:
            continue
        case, paid, waived = done
        assert outstanding(case, today).total == before - paid - waived, what
        assert_never_negative(case, today)
        assert_never_negative(case, today + timedelta(days=45))
    if case.closed:
        return
    when = moment(case, day + later, 600)
    today = today_for(case, when)
    payoff = outstanding(case, today).total
    at_once, _ = apply_payment(case, payoff, when)
    assert at_once.closed
    first = max(1, min(payoff - 1, round(split * payoff)))
    if first < payoff:
        part, _ = apply_payment(case, first, when)
        rest = outstanding(part, today).total
        assert first + rest == payoff
        closed, _ = apply_payment(part, rest, when)
        assert closed.closed
        # A partial payment split in two on one day leaves the loan exactly as paid whole:
        # the future cost does not depend on the split either.
        second = max(1, first // 3)
        if second < first:
            whole, _ = apply_payment(case, first, when)
            halves, _ = apply_payment(case, first - second, when)
            halves, _ = apply_payment(halves, second, when)
            for later_day in (today, today + timedelta(days=35), today + timedelta(days=400)):
                assert outstanding(halves, later_day) == outstanding(whole, later_day)


@FAST
@given(
    case=loans,
    start=st.integers(35, 120),
    payments=st.lists(st.tuples(st.integers(0, 6), st.floats(0, 1)), min_size=1, max_size=30),
    close_after=st.integers(0, 60),
)
def test_penalty_only_payments_never_change_the_total_cost(
    case: Case, start: int, payments: list[tuple[int, float]], close_after: int
) -> None:
    """However many payments go to penalty alone, and whenever they are made, closing the
    loan later costs exactly as much in all as without them."""
    untouched = case
    day = start
    paid = 0
    for gap, share in payments:
        day += gap
        when = moment(case, day, 600)
        today = today_for(case, when)
        # Payments go oldest first, penalty first: up to the oldest's penalty, only penalty.
        oldest = min(
            (i for i in case.installments if i.due_date <= today and not is_settled(case, i, today)),
            key=lambda i: (i.due_date, i.seq),
            default=None,
        )
        if oldest is None or penalty_owed(case, oldest, today) <= 0:
            continue
        amount = max(1, round(share * penalty_owed(case, oldest, today)))
        case, alloc = apply_payment(case, amount, when)
        assert alloc == Components(penalty=amount)
        paid += amount
    close = today_for(case, moment(case, day + close_after, 700))
    assert paid + outstanding(case, close).total == outstanding(untouched, close).total


@FAST
@given(case=loans, day=st.integers(0, 400), months=st.integers(1, 60), paid_share=st.floats(0, 0.5))
def test_a_reinstallment_never_changes_the_same_day_payoff(
    case: Case, day: int, months: int, paid_share: float
) -> None:
    when = moment(case, day, 600)
    today = today_for(case, when)
    if paid_share:
        part = round(paid_share * outstanding(case, today).total)
        if part > 0:
            case, _ = apply_payment(case, part, when)
    before = outstanding(case, today).total
    after = approve(case, RestructuringKind.REINSTALLMENT, when, "R-re", new_term_months=months)
    assert outstanding(after, today).total == before
    fresh = [i for i in after.installments if i.seq > max(j.seq for j in case.installments)]
    assert sum(i.principal for i in fresh) == before
    assert fresh[0].period_start > today  # no day's interest is charged twice


@FAST
@given(
    case=loans,
    start=st.integers(0, 400),
    length=st.integers(0, POLICY.max_hardship_days),
    ended_after=st.one_of(st.none(), st.integers(0, POLICY.max_hardship_days)),
    after=st.integers(1, 60),
)
def test_no_penalty_accrues_on_the_days_of_a_hardship_and_nothing_else_changes(
    case: Case, start: int, length: int, ended_after: int | None, after: int
) -> None:
    """Hardship relief forgives nothing owed when it starts and freezes penalty accrual on
    its local days only: through its last day every installment's accrued penalty stands
    still, interest and principal are untouched, and from the next day penalty accrues
    again at the rate of a loan without relief."""
    when = moment(case, start, 600)
    today = today_for(case, when)
    relieved = start_hardship(
        case,
        hardship_id="H",
        reason=HardshipReason.JOB_LOSS,
        until=today + timedelta(days=length),
        approved_by="risk",
        approval_ref="HR",
        now=when,
    ).case
    if ended_after is not None and ended_after <= length:
        relieved = end_hardship(
            relieved, hardship_id="H", ended_by="risk", now=moment(case, start + ended_after, 700)
        ).case
    last = relieved.hardships[0].last_day or relieved.hardships[0].until
    assert outstanding(relieved, today) == outstanding(case, today)  # nothing forgiven at the start
    for n in range((last - today).days + 2):  # through the day after the last day of relief
        day = today + timedelta(days=n)
        for frozen, free in zip(relieved.installments, case.installments, strict=True):
            assert penalty_accrued(relieved, frozen, day) == penalty_accrued(relieved, frozen, today)
            assert penalty_accrued(relieved, frozen, day) <= penalty_accrued(case, free, day)
        o_relieved, o_free = outstanding(relieved, day), outstanding(case, day)
        assert (o_relieved.interest, o_relieved.principal, o_relieved.fee) == (
            o_free.interest,
            o_free.principal,
            o_free.fee,
        )
    # Afterwards it accrues again, day by day, as it would have without relief.
    resume = last + timedelta(days=1)
    later = resume + timedelta(days=after)
    days_off = (last - today).days + 1
    for frozen, free in zip(relieved.installments, case.installments, strict=True):
        if free.due_date <= today:  # overdue through all of the relief: shifted by its days
            shifted = penalty_accrued(case, free, later - timedelta(days=days_off))
            assert penalty_accrued(relieved, frozen, later) == shifted
        else:  # due later: never more than without relief
            assert penalty_accrued(relieved, frozen, later) <= penalty_accrued(case, free, later)


@FAST
@given(case=loans, ops=operations, later=st.integers(0, 400), minute=st.integers(0, 24 * 60 - 1))
def test_planning_only_as_far_as_the_next_step_gives_the_same_next_step(
    case: Case, ops: list[tuple[str, int, int, float, int]], later: int, minute: int
) -> None:
    """next_action and the `state` answer plan reminders only up to the first that will
    really happen (plan(complete=False), the planner's largest saving): whatever payments,
    restructurings and hardships came before, the first action and the first one a hold
    does not stop are those of the complete plan."""
    when = moment(case, 0, 9 * 60)
    for n, (what, gap, at_minute, share, size) in enumerate(ops):
        when = local(local_date(when, case.timezone) + timedelta(days=gap), tz=case.timezone)
        when += timedelta(minutes=at_minute)
        done = operate(reconcile(case, when), what, when, share, size, f"R{n}")
        if done is not None:
            case = done[0]
    now = local(local_date(when, case.timezone) + timedelta(days=later), tz=case.timezone)
    now += timedelta(minutes=minute)
    case = reconcile(case, now)
    complete, short = plan(case, case.policy, now), plan(case, case.policy, now, complete=False)
    assert short[:1] == complete[:1]

    def first_real(actions: list[PlannedAction]) -> PlannedAction | None:
        return next((a for a in actions if a.held_by is None and not is_housekeeping(a)), None)

    assert first_real(short) == first_real(complete)
    assert {a.key for a in short} <= {a.key for a in complete}
