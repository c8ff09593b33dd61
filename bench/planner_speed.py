"""Planner cost relative to a baseline measured in the same run.

    .venv/bin/python bench/planner_speed.py

The baseline is one payoff computation (domain.ledger.outstanding) on the same case; the
figure that matters is the ratio next_action / outstanding, which stays comparable
across machines. Also reports the size of the case carried across continue-as-new.
"""

from __future__ import annotations

import sys
import timeit
from datetime import UTC, date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from domain.enums import Product, RepaymentMethod
from domain.ledger import outstanding, today_for
from domain.onboarding import open_case
from domain.planner import next_action, reconcile
from domain.policy import load_policy


def main() -> None:
    policy = load_policy()
    for months in (12, 60):
        case = open_case(
            loan_id="BENCH",
            borrower_id="B",
            product=Product.CREDIT,
            currency="CNY",
            principal=1_200_000,
            annual_rate_bps=1800,
            term_months=months,
            repayment_method=RepaymentMethod.EQUAL_INSTALLMENT,
            disbursed_on=date(2024, 1, 10),
            first_due_date=None,
            timezone="Asia/Shanghai",
            policy=policy,
            now=datetime(2024, 1, 10, 2, tzinfo=UTC),
        )
        now = datetime(2024, 3, 27, 3, tzinfo=UTC)  # DPD 45 on installment 1
        case = reconcile(case, now)
        today = today_for(case, now)
        n = 200
        base = min(timeit.repeat(lambda: outstanding(case, today), number=n, repeat=5)) / n  # noqa: B023
        plan = min(timeit.repeat(lambda: next_action(case, policy, now), number=n, repeat=5)) / n  # noqa: B023
        size = len(case.model_dump_json())
        print(
            f"{months:>3} installments: next_action = {plan / base:5.1f} x outstanding "
            f"({plan * 1e3:.2f} ms vs {base * 1e3:.3f} ms); case JSON {size:,} bytes"
        )


if __name__ == "__main__":
    main()
