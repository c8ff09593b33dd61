"""What each step asks of the world (models/actions.py), what counts as a projection
change, and which search attributes are upserted (models/views.py, models/search.py).
No Temporal here: pure functions of (case, action, now)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from domain.enums import ActionKind, Channel, CollectionStage
from domain.intake import take_payment
from domain.ledger import overdue_amount, owed_on, today_for
from domain.planner import Outcome, PlannedAction, reconcile
from models import actions, search
from models.views import case_view, projection, projection_fingerprint, search_values
from models.wire import CaseEvents, ContactOutcome
from tests.test_domain_helpers import FIRST_DUE, local, make_case

NOW = local(FIRST_DUE + timedelta(days=10), 12)  # DPD 10, inside the contact window


def step(kind: ActionKind, at: datetime = NOW, **kw: object) -> PlannedAction:
    fields: dict[str, object] = {
        "kind": kind,
        "at": at,
        "key": f"L-1/{kind.value}",
        "step_id": "s",
        "summary": "x",
    }
    return PlannedAction.model_validate({**fields, **kw})


def test_a_reminder_names_what_its_installment_owes_and_its_due_date() -> None:
    case = make_case()
    at = local(FIRST_DUE - timedelta(days=3), 9)
    reminder = step(ActionKind.REMINDER, at, installment_seq=1, channel="sms", template="reminder_t3")
    req = actions.contact_request(case, reminder, at)
    inst = case.installments[0]
    assert req.params.amount == owed_on(case, inst, today_for(case, at)).total == 110_016
    assert (req.params.due_date, req.params.installment_seq, req.params.report_on) == (FIRST_DUE, 1, None)
    assert (req.key, req.loan_id, req.borrower_id, req.channel) == ("L-1/reminder", "L-1", "B-1", Channel.SMS)
    assert req.scheduled_at == at
    assert req.not_after == local(at.date(), 21)  # the contact window closes at 21:00 local


def test_a_credit_notice_names_the_overdue_and_the_earliest_reporting_day() -> None:
    case = reconcile(make_case(), NOW)
    notice = step(ActionKind.CREDIT_NOTICE, channel="sms", template="credit_notice")
    req = actions.contact_request(case, notice, NOW)
    assert req.params.amount == overdue_amount(case, today_for(case, NOW))
    assert req.params.days_past_due == 10
    lead = case.policy.credit_notice_lead_days
    assert req.params.report_on == FIRST_DUE + timedelta(days=10 + lead)


def test_what_a_contact_answer_means_to_the_planner() -> None:
    assert actions.contact_outcome(ContactOutcome(status="deferred")) == Outcome(
        delivered=False, deferred=True
    )
    assert actions.contact_outcome(ContactOutcome(status="suppressed", reason="no_phone")) == Outcome(
        delivered=False
    )
    voice = ContactOutcome(status="delivered", dialed=True, connected=False, line="mobile")
    assert actions.contact_outcome(voice) == Outcome(
        delivered=True, dialed=True, connected=False, line="mobile"
    )


def test_agent_and_filing_requests_carry_the_case_figures() -> None:
    case = reconcile(make_case(), NOW)
    overdue = overdue_amount(case, today_for(case, NOW))
    wanted = actions.agent_request(case, step(ActionKind.ASSIGN_AGENT), NOW)
    assert (wanted.days_past_due, wanted.overdue, wanted.at) == (10, overdue, NOW)
    filing = actions.case_filing(case, step(ActionKind.LEGAL_REFERRAL, summary="legal referral"), NOW)
    assert (filing.kind, filing.days_past_due, filing.overdue, filing.detail) == (
        ActionKind.LEGAL_REFERRAL,
        10,
        overdue,
        "legal referral",
    )
    assert filing.outstanding.total > overdue and filing.currency == "CNY"
    released = actions.agent_release(case, step(ActionKind.RELEASE_AGENT), NOW)
    assert released.reason == "cured"
    closed = case.model_copy(update={"closed": True})
    assert actions.agent_release(closed, step(ActionKind.RELEASE_AGENT), NOW).reason == "paid off"


def test_the_loan_record_is_the_schedule_as_disbursed() -> None:
    from tests.loans import loan_start

    start = loan_start(date(2024, 1, 15), loan_id="L-1", first_due_date=FIRST_DUE)
    case = make_case()
    record = actions.loan_record(start, case, local(date(2024, 1, 15), 10))
    assert record.first_due_date == FIRST_DUE and len(record.installments) == 12
    assert sum(i.principal for i in record.installments) == 1_200_000


def test_the_events_summary_names_payments_other_events_and_the_projection() -> None:
    case = make_case()
    events = CaseEvents(projection=projection(case, NOW))
    assert actions.events_summary(events).startswith("record: projection EARLY DPD 10")


def test_a_projection_is_worth_writing_when_the_case_changes_not_when_a_period_adds_interest() -> None:
    paid_early = local(FIRST_DUE - timedelta(days=1), 12)
    case = take_payment(
        make_case(), payment_id="p", amount=110_016, currency=None, paid_at=None, now=paid_early
    ).case
    next_period = local(FIRST_DUE + timedelta(days=1), 12)
    # Installment 1 paid early; the next period's interest enters the payoff once it runs.
    assert projection(case, next_period).outstanding != projection(case, paid_early).outstanding
    written = projection_fingerprint(projection(case, paid_early))
    assert projection_fingerprint(projection(case, next_period)) == written
    unpaid = make_case()
    assert projection_fingerprint(projection(unpaid, NOW)) != projection_fingerprint(
        projection(unpaid, paid_early)
    )
    assert projection_fingerprint(projection(case, NOW)) != projection_fingerprint(projection(unpaid, NOW))


def test_search_attributes_upsert_what_changed_and_unset_what_went_away() -> None:
    case = reconcile(make_case(), NOW)
    first, published = search.upserts({}, search_values(case, case_view(case, NOW), NOW))
    # The first publish names every attribute: the loan's identity, the figures, and the
    # agent (none yet: unset).
    assert {u.key.name for u in first} == {k.name for k in search.ALL_KEYS}
    assert published["CollectionStage"] == CollectionStage.EARLY.value and published["LoanId"] == "L-1"
    again, same = search.upserts(published, search_values(case, case_view(case, NOW), NOW))
    assert again == [] and same == published
    tomorrow = NOW + timedelta(days=1)
    moved, _ = search.upserts(published, search_values(case, case_view(case, tomorrow), tomorrow))
    assert {u.key.name for u in moved} >= {"DaysPastDue"} and "LoanId" not in {u.key.name for u in moved}
