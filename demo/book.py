"""The demo book: about 50 loans backdated so that, on the day they are disbursed onto the
system, every collection stage is present; and the collector's desk messages that put
every borrower protection on show (an open promise, a broken one, an open dispute, one
past its response deadline, an active hardship, a borrower who accepts email only).

Deterministic: loan ids, borrowers, products and amounts never change; only the dates
follow `today` (the borrowers' local date), so that today's days past due land in each
stage. The workflow treats past dates as a late start: a loan disbursed months ago
starts in the stage it is in today, without replaying the reminders it missed. The desk
messages' ids are fixed too (one per loan and kind), so sending them again is answered
`duplicate` and changes nothing.

    python -m demo.book                      # JSON lines of start inputs, for starter.py disburse
    python -m demo.book --today 2025-06-01 --summary
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from client.loans import DeskIn
from domain.calendar import add_months
from domain.enums import (
    Channel,
    CollectionStage,
    DisputeReason,
    HardshipReason,
    HoldReason,
    Product,
    RepaymentMethod,
)
from domain.money import format_amount
from models.wire import DisputeOpenIn, HardshipStartIn, LoanStart, PreferencesIn, PromiseIn

PEOPLE_FILE = Path(__file__).with_name("people.json")
TIMEZONE = "Asia/Shanghai"
SEED = 20_240_611  # fixed: the same people and amounts on every machine, every day


class Intent(StrEnum):
    HOLD = "hold"  # leave it where the ladder puts it
    PAYOFF = "payoff"  # pay outstanding.total: the loan closes as PAID_OFF
    CURE = "cure"  # pay what is overdue: the loan falls back to CURRENT


@dataclass(frozen=True)
class DemoLoan:
    start: LoanStart
    intent: Intent
    expected_stage: CollectionStage
    days_past_due: int  # on the day the book was generated, before any demo payment


@dataclass(frozen=True)
class DeskMessage:
    """A collector's desk message the stack sends once the book is started: `shows` what
    it puts on show, `hold` the hold its answer shows when it is applied (None: none)."""

    loan_id: str
    message: DeskIn
    shows: str
    hold: HoldReason | None


@dataclass(frozen=True)
class DemoBook:
    today: date
    agents: list[tuple[str, str]]
    borrowers: list[dict[str, Any]]  # BorrowerCreate fields (personal data: database only)
    loans: list[DemoLoan]
    desk: list[DeskMessage] = field(default_factory=list)

    def starts(self) -> list[LoanStart]:
        return [loan.start for loan in self.loans]


S = CollectionStage
# (expected stage, intent, days past due today; for loans not yet due: -days since disbursal)
LADDER: list[tuple[CollectionStage, Intent, list[int]]] = [
    (S.CURRENT, Intent.HOLD, [-1, -3, -5, -8, -10, -13, -16, -19, -22, -25]),
    (S.CURRENT, Intent.CURE, [36, 42, 70]),
    (S.GRACE, Intent.HOLD, [1, 2, 2, 3, 3]),
    (S.EARLY, Intent.HOLD, [5, 8, 12, 15, 18, 22, 26, 29]),
    (S.AGENT, Intent.HOLD, [33, 38, 45, 50, 55, 62, 66, 72, 80, 88]),
    (S.LEGAL, Intent.HOLD, [95, 110, 125, 140, 160, 175]),
    (S.CHARGED_OFF, Intent.HOLD, [190, 220, 260, 300]),
    (S.PAID_OFF, Intent.PAYOFF, [-12, -20, 10, 45]),
]

# product -> (principal range in yuan, rate range in bps, terms, methods)
TERMS: dict[Product, tuple[tuple[int, int], tuple[int, int], list[int], list[RepaymentMethod]]] = {
    Product.CREDIT: ((5_000, 50_000), (1_500, 2_400), [6, 12, 24], [RepaymentMethod.EQUAL_INSTALLMENT]),
    Product.INSTALLMENT: (
        (3_000, 30_000),
        (1_200, 3_000),
        [3, 6, 12],
        [RepaymentMethod.EQUAL_INSTALLMENT, RepaymentMethod.EQUAL_PRINCIPAL],
    ),
    Product.AUTO: (
        (80_000, 300_000),
        (600, 1_200),
        [24, 36],
        [RepaymentMethod.EQUAL_PRINCIPAL, RepaymentMethod.EQUAL_INSTALLMENT],
    ),
}
PRODUCT_CYCLE = [Product.CREDIT, Product.INSTALLMENT, Product.CREDIT, Product.AUTO, Product.INSTALLMENT]
# A large car loan deep in the AGENT stage: overdue above the field-visit threshold.
BIG_AUTO_DPD = 66
BIG_AUTO_PRINCIPAL = 80_000_000  # 800,000.00


# The desk messages, by loan (number in the book). Loans the README's examples use
# (DEMO-014, -021, -027, -030, -033, -038, -047) are left alone.
PROMISE_TODAY = 28  # AGENT, DPD 38: a promise falling due today (first in its agent's worklist)
PROMISE_OPEN = 20  # EARLY, DPD 8: a promise due in PROMISE_DAYS days
PROMISE_DAYS = 5
PROMISE_BROKEN = 29  # AGENT, DPD 45: made 3 days ago for yesterday, so broken at once
DISPUTE_OPEN = 22  # EARLY, DPD 12: an open dispute
DISPUTE_OVERDUE = 31  # AGENT, DPD 55: opened 21 days ago, past the 20 response days
HARDSHIP = 32  # AGENT, DPD 62: relief for HARDSHIP_DAYS days
HARDSHIP_DAYS = 30
EMAIL_ONLY = 16  # GRACE, DPD 2: the borrower accepts email only (and, as always, letters)
PROMISE_AMOUNT = 100_000  # 1,000.00
DESK_BY = "demo.desk"  # who entered the demo's desk messages
DESK_AGENT = "agent-demo"  # the collector named on the demo's promises


def desk_messages(loans: list[DemoLoan], today: date, now: datetime) -> list[DeskMessage]:
    """The desk messages of the book, dated from `today` (the borrowers' local date) and
    `now`; their ids depend on the loan alone."""

    def loan_id(n: int) -> str:
        return loans[n - 1].start.loan_id

    def promise(n: int, promised: date, made_at: datetime | None = None) -> PromiseIn:
        return PromiseIn(
            promise_id=f"DEMO-PROMISE-{loan_id(n)}",
            amount=PROMISE_AMOUNT,
            promised_date=promised,
            agent_id=DESK_AGENT,
            made_at=made_at,
        )

    def dispute(n: int, reason: DisputeReason, opened_at: datetime | None = None) -> DisputeOpenIn:
        return DisputeOpenIn(
            dispute_id=f"DEMO-DISPUTE-{loan_id(n)}", reason=reason, opened_by=DESK_BY, opened_at=opened_at
        )

    H = HoldReason
    return [
        DeskMessage(loan_id(PROMISE_TODAY), promise(PROMISE_TODAY, today), "a promise due today", H.PROMISE),
        DeskMessage(
            loan_id(PROMISE_OPEN),
            promise(PROMISE_OPEN, today + timedelta(days=PROMISE_DAYS)),
            f"an open promise due in {PROMISE_DAYS} days",
            H.PROMISE,
        ),
        DeskMessage(
            loan_id(PROMISE_BROKEN),
            promise(PROMISE_BROKEN, today - timedelta(days=1), made_at=now - timedelta(days=3)),
            "a broken promise (made 3 days ago for yesterday)",
            None,
        ),
        DeskMessage(
            loan_id(DISPUTE_OPEN), dispute(DISPUTE_OPEN, DisputeReason.AMOUNT), "an open dispute", H.DISPUTE
        ),
        DeskMessage(
            loan_id(DISPUTE_OVERDUE),
            dispute(DISPUTE_OVERDUE, DisputeReason.SERVICE, opened_at=now - timedelta(days=21)),
            "a dispute past its response deadline (opened 21 days ago)",
            H.DISPUTE,
        ),
        DeskMessage(
            loan_id(HARDSHIP),
            HardshipStartIn(
                hardship_id=f"DEMO-HARDSHIP-{loan_id(HARDSHIP)}",
                reason=HardshipReason.JOB_LOSS,
                until=today + timedelta(days=HARDSHIP_DAYS),
                approved_by="supervisor.demo",
                approval_ref=f"APR-DEMO-{loan_id(HARDSHIP)}",
            ),
            f"an active hardship ({HARDSHIP_DAYS} days)",
            H.HARDSHIP,
        ),
        DeskMessage(
            loan_id(EMAIL_ONLY),
            PreferencesIn(
                preference_id=f"DEMO-PREF-{loan_id(EMAIL_ONLY)}", channels=[Channel.EMAIL], set_by=DESK_BY
            ),
            "a borrower who accepts email only",
            None,
        ),
    ]


# A borrower abroad: the last loan of the book, 6 days past due (EARLY), lives in a time
# zone where it is daytime when the book is made, so its credit-report notice (an SMS,
# owed since DPD 5: a late start still gives it) goes out at once (contacts respect each
# borrower's own 08:00-21:00): `./run` shows a message leave the system at any hour,
# while the Shanghai borrowers' contacts wait for their window.
ABROAD_DPD = 6
ABROAD_LOAN_ID = f"DEMO-{sum(len(days) for _, _, days in LADDER) + 1:03d}"
ABROAD_ZONES = (
    "Pacific/Honolulu",
    "America/Los_Angeles",
    "America/New_York",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Moscow",
    "Asia/Kolkata",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Pacific/Auckland",
)


def daytime_zone(now: datetime) -> str:
    """The zone of ABROAD_ZONES where it is closest to 13:00 at `now` (their offsets never
    leave more than 3 hours between neighbours, so it is always well inside 08:00-21:00)."""

    def distance(tz: str) -> float:
        local = now.astimezone(ZoneInfo(tz))
        return abs(local.hour + local.minute / 60 - 13)

    return min(ABROAD_ZONES, key=distance)


def local_today(tz: str = TIMEZONE) -> date:
    return datetime.now(ZoneInfo(tz)).date()


def _load_people() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PEOPLE_FILE.read_text(encoding="utf-8"))
    return data


def _borrower(rng: random.Random, people: dict[str, Any], n: int) -> dict[str, Any]:
    english = n % 8 == 7
    if english:
        name = people["english_names"][(n // 8) % len(people["english_names"])]
        local = name.lower().replace(" ", ".")
    else:
        name = rng.choice(people["surnames"]) + rng.choice(people["given_names"])
        local = f"borrower{n:03d}"
    return {
        "borrower_id": f"DB-{n:03d}",
        "name": name,
        "phone_mobile": f"+86 100 0000 {n:04d}",
        "phone_alt": f"+86 100 0001 {n:04d}" if n % 3 == 0 else None,
        "email": f"{local}@example.com" if n % 2 == 0 else None,
        "preferred_language": "en" if english else "zh-CN",
        "timezone": TIMEZONE,
    }


def _dates(today: date, dpd_or_age: int) -> tuple[date, date]:
    """(disbursed_on, first_due_date) so that today's days past due is `dpd_or_age`
    (> 0), or the loan was disbursed -`dpd_or_age` days ago and is not yet due (<= 0)."""
    if dpd_or_age <= 0:
        disbursed = today - timedelta(days=-dpd_or_age)
        return disbursed, add_months(disbursed, 1)
    first_due = today - timedelta(days=dpd_or_age)
    return add_months(first_due, -1), first_due


def build_book(today: date | None = None, now: datetime | None = None) -> DemoBook:
    """The book for the borrowers' local `today` (default: today), its desk messages
    dated from `now` (default: the wall clock, or noon on a `today` given)."""
    if now is None:
        now = datetime.now(UTC) if today is None else datetime.combine(today, time(12), ZoneInfo(TIMEZONE))
    today = today or now.astimezone(ZoneInfo(TIMEZONE)).date()
    rng = random.Random(SEED)
    people = _load_people()
    agents = [(a["agent_id"], a["name"]) for a in people["agents"]]
    borrowers: list[dict[str, Any]] = []
    loans: list[DemoLoan] = []
    n = 0
    for stage, intent, days in LADDER:
        for d in days:
            n += 1
            product = PRODUCT_CYCLE[n % len(PRODUCT_CYCLE)]
            (lo, hi), (rlo, rhi), terms, methods = TERMS[product]
            principal = rng.randrange(lo, hi + 1, 500) * 100
            rate = rng.randrange(rlo, rhi + 1, 50)
            term = rng.choice(terms)
            method = rng.choice(methods)
            if stage is S.AGENT and d == BIG_AUTO_DPD:
                product, principal, rate, term = Product.AUTO, BIG_AUTO_PRINCIPAL, 800, 24
                method = RepaymentMethod.EQUAL_PRINCIPAL
            borrower = _borrower(rng, people, n)
            borrowers.append(borrower)
            disbursed, first_due = _dates(today, d)
            start = LoanStart(
                loan_id=f"DEMO-{n:03d}",
                borrower_id=borrower["borrower_id"],
                product=product,
                currency="CNY",
                principal=principal,
                annual_rate_bps=rate,
                term_months=term,
                repayment_method=method,
                disbursed_on=disbursed,
                first_due_date=first_due,
                timezone=TIMEZONE,
                policy="standard",
            )
            loans.append(DemoLoan(start, intent, stage, max(d, 0)))
    n += 1
    zone = daytime_zone(now)
    english = people["english_names"][n % len(people["english_names"])]
    borrower = _borrower(rng, people, n) | {
        "name": english,
        "email": f"{english.lower().replace(' ', '.')}@example.com",
        "preferred_language": "en",
        "timezone": zone,
    }
    borrowers.append(borrower)
    disbursed, first_due = _dates(now.astimezone(ZoneInfo(zone)).date(), ABROAD_DPD)
    abroad = LoanStart(
        loan_id=ABROAD_LOAN_ID,
        borrower_id=borrower["borrower_id"],
        product=Product.CREDIT,
        currency="CNY",
        principal=1_200_000,
        annual_rate_bps=1_800,
        term_months=12,
        repayment_method=RepaymentMethod.EQUAL_INSTALLMENT,
        disbursed_on=disbursed,
        first_due_date=first_due,
        timezone=zone,
        policy="standard",
    )
    loans.append(DemoLoan(abroad, Intent.HOLD, S.EARLY, ABROAD_DPD))
    return DemoBook(
        today=today, agents=agents, borrowers=borrowers, loans=loans, desk=desk_messages(loans, today, now)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo.book", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--today", type=date.fromisoformat, help="the borrowers' local date (default: today)")
    parser.add_argument("--out", help="write the JSON lines here instead of stdout")
    parser.add_argument("--summary", action="store_true", help="print a table of loans and their stages")
    args = parser.parse_args(argv)
    book = build_book(args.today)
    if args.summary:
        for loan in book.loans:
            s = loan.start
            principal = format_amount(s.principal, s.currency)
            print(
                f"{s.loan_id}  {loan.expected_stage.value:<11}  dpd {loan.days_past_due:>3}  "
                f"{loan.intent.value:<6}  {s.product.value:<11}  {principal:>12}  "
                f"disbursed {s.disbursed_on}  first due {s.first_due_date}"
            )
        for m in book.desk:
            print(f"{m.loan_id}  desk: {m.shows}")
        return 0
    text = "".join(s.model_dump_json() + "\n" for s in book.starts())
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
