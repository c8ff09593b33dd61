"""How a case is shown: the moment a query answers for."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from models.views import query_time


def test_a_query_answers_for_now_when_the_workflow_has_slept_since_its_last_task() -> None:
    slept_since = datetime.now(UTC) - timedelta(days=20)
    answered_for = query_time(slept_since)
    assert answered_for > slept_since + timedelta(days=19)
    assert abs(answered_for - datetime.now(UTC)) < timedelta(seconds=5)


def test_a_query_never_answers_for_a_moment_before_the_workflow_time() -> None:
    # On the time-skipping test server the workflow's clock runs ahead of the wall clock.
    ahead = datetime.now(UTC) + timedelta(days=400)
    assert query_time(ahead) == ahead


def test_next_action_shows_the_next_step_not_the_nightly_housekeeping() -> None:
    from domain.enums import ActionKind
    from models.views import case_view
    from tests.test_domain_helpers import DISBURSED, FIRST_DUE, drive, local, make_case

    case, _, now = drive(make_case(), local(DISBURSED, 10), local(FIRST_DUE + timedelta(days=40), 12))
    view = case_view(case, now)
    assert view.stage == "AGENT" and view.assigned_agent is not None
    # Not tonight's check of who holds the case, but installment 3's T-3 reminder.
    assert view.next_action is not None and view.next_action.kind is ActionKind.REMINDER
    assert view.next_action.at == local(date(2024, 4, 12), 9)
    charged, _, later = drive(case, now, local(FIRST_DUE + timedelta(days=200), 12))
    assert case_view(charged, later).stage == "CHARGED_OFF"
    assert case_view(charged, later).next_action is None  # only the nightly refresh is left
