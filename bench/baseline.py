"""The baselines the benchmark divides by: deliberately minimal, deterministic workflows.

- `BareWorkflow`: runs one activity, then parks forever on a condition (no timer); its
  `touch` update only counts. The yardstick for parking, update latency and memory.
- `MinimalLoan`: a 12-installment loan with the same reminders as the standard policy's
  on-time payer gets (two reminder activities per installment, at 09:00 three days and
  one day before the due date) and a payment signal, nothing else: no ledger, no
  planner, no database, no search attributes. The yardstick for time-skipped loan-years.

Nothing here reads the clock or the disk outside `workflow.now()`; the schedule is plain
date arithmetic (`due_dates`), shared with the benchmark that pays the installments.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import partial

from temporalio import activity, workflow

# schedule-to-close, not only start-to-close: the Java time-skipping server gives an
# activity without one a 10-year timeout timer that outlives the activity, and the next
# `result()` skips the clock ten years ahead to fire it.
ACTIVITY_TIMEOUT = timedelta(seconds=30)
# The standard policy's before-due reminders an on-time payer receives (policies/standard.toml:
# t-3 and t-1 at 09:00 local); the due-day one never runs when the borrower pays at T-1.
REMINDER_DAYS_BEFORE = (3, 1)
REMINDER_AT = time(9, 0)


@activity.defn
async def bare_open(name: str) -> str:
    return name


@activity.defn
async def remind(loan_id: str, seq: int, days_before: int) -> str:
    return f"{loan_id}/{seq}/T-{days_before}"


@workflow.defn
class BareWorkflow:
    """One activity, then parked until terminated."""

    @workflow.init
    def __init__(self, name: str) -> None:
        self.touched = 0

    @workflow.run
    async def run(self, name: str) -> None:
        await workflow.execute_activity(bare_open, name, schedule_to_close_timeout=ACTIVITY_TIMEOUT)
        await workflow.wait_condition(lambda: False)

    @workflow.update
    def touch(self, n: int) -> int:
        self.touched += 1
        return self.touched


def add_months(anchor: date, months: int) -> date:
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month0 = divmod(index, 12)
    return date(year, month0 + 1, min(anchor.day, calendar.monthrange(year, month0 + 1)[1]))


def due_dates(first_due: date, installments: int) -> list[date]:
    return [add_months(first_due, n) for n in range(installments)]


@dataclass
class MinimalLoanStart:
    loan_id: str
    first_due: date
    installments: int = 12
    utc_offset_hours: int = 8  # Asia/Shanghai, which has no daylight saving


@workflow.defn
class MinimalLoan:
    """Per installment: two reminders (activities) unless already paid, then wait for the
    payment signal. Completes when every installment is paid."""

    @workflow.init
    def __init__(self, start: MinimalLoanStart) -> None:
        self.paid = 0

    @workflow.signal
    def pay(self, seq: int) -> None:
        self.paid = max(self.paid, seq)

    @workflow.run
    async def run(self, start: MinimalLoanStart) -> int:
        tz = timezone(timedelta(hours=start.utc_offset_hours))
        for seq, due in enumerate(due_dates(start.first_due, start.installments), start=1):
            for days_before in REMINDER_DAYS_BEFORE:
                at = datetime.combine(due - timedelta(days=days_before), REMINDER_AT, tz)
                if at > workflow.now():
                    await workflow.sleep(at - workflow.now())
                if self.paid < seq:
                    await workflow.execute_activity(
                        remind,
                        args=[start.loan_id, seq, days_before],
                        schedule_to_close_timeout=ACTIVITY_TIMEOUT,
                    )
            await workflow.wait_condition(partial(self._paid_up_to, seq))
        return self.paid

    def _paid_up_to(self, seq: int) -> bool:
        return self.paid >= seq
