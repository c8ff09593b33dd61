"""How a case is shown: the moment a query answers for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
