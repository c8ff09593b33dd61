"""What each step of the case asks of the world: the activity payloads built from
(case, planned action, now), and what an activity's answer means to the planner.

Pure functions (Pydantic and domain/ only): the workflow passes them through the sandbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel

from domain.case import Case
from domain.enums import ActionKind, Channel
from domain.ledger import days_past_due, overdue_amount, owed_on, today_for
from domain.planner import QUEUE_RELEASE, Outcome, PlannedAction, window_close
from models.views import installments_of, outstanding_of
from models.wire import (
    AgentRelease,
    AgentRequest,
    CaseEvents,
    CaseFiling,
    ContactLogRecord,
    ContactOutcome,
    ContactParams,
    ContactRequest,
    DeskRecords,
    DisputeRecord,
    HardshipRecord,
    LoanRecord,
    LoanStart,
    PreferenceRecord,
    PromiseRecord,
)


def loan_record(start: LoanStart, case: Case, now: datetime) -> LoanRecord:
    """The loan and its schedule as disbursed."""
    return LoanRecord(
        start=start, first_due_date=case.first_due_date, installments=installments_of(case, now)
    )


def contact_request(case: Case, action: PlannedAction, now: datetime) -> ContactRequest:
    """A reminder names what the installment owes; every other contact what is overdue.
    A credit notice names the earliest day the loan may be reported. The message is not
    sent after the borrower's contact window closes that day."""
    assert action.channel is not None and action.template is not None
    today = today_for(case, now)
    kind = action.kind
    inst = next((i for i in case.installments if i.seq == action.installment_seq), None)
    amount = (
        owed_on(case, inst, today).total
        if kind is ActionKind.REMINDER and inst
        else overdue_amount(case, today)
    )
    call = action.channel is Channel.VOICE
    params = ContactParams(
        amount=amount,
        currency=case.currency,
        due_date=inst.due_date if inst else None,
        days_past_due=days_past_due(case, today),
        installment_seq=action.installment_seq,
        report_on=(today + timedelta(days=case.policy.credit_notice_lead_days))
        if kind is ActionKind.CREDIT_NOTICE
        else None,
    )
    return ContactRequest(
        key=action.key,
        loan_id=case.loan_id,
        borrower_id=case.borrower_id,
        kind=kind,
        channel=action.channel,
        template=action.template,
        scheduled_at=action.at,
        params=params,
        not_after=window_close(case.policy, case.timezone, action.at),
        call_caps=case.policy.call_caps if call else None,
        contact_window=case.policy.contact_window if call else None,
        timezone=case.timezone,
    )


def contact_outcome(result: ContactOutcome, call_key: str | None = None) -> Outcome:
    """A deferred contact (too late for the window, or over the borrower's call caps across
    loans) is still owed; anything but `delivered` (suppressed, failed) counts as not
    delivered. A dialed call remembers `call_key` (its outbox key) so the IVR's report of
    it is matched to it."""
    if result.status == "deferred":
        return Outcome(delivered=False, deferred=True, not_before=result.not_before)
    return Outcome(
        delivered=result.status == "delivered",
        dialed=result.dialed,
        connected=result.connected,
        line=result.line,
        call_key=call_key if result.dialed else None,
    )


def agent_request(case: Case, action: PlannedAction, now: datetime) -> AgentRequest:
    today = today_for(case, now)
    return AgentRequest(
        key=action.key,
        loan_id=case.loan_id,
        borrower_id=case.borrower_id,
        days_past_due=days_past_due(case, today),
        overdue=overdue_amount(case, today),
        at=now,
    )


def agent_release(case: Case, action: PlannedAction, now: datetime) -> AgentRelease:
    return AgentRelease(
        key=action.key,
        loan_id=case.loan_id,
        agent_id=case.assigned_agent,
        reason=action.summary if action.step_id == QUEUE_RELEASE else "paid off" if case.closed else "cured",
        at=now,
    )


def case_filing(case: Case, action: PlannedAction, now: datetime) -> CaseFiling:
    """Legal referral, credit notice/report/update, charge-off, field visit: the case's
    figures as of `now`."""
    today = today_for(case, now)
    return CaseFiling(
        key=action.key,
        loan_id=case.loan_id,
        borrower_id=case.borrower_id,
        kind=action.kind,
        at=now,
        days_past_due=days_past_due(case, today),
        overdue=overdue_amount(case, today),
        outstanding=outstanding_of(case, now),
        currency=case.currency,
        detail=action.summary,
        # The desk's filings go to whoever holds the case (None: the unassigned queue).
        agent_id=case.assigned_agent if action.kind in DESK_FILINGS else None,
    )


DESK_FILINGS = frozenset({ActionKind.DISPUTE_OVERDUE, ActionKind.HARDSHIP_REVIEW})


DeskRow = PromiseRecord | DisputeRecord | HardshipRecord | PreferenceRecord | ContactLogRecord
R = TypeVar("R", bound=BaseModel)


def _row(cls: type[R], source: BaseModel, **more: object) -> R:
    fields = {name: getattr(source, name) for name in cls.model_fields if hasattr(source, name)}
    return cls.model_validate(fields | more)


def desk_records(case: Case) -> dict[str, DeskRow]:
    """Every desk record of the case as the lender's database should hold it, by key."""
    ids = {"loan_id": case.loan_id, "borrower_id": case.borrower_id}
    rows: dict[str, DeskRow] = {}
    for p in case.promises:
        rows[f"promise/{p.promise_id}"] = _row(PromiseRecord, p, currency=case.currency, **ids)
    for d in case.disputes:
        rows[f"dispute/{d.dispute_id}"] = _row(DisputeRecord, d, **ids)
    for h in case.hardships:
        rows[f"hardship/{h.hardship_id}"] = _row(HardshipRecord, h, **ids)
    for pref in case.preferences:
        rows[f"preferences/{pref.preference_id}"] = _row(PreferenceRecord, pref, **ids)
    for c in case.contact_log:
        rows[f"contact/{c.contact_id}"] = _row(ContactLogRecord, c, **ids)
    return rows


def desk_changes(case: Case, written: dict[str, object]) -> tuple[DeskRecords, dict[str, object]]:
    """The desk records that differ from what was last written, and what is written once
    they are (a continued run writes them all again: each row is written by its id)."""
    current = desk_records(case)
    changes = DeskRecords()
    for key, row in current.items():
        if written.get(key) != row:
            getattr(changes, _DESK_LIST[type(row)]).append(row)
    return changes, dict(current)


_DESK_LIST = {
    PromiseRecord: "promises",
    DisputeRecord: "disputes",
    HardshipRecord: "hardships",
    PreferenceRecord: "preferences",
    ContactLogRecord: "contacts",
}


def events_summary(events: CaseEvents) -> str:
    """The Web UI timeline's line for one record_case_events call."""
    parts = [f"payment {p.payment_id}" for p in events.payments]
    parts += [e.event for e in events.audit if e.event != "payment"]
    if events.projection is not None:
        parts.append(f"projection {events.projection.stage.value} DPD {events.projection.days_past_due}")
    return "record: " + ", ".join(parts)
