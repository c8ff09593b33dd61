"""A collector's worklist: the agent's open cases in the order to work them (DESIGN.md
contract part 2, `worklist --agent A`).

Pure: the cases come in as their `state` answers (`CollectionsClient.worklist` lists
them and asks), and go out ordered:

1. a promise to pay falling due today (an open promise whose `promised_date` is the
   borrower's local today): the borrower said they would pay today, call if not;
2. then cases with broken promises in this delinquency episode;
3. then the rest; within each group, by days past due × overdue, largest first.

A case whose `state` could not be read comes last, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from enum import IntEnum
from typing import Any

from domain.enums import InstallmentStatus, PromiseStatus
from models.wire import CaseView, HoldView, PromiseView

__all__ = [
    "Priority",
    "WorkItem",
    "hold_text",
    "local_today",
    "next_text",
    "order_worklist",
]


class Priority(IntEnum):
    """The group a case is worked in (lower first)."""

    PROMISE_DUE_TODAY = 0
    BROKEN_PROMISES = 1
    BY_EXPOSURE = 2  # days past due × overdue
    UNREADABLE = 3  # its state could not be read


def local_today(view: CaseView) -> date | None:
    """The borrower's local date the `state` answer was computed for, read off the
    answer itself (it carries no time zone): DPD counts from the oldest overdue
    installment's due date, so that date + DPD is today; an installment with status
    `due` falls due today. None when neither tells (nothing overdue or due today: then
    no promise can be open either, as a promise needs something overdue)."""
    overdue = [i.due_date for i in view.installments if i.status is InstallmentStatus.OVERDUE]
    if overdue and view.days_past_due > 0:
        return min(overdue) + timedelta(days=view.days_past_due)
    return next((i.due_date for i in view.installments if i.status is InstallmentStatus.DUE), None)


@dataclass(frozen=True)
class WorkItem:
    """One case of a worklist: its `state` answer, or why it could not be read."""

    loan_id: str
    view: CaseView | None
    error: str | None = None

    @property
    def promise_due_today(self) -> PromiseView | None:
        if self.view is None:
            return None
        today = local_today(self.view)
        return next(
            (
                p
                for p in self.view.promises
                if p.status is PromiseStatus.OPEN and today is not None and p.promised_date == today
            ),
            None,
        )

    @property
    def broken_promises(self) -> int:
        return self.view.broken_promises if self.view is not None else 0

    @property
    def exposure(self) -> int:
        """Days past due × overdue (minor units): how much, how long."""
        return self.view.days_past_due * self.view.overdue if self.view is not None else 0

    @property
    def priority(self) -> Priority:
        if self.view is None:
            return Priority.UNREADABLE
        if self.promise_due_today is not None:
            return Priority.PROMISE_DUE_TODAY
        if self.broken_promises > 0:
            return Priority.BROKEN_PROMISES
        return Priority.BY_EXPOSURE

    @property
    def why(self) -> str:
        """Why the case is where it is in the list ('' for the ordinary ones)."""
        promise = self.promise_due_today
        if promise is not None:
            return f"promise {promise.promise_id} due today"
        if self.view is None:
            return f"cannot read its state: {self.error or 'no answer'}"
        if self.broken_promises:
            n = self.broken_promises
            return f"{n} broken promise{'s' if n > 1 else ''}"
        return ""

    def row(self) -> dict[str, Any]:
        """The `worklist --json` row (amounts in minor units, times ISO 8601)."""
        v = self.view
        promise = self.promise_due_today
        return {
            "loan_id": self.loan_id,
            "priority": self.priority.name.lower(),
            "why": self.why,
            "stage": v.stage.value if v else None,
            "days_past_due": v.days_past_due if v else None,
            "overdue": v.overdue if v else None,
            "hold": v.hold.model_dump(mode="json") if v and v.hold else None,
            "next_action": v.next_action.model_dump(mode="json") if v and v.next_action else None,
            "promise_due_today": promise.model_dump(mode="json") if promise else None,
            "broken_promises": self.broken_promises,
            "assigned_agent": v.assigned_agent if v else None,
            "error": self.error,
        }


def order_worklist(items: Iterable[WorkItem]) -> list[WorkItem]:
    """The cases in working order: promises falling due today, then broken promises,
    then the rest; within each group by days past due × overdue, largest first (ties by
    loan id, so the order is stable); unreadable cases last."""
    return sorted(items, key=lambda i: (i.priority, -i.exposure, i.loan_id))


def hold_text(hold: HoldView | None) -> str:
    """'PROMISE until 2025-03-05 (P-1)', 'DISPUTE (D-1)', or '-'."""
    if hold is None:
        return "-"
    until = f" until {hold.until.isoformat()}" if hold.until else ""
    return f"{hold.reason.value}{until} ({hold.ref})"


def next_text(view: CaseView) -> str:
    """What is next: the next action and when, or, when there is none, the hold the case
    waits on."""
    if view.next_action is not None:
        return f"{view.next_action.kind.value} at {view.next_action.at.isoformat(timespec='minutes')}"
    if view.hold is not None:
        return f"held: {hold_text(view.hold)}"
    return "nothing planned" if not view.closed else "closed"
