"""The worklist's order (client/worklist.py), pure: promises falling due today first,
then broken promises, then days past due × overdue; and the borrower's local today read
off a `state` answer."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from client.worklist import Priority, WorkItem, hold_text, local_today, next_text, order_worklist
from domain.enums import InstallmentStatus
from models.wire import CaseView, HoldView

TODAY = date(2025, 3, 10)


def view(
    loan_id: str,
    dpd: int,
    overdue: int,
    *,
    promises: list[dict[str, Any]] | None = None,
    broken: int = 0,
    hold: dict[str, Any] | None = None,
    next_action: dict[str, Any] | None = None,
    today: date = TODAY,
) -> CaseView:
    """A `state` answer whose first installment is `dpd` days past due on `today` (or,
    with dpd 0, falls due in 5 days), the second a month later."""
    first_due = today - timedelta(days=dpd) if dpd else today + timedelta(days=5)
    installments = [
        {
            "seq": 1,
            "due_date": first_due.isoformat(),
            "principal": 100_000,
            "interest": 1_000,
            "paid": 0,
            "status": "overdue" if dpd else "scheduled",
        },
        {
            "seq": 2,
            "due_date": (first_due + timedelta(days=30)).isoformat(),
            "principal": 100_000,
            "interest": 1_000,
            "paid": 0,
            "status": "overdue" if dpd > 30 else "scheduled",
        },
    ]
    return CaseView.model_validate(
        {
            "loan_id": loan_id,
            "stage": "AGENT" if dpd > 30 else ("EARLY" if dpd > 3 else "GRACE" if dpd else "CURRENT"),
            "days_past_due": dpd,
            "outstanding": {
                "principal": 200_000,
                "interest": 2_000,
                "penalty": 0,
                "fee": 0,
                "total": 202_000,
            },
            "overdue": overdue,
            "next_action": next_action,
            "assigned_agent": "agent-a",
            "installments": installments,
            "contacts_sent": 0,
            "credit_reported": False,
            "legal_referred": False,
            "closed": False,
            "hold": hold,
            "promises": promises or [],
            "broken_promises": broken,
        }
    )


def promise(day: date, status: str = "open", pid: str = "PR-1") -> dict[str, Any]:
    return {"promise_id": pid, "amount": 50_000, "promised_date": day.isoformat(), "status": status}


def ids(items: list[WorkItem]) -> list[str]:
    return [i.loan_id for i in items]


def test_local_today_is_the_oldest_overdue_due_date_plus_dpd() -> None:
    assert local_today(view("A", 45, 1)) == TODAY
    assert local_today(view("A", 1, 1)) == TODAY
    assert local_today(view("A", 0, 0)) is None  # nothing overdue, nothing due today
    due_today = view("A", 0, 0).model_copy(deep=True)
    due_today.installments[0].due_date = TODAY
    due_today.installments[0].status = InstallmentStatus.DUE
    assert local_today(due_today) == TODAY


def test_promises_due_today_first_then_broken_promises_then_dpd_times_overdue() -> None:
    items = [
        WorkItem("big", view("big", 80, 9_000_000)),  # 720,000,000
        WorkItem("small", view("small", 35, 100_000)),  # 3,500,000
        WorkItem("mid", view("mid", 40, 1_000_000)),  # 40,000,000
        WorkItem("broken-small", view("broken-small", 33, 10_000, broken=1)),
        WorkItem("broken-big", view("broken-big", 60, 500_000, broken=2)),
        WorkItem("promise-today", view("promise-today", 31, 10, promises=[promise(TODAY)])),
        WorkItem(
            "promise-tomorrow", view("promise-tomorrow", 90, 10, promises=[promise(TODAY + timedelta(1))])
        ),
        WorkItem("unreadable", None, "no answer"),
    ]
    ordered = order_worklist(items)
    # exposures (DPD × overdue): big 720,000,000; mid 40,000,000; small 3,500,000;
    # promise-tomorrow 900 (an open promise not due today orders by exposure)
    assert ids(ordered) == [
        "promise-today",
        "broken-big",
        "broken-small",
        "big",
        "mid",
        "small",
        "promise-tomorrow",
        "unreadable",
    ]
    assert [i.priority for i in ordered][:3] == [
        Priority.PROMISE_DUE_TODAY,
        Priority.BROKEN_PROMISES,
        Priority.BROKEN_PROMISES,
    ]
    assert ordered[-1].priority is Priority.UNREADABLE
    assert ordered[0].why == "promise PR-1 due today"
    assert ordered[1].why == "2 broken promises" and ordered[2].why == "1 broken promise"
    assert ordered[3].why == "" and ordered[-1].why == "cannot read its state: no answer"


def test_a_promise_due_today_that_is_kept_or_broken_does_not_count() -> None:
    kept = WorkItem("kept", view("kept", 40, 10, promises=[promise(TODAY, "kept")]))
    broken = WorkItem("broken", view("broken", 40, 10, promises=[promise(TODAY, "broken")], broken=1))
    yesterday = WorkItem("past", view("past", 40, 10, promises=[promise(TODAY - timedelta(1))]))
    assert kept.priority is Priority.BY_EXPOSURE and kept.promise_due_today is None
    assert broken.priority is Priority.BROKEN_PROMISES
    assert yesterday.priority is Priority.BY_EXPOSURE


def test_today_is_the_borrowers_not_the_callers() -> None:
    """A case answered for another local date (a borrower across the date line) is due
    'today' on its own calendar."""
    other_day = TODAY + timedelta(days=1)
    item = WorkItem("east", view("east", 40, 10, promises=[promise(other_day)], today=other_day))
    assert item.priority is Priority.PROMISE_DUE_TODAY


def test_ties_are_broken_by_loan_id_and_the_order_is_stable() -> None:
    a, b, c = (WorkItem(x, view(x, 40, 1_000)) for x in ("L-3", "L-1", "L-2"))
    assert ids(order_worklist([a, b, c])) == ["L-1", "L-2", "L-3"]
    assert ids(order_worklist([c, b, a])) == ["L-1", "L-2", "L-3"]
    assert order_worklist([]) == []


@pytest.mark.parametrize(
    ("hold", "text"),
    [
        (None, "-"),
        ({"reason": "PROMISE", "until": "2025-03-12", "ref": "PR-1"}, "PROMISE until 2025-03-12 (PR-1)"),
        ({"reason": "DISPUTE", "until": None, "ref": "D-1"}, "DISPUTE (D-1)"),
    ],
)
def test_hold_text(hold: dict[str, Any] | None, text: str) -> None:
    assert hold_text(HoldView.model_validate(hold) if hold else None) == text


def test_next_is_the_next_action_or_the_hold() -> None:
    at = datetime(2025, 3, 11, 1, 0, tzinfo=UTC)
    with_action = view("A", 40, 10, next_action={"kind": "voice_call", "at": at.isoformat()})
    assert next_text(with_action) == "voice_call at 2025-03-11T01:00+00:00"
    held = view("A", 40, 10, hold={"reason": "DISPUTE", "until": None, "ref": "D-1"})
    assert next_text(held) == "held: DISPUTE (D-1)"
    assert next_text(view("A", 40, 10)) == "nothing planned"


def test_the_json_row_carries_minor_units_and_the_reason() -> None:
    item = WorkItem(
        "L-1",
        view(
            "L-1",
            40,
            123_456,
            promises=[promise(TODAY)],
            hold={"reason": "PROMISE", "until": TODAY.isoformat(), "ref": "PR-1"},
        ),
    )
    row = item.row()
    assert row["loan_id"] == "L-1" and row["overdue"] == 123_456 and row["days_past_due"] == 40
    assert row["priority"] == "promise_due_today" and row["why"] == "promise PR-1 due today"
    assert row["hold"] == {"reason": "PROMISE", "until": TODAY.isoformat(), "ref": "PR-1"}
    assert row["promise_due_today"]["promise_id"] == "PR-1" and row["error"] is None
    gone = WorkItem("L-2", None, "stuck").row()
    assert gone["priority"] == "unreadable" and gone["overdue"] is None and gone["error"] == "stuck"
