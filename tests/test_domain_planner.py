"""The planner, driven like the workflow drives it: one test per row of the DESIGN.md
standard policy table, then the contact window, call caps, credit reporting, late start,
late wake-up, cure and payoff.

The standard loan's first installment is due 2024-02-15 (Asia/Shanghai); DPD n of it is
2024-02-15 + n days (DPD 14 = Feb 29, a leap day; DPD 31 = Mar 17; DPD 61 = Apr 16;
DPD 91 = May 16; DPD 181 = Aug 14).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from domain.case import CallAttempt, Case
from domain.enums import ActionKind, Channel, CollectionStage
from domain.ledger import apply_payment, days_past_due, outstanding, overdue_amount, stage, today_for
from domain.planner import (
    ACROSS_LOANS,
    Outcome,
    PlannedAction,
    is_housekeeping,
    next_action,
    plan,
    reconcile,
    record_outcome,
    window_close,
)
from domain.policy import POLICY_DIR, Policy, load_policy_text
from tests.test_domain_helpers import (
    DISBURSED,
    FIRST_DUE,
    NY,
    POLICY,
    SH,
    Executed,
    as_local,
    default_outcome,
    drive,
    local,
    make_case,
    utc,
)

STANDARD_TEXT = (POLICY_DIR / "standard.toml").read_text(encoding="utf-8")
K = ActionKind


def dpd(n: int, hh: int = 0, mm: int = 0) -> datetime:
    return local(FIRST_DUE + timedelta(days=n), hh, mm)


def in_window(instant: datetime, tz: str = SH) -> bool:
    clock = as_local(instant, tz).time()
    return time(8) <= clock < time(21)


def steps(log: list[Executed], skip: tuple[ActionKind, ...] = (K.REFRESH,)) -> list[str]:
    """The ladder as a collector reads it: without the nightly housekeeping (refreshes and
    the check of who holds the case)."""
    return [e.action.step_id for e in log if e.action.kind not in skip and e.action.step_id != "agent-check"]


def custom_policy(*replacements: tuple[str, str]) -> Policy:
    text = STANDARD_TEXT
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return load_policy_text(text)


@pytest.fixture(scope="module")
def standard_run() -> tuple[Case, list[Executed]]:
    """1,200,000 never paid, from disbursal to DPD 187."""
    case, log, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(187))
    return case, log


@pytest.fixture(scope="module")
def large_run() -> tuple[Case, list[Executed]]:
    """60,000,000 (600,000.00) never paid, to DPD 62: overdue well above 50,000.00."""
    case, log, _ = drive(
        make_case(principal=60_000_000, loan_id="L-big"), local(date(2024, 1, 15), 10), dpd(62)
    )
    return case, log


# --- One test per row of the standard policy table ------------------------------------------

ROWS: list[tuple[str, str, ActionKind, datetime, int]] = [
    # (loan, step id, kind, local moment, DPD at that moment)
    ("standard", "t-3", K.REMINDER, local(date(2024, 2, 12), 9), 0),
    ("standard", "t-1", K.REMINDER, local(date(2024, 2, 14), 9), 0),
    ("standard", "due-today", K.REMINDER, local(date(2024, 2, 15), 8, 30), 0),
    ("standard", "dpd-1-sms", K.OVERDUE_SMS, dpd(1, 9), 1),
    ("standard", "dpd-3-sms", K.OVERDUE_SMS, dpd(3, 9), 3),
    ("standard", "dpd-5-credit-notice", K.CREDIT_NOTICE, dpd(5, 10), 5),
    ("standard", "dpd-7-call", K.VOICE_CALL, dpd(7, 10), 7),
    ("standard", "dpd-14-call", K.VOICE_CALL, local(date(2024, 2, 29), 10), 14),
    ("standard", "dpd-15-credit-report", K.CREDIT_REPORT, local(date(2024, 3, 1), 10), 15),
    ("standard", "dpd-21-call", K.VOICE_CALL, local(date(2024, 3, 7), 10), 21),
    ("standard", "dpd-31-assign-agent", K.ASSIGN_AGENT, local(date(2024, 3, 17), 0), 31),
    ("standard", "dpd-61-demand-letter", K.DEMAND_LETTER, local(date(2024, 4, 16), 9), 61),
    ("large", "dpd-61-field-visit", K.FIELD_VISIT, local(date(2024, 4, 16), 0), 61),
    ("standard", "dpd-91-legal", K.LEGAL_REFERRAL, local(date(2024, 5, 16), 0), 91),
    ("standard", "dpd-181-charge-off", K.CHARGE_OFF, local(date(2024, 8, 14), 0), 181),
]


@pytest.mark.parametrize(
    ("loan", "step_id", "kind", "when", "at_dpd"),
    ROWS,
    ids=[
        "t-3-sms",
        "t-1-sms",
        "due-day-reminder",
        "dpd-1-grace-sms",
        "dpd-3-grace-sms",
        "dpd-5-credit-notice",
        "dpd-7-call",
        "dpd-14-call",
        "dpd-15-credit-report",
        "dpd-21-call",
        "dpd-31-collector",
        "dpd-61-demand-letter",
        "dpd-61-field-visit-large",
        "dpd-91-legal",
        "dpd-181-charge-off",
    ],
)
def test_policy_table_row(
    loan: str,
    step_id: str,
    kind: ActionKind,
    when: datetime,
    at_dpd: int,
    standard_run: tuple[Case, list[Executed]],
    large_run: tuple[Case, list[Executed]],
) -> None:
    case, log = standard_run if loan == "standard" else large_run
    hits = [e for e in log if e.action.step_id == step_id and e.action.installment_seq == 1]
    assert len(hits) == 1, [(e.action.step_id, e.at) for e in hits]
    hit = hits[0]
    assert hit.action.kind is kind
    assert as_local(hit.action.at) == when
    assert hit.at == hit.action.at  # executed on time, not late
    assert hit.dpd == at_dpd
    if hit.action.is_contact:
        assert in_window(hit.action.at)
        assert hit.action.channel is not None
    assert hit.action.key.startswith(f"{case.loan_id}/1/{step_id}/")


def test_policy_table_row_penalty_from_dpd_4(standard_run: tuple[Case, list[Executed]]) -> None:
    """'from DPD 4: penalty interest accrues from the due date at 1.5 x the contract rate'
    on the simulated case: 92,016 x 0.00075 x 4 = 276.048 -> 276 on DPD 4, nothing before."""
    case, _ = standard_run
    single = case.model_copy(update={"installments": case.installments[:1]})
    assert [outstanding(single, FIRST_DUE + timedelta(days=n)).penalty for n in range(6)] == [
        0,
        0,
        0,
        0,
        276,
        345,  # 69.012 x 5 = 345.06
    ]


def test_policy_table_credit_report_waits_for_a_ten_day_old_notice(
    standard_run: tuple[Case, list[Executed]],
) -> None:
    _, log = standard_run
    (notice,) = [e for e in log if e.action.kind is K.CREDIT_NOTICE]
    (report,) = [e for e in log if e.action.kind is K.CREDIT_REPORT]
    assert report.at - notice.at >= timedelta(days=10)


def test_policy_table_no_field_visit_below_50000(standard_run: tuple[Case, list[Executed]]) -> None:
    case, log = standard_run
    assert overdue_amount(case, date(2024, 4, 16)) < 5_000_000
    assert "dpd-61-field-visit" not in steps(log)
    assert "dpd-61-demand-letter" in steps(log)


@pytest.mark.parametrize(
    ("margin", "visit_at"),
    [(0, dpd(61)), (1, None), (-1, dpd(61))],
    ids=["overdue-equal-threshold", "one-fen-below", "one-fen-above"],
)
def test_field_visit_threshold_is_judged_on_dpd_61(margin: int, visit_at: datetime | None) -> None:
    """The threshold set to the overdue of DPD 61 (2024-04-16: installments 1-3 and their
    penalty). One fen short: no visit, then or later, though the overdue keeps growing."""
    threshold = overdue_amount(make_case(), date(2024, 4, 16)) + margin
    assert overdue_amount(make_case(), date(2024, 4, 15)) < threshold  # the evening before: less
    policy = custom_policy(("field_visit_min_overdue = 5000000", f"field_visit_min_overdue = {threshold}"))
    _, log, _ = drive(make_case(policy=policy), local(date(2024, 1, 15), 10), dpd(100))
    visits = [as_local(e.at) for e in log if e.action.kind is K.FIELD_VISIT]
    assert visits == ([visit_at] if visit_at else [])


def test_the_ladder_runs_once_in_order(standard_run: tuple[Case, list[Executed]]) -> None:
    case, log = standard_run
    ladder = [s for s in steps(log, skip=(K.REFRESH, K.REMINDER))]
    assert ladder == [
        "dpd-1-sms",
        "dpd-3-sms",
        "dpd-5-credit-notice",
        "dpd-7-call",
        "dpd-14-call",
        "dpd-15-credit-report",
        "dpd-21-call",
        "dpd-31-assign-agent",
        "dpd-61-demand-letter",
        "dpd-91-legal",
        "dpd-181-charge-off",
    ]
    assert case.credit_reported and case.legal_referred and case.charged_off
    assert case.assigned_agent == "agent-7"
    assert stage(case, date(2024, 8, 20)) is CollectionStage.CHARGED_OFF


def test_no_contact_ever_outside_the_window(
    standard_run: tuple[Case, list[Executed]], large_run: tuple[Case, list[Executed]]
) -> None:
    for _, log in (standard_run, large_run):
        contacts = [e for e in log if e.action.is_contact]
        assert contacts
        assert all(in_window(e.at) for e in contacts)
        assert all(e.at == e.action.at for e in log)  # the driver never had to wait late


def test_midnight_refresh_while_overdue(standard_run: tuple[Case, list[Executed]]) -> None:
    _, log = standard_run
    refreshes = [as_local(e.at) for e in log if e.action.kind is K.REFRESH]
    assert all(r.time() == time(0) for r in refreshes)
    # Each local day from DPD 0 to DPD 187 starts with a refresh or a midnight ladder step.
    midnights = {as_local(e.at).date() for e in log if as_local(e.at).time() == time(0)}
    assert {FIRST_DUE + timedelta(days=n) for n in range(0, 188)} <= midnights
    # Nothing is refreshed before the first due date: the first wake is the midnight it
    # falls due (status "due"), then every midnight while it is unpaid.
    assert min(refreshes) == dpd(0)


# --- Contact window ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replacement", "step_id", "expected"),
    [
        (
            ('id = "dpd-1-sms"\nday = 1\nat = "09:00"', 'id = "dpd-1-sms"\nday = 1\nat = "03:00"'),
            "dpd-1-sms",
            dpd(1, 8),
        ),
        (
            ('id = "dpd-3-sms"\nday = 3\nat = "09:00"', 'id = "dpd-3-sms"\nday = 3\nat = "22:30"'),
            "dpd-3-sms",
            dpd(4, 8),
        ),
        (
            ('id = "dpd-7-call"\nday = 7\nat = "10:00"', 'id = "dpd-7-call"\nday = 7\nat = "21:00"'),
            "dpd-7-call",
            dpd(8, 8),
        ),
        (('at = "08:30"', 'at = "03:00"'), "due-today", dpd(0, 8)),
        (
            ('id = "t-1"\nday = -1\nat = "09:00"', 'id = "t-1"\nday = -1\nat = "20:59"'),
            "t-1",
            dpd(-1, 20, 59),
        ),
    ],
    ids=[
        "sms-03:00-moves-to-08:00",
        "sms-22:30-next-morning",
        "call-at-closing",
        "reminder-03:00",
        "reminder-20:59",
    ],
)
def test_contact_outside_the_window_moves_in_never_dropped(
    replacement: tuple[str, str], step_id: str, expected: datetime
) -> None:
    policy = custom_policy(replacement)
    _, log, _ = drive(make_case(policy=policy), local(date(2024, 1, 15), 10), dpd(10))
    hits = [e for e in log if e.action.step_id == step_id and e.action.installment_seq == 1]
    assert [as_local(e.at) for e in hits] == [expected]


@pytest.mark.parametrize(
    ("tz", "first_due", "step_id", "expected_utc"),
    [
        # Spring forward in New York on 2024-03-10: reminders before it are EST (UTC-5),
        # from the due day on EDT (UTC-4); local midnight of Mar 11 is 04:00Z.
        (NY, date(2024, 3, 10), "t-3", utc(2024, 3, 7, 14)),
        (NY, date(2024, 3, 10), "t-1", utc(2024, 3, 9, 14)),
        (NY, date(2024, 3, 10), "due-today", utc(2024, 3, 10, 12, 30)),
        (NY, date(2024, 3, 10), "dpd-1-sms", utc(2024, 3, 11, 13)),
        (NY, date(2024, 3, 10), "dpd-5-credit-notice", utc(2024, 3, 15, 14)),
        # Fall back on 2024-11-03 (EDT -> EST).
        (NY, date(2024, 11, 3), "t-1", utc(2024, 11, 2, 13)),
        (NY, date(2024, 11, 3), "due-today", utc(2024, 11, 3, 13, 30)),
        (NY, date(2024, 11, 3), "dpd-1-sms", utc(2024, 11, 4, 14)),
        # Feb 29 due date in Shanghai.
        (SH, date(2024, 2, 29), "due-today", utc(2024, 2, 29, 0, 30)),
        (SH, date(2024, 2, 29), "dpd-1-sms", utc(2024, 3, 1, 1)),
    ],
    ids=[
        "ny-t-3-est",
        "ny-t-1-est",
        "ny-due-day-edt",
        "ny-dpd-1-edt",
        "ny-notice-edt",
        "ny-fall-t-1-edt",
        "ny-fall-due-est",
        "ny-fall-dpd-1-est",
        "feb29-due",
        "feb29-dpd-1",
    ],
)
def test_planner_uses_the_borrower_wall_clock(
    tz: str, first_due: date, step_id: str, expected_utc: datetime
) -> None:
    case = make_case(tz=tz, disbursed=first_due - timedelta(days=25), first_due=first_due)
    _, log, _ = drive(
        case, local(first_due - timedelta(days=25), 10, tz=tz), local(first_due + timedelta(days=6), tz=tz)
    )
    hits = [e for e in log if e.action.step_id == step_id and e.action.installment_seq == 1]
    assert [e.at for e in hits] == [expected_utc]
    refreshes = [as_local(e.at, tz).time() for e in log if e.action.kind is K.REFRESH]
    assert refreshes and set(refreshes) == {time(0)}


# --- Call caps ----------------------------------------------------------------------------


def _calls(*items: tuple[datetime, str, bool]) -> list[CallAttempt]:
    return [CallAttempt(at=at, line=line, connected=connected) for at, line, connected in items]


def _today(hh: int, mm: int = 0) -> datetime:
    return dpd(7, hh, mm)


CAP_CASES: list[tuple[list[CallAttempt], datetime]] = [
    ([], dpd(7, 10)),
    (_calls((_today(8), "primary", True), (_today(8, 20), "primary", True)), dpd(7, 10)),
    (_calls(*[(_today(8, 10 * k), "primary", True) for k in range(3)]), dpd(8, 8)),
    (_calls(*[(_today(8, 5 * k), "primary", False) for k in range(6)]), dpd(8, 8)),
    (
        _calls(
            *[(_today(8, 5 * k), "primary", False) for k in range(3)],
            *[(_today(8, 30 + k), "mobile", False) for k in range(3)],
        ),
        dpd(7, 10),
    ),
    # 7 attempts in the last 7 days, the oldest at DPD 1 12:00: allowed once it is 7 days old.
    (
        _calls(*[(dpd(n, 12), "primary", False) for n in range(1, 7)], (_today(8), "primary", False)),
        dpd(8, 12) + timedelta(microseconds=1),
    ),
    # The oldest expires at DPD 7 20:30, still inside the window that day.
    (
        _calls((dpd(0, 20, 30), "primary", False), *[(dpd(n, 12), "primary", False) for n in range(1, 7)]),
        dpd(7, 20, 30) + timedelta(microseconds=1),
    ),
    # The oldest expires at 21:30, after the window closed: next morning.
    (
        _calls((dpd(0, 21, 30), "primary", False), *[(dpd(n, 12), "primary", False) for n in range(1, 7)]),
        dpd(8, 8),
    ),
    # Yesterday's three connected calls do not count today.
    (_calls(*[(dpd(6, 15 + k), "primary", True) for k in range(3)]), dpd(7, 10)),
]


@pytest.mark.parametrize(
    ("log", "expected"),
    CAP_CASES,
    ids=[
        "no-calls",
        "2-connected-today",
        "3-connected-today",
        "6-attempts-on-a-line",
        "3+3-attempts-on-two-lines",
        "7-in-7-days",
        "7-in-7-days-expiring-in-window",
        "7-in-7-days-expiring-after-window",
        "yesterday-does-not-count",
    ],
)
def test_call_caps_defer_to_the_first_allowed_moment(log: list[CallAttempt], expected: datetime) -> None:
    case, _, now = drive(make_case(), local(date(2024, 1, 15), 10), dpd(7, 9))
    assert now < dpd(7, 9)
    now = dpd(7, 9)
    case = reconcile(case.model_copy(update={"call_log": log}), now)
    (call,) = [a for a in plan(case, POLICY, now) if a.step_id == "dpd-7-call"]
    assert as_local(call.at) == expected
    assert call.channel is Channel.VOICE


def test_a_deferred_call_goes_out_the_next_morning() -> None:
    case, _, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(7, 9))
    log = _calls(*[(dpd(7, 8, 10 * k), "primary", True) for k in range(3)])
    case = case.model_copy(update={"call_log": log})
    _, later, _ = drive(case, dpd(7, 9), dpd(9))
    calls = [e for e in later if e.action.kind is K.VOICE_CALL]
    assert [(e.action.step_id, as_local(e.at)) for e in calls] == [("dpd-7-call", dpd(8, 8))]


def test_a_call_the_borrowers_other_loans_leave_no_room_for_waits_until_the_caps_allow() -> None:
    """The outbox found the borrower's calls on all loans at a cap and answered when the next
    call is allowed: the call stays owed, is planned for then (no retry in between: the
    driver would spin), and goes out then, marked as moved by the caps across loans."""
    allowed = dpd(9, 10, 30)
    answers = iter([Outcome(delivered=False, deferred=True, not_before=allowed)])

    def over_cap_once(action: PlannedAction) -> Outcome:
        if action.step_id == "dpd-7-call":
            return next(answers, Outcome(dialed=True, line="mobile"))
        return default_outcome(action)

    case, log, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(12), outcome=over_cap_once)
    calls = [e for e in log if e.action.step_id == "dpd-7-call"]
    assert [as_local(e.at) for e in calls] == [dpd(7, 10), allowed]
    assert calls[1].action.delayed_by == ACROSS_LOANS
    assert case.calls_deferred_until is None  # served
    assert [c.at for c in case.call_log] == [allowed]


def test_a_dialed_call_remembers_its_outbox_key() -> None:
    case, _ = _to(7)
    call = next(a for a in plan(case, POLICY, dpd(7, 9)) if a.kind is K.VOICE_CALL)
    after = record_outcome(case, call, Outcome(dialed=True, line="mobile", call_key=call.key), call.at)
    assert after.call_log[-1].key == call.key


# --- Credit notice and report ---------------------------------------------------------------


def test_no_notice_no_report() -> None:
    """A suppressed or failed notice (delivered=False) means the report never goes."""

    def suppress(action: PlannedAction) -> Outcome:
        if action.kind is K.CREDIT_NOTICE:
            return Outcome(delivered=False)
        return default_outcome(action)

    case, log, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(60), outcome=suppress)
    assert "dpd-5-credit-notice" in steps(log)
    assert K.CREDIT_REPORT not in {e.action.kind for e in log}
    assert not case.credit_reported
    assert case.episode is not None and case.episode.credit_noticed_at is None


def test_late_notice_pushes_the_report_back() -> None:
    """Workflow asleep from DPD 4 to DPD 8 15:00: the notice goes at 15:00, the report ten
    days later (DPD 18 15:00), not at DPD 15."""
    case, _, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(4, 12))
    _, log, _ = drive(case, dpd(8, 15), dpd(25))
    (notice,) = [e for e in log if e.action.kind is K.CREDIT_NOTICE]
    (report,) = [e for e in log if e.action.kind is K.CREDIT_REPORT]
    assert as_local(notice.at) == dpd(8, 15)
    assert as_local(report.at) == dpd(18, 15)


# --- Late start -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("onboard_dpd", "stage_now", "first_day"),
    [
        (2, CollectionStage.GRACE, []),
        (10, CollectionStage.EARLY, ["dpd-5-credit-notice"]),
        (40, CollectionStage.AGENT, ["dpd-5-credit-notice", "dpd-31-assign-agent"]),
        (100, CollectionStage.LEGAL, ["dpd-5-credit-notice", "dpd-91-legal"]),
        (200, CollectionStage.LEGAL, ["dpd-5-credit-notice", "dpd-181-charge-off"]),
    ],
    ids=["grace", "early", "agent", "legal", "charge-off"],
)
def test_late_start_runs_only_the_current_stage_entry_and_the_credit_steps(
    onboard_dpd: int, stage_now: CollectionStage, first_day: list[str]
) -> None:
    onboarded = dpd(onboard_dpd, 11)
    case = make_case(onboarded=onboarded)
    assert stage(case, today_for(case, onboarded)) is stage_now
    case, log, _ = drive(case, onboarded, dpd(onboard_dpd, 23, 59))
    assert steps(log) == first_day
    assert all(e.at == onboarded for e in log if e.action.kind is not K.REFRESH)
    # No reminder of an installment that fell due before onboarding, ever.
    case, later, _ = drive(case, dpd(onboard_dpd, 23, 59), dpd(onboard_dpd + 30))
    everything = log + later
    late_due = {i.seq for i in case.installments if i.due_date <= onboarded.date()}
    assert not [e for e in everything if e.action.kind is K.REMINDER and e.action.installment_seq in late_due]
    # Missed ladder steps are not replayed; the report follows the notice by ten days.
    replayed = {"dpd-1-sms", "dpd-7-call", "dpd-31-assign-agent", "dpd-61-demand-letter", "dpd-91-legal"}
    replayed -= set(first_day)
    missed = {s.id for s in POLICY.ladder if onboard_dpd > s.day}
    assert not (replayed & missed & set(steps(later)))
    reports = [e for e in everything if e.action.kind is K.CREDIT_REPORT]
    assert len(reports) == 1
    if onboard_dpd >= 5:
        assert reports[0].at == onboarded + timedelta(days=10)
    else:
        assert as_local(reports[0].at) == dpd(15, 10)


# --- Late wake-up -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wake_dpd", "expected"),
    [
        (40, ["dpd-5-credit-notice", "dpd-21-call", "dpd-31-assign-agent"]),
        (
            200,
            [
                "dpd-5-credit-notice",
                "dpd-31-assign-agent",
                "dpd-61-demand-letter",
                "dpd-91-legal",
                "dpd-181-charge-off",
            ],
        ),
    ],
    ids=["40-days-late", "200-days-late"],
)
def test_late_wake_up_runs_every_stage_entry_in_order(wake_dpd: int, expected: list[str]) -> None:
    """The workflow last ran on the due day and wakes up `wake_dpd` days later: every stage
    entry still runs, in order; of the overdue contacts only the latest (and the credit
    notice, a compliance step) goes out, not a burst of stale ones."""
    case, _, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(0, 12))
    woke = dpd(wake_dpd, 12)
    case, log, _ = drive(case, woke, dpd(wake_dpd, 23, 59))
    assert steps(log, skip=(K.REFRESH, K.REMINDER)) == expected
    assert all(e.at == woke for e in log if e.action.kind is not K.REFRESH)
    # Nothing is replayed afterwards either.
    _, later, _ = drive(case, dpd(wake_dpd, 23, 59), dpd(wake_dpd + 12))
    assert steps(later, skip=(K.REFRESH, K.REMINDER)) == ["dpd-15-credit-report"]


# --- Cure and payoff ----------------------------------------------------------------------------


def _to(day: int) -> tuple[Case, datetime]:
    case, _, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(day, 12))
    return reconcile(case, dpd(day, 12)), dpd(day, 12)


def test_cure_resets_the_ladder_and_plans_the_follow_ups() -> None:
    case, now = _to(35)
    today = today_for(case, now)
    assert stage(case, today) is CollectionStage.AGENT
    assert case.assigned_agent and case.credit_report_open
    case, _ = apply_payment(case, overdue_amount(case, today), now)
    assert days_past_due(case, today) == 0
    assert stage(case, today) is CollectionStage.CURRENT
    case, log, _ = drive(case, now, dpd(60, 12))
    first = log[:2]
    assert [(e.action.kind, e.at) for e in first] == [(K.RELEASE_AGENT, now), (K.CREDIT_UPDATE, now)]
    assert first[0].action.key.endswith("/release-agent/cure-1")
    assert case.assigned_agent is None and not case.agent_requested and not case.credit_report_open
    assert case.episode is None
    # Back at the start of the ladder: only the reminders of the next installment (due Apr 15).
    assert [
        (e.action.step_id, e.action.installment_seq) for e in log[2:] if e.action.kind is not K.REFRESH
    ] == [
        ("t-3", 3),
        ("t-1", 3),
        ("due-today", 3),
    ]


def test_a_second_miss_after_a_cure_starts_a_new_episode() -> None:
    case, now = _to(35)
    case, _ = apply_payment(case, overdue_amount(case, today_for(case, now)), now)
    case, log, _ = drive(case, now, local(date(2024, 4, 16), 23))  # installment 3 missed Apr 15
    assert case.episode is not None and case.episode.number == 2 and case.episode.anchor_seq == 3
    assert ("dpd-1-sms", 3) in [(e.action.step_id, e.action.installment_seq) for e in log]


def test_legal_then_cured_goes_back_to_current() -> None:
    case, now = _to(95)
    today = today_for(case, now)
    assert stage(case, today) is CollectionStage.LEGAL and case.legal_referred
    case, _ = apply_payment(case, overdue_amount(case, today), now)
    assert stage(case, today) is CollectionStage.CURRENT
    case, log, _ = drive(case, now, now)
    assert {e.action.kind for e in log} == {K.RELEASE_AGENT, K.CREDIT_UPDATE}


def test_partial_cure_moves_the_anchor_and_keeps_the_episode() -> None:
    case, now = _to(35)
    case, _ = apply_payment(case, 2_415 + 110_016, now)  # installment 1 with its penalty
    case = reconcile(case, now)
    assert case.episode is not None
    assert (case.episode.number, case.episode.anchor_seq) == (1, 2)
    assert days_past_due(case, today_for(case, now)) == 6
    assert not [a for a in plan(case, POLICY, now) if a.kind in (K.RELEASE_AGENT, K.CREDIT_UPDATE)]


@pytest.mark.parametrize("day", [-10, 35], ids=["while-current", "while-in-agent-stage"])
def test_payoff_closes_the_case(day: int) -> None:
    case, now = _to(day)
    case, _ = apply_payment(case, outstanding(case, today_for(case, now)).total, now)
    assert case.closed
    case, log, _ = drive(case, now, now + timedelta(days=400))
    expected = [] if day < 0 else [K.RELEASE_AGENT, K.CREDIT_UPDATE]
    assert [e.action.kind for e in log] == expected
    assert all(e.action.key.split("/")[-1] == "payoff" for e in log)
    assert next_action(case, POLICY, now) is None
    assert stage(case, today_for(case, now)) is CollectionStage.PAID_OFF


# --- Agent queue and outcomes ----------------------------------------------------------------


def test_assignment_without_a_free_agent_retries_each_midnight() -> None:
    def no_agent(action: PlannedAction) -> Outcome:
        return Outcome() if action.kind is K.ASSIGN_AGENT else default_outcome(action)

    case, log, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(33, 12), outcome=no_agent)
    assigns = [(e.action.step_id, as_local(e.at)) for e in log if e.action.kind is K.ASSIGN_AGENT]
    assert assigns == [
        ("dpd-31-assign-agent", dpd(31)),
        ("agent-check", dpd(32)),
        ("agent-check", dpd(33)),
    ]
    assert case.agent_requested and case.assigned_agent is None
    retry = next(a for a in plan(case, POLICY, dpd(33, 12)) if a.step_id == "agent-check")
    assert "unassigned queue" in retry.summary
    case = record_outcome(case, retry, Outcome(agent_id="agent-2"), retry.at)
    assert case.assigned_agent == "agent-2"
    # Then once a night, who holds the case is confirmed (an agent may be deactivated).
    check = next(a for a in plan(case, POLICY, retry.at) if a.kind is K.ASSIGN_AGENT)
    assert (as_local(retry.at), as_local(check.at)) == (dpd(34), dpd(35))
    assert check.summary == "confirm agent agent-2"
    case = record_outcome(case, check, Outcome(agent_id="agent-3"), check.at)
    assert case.assigned_agent == "agent-3"


def test_a_cured_case_stops_checking_its_agent_and_releases_it() -> None:
    case, _, now = drive(make_case(), local(date(2024, 1, 15), 10), dpd(35, 12))
    assert case.assigned_agent is not None
    case, _ = apply_payment(case, overdue_amount(case, today_for(case, now)), now)
    case = reconcile(case, now)
    kinds = [a.kind for a in plan(case, POLICY, now)]
    assert K.RELEASE_AGENT in kinds and K.ASSIGN_AGENT not in kinds


@pytest.mark.parametrize(
    ("outcome", "sent", "logged"),
    [
        (Outcome(dialed=True, connected=True, line="mobile"), 1, [("mobile", True)]),
        (Outcome(dialed=True), 1, [("primary", False)]),
        (Outcome(delivered=False), 0, []),
    ],
    ids=["connected", "dialed-default-line", "not-delivered"],
)
def test_record_outcome_of_a_call(outcome: Outcome, sent: int, logged: list[Any]) -> None:
    case, _ = _to(7)
    call = next(a for a in plan(case, POLICY, dpd(7, 9)) if a.kind is K.VOICE_CALL)
    old = CallAttempt(at=dpd(-5, 12), line="primary", connected=False)  # more than 8 days old: trimmed
    case = case.model_copy(update={"call_log": [old], "contacts_sent": 0})
    after = record_outcome(case, call, outcome, call.at)
    assert after.contacts_sent == sent
    if logged:  # the new attempt, the 12-day-old one trimmed
        assert [(c.line, c.connected) for c in after.call_log] == logged
    else:
        assert after.call_log == [old]
    assert after.episode is not None and "dpd-7-call" in after.episode.done


# --- Late wake-up the same day --------------------------------------------------------------


@pytest.mark.parametrize(
    ("woke", "expected"),
    [
        (dpd(-1, 7), [("t-1", dpd(-1, 9))]),
        (dpd(-1, 15), [("t-1", dpd(-1, 15))]),
        (dpd(-1, 21, 30), []),  # the window closed: not at 21:30, and not replayed tomorrow
        (dpd(0, 7), []),  # the day has passed
    ],
    ids=["before-nominal", "same-day-in-window", "after-the-window", "next-day"],
)
def test_a_late_reminder_goes_out_now_inside_the_window_or_not_at_all(
    woke: datetime, expected: list[tuple[str, datetime]]
) -> None:
    case, _, _ = drive(make_case(), local(date(2024, 1, 15), 10), dpd(-3, 12))  # t-3 sent
    _, log, _ = drive(case, woke, dpd(-1, 23, 59))
    assert [(e.action.step_id, as_local(e.at)) for e in log if e.action.kind is K.REMINDER] == expected


def test_planned_action_shape() -> None:
    case = make_case()
    action = next_action(case, POLICY, local(date(2024, 1, 15), 10))
    assert action is not None
    assert (action.kind, action.step_id, action.installment_seq, action.channel) == (
        K.REMINDER,
        "t-3",
        1,
        Channel.SMS,
    )
    assert action.is_contact
    assert action.key == "L-1/1/t-3/2024-02-12T01:00:00+00:00"
    assert action.template == "reminder_t3"


# --- After an extension -------------------------------------------------------------------


def test_an_extended_due_date_is_reminded_and_collected_anew() -> None:
    """Extended by 30 days at DPD 20 and still not paid: the new due date gets its own
    reminders, falls due at its midnight, and the ladder starts over from it."""
    from domain.enums import RestructuringKind
    from domain.restructure import restructure

    case, _, now = drive(make_case(), local(DISBURSED, 10), dpd(20, 12))
    case = restructure(
        case,
        restructuring_id="ext-1",
        kind=RestructuringKind.EXTENSION,
        approved_by="supervisor",
        approval_ref="APR-1",
        extension_days=30,
        now=now,
    )
    new_due = FIRST_DUE + timedelta(days=30)
    case, log, _ = drive(case, now, local(new_due + timedelta(days=8), 12))
    seen = {(e.action.step_id, as_local(e.at)) for e in log if e.action.installment_seq in (1, None)}
    for step, at in [
        ("t-3", local(new_due - timedelta(days=3), 9)),
        ("t-1", local(new_due - timedelta(days=1), 9)),
        ("due-today", local(new_due, 8, 30)),
        ("refresh", local(new_due)),
        ("refresh", local(new_due + timedelta(days=1))),
        ("dpd-1-sms", local(new_due + timedelta(days=1), 9)),
        ("dpd-5-credit-notice", local(new_due + timedelta(days=5), 10)),
        ("dpd-7-call", local(new_due + timedelta(days=7), 10)),
    ]:
        assert (step, at) in seen, step


def test_without_a_due_day_reminder_the_due_date_still_wakes_the_case() -> None:
    text = (POLICY_DIR / "standard.toml").read_text()
    no_day0 = text.replace(
        '[[reminders]]\nid = "due-today"\nday = 0\nat = "08:30"\ntemplate = "reminder_due_today"\n', ""
    )
    assert no_day0 != text
    policy = load_policy_text(no_day0)
    case = make_case().model_copy(update={"policy": policy})
    _, log, _ = drive(case, local(DISBURSED, 10), dpd(1, 12))
    assert [(e.action.step_id, as_local(e.at)) for e in log if e.at >= local(FIRST_DUE)][:3] == [
        ("refresh", dpd(0)),
        ("refresh", dpd(1)),
        ("dpd-1-sms", dpd(1, 9)),
    ]


@pytest.mark.parametrize(
    ("tz", "instant", "closes"),
    [
        (SH, datetime(2024, 3, 10, 2, tzinfo=UTC), datetime(2024, 3, 10, 13, tzinfo=UTC)),
        # New York on the day clocks spring forward: 21:00 EDT is 01:00 UTC the next day.
        (NY, datetime(2024, 3, 10, 15, tzinfo=UTC), datetime(2024, 3, 11, 1, tzinfo=UTC)),
    ],
    ids=["shanghai", "new-york-dst-day"],
)
def test_window_close_is_21_00_on_the_borrowers_local_day(
    tz: str, instant: datetime, closes: datetime
) -> None:
    assert window_close(POLICY, tz, instant) == closes


def test_no_routine_reminders_while_with_legal_or_charged_off_and_again_after_a_cure() -> None:
    legal_day = FIRST_DUE + timedelta(days=91)
    charged, log, _ = drive(make_case(), local(DISBURSED, 10), dpd(240, 12))
    assert stage(charged, today_for(charged, dpd(240, 12))) is CollectionStage.CHARGED_OFF
    assert [e for e in log if e.action.kind is K.REMINDER and e.at >= local(legal_day)] == []
    # Cured while with legal: back to CURRENT, and the next due date is reminded again.
    legal, _, now = drive(make_case(), local(DISBURSED, 10), dpd(120, 12))
    cured, _ = apply_payment(legal, overdue_amount(legal, today_for(legal, now)), now)
    assert stage(cured, today_for(cured, now)) is CollectionStage.CURRENT
    _, after, _ = drive(cured, now, now + timedelta(days=40))
    assert any(e.action.kind is K.REMINDER for e in after)


def test_a_deferred_contact_stays_owed_and_goes_out_in_the_next_window() -> None:
    case, _, now = drive(make_case(), local(DISBURSED, 10), dpd(5, 9))
    notice = next_action(case, POLICY, now)
    assert notice is not None and notice.kind is K.CREDIT_NOTICE
    late = dpd(5, 21, 30)  # the gateway recovered only after the window closed
    case = record_outcome(case, notice, Outcome(delivered=False, deferred=True), late)
    again = next(a for a in plan(reconcile(case, late), POLICY, late) if not is_housekeeping(a))
    assert (again.key, as_local(again.at)) == (notice.key, dpd(6, 8))
