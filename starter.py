"""The operator CLI: disburse loans, take payments, grant restructurings, look at cases.

    python starter.py --help
    python starter.py disburse loans.jsonl
    python starter.py pay L-1001 1234.56 --payment-id PAY-1
    python starter.py status L-1001 [--json]

Temporal commands connect with the settings of `settings.get_settings()` (TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_TASK_QUEUE) plus the SDK's environment configuration
(`temporalio.envconfig`: TEMPORAL_PROFILE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, a config
file) for a Temporal cluster or Temporal Cloud. `agents` and `borrowers` write the
lender's database (DATABASE_URL); contact details never go into workflow history.

Exit codes: 0 done; 1 the operation was refused or failed (unknown loan, closed loan,
server unreachable, a refusal by the workflow); 2 bad input (a bad file, amount or
option), nothing sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.enums import CollectionStage, RestructuringKind
from domain.money import CURRENCY_EXPONENT, MoneyError, format_amount, parse_amount
from domain.policy import PolicyError, load_policy
from domain.schedule import TermsError, validate_loan_terms
from models.search import (
    AMOUNT_OVERDUE,
    ASSIGNED_AGENT,
    BORROWER_ID,
    COLLECTION_STAGE,
    DAYS_PAST_DUE,
    LOAN_ID,
    LOAN_PRODUCT,
    NEXT_ACTION_AT,
    OUTSTANDING_BALANCE,
)
from models.wire import (
    CaseView,
    InstallmentView,
    LoanStart,
    Outstanding,
    PaymentIn,
    PaymentResult,
    RestructuringIn,
    ScheduleSummary,
)
from settings import WORKFLOW_TYPE, Settings, get_settings, settled, workflow_id
from settings import connect as settings_connect

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2

T = TypeVar("T")


class CLIError(Exception):
    """An error a person can act on: printed as one line, exits with `code`."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- reading and validating start inputs ---------------------------------------------


@dataclass(frozen=True)
class StartRecord:
    number: int  # 1-based record number in the file
    line: int | None  # line number for JSON lines
    start: LoanStart

    @property
    def where(self) -> str:
        return record_label(self.number, self.line)


def record_label(number: int, line: int | None) -> str:
    return f"record {number}" + (f" (line {line})" if line is not None else "")


def _raw_records(text: str, source: str) -> list[tuple[int, int | None, Any]]:
    """(record number, line or None, decoded JSON) for a JSON object, a JSON array of
    objects, or JSON lines."""
    stripped = text.strip()
    if not stripped:
        raise CLIError(
            f"{source}: empty file, expected a JSON object, an array or JSON lines", EXIT_BAD_INPUT
        )
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError as whole_error:
        if stripped.startswith("["):
            raise CLIError(f"{source}: not valid JSON: {whole_error}", EXIT_BAD_INPUT) from None
        records: list[tuple[int, int | None, Any]] = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            number = len(records) + 1
            try:
                records.append((number, lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise CLIError(
                    f"{source}: {record_label(number, lineno)}: not valid JSON: {exc.msg} "
                    f"(column {exc.colno})",
                    EXIT_BAD_INPUT,
                ) from None
        return records
    if isinstance(whole, list):
        if not whole:
            raise CLIError(f"{source}: the array is empty, no loans to start", EXIT_BAD_INPUT)
        return [(i, None, item) for i, item in enumerate(whole, start=1)]
    return [(1, None, whole)]


def _pydantic_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(record)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field (not part of the start input)"
    more = len(exc.errors()) - 1
    return f"{loc}: {msg}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def validate_start(data: Any) -> LoanStart:
    """A LoanStart that the workflow will accept, or ValueError('field: message')."""
    if not isinstance(data, dict):
        raise ValueError(f"(record): expected a JSON object, got {type(data).__name__}")
    try:
        # Strict: "12000" or 12000.0 for an amount is a mistake to report, not to guess.
        start = LoanStart.model_validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        raise ValueError(_pydantic_message(exc)) from None
    try:
        policy = load_policy(start.policy, product=start.product.value)
    except PolicyError as exc:
        raise ValueError(f"policy: {exc}") from None
    try:
        validate_loan_terms(
            principal=start.principal,
            annual_rate_bps=start.annual_rate_bps,
            term_months=start.term_months,
            disbursed_on=start.disbursed_on,
            first_due_date=start.first_due_date,
            timezone=start.timezone,
            currency=start.currency,
            max_annual_rate_bps=policy.max_annual_rate_bps,
            max_term_months=policy.max_term_months,
        )
    except TermsError as exc:
        raise ValueError(str(exc)) from None
    return start


def parse_start_records(text: str, source: str = "input") -> list[StartRecord]:
    """Every record validated; the first bad one raises CLIError naming record and field.
    A loan id twice in one file is refused too."""
    out: list[StartRecord] = []
    seen: dict[str, int] = {}
    for number, line, data in _raw_records(text, source):
        where = record_label(number, line)
        try:
            start = validate_start(data)
        except ValueError as exc:
            raise CLIError(f"{source}: {where}: {exc}", EXIT_BAD_INPUT) from None
        if start.loan_id in seen:
            raise CLIError(
                f"{source}: {where}: loan_id: {start.loan_id!r} already appears in record "
                f"{seen[start.loan_id]}",
                EXIT_BAD_INPUT,
            )
        seen[start.loan_id] = number
        out.append(StartRecord(number, line, start))
    return out


def read_start_file(path: str) -> list[StartRecord]:
    if path == "-":
        return parse_start_records(sys.stdin.read(), "stdin")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file", EXIT_BAD_INPUT) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"{path}: cannot read: {exc}", EXIT_BAD_INPUT) from None
    return parse_start_records(text, path)


# --- what a loan looks like in the Web UI ----------------------------------------------

METHOD_LABEL = {
    "equal_installment": "equal installment (等额本息)",
    "equal_principal": "equal principal (等额本金)",
}


def _rate(bps: int) -> str:
    return f"{bps // 100}.{bps % 100:02d}%"


def static_summary(start: LoanStart) -> str:
    """One line in the Web UI's list and header. No personal data."""
    principal = format_amount(start.principal, start.currency, symbol=True)
    return (
        f"Loan {start.loan_id} · {start.product.value} · {principal} · "
        f"{start.term_months} mo at {_rate(start.annual_rate_bps)} · policy {start.policy}"
    )


def static_details(start: LoanStart, first_due: date | None = None) -> str:
    """Markdown for the Web UI's workflow page. Ids and terms only, no personal data."""
    due = first_due or start.first_due_date
    rows = [
        ("Loan", f"`{start.loan_id}`"),
        ("Borrower", f"`{start.borrower_id}` (contact details in the lender's database)"),
        ("Product", start.product.value),
        ("Principal", f"{format_amount(start.principal, start.currency, symbol=True)} {start.currency}"),
        ("Rate", f"{_rate(start.annual_rate_bps)} a year ({start.annual_rate_bps} bps)"),
        ("Term", f"{start.term_months} months, {METHOD_LABEL[start.repayment_method.value]}"),
        ("Disbursed", start.disbursed_on.isoformat()),
        ("First due", due.isoformat() if due else "one month after disbursal"),
        ("Time zone", start.timezone),
        ("Policy", start.policy),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"### Loan {start.loan_id}\n\n| | |\n|---|---|\n{table}\n"


def start_search_attributes(start: LoanStart) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(LOAN_ID, start.loan_id),
            SearchAttributePair(BORROWER_ID, start.borrower_id),
            SearchAttributePair(LOAN_PRODUCT, start.product.value),
            SearchAttributePair(COLLECTION_STAGE, CollectionStage.CURRENT.value),
        ]
    )


# --- connecting -------------------------------------------------------------------------


async def connect(settings: Settings | None = None) -> Client:
    """A client with the Pydantic data converter (`settings.connect`: a temporal.toml
    profile for TLS / API keys / Temporal Cloud, then TEMPORAL_ADDRESS and
    TEMPORAL_NAMESPACE). An unreachable server is a one-line CLIError naming the address."""
    settings = settings or get_settings()
    try:
        return await settings_connect(settings)
    except Exception as exc:
        text = str(exc)
        reason = text.removeprefix("Failed client connect: ").split("(", 1)[0].strip() or type(exc).__name__
        if "onnection refused" in text:
            reason = "connection refused"
        raise CLIError(
            f"cannot reach the Temporal server at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}): {reason}. Is it running? "
            "Start the local stack with ./run or set TEMPORAL_ADDRESS."
        ) from None


def _is_closed_error(exc: RPCError) -> bool:
    return "already completed" in exc.message or "already finished" in exc.message


def _namespace_problem(exc: RPCError, settings: Settings) -> str | None:
    """A start failure that every loan would hit (so stop at once), as one line."""
    if "search attribute" in exc.message:
        return (
            f"namespace {settings.temporal_namespace} lacks the search attributes of models/search.py "
            f"({exc.message}): start the worker once (it registers them) or register them with "
            "`temporal operator search-attribute create`"
        )
    if exc.status in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.PERMISSION_DENIED,
    ):
        return f"the Temporal server at {settings.temporal_address} refused: {exc.message}"
    if exc.status == RPCStatusCode.NOT_FOUND and "amespace" in exc.message:
        return (
            f"namespace {settings.temporal_namespace} not found at {settings.temporal_address}: {exc.message}"
        )
    return None


def rpc_error(exc: RPCError, loan_id: str, settings: Settings) -> CLIError:
    """A one-line, actionable message for an RPC error about one loan."""
    wid = workflow_id(loan_id)
    if _is_closed_error(exc):
        return CLIError(f"loan {loan_id} is closed (workflow {wid} has completed): nothing can be applied")
    if exc.status == RPCStatusCode.NOT_FOUND:
        return CLIError(
            f"unknown loan {loan_id}: no workflow {wid} in namespace {settings.temporal_namespace}"
        )
    if exc.status == RPCStatusCode.UNAVAILABLE:
        return CLIError(f"the Temporal server at {settings.temporal_address} is unavailable: {exc.message}")
    if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
        return CLIError(
            f"no answer for loan {loan_id} in time: is a worker running on task queue "
            f"{settings.temporal_task_queue}? ({exc.message})"
        )
    if "Workflow Task in failed state" in exc.message:
        return CLIError(
            f"loan {loan_id}: its workflow is failing its tasks, so it cannot answer now; see the "
            f"worker's log ({exc.message})"
        )
    return CLIError(f"loan {loan_id}: {exc.message}")


async def _answer(call: Awaitable[T], loan_id: str, settings: Settings, wait_seconds: float) -> T:
    """Await a message to a loan's workflow with actionable errors."""
    try:
        return await asyncio.wait_for(call, timeout=wait_seconds)
    except TimeoutError:
        raise CLIError(
            f"no answer from loan {loan_id} within {wait_seconds:g}s: is a worker running on "
            f"task queue {settings.temporal_task_queue}?"
        ) from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = getattr(cause, "message", None) or str(cause or exc)
        raise CLIError(f"refused by loan {loan_id}: {message}") from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise CLIError(
            f"no answer from loan {loan_id}: is a worker running on task queue "
            f"{settings.temporal_task_queue}?"
        ) from None
    except WorkflowQueryFailedError as exc:
        raise CLIError(f"loan {loan_id}: the workflow could not answer the query: {exc.message}") from None
    except RPCError as exc:
        raise rpc_error(exc, loan_id, settings) from None


# --- progress ---------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr (redrawn on a terminal, a line per 10% otherwise)."""

    WIDTH = 30

    def __init__(self, total: int, label: str, stream: IO[str] | None = None, enabled: bool = True):
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_decile = -1

    def clear(self) -> None:
        """Wipe the bar's line (before printing something else on the terminal)."""
        if self.enabled and self._tty and 0 < self.done < self.total:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def draw(self) -> None:
        if not (self.enabled and self._tty):
            return
        pct = self.done * 100 // self.total
        filled = self.WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {pct:3d}%")
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        pct = self.done * 100 // self.total
        if self._tty:
            self.draw()
        elif pct // 10 != self._last_decile:
            self._last_decile = pct // 10
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({pct}%)\n")
            self.stream.flush()


# --- disburse ---------------------------------------------------------------------------


@dataclass
class DisburseReport:
    started: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already started, --skip-existing
    refused: list[tuple[str, str]] = field(default_factory=list)  # (loan_id, reason)


async def start_loan(client: Client, settings: Settings, start: LoanStart) -> WorkflowHandle[Any, Any]:
    """Start one loan's workflow. Raises WorkflowAlreadyStartedError for a loan id that
    was ever used (running or closed)."""
    return await client.start_workflow(
        WORKFLOW_TYPE,
        start,
        id=workflow_id(start.loan_id),
        task_queue=settings.temporal_task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=start_search_attributes(start),
        static_summary=static_summary(start),
        static_details=static_details(start),
    )


async def disburse(
    client: Client,
    settings: Settings,
    records: Sequence[StartRecord],
    *,
    skip_existing: bool = False,
    concurrency: int = 16,
    out: IO[str] | None = None,
    progress: bool | None = None,
) -> DisburseReport:
    out = out or sys.stdout
    report = DisburseReport()
    bar = Progress(len(records), "disbursing", enabled=len(records) >= 20 if progress is None else progress)
    gate = asyncio.Semaphore(max(1, concurrency))

    fatal: list[str] = []  # a problem of the namespace or the server, not of one loan

    async def one(rec: StartRecord) -> None:
        loan_id = rec.start.loan_id
        async with gate:
            if fatal:
                return
            try:
                await start_loan(client, settings, rec.start)
                report.started.append(loan_id)
                line = f"started  {loan_id}  (workflow {workflow_id(loan_id)})"
            except WorkflowAlreadyStartedError:
                if skip_existing:
                    report.skipped.append(loan_id)
                    line = f"skipped  {loan_id}  (already started)"
                else:
                    reason = (
                        f"already started: workflow {workflow_id(loan_id)} exists (running or "
                        "closed) and a loan id is never reused"
                    )
                    report.refused.append((loan_id, reason))
                    line = f"refused  {loan_id}  {reason}"
            except RPCError as exc:
                problem = _namespace_problem(exc, settings)
                if problem:
                    fatal.append(problem)
                    return
                report.refused.append((loan_id, exc.message))
                line = f"failed   {loan_id}  {exc.message}"
        if len(records) < 200 or line.startswith(("refused", "failed")):  # large files: problems only
            bar.clear()
            print(line, file=out, flush=True)
            bar.draw()
        bar.advance()

    await asyncio.gather(*(one(r) for r in records))
    if fatal:
        bar.clear()
        done = len(report.started) + len(report.skipped)
        raise CLIError(
            f"{fatal[0]} ({len(report.started)} started, {len(report.skipped)} skipped, "
            f"{len(records) - done} not started: run the same file again with --skip-existing)"
        )
    order = {r.start.loan_id: r.number for r in records}  # report in file order
    report.started.sort(key=order.__getitem__)
    report.skipped.sort(key=order.__getitem__)
    report.refused.sort(key=lambda item: order[item[0]])
    return report


async def cmd_disburse(args: argparse.Namespace, settings: Settings) -> int:
    records = read_start_file(args.file)
    if args.dry_run:
        print(f"{len(records)} record(s) valid; nothing started (--dry-run)")
        return EXIT_OK
    client = await connect(settings)
    report = await disburse(
        client, settings, records, skip_existing=args.skip_existing, concurrency=args.concurrency
    )
    parts = [f"{len(report.started)} started"]
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped (already started)")
    if report.refused:
        parts.append(f"{len(report.refused)} refused")
    print(", ".join(parts) + f" of {len(records)}")
    if report.refused:
        first_id, first_reason = report.refused[0]
        raise CLIError(
            f"loan {first_id}: {first_reason}"
            + (f" (and {len(report.refused) - 1} more refused)" if len(report.refused) > 1 else "")
        )
    return EXIT_OK


# --- pay --------------------------------------------------------------------------------


def parse_paid_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CLIError(
            f"--paid-at: {text!r} is not an ISO 8601 time like 2025-03-01T10:30:00+08:00", EXIT_BAD_INPUT
        ) from None
    if value.tzinfo is None:
        raise CLIError(f"--paid-at: {text!r} needs a UTC offset, e.g. {text}+08:00", EXIT_BAD_INPUT)
    return value


def amount_arg(text: str, currency: str, option: str) -> int:
    try:
        value = parse_amount(text, currency, field=option)
    except MoneyError as exc:
        raise CLIError(str(exc), EXIT_BAD_INPUT) from None
    if value <= 0:
        raise CLIError(f"{option}: must be greater than zero (got {text!r})", EXIT_BAD_INPUT)
    return value


def _money(minor: int, currency: str) -> str:
    return format_amount(minor, currency)


def format_outstanding(o: Outstanding, currency: str) -> str:
    return (
        f"principal {_money(o.principal, currency)} · interest {_money(o.interest, currency)} · "
        f"penalty {_money(o.penalty, currency)} · fee {_money(o.fee, currency)} · "
        f"total (payoff today) {_money(o.total, currency)}"
    )


def format_payment_result(loan_id: str, r: PaymentResult, currency: str) -> str:
    a = r.allocation
    applied = a.penalty + a.fee + a.interest + a.principal
    head = (
        f"payment {r.payment_id} was already applied to loan {loan_id}: nothing applied twice"
        if r.duplicate
        else f"payment {r.payment_id} applied to loan {loan_id}: {_money(applied, currency)} {currency}"
    )
    return "\n".join(
        [
            head,
            f"  allocation   penalty {_money(a.penalty, currency)} · fee {_money(a.fee, currency)} · "
            f"interest {_money(a.interest, currency)} · principal {_money(a.principal, currency)}",
            f"  outstanding  {format_outstanding(r.outstanding, currency)}",
            f"  now          stage {r.stage.value} · {r.days_past_due} days past due · overdue "
            f"{_money(r.overdue, currency)}",
        ]
    )


async def cmd_pay(args: argparse.Namespace, settings: Settings) -> int:
    payment = PaymentIn(
        payment_id=args.payment_id,
        amount=amount_arg(args.amount, args.currency, "amount"),
        paid_at=parse_paid_at(args.paid_at),
        channel=args.channel,
        # The amount was read in this currency: the workflow refuses it for a loan in
        # another one, rather than booking 5000 yen as 500,000.
        currency=args.currency,
    )
    result = await send_message(args, settings, "payment_received", "record_payment", payment, PaymentResult)
    if result is None:
        print(
            f"payment {payment.payment_id} of {_money(payment.amount, args.currency)} {args.currency} "
            f"sent to loan {args.loan_id} (signal payment_received); check: "
            f"python starter.py status {args.loan_id}"
        )
    else:
        print(format_payment_result(args.loan_id, result, args.currency))
    return EXIT_OK


async def send_message(
    args: argparse.Namespace, settings: Settings, signal: str, update: str, arg: Any, result_type: type[T]
) -> T | None:
    """The update `update` and its answer, or with --async the signal `signal` (None)."""
    client = await connect(settings)
    handle = client.get_workflow_handle(workflow_id(args.loan_id))
    if args.async_:
        await _answer(handle.signal(signal, arg), args.loan_id, settings, args.wait)
        return None
    return await _answer(
        handle.execute_update(update, arg, result_type=result_type), args.loan_id, settings, args.wait
    )


# --- restructure ------------------------------------------------------------------------


def build_restructuring(args: argparse.Namespace) -> RestructuringIn:
    kind = RestructuringKind(args.kind)
    bad = EXIT_BAD_INPUT
    if kind is RestructuringKind.EXTENSION:
        if args.days is None:
            raise CLIError("extension: --days N is required (how many days the due dates move)", bad)
        if args.months is not None or args.waive_penalty or args.amount is not None:
            raise CLIError("extension: only --days applies", bad)
    elif kind is RestructuringKind.REINSTALLMENT:
        if args.months is None:
            raise CLIError("reinstallment: --months N is required (the new number of installments)", bad)
        if args.days is not None or args.waive_penalty or args.amount is not None:
            raise CLIError("reinstallment: only --months applies", bad)
    else:
        if not args.waive_penalty and args.amount is None:
            raise CLIError("waiver: give --waive-penalty (all penalty) and/or --amount X", bad)
        if args.days is not None or args.months is not None:
            raise CLIError("waiver: --days and --months do not apply", bad)
    for option, value in (("--days", args.days), ("--months", args.months)):
        if value is not None and value < 1:
            raise CLIError(f"{option}: must be at least 1 (got {value})", bad)
    return RestructuringIn(
        restructuring_id=args.restructuring_id,
        kind=kind,
        approved_by=args.approved_by,
        approval_ref=args.approval_ref,
        extension_days=args.days,
        new_term_months=args.months,
        waive_penalty=bool(args.waive_penalty),
        waive_amount=amount_arg(args.amount, args.currency, "--amount") if args.amount is not None else None,
    )


def format_installments(rows: Iterable[InstallmentView], currency: str) -> str:
    table = [("#", "due date", "principal", "interest", "paid", "status")]
    for r in rows:
        table.append(
            (
                str(r.seq),
                r.due_date.isoformat(),
                _money(r.principal, currency),
                _money(r.interest, currency),
                _money(r.paid, currency),
                r.status.value,
            )
        )
    return render_table(table, right={0, 2, 3, 4})


def format_schedule(loan_id: str, s: ScheduleSummary, currency: str) -> str:
    head = (
        f"restructuring {s.restructuring_id} was already applied to loan {loan_id}: nothing changed"
        if s.duplicate
        else f"restructuring {s.restructuring_id} ({s.kind.value}) applied to loan {loan_id}"
    )
    return "\n".join(
        [
            head,
            f"  outstanding  {format_outstanding(s.outstanding, currency)}",
            f"  now          stage {s.stage.value} · {s.days_past_due} days past due · overdue "
            f"{_money(s.overdue, currency)}",
            "",
            format_installments(s.installments, currency),
        ]
    )


async def cmd_restructure(args: argparse.Namespace, settings: Settings) -> int:
    req = build_restructuring(args)
    summary = await send_message(
        args, settings, "restructuring_approved", "apply_restructuring", req, ScheduleSummary
    )
    if summary is None:
        print(
            f"restructuring {req.restructuring_id} sent to loan {args.loan_id} (signal "
            f"restructuring_approved); check: python starter.py status {args.loan_id}"
        )
    else:
        print(format_schedule(args.loan_id, summary, args.currency))
    return EXIT_OK


# --- status -----------------------------------------------------------------------------


def render_table(rows: Sequence[Sequence[str]], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_case(view: CaseView, currency: str) -> str:
    o = view.outstanding
    nxt = (
        f"{view.next_action.kind.value} at {view.next_action.at.isoformat()}" if view.next_action else "none"
    )
    yn = {True: "yes", False: "no"}
    return "\n".join(
        [
            f"Loan {view.loan_id}" + ("  (closed)" if view.closed else ""),
            f"  stage            {view.stage.value}",
            f"  days past due    {view.days_past_due}",
            f"  assigned agent   {view.assigned_agent or '-'}",
            f"  next action      {nxt}",
            f"  overdue          {_money(view.overdue, currency)} {currency}",
            "  outstanding      "
            f"principal {_money(o.principal, currency)} · interest {_money(o.interest, currency)} · "
            f"penalty {_money(o.penalty, currency)} · fee {_money(o.fee, currency)}",
            f"  payoff today     {_money(o.total, currency)} {currency}",
            f"  contacts sent    {view.contacts_sent} · credit reported {yn[view.credit_reported]} · "
            f"legal referred {yn[view.legal_referred]}",
            "",
            format_installments(view.installments, currency),
        ]
    )


async def query_state(client: Client, loan_id: str, settings: Settings, wait: float = 30.0) -> Any:
    """The `state` query answer exactly as the workflow sent it (decoded JSON)."""
    handle = client.get_workflow_handle(workflow_id(loan_id))
    return await _answer(handle.query("state"), loan_id, settings, wait)


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    client = await connect(settings)
    raw = await query_state(client, args.loan_id, settings, args.wait)
    if args.json:
        print(json.dumps(raw, indent=2, ensure_ascii=False))
        return EXIT_OK
    view = CaseView.model_validate(raw)
    print(format_case(view, args.currency))
    return EXIT_OK


# --- list -------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_list_query(
    stage: str | None = None, min_dpd: int | None = None, agent: str | None = None, open_only: bool = False
) -> str:
    """A visibility query over the search attributes of DESIGN.md."""
    clauses = [f"WorkflowType = {_quote(WORKFLOW_TYPE)}"]
    if stage:
        clauses.append(f"{COLLECTION_STAGE.name} = {_quote(stage)}")
    if min_dpd is not None:
        clauses.append(f"{DAYS_PAST_DUE.name} >= {int(min_dpd)}")
    if agent:
        clauses.append(f"{ASSIGNED_AGENT.name} = {_quote(agent)}")
    if open_only:
        clauses.append('ExecutionStatus = "Running"')
    else:  # a loan that continued-as-new has one closed run per continuation: skip them
        clauses.append('ExecutionStatus != "ContinuedAsNew"')
    return " AND ".join(clauses)


STATUS_LABEL = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "closed",
    WorkflowExecutionStatus.FAILED: "FAILED",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "continued",
    WorkflowExecutionStatus.TIMED_OUT: "timed out",
}


async def list_cases(client: Client, query: str, limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async for wf in client.list_workflows(query, limit=limit):
        sa = wf.typed_search_attributes
        nxt = sa.get(NEXT_ACTION_AT)
        rows.append(
            {
                "loan_id": sa.get(LOAN_ID) or wf.id.removeprefix("loan-"),
                "stage": sa.get(COLLECTION_STAGE) or "",
                "days_past_due": sa.get(DAYS_PAST_DUE),
                "overdue": sa.get(AMOUNT_OVERDUE),
                "outstanding": sa.get(OUTSTANDING_BALANCE),
                "agent": sa.get(ASSIGNED_AGENT),
                "next_action_at": nxt.isoformat(timespec="minutes") if nxt else None,
                "status": STATUS_LABEL.get(wf.status, str(wf.status)) if wf.status else "",
            }
        )
    return rows


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    query = build_list_query(args.stage, args.min_dpd, args.agent, args.open)
    client = await connect(settings)
    try:
        rows = await list_cases(client, query, args.limit)
    except RPCError as exc:
        raise CLIError(f"visibility query {query!r} refused: {exc.message}") from None
    rows.sort(key=lambda r: (r["status"] != "running", -(r["days_past_due"] or 0), r["loan_id"]))
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print(f"no loans match: {query}")
        return EXIT_OK
    cur = args.currency

    def money(v: int | None) -> str:
        return "-" if v is None else _money(v, cur)

    table = [("LOAN", "STAGE", "DPD", "OVERDUE", "OUTSTANDING", "AGENT", "NEXT ACTION AT", "STATUS")]
    for r in rows:
        table.append(
            (
                r["loan_id"],
                r["stage"],
                "-" if r["days_past_due"] is None else str(r["days_past_due"]),
                money(r["overdue"]),
                money(r["outstanding"]),
                r["agent"] or "-",
                r["next_action_at"] or "-",
                r["status"],
            )
        )
    print(render_table(table, right={2, 3, 4}))
    more = " (limit reached: --limit N for more)" if len(rows) >= args.limit else ""
    print(f"\n{len(rows)} loan(s){more} · query: {query}")
    return EXIT_OK


# --- agents and borrowers (the lender's database) --------------------------------------


def _engine(settings: Settings) -> Any:
    from models.db import make_engine, upgrade_schema

    try:
        engine = make_engine(settings.database_url)
        upgrade_schema(engine)
    except Exception as exc:
        raise CLIError(f"database {settings.database_url}: {exc}") from None
    return engine


def cmd_agents(args: argparse.Namespace, settings: Settings) -> int:
    from models import repo
    from models.db import session_scope

    engine = _engine(settings)
    try:
        with session_scope(engine, immediate=args.action != "list") as session:
            if args.action == "add":
                agent = repo.add_agent(session, args.agent_id, args.name, max_cases=args.max_cases)
                print(f"agent {agent.agent_id} ({agent.name}) is active")
            elif args.action == "deactivate":
                agent = repo.deactivate_agent(session, args.agent_id)
                print(f"agent {agent.agent_id} deactivated; open cases re-assigned or queued")
            else:
                agents = repo.list_agents(session)
                loads = repo.agent_loads(session)
                if not agents:
                    print("no agents; add one with: python starter.py agents add ID NAME")
                    return EXIT_OK
                table = [("AGENT", "NAME", "ACTIVE", "MAX CASES", "OPEN CASES")]
                for a in agents:
                    table.append(
                        (
                            a.agent_id,
                            a.name,
                            "yes" if a.active else "no",
                            "-" if a.max_cases is None else str(a.max_cases),
                            str(loads.get(a.agent_id, 0)),
                        )
                    )
                print(render_table(table, right={3, 4}))
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_BAD_INPUT) from None
    finally:
        engine.dispose()
    return EXIT_OK


def cmd_borrowers(args: argparse.Namespace, settings: Settings) -> int:
    from models import repo
    from models.db import session_scope
    from models.tables import BorrowerCreate

    try:
        data = BorrowerCreate(
            borrower_id=args.borrower_id,
            name=args.name,
            phone_mobile=args.mobile,
            phone_alt=args.alt_phone,
            email=args.email,
            preferred_language=args.language,
            timezone=args.timezone,
        )
    except ValidationError as exc:
        raise CLIError(f"borrower: {_pydantic_message(exc)}", EXIT_BAD_INPUT) from None
    from domain.calendar import CalendarError, zone

    try:
        zone(args.timezone)
    except CalendarError as exc:
        raise CLIError(f"--timezone: {str(exc).split(': ', 1)[-1]}", EXIT_BAD_INPUT) from None
    engine = _engine(settings)
    try:
        with session_scope(engine) as session:
            repo.upsert_borrower(session, data)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_BAD_INPUT) from None
    finally:
        engine.dispose()
    print(f"borrower {args.borrower_id} saved in the lender's database (not in workflow history)")
    return EXIT_OK


# --- the parser -------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line plus a pointer to --help, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def _currency(text: str) -> str:
    code = text.upper()
    if code not in CURRENCY_EXPONENT:
        raise argparse.ArgumentTypeError(
            f"unknown currency {text!r} (known: {', '.join(sorted(CURRENCY_EXPONENT))})"
        )
    return code


def _stage(text: str) -> str:
    value = text.upper()
    if value not in {s.value for s in CollectionStage}:
        raise argparse.ArgumentTypeError(
            f"unknown stage {text!r} (one of {', '.join(s.value for s in CollectionStage)})"
        )
    return value


def _add_common(p: argparse.ArgumentParser, *, money: bool = True, wait: bool = True) -> None:
    if money:
        p.add_argument(
            "--currency",
            type=_currency,
            default="CNY",
            help="currency of amounts typed and shown (default CNY; minor units follow ISO 4217)",
        )
    if wait:
        p.add_argument(
            "--wait",
            type=float,
            default=60.0,
            metavar="SECONDS",
            help="give up waiting for the workflow's answer after this long (default 60)",
        )


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="starter.py",
        description="Operator CLI for loan collections on Temporal: one LoanCollection workflow per loan.",
        epilog=(
            "Connection: TEMPORAL_ADDRESS (default localhost:7233), TEMPORAL_NAMESPACE (default), "
            "TEMPORAL_TASK_QUEUE (loan-collections), DATABASE_URL for agents/borrowers.\n"
            "Exit codes: 0 done, 1 refused or failed, 2 bad input (nothing sent)."
        ),
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "disburse",
        help="start the collection workflow of newly disbursed loans",
        description=(
            "Start one LoanCollection workflow per loan (workflow id loan-<loan_id>).\n"
            "FILE holds one start input (a JSON object), an array of them, or JSON lines; '-' reads stdin.\n"
            "Every record is validated first (fields and the policy's terms); a bad record exits 2\n"
            "naming the record and the field, and nothing is started. A loan id already used\n"
            "(running or closed) is refused."
        ),
        epilog=(
            'example record: {"loan_id": "L-1001", "borrower_id": "B-1", "product": "installment",\n'
            '  "principal": 1200000, "annual_rate_bps": 1800, "term_months": 12,\n'
            '  "repayment_method": "equal_installment", "disbursed_on": "2025-01-15"}'
        ),
        formatter_class=fmt,
    )
    p.add_argument(
        "file", metavar="FILE", help="JSON object, JSON array or JSON lines of LoanStart ('-' = stdin)"
    )
    p.add_argument("--dry-run", action="store_true", help="validate only, start nothing")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="treat already started loans as done instead of refusing them (resuming a file)",
    )
    p.add_argument("--concurrency", type=int, default=16, metavar="N", help="starts in flight (default 16)")
    p.set_defaults(handler=cmd_disburse)

    p = sub.add_parser(
        "pay",
        help="record a payment (update record_payment; --async: signal payment_received)",
        description=(
            "Record a payment on a loan. AMOUNT is written as people write it (1234.56 or 1,234.56)\n"
            "and converted exactly to minor units. By default waits for the workflow's answer and\n"
            "prints the allocation and the new balance; a refusal (over the payoff amount, closed loan)\n"
            "exits 1 with the workflow's reason. The same --payment-id is never applied twice."
        ),
        epilog=(
            "example: python starter.py pay L-1001 1100.16 --payment-id PAY-20250215-1 "
            "--channel bank_transfer"
        ),
        formatter_class=fmt,
    )
    p.add_argument("loan_id", metavar="LOAN_ID")
    p.add_argument("amount", metavar="AMOUNT", help="e.g. 1234.56 (at most the currency's decimals)")
    p.add_argument("--payment-id", required=True, help="the payment's unique id from the payment gateway")
    p.add_argument("--channel", help="how it was paid, e.g. bank_transfer, alipay, wechat_pay, counter")
    p.add_argument("--paid-at", metavar="ISO", help="when it was paid, ISO 8601 with offset (default: now)")
    p.add_argument(
        "--async", dest="async_", action="store_true", help="fire and forget: send signal payment_received"
    )
    _add_common(p)
    p.set_defaults(handler=cmd_pay)

    p = sub.add_parser(
        "restructure",
        help="apply an approved restructuring: extension, reinstallment or waiver",
        description=(
            "Apply an approved restructuring (update apply_restructuring; --async: signal\n"
            "restructuring_approved). Kinds:\n"
            "  extension      --days N        move the unpaid due dates N days later (延期还款)\n"
            "  reinstallment  --months N      spread what is owed over N new installments (分期还款)\n"
            "  waiver         --waive-penalty and/or --amount X   waive penalty (all, or X)\n"
            "Prints the new schedule."
        ),
        epilog=(
            "example: python starter.py restructure L-1001 extension --days 30 --restructuring-id R-1 \\\n"
            "           --approved-by supervisor.li --approval-ref APR-2025-0042"
        ),
        formatter_class=fmt,
    )
    p.add_argument("loan_id", metavar="LOAN_ID")
    p.add_argument("kind", choices=[k.value for k in RestructuringKind])
    p.add_argument("--restructuring-id", required=True, help="unique id of this restructuring")
    p.add_argument("--approved-by", required=True, help="who approved it")
    p.add_argument("--approval-ref", required=True, help="the approval's reference (ticket, memo)")
    p.add_argument("--days", type=int, metavar="N", help="extension: days to move the due dates")
    p.add_argument("--months", type=int, metavar="N", help="reinstallment: the new number of installments")
    p.add_argument("--waive-penalty", action="store_true", help="waiver: waive all penalty")
    p.add_argument("--amount", metavar="X", help="waiver: waive this much (e.g. 120.50)")
    p.add_argument(
        "--async",
        dest="async_",
        action="store_true",
        help="fire and forget: send signal restructuring_approved",
    )
    _add_common(p)
    p.set_defaults(handler=cmd_restructure)

    p = sub.add_parser(
        "status",
        help="show a loan's case: stage, DPD, balances, next action, installments, agent",
        description="Show a loan's case from the workflow's `state` query.",
        epilog="example: python starter.py status L-1001 --json | jq .stage",
        formatter_class=fmt,
    )
    p.add_argument("loan_id", metavar="LOAN_ID")
    p.add_argument("--json", action="store_true", help="print exactly the `state` query answer as JSON")
    _add_common(p)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "list",
        help="list loans by stage, days past due or agent (visibility query)",
        description=(
            "List loans from Temporal visibility, filtered on the search attributes\n"
            "(CollectionStage, DaysPastDue, AssignedAgent). The same query works in the Web UI."
        ),
        epilog="example: python starter.py list --stage AGENT --min-dpd 45",
        formatter_class=fmt,
    )
    p.add_argument(
        "--stage", type=_stage, help="CURRENT, GRACE, EARLY, AGENT, LEGAL, CHARGED_OFF or PAID_OFF"
    )
    p.add_argument("--min-dpd", type=_positive_int, metavar="N", help="at least N days past due")
    p.add_argument("--agent", metavar="AGENT_ID", help="assigned to this collection agent")
    p.add_argument("--open", action="store_true", help="running workflows only (not closed loans)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N rows (default 100)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    _add_common(p, wait=False)
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser(
        "agents",
        help="collection agents in the lender's database: add, list, deactivate",
        description=(
            "Manage collection agents (DATABASE_URL). New AGENT-stage cases go to the least "
            "loaded active agent."
        ),
        formatter_class=fmt,
    )
    asub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    a = asub.add_parser(
        "add", help="add (or reactivate) an agent", description="Add or reactivate a collection agent."
    )
    a.add_argument("agent_id", metavar="ID")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--max-cases", type=int, metavar="N", help="at most N open cases")
    a.set_defaults(handler=cmd_agents)
    a = asub.add_parser(
        "list", help="list agents and their open cases", description="List agents with their load."
    )
    a.set_defaults(handler=cmd_agents)
    a = asub.add_parser(
        "deactivate",
        help="deactivate an agent (cases re-assigned)",
        description="Deactivate an agent; its open cases go to other agents or the unassigned queue.",
    )
    a.add_argument("agent_id", metavar="ID")
    a.set_defaults(handler=cmd_agents)

    p = sub.add_parser(
        "borrowers",
        help="borrowers' contact details in the lender's database",
        description=(
            "Borrowers' personal data lives only in the database (DATABASE_URL), never in workflow history."
        ),
        formatter_class=fmt,
    )
    bsub = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=_Parser)
    b = bsub.add_parser(
        "upsert",
        help="create or update a borrower",
        description="Create or update a borrower; the next contact uses the new details.",
        epilog=(
            "example: python starter.py borrowers upsert --borrower-id B-1 --name '王芳' "
            "--mobile '+86 100 0000 0001' --language zh-CN"
        ),
    )
    b.add_argument("--borrower-id", required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--mobile", help="mobile phone number")
    b.add_argument("--alt-phone", help="another phone number")
    b.add_argument("--email")
    b.add_argument(
        "--language", choices=["zh-CN", "en"], default="zh-CN", help="message language (default zh-CN)"
    )
    b.add_argument("--timezone", default="Asia/Shanghai", help="IANA time zone (default Asia/Shanghai)")
    b.set_defaults(handler=cmd_borrowers)
    return parser


# --- entry points -----------------------------------------------------------------------


async def amain(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one command inside a running event loop (tests call this directly)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error
        return int(exc.code) if isinstance(exc.code, int) else EXIT_BAD_INPUT
    settings = settings or get_settings()
    handler: Callable[[argparse.Namespace, Settings], Any] = args.handler
    try:
        result = handler(args, settings)
        if asyncio.iscoroutine(result):
            result = await result
        return int(result)
    except CLIError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(settled(amain(argv)))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


__all__ = [
    "CLIError",
    "DisburseReport",
    "StartRecord",
    "amain",
    "build_list_query",
    "build_parser",
    "connect",
    "disburse",
    "main",
    "parse_start_records",
    "query_state",
    "start_loan",
    "static_details",
    "static_summary",
    "validate_start",
]
