"""`python -m tests.faults.crashing_worker`: worker.py, except that it dies (SIGKILL, by
its own hand) right after its `record_case_events` local activity has written a payment
down, before the workflow task that took the payment in completes. The deterministic
form of a `kill -9` at the worst moment of the fault suite."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity

import worker
from activities import collection_activities
from activities.delivery import Deliverer
from activities.records import RecordActivities
from models.wire import CaseEvents


class DiesAfterBooking(RecordActivities):
    @activity.defn(name="record_case_events")
    def record_case_events(self, events: CaseEvents) -> None:
        super().record_case_events(events)
        if events.payments:
            os.kill(os.getpid(), signal.SIGKILL)


def dying_activities(engine: Engine, deliverer: Deliverer | None = None) -> list[Callable[..., Any]]:
    dying = DiesAfterBooking(engine).record_case_events
    return [
        dying if getattr(a, "__name__", "") == "record_case_events" else a
        for a in collection_activities(engine, deliverer)
    ]


if __name__ == "__main__":
    worker.collection_activities = dying_activities
    worker.main()
