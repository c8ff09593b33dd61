"""The benchmark's code runs (no assertion on speed: the benchmark reports ratios, a test
on a shared machine must never go red on timing): one time-skipped year of the real loan
and one of the minimal baseline, and the command's arguments and report rows."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from bench.__main__ import parse, skip_rows
from bench.baseline import add_months, due_dates
from bench.report import Row, write_results
from bench.skipped import SkipResults, bench_worker, loan_year, minimal_year
from tests.test_workflow_ladder import seed


def test_quick_run_arguments() -> None:
    args = parse(["--quick", "--only", "history"])
    assert (args.loans, args.updates, args.skip_loans) == (20, 40, 5)
    assert args.only == ["history"] and args.write is False
    full = parse([])
    assert (full.loans, full.updates, full.skip_loans) == (200, 400, 50) and full.write is True


def test_minimal_schedule_keeps_the_day_or_the_month_end() -> None:
    from datetime import date

    assert due_dates(date(2025, 1, 31), 3) == [date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31)]
    assert add_months(date(2025, 12, 15), 1) == date(2026, 1, 15)


@pytest.mark.temporal
async def test_one_time_skipped_year_of_each_kind_runs(ts_env: WorkflowEnvironment, wf_db: Engine) -> None:
    seed(wf_db)
    task_queue = f"bench-{uuid.uuid4().hex[:8]}"
    async with bench_worker(ts_env, task_queue, wf_db):
        results = SkipResults(loans=1)
        results.loan_s.append(await loan_year(ts_env, task_queue))  # raises if the loan did not close
        results.minimal_s.append(await minimal_year(ts_env, task_queue))
    rows = skip_rows(results, {"skip"})
    assert len(rows) == 1 and rows[0].ratio is not None and rows[0].ratio > 0


def test_results_file_names_the_machine_and_the_command(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    write_results([Row("m", "1", "2", 0.5, "≥ 0.8×", False)], ".venv/bin/python -m bench", "s", 1.0, path)
    text = path.read_text()
    assert "| m | 1 | 2 | 0.50× | ≥ 0.8× | **no** |" in text
    assert "temporalio" in text and "CPUs" in text and "python -m bench" in text
