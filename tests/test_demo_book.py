"""The demo book's collector's desk messages (demo/book.py), pure: every hold is put on
show, on loans whose stage suits, with ids that do not change from one day to the next
(so ./run again is answered `duplicate`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from demo.book import TIMEZONE, DemoBook, build_book
from domain.enums import Channel, CollectionStage, HoldReason
from domain.policy import load_policy
from models.wire import DisputeOpenIn, HardshipStartIn, PreferencesIn, PromiseIn

TODAY = date(2025, 6, 1)
NOW = datetime(2025, 6, 1, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
# Loans the README's examples use: the desk leaves them alone.
README_LOANS = {"DEMO-014", "DEMO-021", "DEMO-027", "DEMO-030", "DEMO-033", "DEMO-038", "DEMO-047"}


def book() -> DemoBook:
    return build_book(TODAY, NOW)


def message_ids(b: DemoBook) -> list[tuple[str, str]]:
    return [
        (
            m.loan_id,
            m.message.model_dump_json(include={"promise_id", "dispute_id", "hardship_id", "preference_id"}),
        )
        for m in b.desk
    ]


def test_every_hold_and_protection_is_on_show_on_its_own_loan() -> None:
    b = book()
    loans = {loan.start.loan_id: loan for loan in b.loans}
    assert len({m.loan_id for m in b.desk}) == len(b.desk)  # one message per loan
    assert {m.hold for m in b.desk} == {*HoldReason, None}
    assert not {m.loan_id for m in b.desk} & README_LOANS
    for m in b.desk:
        loan = loans[m.loan_id]
        assert loan.expected_stage not in (CollectionStage.CURRENT, CollectionStage.PAID_OFF), m
        assert loan.days_past_due > 0, m  # overdue: a promise needs it, and so does a collector
    kinds = [type(m.message) for m in b.desk]
    assert kinds.count(PromiseIn) == 3 and kinds.count(DisputeOpenIn) == 2
    assert kinds.count(HardshipStartIn) == 1 and kinds.count(PreferencesIn) == 1


def test_promises_open_due_today_and_broken() -> None:
    b = book()
    policy = load_policy("standard")
    promises = [m for m in b.desk if isinstance(m.message, PromiseIn)]
    by_show = {m.shows.split(" (")[0]: m.message for m in promises}
    assert isinstance(due_today := by_show["a promise due today"], PromiseIn)
    assert due_today.promised_date == TODAY and due_today.made_at is None
    opened = next(m.message for m in promises if m.shows.startswith("an open promise"))
    assert isinstance(opened, PromiseIn)
    assert TODAY < opened.promised_date <= TODAY + timedelta(days=policy.max_promise_days)
    broken = by_show["a broken promise"]
    assert isinstance(broken, PromiseIn)
    # made 3 days back for yesterday: the workflow breaks it at once
    assert broken.made_at == NOW - timedelta(days=3) and broken.promised_date == TODAY - timedelta(days=1)
    made_on = broken.made_at.astimezone(ZoneInfo(TIMEZONE)).date()
    assert made_on <= broken.promised_date <= made_on + timedelta(days=policy.max_promise_days)
    assert all(m.message.amount == 100_000 for m in promises if isinstance(m.message, PromiseIn))


def test_disputes_one_open_and_one_past_its_response_deadline() -> None:
    policy = load_policy("standard")
    disputes = [m.message for m in book().desk if isinstance(m.message, DisputeOpenIn)]
    assert [d.opened_at for d in disputes] == [None, NOW - timedelta(days=policy.dispute_response_days + 1)]


def test_hardship_and_email_only() -> None:
    b = book()
    policy = load_policy("standard")
    hardship = next(m.message for m in b.desk if isinstance(m.message, HardshipStartIn))
    assert isinstance(hardship, HardshipStartIn)
    assert TODAY < hardship.until <= TODAY + timedelta(days=policy.max_hardship_days)
    assert hardship.approved_by and hardship.approval_ref
    prefs = next(m for m in b.desk if isinstance(m.message, PreferencesIn))
    assert isinstance(prefs.message, PreferencesIn) and prefs.message.channels == [Channel.EMAIL]
    borrower_id = next(loan.start.borrower_id for loan in b.loans if loan.start.loan_id == prefs.loan_id)
    borrower = next(x for x in b.borrowers if x["borrower_id"] == borrower_id)
    assert borrower["email"]  # the borrower has an address to write to


def test_ids_do_not_change_from_day_to_day() -> None:
    later = build_book(TODAY + timedelta(days=9), NOW + timedelta(days=9))
    assert message_ids(later) == message_ids(book())
    assert len({i for _, i in message_ids(book())}) == len(book().desk)


def test_the_wall_clock_gives_the_borrowers_local_today() -> None:
    # 23:30 UTC is already the next day in Shanghai
    late = datetime(2025, 6, 1, 23, 30, tzinfo=UTC)
    b = build_book(now=late)
    assert b.today == date(2025, 6, 2)
    assert build_book(TODAY).desk[0].message == book().desk[0].message  # noon local by default
