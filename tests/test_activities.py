"""The activities, run through temporalio's ActivityEnvironment, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import collection_activities
from activities.cases import CaseActivities
from activities.contacts import ContactActivities
from activities.delivery import LoggingDeliverer, OutboundMessage, RecordingDeliverer, mask_address
from activities.records import RecordActivities
from activities.templates import format_date, render
from domain.enums import (
    ActionKind,
    Channel,
    CollectionStage,
    ContactResult,
    DisputeReason,
    DisputeStatus,
    HardshipReason,
    HardshipStatus,
    InstallmentStatus,
    LoggedChannel,
    OverdueReason,
    Product,
    PromiseStatus,
    RepaymentMethod,
)
from models import repo
from models.db import session_scope
from models.tables import (
    Assignment,
    AuditLog,
    BorrowerCreate,
    CaseTask,
    ChargeOff,
    ContactAttempt,
    ContactLog,
    ContactPreference,
    CreditBureauRecord,
    Dispute,
    FieldVisitTask,
    Hardship,
    InstallmentRow,
    LegalReferral,
    Loan,
    Payment,
    PromiseToPay,
)
from models.wire import (
    AgentRelease,
    AgentRequest,
    Allocation,
    AuditEvent,
    CaseEvents,
    CaseFiling,
    ContactLogRecord,
    ContactParams,
    ContactRequest,
    DeskRecords,
    DisputeRecord,
    HardshipRecord,
    InstallmentView,
    LoanProjection,
    LoanRecord,
    LoanStart,
    Outstanding,
    PaymentBooking,
    PolicyRequest,
    PreferenceRecord,
    PromiseRecord,
)
from tests.db_fixtures import db_url, engine  # noqa: F401

T0 = datetime(2025, 3, 1, 1, 0, tzinfo=UTC)
DUE = date(2025, 3, 15)


@pytest.fixture
def deliverer() -> RecordingDeliverer:
    return RecordingDeliverer()


@pytest.fixture
def records(engine: Engine) -> RecordActivities:  # noqa: F811
    return RecordActivities(engine)


@pytest.fixture
def contacts(engine: Engine, deliverer: RecordingDeliverer) -> ContactActivities:  # noqa: F811
    return ContactActivities(engine, deliverer)


@pytest.fixture
def cases(engine: Engine) -> CaseActivities:  # noqa: F811
    return CaseActivities(engine)


def run(fn: Callable[..., Any], *args: Any) -> Any:
    return ActivityEnvironment().run(fn, *args)


def count(engine: Engine, table: type, **where: Any) -> int:  # noqa: F811
    with session_scope(engine) as s:
        return repo.count_rows(s, table, **where)


def add_borrower(engine: Engine, **kw: Any) -> None:  # noqa: F811
    data = {"borrower_id": "B1", "name": "王小明", "phone_mobile": "13812345678", **kw}
    with session_scope(engine) as s:
        repo.upsert_borrower(s, BorrowerCreate(**data))


def add_agent(engine: Engine, agent_id: str, **kw: Any) -> None:  # noqa: F811
    with session_scope(engine) as s:
        repo.add_agent(s, agent_id, f"Agent {agent_id}", **kw)


def installments(n: int = 3, paid: int = 0) -> list[InstallmentView]:
    return [
        InstallmentView(
            seq=i,
            due_date=date(2025, 2 + i, 15),
            principal=92_016,
            interest=18_000,
            paid=paid,
            status=InstallmentStatus.SCHEDULED,
        )
        for i in range(1, n + 1)
    ]


def loan_record(loan_id: str = "L1") -> LoanRecord:
    start = LoanStart(
        loan_id=loan_id,
        borrower_id="B1",
        product=Product.CREDIT,
        principal=1_200_000,
        annual_rate_bps=1800,
        term_months=12,
        repayment_method=RepaymentMethod.EQUAL_INSTALLMENT,
        disbursed_on=date(2025, 2, 15),
    )
    return LoanRecord(start=start, first_due_date=date(2025, 3, 15), installments=installments())


OUT = Outstanding(principal=1_000_000, interest=18_000, penalty=500, fee=0, total=1_018_500)


def projection(as_of: datetime, stage: CollectionStage = CollectionStage.GRACE, **kw: Any) -> LoanProjection:
    data: dict[str, Any] = {
        "loan_id": "L1",
        "stage": stage,
        "days_past_due": 2,
        "outstanding": OUT,
        "overdue": 110_016,
        "assigned_agent": None,
        "next_action_kind": ActionKind.OVERDUE_SMS,
        "next_action_at": as_of + timedelta(days=1),
        "closed": False,
        "installments": installments(),
        "as_of": as_of,
    }
    data.update(kw)
    return LoanProjection(**data)


def contact(key: str = "L1:reminder:1", **kw: Any) -> ContactRequest:
    data: dict[str, Any] = {
        "key": key,
        "loan_id": "L1",
        "borrower_id": "B1",
        "kind": ActionKind.REMINDER,
        "channel": Channel.SMS,
        "template": "reminder_t3",
        "scheduled_at": T0,
        "params": ContactParams(amount=110_016, due_date=DUE, installment_seq=1),
    }
    data.update(kw)
    return ContactRequest(**data)


def filing(kind: ActionKind, key: str | None = None, agent_id: str | None = None) -> CaseFiling:
    return CaseFiling(
        agent_id=agent_id,
        key=f"L1:{kind.value}:1" if key is None else key,
        loan_id="L1",
        borrower_id="B1",
        kind=kind,
        at=T0,
        days_past_due=95,
        overdue=330_048,
        outstanding=OUT,
        currency="CNY",
        detail="test",
    )


def agent_req(loan_id: str = "L1", key: str | None = None, at: datetime = T0) -> AgentRequest:
    return AgentRequest(
        key=f"{loan_id}:assign_agent:1" if key is None else key,
        loan_id=loan_id,
        borrower_id="B1",
        days_past_due=31,
        overdue=110_016,
        at=at,
    )


def assert_non_retryable(exc: pytest.ExceptionInfo[ApplicationError], *words: str) -> None:
    assert exc.value.non_retryable
    for w in words:
        assert w in str(exc.value)


# --- the worker's activities ------------------------------------------------------


def test_the_worker_gets_every_activity_under_the_name_its_history_records(
    engine: Engine,  # noqa: F811
) -> None:
    # The names are recorded in every running loan's history: renaming one breaks replay.
    got = {activity._Definition.must_from_callable(fn).name for fn in collection_activities(engine)}
    assert got == {
        "record_loan",
        "sync_loan",
        "book_payment",
        "send_contact",
        "assign_agent",
        "release_agent",
        "file_case_action",
        "write_audit",
        "record_case_events",
        "load_policy",
    }
    assert isinstance(ContactActivities(engine).deliverer, LoggingDeliverer)


# --- records --------------------------------------------------------------------------


def test_record_loan_twice_leaves_one_loan_and_its_schedule(records: RecordActivities) -> None:
    run(records.record_loan, loan_record())
    run(records.record_loan, loan_record())
    assert count(records.engine, Loan) == 1
    assert count(records.engine, InstallmentRow, loan_id="L1") == 3
    with session_scope(records.engine) as s:
        loan = repo.get_loan(s, "L1")
        assert loan is not None
        assert (loan.stage, loan.outstanding_principal, loan.principal) == ("CURRENT", 1_200_000, 1_200_000)
        assert loan.first_due_date == date(2025, 3, 15) and loan.updated_at is None


def test_record_loan_of_a_closed_loan_is_refused(records: RecordActivities) -> None:
    run(records.record_loan, loan_record())
    run(records.sync_loan, projection(T0, closed=True))
    with pytest.raises(ApplicationError) as e:
        run(records.record_loan, loan_record())
    assert_non_retryable(e, "loan_id", "never reused")


def test_record_loan_for_another_borrower_is_refused(records: RecordActivities) -> None:
    run(records.record_loan, loan_record())
    other = loan_record()
    other.start.borrower_id = "B2"
    with pytest.raises(ApplicationError) as e:
        run(records.record_loan, other)
    assert_non_retryable(e, "loan_id")


def test_sync_loan_last_writer_by_as_of(records: RecordActivities) -> None:
    run(records.record_loan, loan_record())
    t1 = T0 + timedelta(days=2)
    run(records.sync_loan, projection(t1, CollectionStage.GRACE, days_past_due=2))
    run(records.sync_loan, projection(t1, CollectionStage.GRACE, days_past_due=2))  # same again
    run(records.sync_loan, projection(T0, CollectionStage.CURRENT, days_past_due=0))  # older: ignored
    with session_scope(records.engine) as s:
        loan = repo.get_loan(s, "L1")
        assert loan is not None
        assert (loan.stage, loan.days_past_due, loan.overdue) == ("GRACE", 2, 110_016)
        assert (loan.outstanding_total, loan.outstanding_penalty) == (1_018_500, 500)
        assert loan.next_action_kind == "overdue_sms" and loan.updated_at == t1

    # A newer projection with a shorter schedule (restructuring) replaces the rows.
    t2 = t1 + timedelta(days=1)
    new_schedule = installments(2, paid=1)
    new_schedule[0].status = InstallmentStatus.PAID
    run(
        records.sync_loan,
        projection(t2, CollectionStage.AGENT, assigned_agent="a1", installments=new_schedule, closed=True),
    )
    with session_scope(records.engine) as s:
        loan = repo.get_loan(s, "L1")
        assert loan is not None and loan.assigned_agent == "a1" and loan.closed
        rows = repo.installments_for_loan(s, "L1")
        assert [(r.seq, r.paid, r.status) for r in rows] == [(1, 1, "paid"), (2, 1, "scheduled")]


def test_sync_loan_of_unknown_loan_is_non_retryable(records: RecordActivities) -> None:
    with pytest.raises(ApplicationError) as e:
        run(records.sync_loan, projection(T0))
    assert_non_retryable(e, "loan_id")


def test_load_policy_gives_the_product_overrides_and_refuses_an_unknown_policy(
    records: RecordActivities,
) -> None:
    auto = run(records.load_policy, PolicyRequest(name="standard", product="auto"))
    credit = run(records.load_policy, PolicyRequest(name="standard", product="credit"))
    assert auto.field_visit_min_overdue == 2_000_000 != credit.field_visit_min_overdue
    with pytest.raises(ApplicationError) as e:
        run(records.load_policy, PolicyRequest(name="no-such-policy", product="credit"))
    assert_non_retryable(e, "policy")


def test_record_case_events_twice_writes_each_record_once(records: RecordActivities) -> None:
    run(records.record_loan, loan_record())
    events = CaseEvents(
        payments=[
            PaymentBooking(
                loan_id="L1",
                payment_id="pay-9",
                amount=5_000,
                currency="CNY",
                paid_at=T0,
                channel=None,
                allocation=Allocation(interest=5_000),
            )
        ],
        audit=[
            AuditEvent(key="L1/audit/payment/1", loan_id="L1", at=T0, event="payment", detail="d", source="s")
        ],
        projection=projection(T0 + timedelta(hours=1)),
    )
    run(records.record_case_events, events)
    run(records.record_case_events, events)  # a retry after a crash
    assert count(records.engine, Payment) == 1
    assert count(records.engine, AuditLog) == 1
    with session_scope(records.engine) as s:
        loan = repo.get_loan(s, "L1")
        assert loan is not None and loan.stage == CollectionStage.GRACE.value


def test_book_payment_twice_books_once(records: RecordActivities) -> None:
    p = PaymentBooking(
        loan_id="L1",
        payment_id="pay-1",
        amount=110_016,
        currency="CNY",
        paid_at=T0,
        channel="alipay",
        allocation=Allocation(interest=18_000, principal=92_016),
    )
    assert run(records.book_payment, p) is True
    assert run(records.book_payment, p) is False
    assert count(records.engine, Payment) == 1
    with session_scope(records.engine) as s:
        (row,) = repo.payments_for_loan(s, "L1")
        assert (row.alloc_interest, row.alloc_principal, row.paid_at) == (18_000, 92_016, T0)


def test_concurrent_duplicate_payments_book_once(records: RecordActivities) -> None:
    p = PaymentBooking(
        loan_id="L1",
        payment_id="pay-x",
        amount=1,
        currency="CNY",
        paid_at=T0,
        channel=None,
        allocation=Allocation(principal=1),
    )
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(run(records.book_payment, p))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert count(records.engine, Payment) == 1


def booking(loan_id: str, payment_id: str, amount: int = 5_000) -> PaymentBooking:
    return PaymentBooking(
        loan_id=loan_id,
        payment_id=payment_id,
        amount=amount,
        currency="CNY",
        paid_at=T0,
        channel="alipay",
        allocation=Allocation(interest=amount),
    )


def test_the_same_payment_id_on_two_loans_is_booked_for_each_and_audited_once(
    records: RecordActivities,
) -> None:
    """Each loan's workflow applies a payment_id once (its own dedup), so the ledger books
    it once per loan; a payment_id already booked for another loan is booked anyway and
    leaves one `payment_id_reused` audit entry naming both loans."""
    assert run(records.book_payment, booking("L1", "GW-1", 5_000)) is True
    assert run(records.book_payment, booking("L2", "GW-1", 7_000)) is True
    assert run(records.book_payment, booking("L2", "GW-1", 7_000)) is False  # a retry
    assert run(records.book_payment, booking("L1", "GW-1", 5_000)) is False
    with session_scope(records.engine) as s:
        rows = {
            r.loan_id: r.amount for r in [*repo.payments_for_loan(s, "L1"), *repo.payments_for_loan(s, "L2")]
        }
    assert rows == {"L1": 5_000, "L2": 7_000}
    assert count(records.engine, Payment, payment_id="GW-1") == 2
    assert count(records.engine, AuditLog) == 1
    with session_scope(records.engine) as s:
        (entry,) = s.exec(select(AuditLog)).all()
    assert (entry.event, entry.loan_id) == ("payment_id_reused", "L2")
    assert "GW-1" in entry.detail and "L1" in entry.detail and "L2" in entry.detail


def test_the_same_payment_id_on_one_loan_books_once_and_audits_nothing(records: RecordActivities) -> None:
    assert run(records.book_payment, booking("L1", "GW-2")) is True
    assert run(records.book_payment, booking("L1", "GW-2")) is False
    assert count(records.engine, Payment) == 1
    assert count(records.engine, AuditLog) == 0


def test_one_payment_id_booked_by_several_loans_at_once_is_audited_for_all_but_the_first(
    records: RecordActivities,
) -> None:
    """Four loans book one payment_id at the same moment (and each twice): four rows, and
    exactly three audit entries, whoever came first (bookings of one id are serialised)."""
    loans = ["L1", "L2", "L3", "L4"]
    results: list[tuple[str, bool]] = []
    threads = [
        threading.Thread(
            target=lambda lid=lid: results.append((lid, run(records.book_payment, booking(lid, "GW-3"))))
        )
        for lid in loans * 2
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(lid for lid, booked in results if booked) == loans
    assert count(records.engine, Payment, payment_id="GW-3") == 4
    assert count(records.engine, AuditLog, event="payment_id_reused") == 3


# --- contacts ------------------------------------------------------------------------


def test_a_contact_retried_past_the_window_is_deferred_not_sent(
    contacts: ContactActivities, deliverer: RecordingDeliverer
) -> None:
    add_borrower(contacts.engine)
    closed = datetime.now(UTC) - timedelta(minutes=1)
    late = run(contacts.send_contact, contact(not_after=closed))
    assert late.status == "deferred" and "contact window" in (late.reason or "")
    assert deliverer.sent == []
    # The same contact (same key), planned into the next window, goes out then, once.
    again = run(contacts.send_contact, contact(not_after=datetime.now(UTC) + timedelta(hours=2)))
    assert again.status == "delivered" and len(deliverer.sent) == 1
    assert run(contacts.send_contact, contact()) == again
    assert count(contacts.engine, ContactAttempt) == 1


def test_send_contact_twice_sends_once(contacts: ContactActivities, deliverer: RecordingDeliverer) -> None:
    add_borrower(contacts.engine)
    first = run(contacts.send_contact, contact())
    second = run(contacts.send_contact, contact())
    assert first == second
    assert first.status == "delivered" and first.line == "mobile" and not first.dialed
    assert len(deliverer.sent) == 1
    assert deliverer.sent[0].to == "13812345678"
    assert count(contacts.engine, ContactAttempt) == 1
    with session_scope(contacts.engine) as s:
        row = repo.contact_by_key(s, "L1:reminder:1")
        assert row is not None
        assert row.status == "delivered" and row.sent_at is not None and row.line == "mobile"
        assert row.language == "zh-CN" and row.rendered_text == deliverer.sent[0].text
        assert "13812345678" not in (row.rendered_text or "")


def test_contact_suppressed_without_phone(contacts: ContactActivities, deliverer: RecordingDeliverer) -> None:
    add_borrower(contacts.engine, phone_mobile=None, phone_alt=None, email=None)
    out = run(contacts.send_contact, contact())
    assert (out.status, out.reason) == ("suppressed", "no_phone")
    out = run(contacts.send_contact, contact("k-email", channel=Channel.EMAIL))
    assert (out.status, out.reason) == ("suppressed", "no_email")
    out = run(contacts.send_contact, contact("k-nobody", borrower_id="B404"))
    assert (out.status, out.reason) == ("suppressed", "no_borrower")
    assert deliverer.sent == []
    assert count(contacts.engine, ContactAttempt, status="suppressed") == 3
    # Letters and push need only the borrower.
    assert run(
        contacts.send_contact, contact("k-letter", channel=Channel.LETTER, template="demand_letter")
    ).status == ("delivered")
    assert run(contacts.send_contact, contact("k-push", channel=Channel.PUSH)).status == "delivered"
    assert [d.to for d in deliverer.sent] == ["borrower:B1", "borrower:B1"]


def test_contact_details_are_read_at_send_time(
    contacts: ContactActivities, deliverer: RecordingDeliverer
) -> None:
    add_borrower(contacts.engine, phone_mobile="13800000001")
    run(contacts.send_contact, contact("k1"))
    add_borrower(contacts.engine, phone_mobile="13900000002", preferred_language="en")
    run(contacts.send_contact, contact("k2"))
    run(contacts.send_contact, contact("k1"))  # a repeat of k1 is not re-sent to the new number
    assert [d.to for d in deliverer.sent] == ["13800000001", "13900000002"]
    assert "¥1,100.16" in deliverer.sent[0].text and "CNY 1,100.16" in deliverer.sent[1].text


def test_voice_call_outcome(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine, phone_mobile=None, phone_alt="13700001111")
    connected = ContactActivities(engine, RecordingDeliverer(voice_connected=True))
    out = run(
        connected.send_contact,
        contact("v1", kind=ActionKind.VOICE_CALL, channel=Channel.VOICE, template="voice_call"),
    )
    assert (out.status, out.dialed, out.connected, out.line) == ("delivered", True, True, "alt")
    unanswered = ContactActivities(engine, RecordingDeliverer(voice_connected=False))
    out = run(
        unanswered.send_contact,
        contact("v2", kind=ActionKind.VOICE_CALL, channel=Channel.VOICE, template="voice_call"),
    )
    assert (out.status, out.dialed, out.connected, out.line) == ("delivered", True, False, "alt")
    # the stored outcome is what a repeat returns
    assert (
        run(
            connected.send_contact,
            contact("v2", kind=ActionKind.VOICE_CALL, channel=Channel.VOICE, template="voice_call"),
        )
        == out
    )


def test_failed_delivery_is_final(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine)
    refusing = RecordingDeliverer(delivered=False)
    acts = ContactActivities(engine, refusing)
    out = run(acts.send_contact, contact())
    assert (out.status, out.reason) == ("failed", "refused")
    assert run(acts.send_contact, contact()) == out
    assert len(refusing.sent) == 1


def test_deliverer_exception_leaves_row_queued_and_retry_delivers(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine)

    class Flaky(RecordingDeliverer):
        calls = 0

        def deliver(self, message: OutboundMessage) -> Any:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise ConnectionError("gateway down")
            return super().deliver(message)

    flaky = Flaky()
    acts = ContactActivities(engine, flaky)
    with pytest.raises(ConnectionError):
        run(acts.send_contact, contact())
    assert count(engine, ContactAttempt, status="queued") == 1
    assert run(acts.send_contact, contact()).status == "delivered"
    assert count(engine, ContactAttempt) == 1 and len(flaky.sent) == 1


def test_unknown_template_and_empty_key_are_non_retryable(contacts: ContactActivities) -> None:
    add_borrower(contacts.engine)
    with pytest.raises(ApplicationError) as e:
        run(contacts.send_contact, contact(template="nope"))
    assert_non_retryable(e, "template")
    with pytest.raises(ApplicationError) as e:
        run(contacts.send_contact, contact(key=""))
    assert_non_retryable(e, "key")
    with pytest.raises(ApplicationError) as e:
        run(contacts.send_contact, contact(key="k" * 300))
    assert_non_retryable(e, "key")
    assert count(contacts.engine, ContactAttempt) == 0


# --- templates -----------------------------------------------------------------------


def test_date_formatting() -> None:  # money: tests/test_domain_money.py (format_amount)
    assert format_date(date(2025, 3, 5), "zh-CN") == "2025年3月5日"
    assert format_date(date(2025, 3, 5), "en") == "5 Mar 2025"


@pytest.mark.parametrize(
    "template",
    [
        "reminder_t3",
        "reminder_t1",
        "reminder_due_today",
        "overdue_sms",
        "credit_notice",
        "voice_call",
        "demand_letter",
    ],
)
def test_every_template_renders_amount_and_due_date_in_both_languages(template: str) -> None:
    params = ContactParams(
        amount=110_016, due_date=DUE, days_past_due=5, installment_seq=1, report_on=date(2025, 3, 30)
    )
    zh = render(template, "zh-CN", params, "L1")
    en = render(template, "en", params, "L1")
    assert zh.language == "zh-CN" and en.language == "en"
    assert "¥1,100.16" in zh.text and "CNY 1,100.16" in en.text
    if template == "credit_notice":
        assert "2025年3月30日" in zh.text and "征信" in zh.text
        assert "30 Mar 2025" in en.text and "credit reference system" in en.text
    else:
        assert "2025年3月15日" in zh.text and "15 Mar 2025" in en.text
    assert render(template, None, params, "L1").text == zh.text  # default zh-CN
    assert render(template, "en-US", params, "L1").text == en.text


def test_overdue_sms_mentions_days_past_due() -> None:
    params = ContactParams(amount=1_000, due_date=DUE, days_past_due=3)
    assert "3天" in render("overdue_sms", "zh-CN", params, "L1").text
    assert "3 days past due" in render("overdue_sms", "en", params, "L1").text


def test_mask_address() -> None:
    assert mask_address("13812345678") == "138****5678"
    assert mask_address("wang.li@example.com") == "w***@example.com"
    assert mask_address("borrower:B1") == "borrower:B1"


def test_logging_deliverer_masks_the_address(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    r = LoggingDeliverer().deliver(
        OutboundMessage("L1:v:1", Channel.VOICE, "13812345678", "hello", "en", "L1")
    )
    assert r.delivered and r.connected
    assert "138****5678" in caplog.text and "13812345678" not in caplog.text


# --- agents --------------------------------------------------------------------------


def test_assign_least_loaded_agent_and_idempotent(cases: CaseActivities) -> None:
    add_agent(cases.engine, "a")
    add_agent(cases.engine, "b")
    assert run(cases.assign_agent, agent_req("L1")).agent_id == "a"
    assert run(cases.assign_agent, agent_req("L2")).agent_id == "b"
    assert run(cases.assign_agent, agent_req("L3")).agent_id == "a"
    # the same request again, and a new key for a loan that already has an agent
    assert run(cases.assign_agent, agent_req("L1")).agent_id == "a"
    assert run(cases.assign_agent, agent_req("L1", key="L1:assign_agent:other")).agent_id == "a"
    assert count(cases.engine, Assignment) == 3
    with session_scope(cases.engine) as s:
        assert repo.agent_loads(s) == {"a": 2, "b": 1}


def test_queue_then_pickup_when_an_agent_is_added(cases: CaseActivities) -> None:
    out = run(cases.assign_agent, agent_req("L1"))
    assert (out.agent_id, out.queued) == (None, True)
    assert run(cases.assign_agent, agent_req("L1")).queued  # still waiting, no second row
    assert count(cases.engine, Assignment) == 1
    add_agent(cases.engine, "a")
    # the next day the workflow asks again and learns who picked it up
    out = run(cases.assign_agent, agent_req("L1", key="L1:assign_agent:2", at=T0 + timedelta(days=1)))
    assert (out.agent_id, out.queued) == ("a", False)
    assert count(cases.engine, Assignment) == 1


def test_queued_case_is_picked_up_on_the_next_call_when_agent_inserted_directly(
    cases: CaseActivities,
) -> None:
    assert run(cases.assign_agent, agent_req("L1")).queued
    from models.tables import Agent

    with session_scope(cases.engine) as s:  # an agent added by another system, no queue drain
        s.add(Agent(agent_id="z", name="Zed"))
    assert run(cases.assign_agent, agent_req("L1")).agent_id == "z"


def test_release_agent_is_idempotent_and_frees_capacity(cases: CaseActivities) -> None:
    add_agent(cases.engine, "a", max_cases=1)
    assert run(cases.assign_agent, agent_req("L1")).agent_id == "a"
    assert run(cases.assign_agent, agent_req("L2")).queued  # a is full
    rel = AgentRelease(key="L1:release_agent:1", loan_id="L1", agent_id="a", reason="cured", at=T0)
    run(cases.release_agent, rel)
    run(cases.release_agent, rel)
    with session_scope(cases.engine) as s:
        assert repo.open_assignment(s, "L1") is None
        (row,) = repo.assignments_for_loan(s, "L1")
        assert (row.release_reason, row.released_at) == ("cured", T0)
        l2 = repo.open_assignment(s, "L2")
        assert l2 is not None and l2.agent_id == "a"  # freed capacity went to the queue
    # a later delinquency gets a new assignment
    assert run(cases.assign_agent, agent_req("L1", key="L1:assign_agent:2")).queued
    assert count(cases.engine, Assignment) == 3


def test_release_closes_a_queued_row(cases: CaseActivities) -> None:
    assert run(cases.assign_agent, agent_req("L1")).queued
    run(cases.release_agent, AgentRelease(key="r1", loan_id="L1", agent_id=None, reason="paid_off", at=T0))
    add_agent(cases.engine, "a")
    with session_scope(cases.engine) as s:
        assert repo.open_assignment(s, "L1") is None
        assert repo.agent_loads(s) == {"a": 0}
    # nothing open: releasing again is a no-op
    run(cases.release_agent, AgentRelease(key="r2", loan_id="L1", agent_id=None, reason="paid_off", at=T0))


def test_deactivated_agent_is_not_assigned(cases: CaseActivities) -> None:
    add_agent(cases.engine, "a")
    add_agent(cases.engine, "b")
    with session_scope(cases.engine) as s:
        repo.deactivate_agent(s, "a")
    assert run(cases.assign_agent, agent_req("L1")).agent_id == "b"
    assert run(cases.assign_agent, agent_req("L2")).agent_id == "b"


def test_concurrent_assignments_stay_balanced(cases: CaseActivities) -> None:
    add_agent(cases.engine, "a")
    add_agent(cases.engine, "b")
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            run(cases.assign_agent, agent_req(f"L{i}"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with session_scope(cases.engine) as s:
        assert repo.agent_loads(s) == {"a": 5, "b": 5}


def test_assign_agent_bad_input(cases: CaseActivities) -> None:
    with pytest.raises(ApplicationError) as e:
        run(cases.assign_agent, agent_req(key=""))
    assert_non_retryable(e, "key")
    with pytest.raises(ApplicationError) as e:
        run(cases.assign_agent, agent_req(loan_id=" "))
    assert_non_retryable(e, "loan_id")


# --- filings and audit ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "table"),
    [
        (ActionKind.LEGAL_REFERRAL, LegalReferral),
        (ActionKind.CREDIT_NOTICE, CreditBureauRecord),
        (ActionKind.CREDIT_REPORT, CreditBureauRecord),
        (ActionKind.CREDIT_UPDATE, CreditBureauRecord),
        (ActionKind.CHARGE_OFF, ChargeOff),
        (ActionKind.FIELD_VISIT, FieldVisitTask),
        (ActionKind.DISPUTE_OVERDUE, CaseTask),
        (ActionKind.HARDSHIP_REVIEW, CaseTask),
    ],
)
def test_file_case_action_twice_leaves_one_row(cases: CaseActivities, kind: ActionKind, table: type) -> None:
    run(cases.file_case_action, filing(kind))
    run(cases.file_case_action, filing(kind))
    assert count(cases.engine, table) == 1


def test_filing_rows_carry_what_the_teams_need(cases: CaseActivities) -> None:
    for kind in (
        ActionKind.LEGAL_REFERRAL,
        ActionKind.CREDIT_REPORT,
        ActionKind.CHARGE_OFF,
        ActionKind.FIELD_VISIT,
    ):
        run(cases.file_case_action, filing(kind))
    with session_scope(cases.engine) as s:
        from sqlmodel import select

        legal = s.exec(select(LegalReferral)).one()
        assert (legal.borrower_id, legal.outstanding_total, legal.overdue, legal.days_past_due) == (
            "B1",
            1_018_500,
            330_048,
            95,
        )
        assert legal.referred_at == T0
        assert s.exec(select(CreditBureauRecord)).one().kind == "report"
        co = s.exec(select(ChargeOff)).one()
        assert (co.principal, co.amount) == (1_000_000, 1_018_500)
        visit = s.exec(select(FieldVisitTask)).one()
        assert (visit.collectors_required, visit.status, visit.overdue) == (2, "open", 330_048)


def test_unknown_filing_kind_is_non_retryable(cases: CaseActivities) -> None:
    with pytest.raises(ApplicationError) as e:
        run(cases.file_case_action, filing(ActionKind.REMINDER))
    assert_non_retryable(e, "kind")


def test_write_audit_twice_leaves_one_row(records: RecordActivities) -> None:
    ev = AuditEvent(
        key="L1:audit:1",
        loan_id="L1",
        at=T0,
        event="stage_changed",
        detail="CURRENT→GRACE",
        source="rule:dpd_1",
    )
    run(records.write_audit, ev)
    run(records.write_audit, ev)
    assert count(records.engine, AuditLog) == 1
    with pytest.raises(ApplicationError) as e:
        run(records.write_audit, ev.model_copy(update={"key": ""}))
    assert_non_retryable(e, "key")


def test_case_tasks_once_per_key_with_their_agent_or_the_queue(cases: CaseActivities) -> None:
    overdue = filing(ActionKind.DISPUTE_OVERDUE, key="L1:dispute_overdue:D-1", agent_id="a1")
    review = filing(ActionKind.HARDSHIP_REVIEW, key="L1:hardship_review:H-1")  # no agent: the queue
    for f in (overdue, review, overdue, review):
        run(cases.file_case_action, f)
    # A repeat under the same key never changes the row, even with another agent.
    run(cases.file_case_action, overdue.model_copy(update={"agent_id": "a2"}))
    with session_scope(cases.engine) as s:
        rows = {t.idempotency_key: t for t in s.exec(select(CaseTask))}
        assert len(rows) == 2
        task = rows["L1:dispute_overdue:D-1"]
        assert (task.kind, task.agent_id, task.status, task.loan_id, task.borrower_id) == (
            "dispute_overdue",
            "a1",
            "open",
            "L1",
            "B1",
        )
        assert (task.at, task.days_past_due, task.overdue, task.currency) == (T0, 95, 330_048, "CNY")
        queued = rows["L1:hardship_review:H-1"]
        assert (queued.kind, queued.agent_id) == ("hardship_review", None)
        assert [t.idempotency_key for t in repo.open_case_tasks(s, "a1")] == ["L1:dispute_overdue:D-1"]
        assert [t.idempotency_key for t in repo.open_case_tasks(s, unassigned=True)] == [
            "L1:hardship_review:H-1"
        ]
        assert len(repo.open_case_tasks(s)) == 2
        assert repo.open_case_tasks(s, "a2") == []


# --- the collector's desk --------------------------------------------------------------


def desk(loan_id: str = "L1", **status: Any) -> DeskRecords:
    """One record of each kind for `loan_id`; `status` overrides fields per kind
    (promise=..., dispute=..., hardship=..., preference=..., contact=...)."""
    promise = PromiseRecord(
        loan_id=loan_id,
        borrower_id="B1",
        promise_id="P-1",
        amount=110_016,
        currency="CNY",
        promised_date=date(2025, 3, 20),
        agent_id="a1",
        status=PromiseStatus.OPEN,
        made_at=T0,
    )
    dispute = DisputeRecord(
        loan_id=loan_id,
        borrower_id="B1",
        dispute_id="D-1",
        reason=DisputeReason.AMOUNT,
        opened_by="a1",
        opened_at=T0,
        status=DisputeStatus.OPEN,
    )
    hardship = HardshipRecord(
        loan_id=loan_id,
        borrower_id="B1",
        hardship_id="H-1",
        reason=HardshipReason.ILLNESS,
        starts_on=date(2025, 3, 1),
        until=date(2025, 4, 30),
        approved_by="supervisor-1",
        approval_ref="APR-7",
        approved_at=T0,
        status=HardshipStatus.ACTIVE,
    )
    preference = PreferenceRecord(
        loan_id=loan_id,
        borrower_id="B1",
        preference_id="C-1",
        channels=[Channel.SMS, Channel.LETTER],
        set_by="a1",
        at=T0,
    )
    contact = ContactLogRecord(
        loan_id=loan_id,
        borrower_id="B1",
        contact_id="K-1",
        agent_ids=["a1", "a2"],
        channel=LoggedChannel.FIELD_VISIT,
        result=ContactResult.REACHED,
        reason=OverdueReason.ILLNESS,
        at=T0,
    )
    return DeskRecords(
        promises=[promise.model_copy(update=status.get("promise", {}))],
        disputes=[dispute.model_copy(update=status.get("dispute", {}))],
        hardships=[hardship.model_copy(update=status.get("hardship", {}))],
        preferences=[preference.model_copy(update=status.get("preference", {}))],
        contacts=[contact.model_copy(update=status.get("contact", {}))],
    )


DESK_TABLES = (PromiseToPay, Dispute, Hardship, ContactPreference, ContactLog)


def desk_snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:  # noqa: F811
    with session_scope(engine) as s:
        return {
            t.__tablename__: [r.model_dump() for r in s.exec(select(t).order_by(getattr(t, "id")))]  # noqa: B009
            for t in DESK_TABLES
        }


def test_desk_records_written_twice_leave_one_unchanged_row_each(records: RecordActivities) -> None:
    events = CaseEvents(desk=desk())
    run(records.record_case_events, events)
    first = desk_snapshot(records.engine)
    assert all(len(rows) == 1 for rows in first.values()), first
    run(records.record_case_events, events)  # a retry after a crash
    assert desk_snapshot(records.engine) == first  # same rows, updated_at untouched
    with session_scope(records.engine) as s:
        got = repo.desk_records(s, "L1")
        p = got.promises[0]
        assert (p.promise_id, p.amount, p.promised_date, p.agent_id, p.status, p.made_at) == (
            "P-1",
            110_016,
            date(2025, 3, 20),
            "a1",
            "open",
            T0,
        )
        assert p.settled_at is None
        d = got.disputes[0]
        assert (d.reason, d.status, d.escalated, d.resolved_by, d.opened_at) == (
            "amount",
            "open",
            False,
            None,
            T0,
        )
        h = got.hardships[0]
        assert (h.reason, h.status, h.until, h.approval_ref) == (
            "illness",
            "active",
            date(2025, 4, 30),
            "APR-7",
        )
        assert got.preferences[0].channels == ["sms", "letter"]
        c = got.contacts[0]
        assert (c.agent_ids, c.channel, c.result, c.reason) == (
            ["a1", "a2"],
            "field_visit",
            "reached",
            "illness",
        )


def test_desk_status_changes_update_the_rows(records: RecordActivities) -> None:
    run(records.record_case_events, CaseEvents(desk=desk()))
    before = desk_snapshot(records.engine)
    later = T0 + timedelta(days=5)
    run(records.record_case_events, CaseEvents(desk=desk(dispute={"escalated": True})))
    changed = desk(
        promise={"status": PromiseStatus.KEPT, "settled_at": later},
        dispute={
            "status": DisputeStatus.UPHELD,
            "escalated": True,
            "resolved_by": "supervisor-1",
            "resolved_at": later,
        },
        hardship={"status": HardshipStatus.ENDED, "ended_by": "a1", "ended_at": later},
        preference={"channels": [Channel.EMAIL, Channel.LETTER]},
    )
    run(records.record_case_events, CaseEvents(desk=changed))
    run(records.record_case_events, CaseEvents(desk=changed))
    after = desk_snapshot(records.engine)
    assert all(len(rows) == 1 for rows in after.values()), after
    with session_scope(records.engine) as s:
        got = repo.desk_records(s, "L1")
        p, d, h = got.promises[0], got.disputes[0], got.hardships[0]
        assert (p.status, p.settled_at) == ("kept", later)
        assert (d.status, d.escalated, d.resolved_by, d.resolved_at) == (
            "upheld",
            True,
            "supervisor-1",
            later,
        )
        assert (h.status, h.ended_by, h.ended_at) == ("ended", "a1", later)
        assert got.preferences[0].channels == ["email", "letter"]
    for table in ("promise_to_pay", "dispute", "hardship", "contact_preference"):
        assert after[table][0]["id"] == before[table][0]["id"]
        assert after[table][0]["created_at"] == before[table][0]["created_at"]
        assert after[table][0]["updated_at"] > before[table][0]["updated_at"]
    assert after["contact_log"] == before["contact_log"]  # unchanged: not touched


def test_desk_ids_are_unique_per_loan_not_across_loans(records: RecordActivities) -> None:
    run(records.record_case_events, CaseEvents(desk=desk("L1")))
    run(records.record_case_events, CaseEvents(desk=desk("L2", promise={"status": PromiseStatus.BROKEN})))
    for table in DESK_TABLES:
        assert count(records.engine, table) == 2
    with session_scope(records.engine) as s:
        assert repo.desk_records(s, "L1").promises[0].status == "open"
        assert repo.desk_records(s, "L2").promises[0].status == "broken"


def test_desk_rows_are_written_with_the_rest_of_the_case_events(records: RecordActivities) -> None:
    run(records.record_loan, loan_record())
    events = CaseEvents(
        audit=[
            AuditEvent(
                key="L1/audit/promise/P-1", loan_id="L1", at=T0, event="promise", detail="", source="s"
            )
        ],
        projection=projection(T0 + timedelta(hours=1)),
        desk=DeskRecords(promises=desk().promises),
    )
    run(records.record_case_events, events)
    run(records.record_case_events, events)
    assert count(records.engine, AuditLog) == 1
    assert count(records.engine, PromiseToPay) == 1
    assert count(records.engine, Dispute) == 0
    # Without desk (or with an empty one) nothing is written to the desk tables.
    run(records.record_case_events, CaseEvents(desk=DeskRecords()))
    assert sum(count(records.engine, t) for t in DESK_TABLES) == 1


def test_a_bad_desk_record_is_non_retryable_and_writes_nothing(records: RecordActivities) -> None:
    bad = desk(contact={"contact_id": "x" * 200})
    with pytest.raises(ApplicationError) as e:
        run(records.record_case_events, CaseEvents(desk=bad))
    assert_non_retryable(e, "contact_id")
    assert sum(count(records.engine, t) for t in DESK_TABLES) == 0


def test_a_paid_off_loan_closes_its_hardship_review_but_not_an_open_dispute_task(
    records: RecordActivities, cases: CaseActivities
) -> None:
    """Found by review: case tasks never closed."""
    run(records.record_loan, loan_record())
    run(cases.file_case_action, filing(ActionKind.HARDSHIP_REVIEW, key="L1/-/hardship-review/H-1"))
    run(cases.file_case_action, filing(ActionKind.DISPUTE_OVERDUE, key="L1/-/dispute-overdue/D-1"))
    run(records.sync_loan, projection(T0 + timedelta(days=1), CollectionStage.PAID_OFF, closed=True))
    with session_scope(records.engine) as s:
        assert [t.kind for t in repo.open_case_tasks(s)] == ["dispute_overdue"]
