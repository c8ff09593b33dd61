"""The call caps per borrower across ALL of the borrower's loans (contract part 3), checked
and recorded atomically in the database at send time, on SQLite and PostgreSQL.

The policy's caps (at most 3 connected calls a day, 6 dial attempts per line a day, 7
call attempts in any 7 days) used to be kept per loan in each workflow: a borrower with
two loans could get twice the calls. `send_contact` now counts the borrower's calls on
every loan (`borrower_call`) under a lock on the borrower, and a call over a cap is not
placed but deferred to the first instant the caps allow (`not_before`)."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from activities._support import as_utc
from activities.contacts import CAPS_REASON, ContactActivities
from activities.delivery import RecordingDeliverer
from activities.records import RecordActivities
from client.calls import borrower_caps_refusal, reserved_contact_id
from domain.enums import ActionKind, Channel, ContactResult, LoggedChannel
from domain.policy import CallCaps, ContactWindow
from models import repo
from models.db import session_scope
from models.tables import BorrowerCall, ContactAttempt, Loan
from models.wire import ContactLogRecord, ContactParams, ContactRequest, DeskRecords
from tests.db_fixtures import db_url, engine  # noqa: F401
from tests.test_activities import add_borrower, run

SHANGHAI = ZoneInfo("Asia/Shanghai")
CAPS = CallCaps()  # the standard policy's: 3 connected a day, 6 dials per line a day, 7 in 7 days
WINDOW = ContactWindow()  # 08:00-21:00


# Calls are checked at their planned instant, and never sent after that day's window
# closes (real time): the test's week lies ahead, so no call is "too late".
WEEK_AHEAD = datetime.now(SHANGHAI).date() + timedelta(days=30)


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """Day `day` (1, 2, ...) of the test's week, at `hour`:`minute` in Shanghai."""
    return datetime.combine(WEEK_AHEAD + timedelta(days=day - 1), time(hour, minute), SHANGHAI)


def call(key: str, loan_id: str, at: datetime, borrower_id: str = "B1") -> ContactRequest:
    return ContactRequest(
        key=key,
        loan_id=loan_id,
        borrower_id=borrower_id,
        kind=ActionKind.VOICE_CALL,
        channel=Channel.VOICE,
        template="voice_call",
        scheduled_at=at,
        params=ContactParams(amount=110_016, days_past_due=7, installment_seq=1),
        not_after=at.replace(hour=21, minute=0),
        call_caps=CAPS,
        contact_window=WINDOW,
        timezone="Asia/Shanghai",
    )


def ledger(engine: Engine, borrower_id: str = "B1") -> list[tuple[str, str, bool]]:  # noqa: F811
    with session_scope(engine) as s:
        rows = s.exec(select(BorrowerCall).where(BorrowerCall.borrower_id == borrower_id))
        return sorted((r.loan_id, r.key, r.connected) for r in rows)


def outbox(engine: Engine, key: str) -> ContactAttempt:  # noqa: F811
    with session_scope(engine) as s:
        row = repo.contact_by_key(s, key)
        assert row is not None
        return row


def test_seven_calls_in_seven_days_count_across_the_borrowers_loans(engine: Engine) -> None:  # noqa: F811
    """Two loans, each well under the caps on its own: the 8th call of the borrower's
    week is not placed but deferred until the oldest of the 7 is a week old."""
    add_borrower(engine)
    robot = RecordingDeliverer(voice_connected=False)
    acts = ContactActivities(engine, robot)
    for day in range(1, 4):
        for loan in ("L1", "L2"):
            assert run(acts.send_contact, call(f"{loan}/d{day}", loan, local(day, 10))).status == "delivered"
    assert run(acts.send_contact, call("L1/d4", "L1", local(4, 10))).status == "delivered"
    # L2 has called 3 times this week, the borrower 7 times.
    deferred = run(acts.send_contact, call("L2/d4", "L2", local(4, 11)))
    expected = local(8, 10) + timedelta(microseconds=1)  # the first call of day 1, a week on
    assert (deferred.status, deferred.not_before, deferred.dialed) == ("deferred", expected, False)
    assert len(robot.sent) == 7  # the 8th never reached the provider
    row = outbox(engine, "L2/d4")
    assert row.status == "queued" and row.reason is not None and row.reason.startswith(CAPS_REASON)
    assert len(ledger(engine)) == 7
    # When the caps allow it, the same call (same key, same outbox row) goes out.
    later = run(acts.send_contact, call("L2/d4", "L2", expected))
    assert (later.status, later.dialed) == ("delivered", True)
    assert outbox(engine, "L2/d4").status == "delivered"
    assert len(robot.sent) == 8 and len(ledger(engine)) == 8


def test_three_connected_calls_a_day_count_across_loans(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine)
    acts = ContactActivities(engine, RecordingDeliverer(voice_connected=True))
    for n, loan in enumerate(("L1", "L2", "L1")):
        assert run(acts.send_contact, call(f"c{n}", loan, local(5, 9 + n))).connected
    deferred = run(acts.send_contact, call("c3", "L2", local(5, 15)))
    assert (deferred.status, deferred.not_before) == ("deferred", local(6, 8))


def test_another_borrowers_calls_do_not_count(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine)
    add_borrower(engine, borrower_id="B2", phone_mobile="13900001111")
    acts = ContactActivities(engine, RecordingDeliverer(voice_connected=True))
    for n in range(3):
        run(acts.send_contact, call(f"b1-{n}", "L1", local(5, 9 + n)))
    other = run(acts.send_contact, call("b2-0", "L9", local(5, 15), borrower_id="B2"))
    assert other.status == "delivered"


def test_two_loans_racing_for_the_last_call_of_the_week_place_one(
    engine: Engine,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Check and record are one step under the borrower's lock: two loans asking for the
    last allowed call at once get one call and one deferral, never two calls. To make the
    race certain, each reader waits (up to a second) for the other to have read the
    ledger too: without the lock both read 6 calls and both dial; with it the second
    cannot read before the first has recorded its call."""
    add_borrower(engine)
    robot = RecordingDeliverer(voice_connected=False)
    acts = ContactActivities(engine, robot)
    for day in range(1, 7):
        run(acts.send_contact, call(f"L3/d{day}", "L3", local(day, 10)))
    both_read = threading.Barrier(2, timeout=1.0)
    read = repo.borrower_calls

    def read_then_wait(session: Any, borrower_id: str, since: datetime) -> Any:
        calls = read(session, borrower_id, since)
        # Broken: the other loan is held at the lock, the race is serialised.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return calls

    monkeypatch.setattr(repo, "borrower_calls", read_then_wait)
    answers: dict[str, Any] = {}

    def send(req: ContactRequest) -> None:
        answers[req.loan_id] = run(acts.send_contact, req)

    threads = [
        threading.Thread(target=send, args=(call(f"{n}/race", n, local(7, 10)),)) for n in ("L1", "L2")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status for a in answers.values()) == ["deferred", "delivered"]
    assert len(ledger(engine)) == 7 and len(robot.sent) == 7


def test_a_refused_call_and_a_call_too_late_for_the_window_do_not_count(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine)
    refused = run(
        ContactActivities(engine, RecordingDeliverer(delivered=False)).send_contact,
        call("r", "L1", local(5, 10)),
    )
    assert (refused.status, refused.dialed) == ("failed", False)
    assert ledger(engine) == []

    class TooSlow(RecordingDeliverer):
        def deliver(self, message: Any) -> Any:  # the gateway answers after the window closed
            raise AssertionError("never called: the retry came after the window closed")

    # Retried until after the window closed (not_after is past): not sent, not counted.
    late = call("late", "L1", local(1, 10)).model_copy(
        update={"not_after": datetime.now(UTC) - timedelta(minutes=1)}
    )
    deferred = run(ContactActivities(engine, TooSlow()).send_contact, late)
    assert deferred.status == "deferred" and deferred.not_before is None
    assert ledger(engine) == []


def test_a_retried_call_is_the_same_call(engine: Engine) -> None:  # noqa: F811
    """A provider outage (5xx, timeout) retries the same call: it was recorded once, when it
    was first checked, and is not checked against itself again (it would find the week
    full and defer itself)."""
    add_borrower(engine)
    acts = ContactActivities(engine, RecordingDeliverer(voice_connected=False))
    for day in range(1, 7):
        run(acts.send_contact, call(f"d{day}", "L1", local(day, 10)))

    class DownOnce(RecordingDeliverer):
        down = True

        def deliver(self, message: Any) -> Any:
            if self.down:
                self.down = False
                raise ConnectionError("provider down")
            return super().deliver(message)

    flaky = DownOnce(voice_connected=False)
    seventh = call("x", "L2", local(7, 10))
    with pytest.raises(ConnectionError):
        run(ContactActivities(engine, flaky).send_contact, seventh)
    assert len(ledger(engine)) == 7  # recorded before the provider was asked
    again = run(ContactActivities(engine, flaky).send_contact, seventh)
    assert (again.status, again.dialed) == ("delivered", True)
    assert len(ledger(engine)) == 7 and len(flaky.sent) == 1


def test_logged_calls_count_for_the_other_loans_and_the_ivr_report_only_marks_connected(
    engine: Engine,  # noqa: F811
) -> None:
    add_borrower(engine)
    records = RecordActivities(engine)
    acts = ContactActivities(engine, RecordingDeliverer(voice_connected=False))
    placed = run(acts.send_contact, call("L1/robot", "L1", local(5, 9)))
    assert placed.dialed and not placed.connected

    def logged(loan: str, contact_id: str, hour: int, result: ContactResult) -> ContactLogRecord:
        return ContactLogRecord(
            loan_id=loan,
            borrower_id="B1",
            contact_id=contact_id,
            agent_ids=["agent-1"],
            channel=LoggedChannel.VOICE,
            result=result,
            reason=None,
            at=local(5, hour),
        )

    desk = DeskRecords(
        contacts=[
            logged("L1", "ivr:L1/robot", 9, ContactResult.REACHED),  # the IVR's report
            logged("L2", "col-1", 10, ContactResult.REACHED),
            logged("L2", "col-2", 11, ContactResult.REACHED),
        ]
    )
    run(records.write_desk, desk)
    run(records.write_desk, desk)  # written again: nothing counts twice
    assert ledger(engine) == [
        ("L1", "L1/robot", True),
        ("L2", "log:L2/col-1", True),
        ("L2", "log:L2/col-2", True),
    ]
    # Three connected calls today on two loans: the third loan's call waits for tomorrow.
    deferred = run(acts.send_contact, call("L3/robot", "L3", local(5, 14)))
    assert (deferred.status, deferred.not_before) == ("deferred", local(6, 8))


def test_a_receipt_before_the_send_is_recorded_keeps_the_call_counted(engine: Engine) -> None:  # noqa: F811
    """A fast provider's receipt (POST /receipts) can arrive before the worker records the
    send: the receipt's status stands, and the send is still written down, so the call
    counts as dialed (found by the local inbox's review: it was left `dialed = false`)."""
    add_borrower(engine)

    class FastReceipts(RecordingDeliverer):
        def deliver(self, message: Any) -> Any:
            answer = super().deliver(message)
            with session_scope(engine, immediate=True) as s:
                repo.record_receipt(s, message.message_id, "delivered", "answered at once")
            return answer

    out = run(
        ContactActivities(engine, FastReceipts(voice_connected=False)).send_contact,
        call("fast", "L1", local(5, 10)),
    )
    assert (out.status, out.dialed) == ("delivered", True)
    row = outbox(engine, "fast")
    assert row.sent_at is not None and row.dialed and row.receipt_detail == "answered at once"
    assert [key for _loan, key, _c in ledger(engine)] == ["fast"]


# --- found by review ----------------------------------------------------------------------


def test_a_call_checked_at_an_earlier_instant_still_counts_a_call_recorded_after_it(
    engine: Engine,  # noqa: F811
) -> None:
    """Two loans' calls fall due at the same step time; the one whose workflow ran a moment
    later reached the lock first. The other, checked at its earlier planned instant, must
    still see that call: 8 calls in 7 days otherwise."""
    add_borrower(engine)
    acts = ContactActivities(engine, RecordingDeliverer(voice_connected=False))
    for day in range(1, 7):
        run(acts.send_contact, call(f"L3/d{day}", "L3", local(day, 10)))
    assert (
        run(acts.send_contact, call("L2/d7", "L2", local(7, 10) + timedelta(seconds=5))).status == "delivered"
    )
    late = run(acts.send_contact, call("L1/d7", "L1", local(7, 10)))
    assert late.status == "deferred" and len(ledger(engine)) == 7


def test_a_call_run_late_counts_from_when_it_was_checked(engine: Engine) -> None:  # noqa: F811
    """A call planned two hours ago (a late wake-up, a retry) counts from now, not from its
    planned instant: it must not expire from the borrower's week two hours early."""
    add_borrower(engine)
    before = datetime.now(UTC)
    planned = before - timedelta(hours=2)
    late = call("late", "L1", planned).model_copy(update={"not_after": before + timedelta(hours=1)})
    acts = ContactActivities(engine, RecordingDeliverer(voice_connected=False))
    # Whatever the hour here, run it as if inside the window: the window is not the point.
    late = late.model_copy(update={"contact_window": ContactWindow(opens=time(0, 0), closes=time(23, 59))})
    assert run(acts.send_contact, late).status == "delivered"
    with session_scope(engine) as s:
        row = repo.call_by_key(s, "late")
        assert row is not None and as_utc(row.at) >= before


def test_a_call_suppressed_on_retry_is_taken_back(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine)

    class Down(RecordingDeliverer):
        def deliver(self, message: Any) -> Any:
            raise ConnectionError("provider down")

    with pytest.raises(ConnectionError):
        run(ContactActivities(engine, Down()).send_contact, call("x", "L1", local(5, 10)))
    assert len(ledger(engine)) == 1  # recorded before the provider was asked
    add_borrower(engine, phone_mobile=None)  # the number is gone before the retry
    retried = run(ContactActivities(engine, RecordingDeliverer()).send_contact, call("x", "L1", local(5, 10)))
    assert retried.status == "suppressed" and ledger(engine) == []


def test_a_placed_call_taken_back_by_a_concurrent_late_attempt_is_counted_again(
    engine: Engine,  # noqa: F811
) -> None:
    """Attempt 1 is still waiting for the provider when attempt 2 (a timeout retry) finds
    the window closed and takes the call back; attempt 1 then places it: it counts."""
    add_borrower(engine)
    late_retry = call("x", "L1", local(5, 10)).model_copy(
        update={"not_after": datetime.now(UTC) - timedelta(minutes=1)}
    )

    class SlowProvider(RecordingDeliverer):
        def deliver(self, message: Any) -> Any:
            # Meanwhile, the retry past the window.
            deferred = run(ContactActivities(engine, RecordingDeliverer()).send_contact, late_retry)
            assert deferred.status == "deferred" and ledger(engine) == []
            return super().deliver(message)

    placed = run(
        ContactActivities(engine, SlowProvider(voice_connected=False)).send_contact,
        call("x", "L1", local(5, 10)),
    )
    assert placed.dialed and [key for _loan, key, _c in ledger(engine)] == ["x"]


def test_an_ivr_report_naming_another_loans_call_is_a_call_of_its_own_loan(
    engine: Engine,  # noqa: F811
) -> None:
    add_borrower(engine)
    add_borrower(engine, borrower_id="B2", phone_mobile="13900001111")
    run(
        ContactActivities(engine, RecordingDeliverer(voice_connected=False)).send_contact,
        call("L1/robot", "L1", local(5, 9)),
    )
    forged = ContactLogRecord(
        loan_id="L9",
        borrower_id="B2",
        contact_id="ivr:L1/robot",
        agent_ids=["agent-x"],
        channel=LoggedChannel.VOICE,
        result=ContactResult.REACHED,
        reason=None,
        at=local(5, 10),
    )
    run(RecordActivities(engine).write_desk, DeskRecords(contacts=[forged]))
    assert ledger(engine, "B1") == [("L1", "L1/robot", False)]
    assert ledger(engine, "B2") == [("L9", "log:L9/ivr:L1/robot", True)]


# --- a collector's logged call, checked by the CLI against all loans -------------------------


def add_loan(engine: Engine, loan_id: str, borrower_id: str = "B1") -> None:  # noqa: F811
    with session_scope(engine) as s:
        s.add(
            Loan(
                loan_id=loan_id,
                borrower_id=borrower_id,
                product="credit",
                principal=1_200_000,
                annual_rate_bps=1_800,
                term_months=12,
                repayment_method="equal_installment",
                disbursed_on=WEEK_AHEAD - timedelta(days=60),
                first_due_date=WEEK_AHEAD - timedelta(days=30),
                timezone="Asia/Shanghai",
            )
        )


def test_a_collectors_call_over_the_borrowers_caps_on_other_loans_is_refused_before_it_is_logged(
    engine: Engine,  # noqa: F811
) -> None:
    add_borrower(engine)
    add_loan(engine, "L1")
    robot = ContactActivities(engine, RecordingDeliverer(voice_connected=True))
    for n, loan in enumerate(("L2", "L3", "L2")):  # three connected calls today on other loans
        run(robot.send_contact, call(f"c{n}", loan, local(5, 9 + n)))
    with session_scope(engine) as s:
        over = borrower_caps_refusal(s, "L1", local(5, 15))
        assert over is not None and "next call (counting all loans) is allowed at" in over
        assert borrower_caps_refusal(s, "L1", local(6, 9)) is None  # a new day
        assert borrower_caps_refusal(s, "L1", local(5, 23)) is None  # the window is the loan's to judge
        assert borrower_caps_refusal(s, "NO-SUCH-LOAN", local(5, 15)) is None


def test_a_logged_call_before_calls_already_made_must_fit_their_weeks(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine)
    add_loan(engine, "L1")
    robot = ContactActivities(engine, RecordingDeliverer(voice_connected=False))
    for day in range(2, 9):  # 7 calls on days 2..8
        run(robot.send_contact, call(f"d{day}", "L2", local(day, 10)))
    with session_scope(engine) as s:
        over = borrower_caps_refusal(s, "L1", local(8, 9))  # logged late, for the morning of day 8
        assert over is not None and "more than 7 calls in the 7 days up to" in over


def test_ivr_ids_are_reserved() -> None:
    assert reserved_contact_id("ivr:L1/1/dpd-7-call") is not None
    assert reserved_contact_id("CALL-1") is None


def test_a_fast_failed_receipt_echoing_the_number_reaches_the_workflow_masked(
    engine: Engine,  # noqa: F811
) -> None:
    """A provider's "failed" receipt that beats the worker's record of the send: the
    outcome the workflow keeps in its history says why, without the number (found by
    review)."""
    add_borrower(engine)

    class FastFailure(RecordingDeliverer):
        def deliver(self, message: Any) -> Any:
            answer = super().deliver(message)
            with session_scope(engine, immediate=True) as s:
                repo.record_receipt(s, message.message_id, "failed", f"unreachable number {message.to}")
            return answer

    out = run(ContactActivities(engine, FastFailure()).send_contact, call("fastfail", "L1", local(5, 10)))
    assert out.status == "failed" and out.reason is not None
    assert "unreachable number" in out.reason and "12345678" not in out.reason


def test_a_call_retried_after_the_window_closed_is_deferred_by_the_window_not_the_caps(
    engine: Engine,  # noqa: F811
) -> None:
    add_borrower(engine)
    late = call("late", "L1", local(5, 10)).model_copy(
        update={
            "not_after": datetime.now(UTC) - timedelta(minutes=1),
            "scheduled_at": datetime.now(UTC) - timedelta(hours=1),
        }
    )
    out = run(ContactActivities(engine, RecordingDeliverer()).send_contact, late)
    assert (out.status, out.not_before) == ("deferred", None)
    assert out.reason is not None and not out.reason.startswith(CAPS_REASON)
    assert ledger(engine) == []


def test_the_clis_check_leaves_an_instant_at_the_calendars_edge_to_the_workflow(
    engine: Engine,  # noqa: F811
) -> None:
    add_borrower(engine)
    add_loan(engine, "L1")
    with session_scope(engine) as s:
        assert borrower_caps_refusal(s, "L1", datetime(1, 1, 1, 12, tzinfo=UTC)) is None
