"""The benchmark: the real loan workflow against minimal baselines, in one run.

    .venv/bin/python -m bench                 # 200 loans, 400 updates, 50 skip-loans
    .venv/bin/python -m bench --quick         # a smoke run: 20 loans, 40 updates, 5 skip-loans
    .venv/bin/python -m bench --only latency  # one measure (repeatable)

It starts its own servers (a dev server; the time-skipping test server) and its own
workers, and reports each figure as a ratio against a baseline measured in the same run
(bench/baseline.py), which is what stays comparable across machines. A full run (not
--quick, no --only) writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console

from bench.live import LiveResults, measure_live, quantile
from bench.report import RESULTS, Row, print_table, write_results
from bench.skipped import SkipResults, measure_skipped
from worker import preload_policies

MEASURES = ("parking", "latency", "memory", "history", "skip")
LATENCY_GOAL = 1.3
MEMORY_GOAL = 1.5
EVENTS_GOAL = 24
SKIP_GOAL = 0.8
CONTINUE_AS_NEW_SUGGESTED_AT = 4096


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def live_rows(r: LiveResults, wanted: set[str]) -> list[Row]:
    rows: list[Row] = []
    loan, bare = r.loan, r.bare
    if "parking" in wanted:
        rows.append(
            Row(
                f"parking {r.loans} workflows (start until asleep)",
                f"{loan.park_s:.2f} s",
                f"{bare.park_s:.2f} s (bare: one activity, then parked)",
                loan.park_s / bare.park_s,
                "good",
                None,
            )
        )
    if "latency" in wanted:
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            a, b = quantile(loan.latencies_ms, q), quantile(bare.latencies_ms, q)
            rows.append(
                Row(
                    f"`record_payment` {name} ({r.updates} updates)",
                    f"{a:.1f} ms",
                    f"{b:.1f} ms (trivial update)",
                    a / b,
                    f"≤ {LATENCY_GOAL}×",
                    a / b <= LATENCY_GOAL,
                )
            )
    if "memory" in wanted:
        a, b = r.kib_per(loan), r.kib_per(bare)
        ratio = a / b if b > 0 else None
        rows.append(
            Row(
                "worker memory per parked loan (RSS growth)",
                f"{a:.0f} KiB",
                f"{b:.0f} KiB (bare)",
                ratio,
                f"≤ {MEMORY_GOAL}×",
                None if ratio is None else ratio <= MEMORY_GOAL,
                note=(
                    f"worker RSS: loans {mib(loan.rss_before_kib)} -> {mib(loan.rss_after_kib)} MiB, "
                    f"bare {mib(bare.rss_before_kib)} -> {mib(bare.rss_after_kib)} MiB "
                    f"for {r.loans} workflows each"
                ),
            )
        )
    return rows


def skip_rows(r: SkipResults, wanted: set[str]) -> list[Row]:
    rows: list[Row] = []
    if "history" in wanted and r.history is not None:
        h, m = r.history, r.minimal_history
        base = f"{m.per_installment:.1f}, plus {m.opened} to open (minimal loan)" if m else ""
        rows.append(
            Row(
                "history events per on-time installment",
                f"{h.per_installment:.1f}, plus {h.opened} to open",
                base,
                h.per_installment / m.per_installment if m else None,
                f"≤ {EVENTS_GOAL} events",
                h.per_installment <= EVENTS_GOAL,
                note=(
                    f"an unpaid ladder, disbursal to DPD 182, is {h.ladder} events "
                    f"(continue-as-new is suggested at {CONTINUE_AS_NEW_SUGGESTED_AT})"
                ),
            )
        )
    if "skip" in wanted and r.loan_s:
        a, b = r.loan_years_per_s, r.minimal_years_per_s
        rows.append(
            Row(
                f"time-skipped on-time loan-years per second ({r.loans} loans, paid by signal)",
                f"{a:.2f}",
                f"{b:.2f} (minimal 12-installment loan)",
                a / b,
                f"≥ {SKIP_GOAL}×",
                a / b >= SKIP_GOAL,
            )
        )
    return rows


async def run(args: argparse.Namespace, console: Console) -> list[Row]:
    wanted = set(args.only or MEASURES)
    preload_policies()
    rows: list[Row] = []
    if wanted & {"parking", "latency", "memory"}:
        console.print(f"[bold]dev server[/]: {args.loans} loans and {args.loans} bare workflows ...")
        with tempfile.TemporaryDirectory() as tmp:
            live = await measure_live(
                args.loans,
                args.updates,
                Path(tmp),
                memory="memory" in wanted,
                latency="latency" in wanted,
            )
        rows += live_rows(live, wanted)
    if wanted & {"history", "skip"}:
        console.print(f"[bold]time-skipping server[/]: {args.skip_loans} loan-years of each kind ...")
        skipped = await measure_skipped(
            args.skip_loans, history="history" in wanted, throughput="skip" in wanted
        )
        rows += skip_rows(skipped, wanted)
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--loans", type=int, default=None, help="parked workflows of each kind (200)")
    parser.add_argument("--updates", type=int, default=None, help="updates of each kind (2 x loans)")
    parser.add_argument(
        "--skip-loans", type=int, default=None, help="time-skipped loan-years of each kind (50)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 loans, 5 skip-loans")
    parser.add_argument("--only", action="append", choices=MEASURES, help="measure only this (repeatable)")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write bench/RESULTS.md (default: on a full run only)",
    )
    args = parser.parse_args(argv)
    args.loans = args.loans or (20 if args.quick else 200)
    args.updates = args.updates or 2 * args.loans
    args.skip_loans = args.skip_loans or (5 if args.quick else 50)
    if args.write is None:
        args.write = not args.quick and not args.only
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    began = time.perf_counter()

    async def go() -> list[Row]:
        try:
            return await run(args, console)
        finally:
            gc.collect()
            await asyncio.sleep(0.2)  # let the SDK's threads wind down (sdk-python #300)

    rows = asyncio.run(go())
    elapsed = time.perf_counter() - began
    print_table(rows, console)
    if args.write:
        command = shlex.join(
            [".venv/bin/python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])]
        )
        settings = (
            f"{args.loans} parked loans, {args.updates} updates, {args.skip_loans} time-skipped loan-years"
        )
        write_results(rows, command, settings, elapsed)
        console.print(f"written to {RESULTS}")
    console.print(f"[dim]{elapsed:.0f} s[/]")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
