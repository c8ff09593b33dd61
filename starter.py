"""The operator CLI: disburse loans, take payments, grant restructurings, look at cases,
and the collector's desk (promises, disputes, hardship, contact preferences, logged
contacts, an agent's worklist).

    python starter.py --help
    python starter.py disburse loans.jsonl
    python starter.py pay L-1001 1234.56 --payment-id PAY-1
    python starter.py status L-1001 [--json]
    python starter.py promise L-1001 --id PR-1 --amount 500 --date 2025-03-05 --agent agent-wang
    python starter.py worklist --agent agent-wang

One function per command below, its options beside it, its help in its docstring. The
commands talk to Temporal through the client library (`client/`), which every door
shares; `agents` and `borrowers` write the lender's database (DATABASE_URL); contact
details never go into workflow history.

Exit codes: 0 done; 1 the operation was refused or failed (unknown loan, closed loan,
server unreachable, a refusal by the workflow); 2 bad input (a bad file, amount or
option), nothing sent.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table

from client import connect
from client.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_REFUSED, ClientError, bad_input
from client.loans import DESK_MESSAGES, DeskIn, LoanHealth, StartOutcome
from client.queries import build_list_query
from client.starts import StartRecord, parse_start_records
from client.worklist import hold_text, next_text
from domain.enums import (
    Channel,
    CollectionStage,
    ContactResult,
    DisputeOutcome,
    DisputeReason,
    DisputeStatus,
    HardshipReason,
    HardshipStatus,
    LoggedChannel,
    OverdueReason,
    PromiseStatus,
    RestructuringKind,
)
from domain.money import CURRENCY_EXPONENT, MoneyError, format_amount, parse_amount
from models.contract import (
    CONTACT_LOGGED,
    CONTACT_PREFERENCES_SET,
    DISPUTE_OPENED,
    DISPUTE_RESOLVED,
    HARDSHIP_APPROVED,
    HARDSHIP_ENDED,
    PAYMENT_RECEIVED,
    PROMISE_MADE,
    RESTRUCTURING_APPROVED,
)
from models.wire import (
    CaseView,
    ContactLogIn,
    DeskResult,
    DisputeOpenIn,
    DisputeResolveIn,
    HardshipEndIn,
    HardshipStartIn,
    InstallmentView,
    Outstanding,
    PaymentIn,
    PaymentResult,
    PreferencesIn,
    PromiseIn,
    RestructuringIn,
    ScheduleSummary,
)
from settings import Settings, get_settings, settled

PROG = "starter.py"

app = typer.Typer(
    name=PROG,
    help=(
        "Operator CLI for loan collections on Temporal: one LoanCollection workflow per loan.\n\n"
        "Connection: TEMPORAL_ADDRESS (default localhost:7233), TEMPORAL_NAMESPACE (default), "
        "TEMPORAL_TASK_QUEUE (loan-collections), DATABASE_URL for agents/borrowers.\n\n"
        "Exit codes: 0 done, 1 refused or failed, 2 bad input (nothing sent)."
    ),
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
agents_app = typer.Typer(
    help="Collection agents in the lender's database: add, list, deactivate. New AGENT-stage cases "
    "go to the least loaded active agent."
)
borrowers_app = typer.Typer(
    help="Borrowers' contact details in the lender's database (DATABASE_URL), never in workflow history."
)
dispute_app = typer.Typer(
    help="Disputes (异议): the borrower contests the debt. While one is open no collection contact, "
    "credit report or escalation runs."
)
hardship_app = typer.Typer(
    help="Hardship relief (困难帮扶): contacts and escalation hold until a date, and penalty does not accrue."
)
app.add_typer(agents_app, name="agents")
app.add_typer(borrowers_app, name="borrowers")
app.add_typer(dispute_app, name="dispute")
app.add_typer(hardship_app, name="hardship")


# --- output -----------------------------------------------------------------------------


def console(stderr: bool = False) -> Console:
    """Rich output on stdout (or stderr). A terminal gets its own width; a pipe or a file
    gets whole lines, never wrapped. Text is printed as is (no markup, no highlighting)."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(
        file=stream,
        markup=False,
        highlight=False,
        emoji=False,
        width=None if tty else 1000,
        soft_wrap=not tty,
    )


def table(*headers: str, right: Iterable[int] = ()) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    right = set(right)
    for i, h in enumerate(headers):
        t.add_column(h, justify="right" if i in right else "left", no_wrap=True)
    return t


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


def installments_table(rows: Iterable[InstallmentView], currency: str) -> Table:
    t = table("#", "due date", "principal", "interest", "paid", "status", right={0, 2, 3, 4})
    for r in rows:
        t.add_row(
            str(r.seq),
            r.due_date.isoformat(),
            _money(r.principal, currency),
            _money(r.interest, currency),
            _money(r.paid, currency),
            r.status.value,
        )
    return t


def format_schedule_head(loan_id: str, s: ScheduleSummary, currency: str) -> str:
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
        ]
    )


def format_case_head(view: CaseView, currency: str, health: LoanHealth | None = None) -> str:
    o = view.outstanding
    nxt = (
        f"{view.next_action.kind.value} at {view.next_action.at.isoformat()}" if view.next_action else "none"
    )
    if health is not None and not health.running and view.next_action:
        nxt = f"none (the workflow is {health.status}; {nxt} will not happen)"
    yn = {True: "yes", False: "no"}
    return "\n".join(
        [
            f"Loan {view.loan_id}" + ("  (closed)" if view.closed else ""),
            *([f"  workflow         {health.describe()}"] if health is not None else []),
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
            *protection_lines(view, currency),
        ]
    )


def protection_lines(view: CaseView, currency: str) -> list[str]:
    """The case's borrower protections, each line only when there is something to show:
    the hold, open promises, open disputes, active hardships, the channels the borrower
    accepts (when not all), broken promises this episode."""
    lines = []
    if view.hold is not None:
        lines.append(f"  hold             {hold_text(view.hold)}")
    promises = [p for p in view.promises if p.status is PromiseStatus.OPEN]
    if promises:
        text = "; ".join(
            f"{p.promise_id} {_money(p.amount, currency)} {currency} by {p.promised_date.isoformat()}"
            for p in promises
        )
        lines.append(f"  open promise     {text}")
    disputes = [d for d in view.disputes if d.status is DisputeStatus.OPEN]
    if disputes:
        text = "; ".join(
            f"{d.dispute_id} ({d.reason.value})"
            + (" escalated: past its response deadline" if d.escalated else "")
            for d in disputes
        )
        lines.append(f"  open disputes    {text}")
    hardships = [h for h in view.hardships if h.status is HardshipStatus.ACTIVE]
    if hardships:
        text = "; ".join(f"{h.hardship_id} until {h.until.isoformat()}" for h in hardships)
        lines.append(f"  hardship         {text}")
    if view.contact_channels and set(view.contact_channels) != set(Channel):
        lines.append(f"  contact only by  {', '.join(c.value for c in view.contact_channels)}")
    if view.broken_promises:
        lines.append(f"  broken promises  {view.broken_promises} this episode")
    return lines


def format_desk_result(loan_id: str, r: DeskResult, done: str, detail: str = "") -> str:
    """One line for a desk update's answer: what was done (or that it already was: a
    duplicate changes nothing), its status, and the case's protections now."""
    if r.duplicate:
        head = f"{r.kind} {r.id} was already {done} on loan {loan_id}: nothing changed"
    else:
        head = f"{r.kind} {r.id} {done} on loan {loan_id}" + (f" ({detail})" if detail else "")
    parts = [f"status {r.status}", f"hold {hold_text(r.hold)}"]
    if r.broken_promises:
        parts.append(f"{r.broken_promises} broken promise{'s' if r.broken_promises > 1 else ''} this episode")
    if r.kind == "preferences" or (r.contact_channels and set(r.contact_channels) != set(Channel)):
        parts.append(f"contact only by {', '.join(c.value for c in r.contact_channels)}")
    return f"{head}: " + " · ".join(parts)


# --- reading options --------------------------------------------------------------------


def read_start_file(path: str) -> list[StartRecord]:
    if path == "-":
        return parse_start_records(sys.stdin.read(), "stdin")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise bad_input(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise bad_input(f"{path}: cannot read: {exc}") from None
    return parse_start_records(text, path)


def parse_paid_at(text: str | None) -> datetime | None:
    return instant_arg(text, "--paid-at")


def instant_arg(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time with its UTC offset (None stays None), or bad input naming the option."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise bad_input(
            f"{option}: {text!r} is not an ISO 8601 time like 2025-03-01T10:30:00+08:00"
        ) from None
    if value.tzinfo is None:
        raise bad_input(f"{option}: {text!r} needs a UTC offset, e.g. {text}+08:00")
    return value


def date_arg(text: str, option: str) -> date:
    """A calendar date YYYY-MM-DD (the borrower's local date), or bad input naming the option."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise bad_input(f"{option}: {text!r} is not a date like 2025-03-05 (YYYY-MM-DD)") from None


def channels_arg(text: str, option: str = "--channels") -> list[Channel]:
    """'sms,email' -> the channels, in the order given, each once; anything else is bad
    input naming the option and the channels there are."""
    known = ", ".join(c.value for c in Channel)
    names = [part.strip().lower() for part in text.split(",")]
    if not any(names):
        raise bad_input(f"{option}: give at least one channel, comma-separated (of {known})")
    channels: list[Channel] = []
    for name in names:
        if not name:
            raise bad_input(f"{option}: {text!r} has an empty channel: write e.g. sms,email")
        try:
            channel = Channel(name)
        except ValueError:
            raise bad_input(f"{option}: {name!r} is not a channel (one of {known})") from None
        if channel not in channels:
            channels.append(channel)
    return channels


def amount_arg(text: str, currency: str, option: str) -> int:
    """An amount as people write it ('1,234.56') -> minor units, exactly."""
    try:
        value = parse_amount(text, currency, field=option)
    except MoneyError as exc:
        raise bad_input(str(exc)) from None
    if value <= 0:
        raise bad_input(f"{option}: must be greater than zero (got {text!r})")
    return value


def refused_fields(exc: ValidationError, options: Mapping[str, str]) -> str:
    """A validation error of a wire type built from a command's options, as one line
    naming the option (`--payment-id: ...`): `options` maps a field to its option or
    argument, any other field `f_g` is taken to be `--f-g`. Works with whatever the wire
    types refuse: no message is hard-coded here."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(p) for p in first["loc"])
    top = str(first["loc"][0]) if first["loc"] else ""
    name = options.get(top) or (f"--{top.replace('_', '-')}" if top else "(input)")
    label = name if field in ("", top) else f"{name} ({field})"
    message = " ".join(str(first["msg"]).split())  # one line, whatever the validator wrote
    value = first.get("input")
    got = ""
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:40] + "…"
        got = f" (got {shown!r}" + (f", {len(value)} characters)" if len(value) > 40 else ")")
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{label}: {message}{got}{tail}"


@contextmanager
def wire_input(what: str, options: Mapping[str, str] | None = None) -> Iterator[None]:
    """Around building a wire object from a command's options: what the wire type
    refuses is bad input (exit 2, one line naming the option), and nothing is sent."""
    try:
        yield
    except ValidationError as exc:
        raise bad_input(f"{what}: {refused_fields(exc, options or {})}") from None


def _currency(text: str) -> str:
    code = text.upper()
    if code not in CURRENCY_EXPONENT:
        raise typer.BadParameter(f"unknown currency {text!r} (known: {', '.join(sorted(CURRENCY_EXPONENT))})")
    return code


def _stage(text: str) -> str:
    value = text.upper()
    if value not in {s.value for s in CollectionStage}:
        raise typer.BadParameter(
            f"unknown stage {text!r} (one of {', '.join(s.value for s in CollectionStage)})"
        )
    return value


def _not_negative(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise typer.BadParameter(f"{value} must not be negative")
    return value


class NegativeAmounts(typer.core.TyperCommand):
    """A command whose AMOUNT may be typed as '-5': an amount for the amount check to
    refuse (exit 2, 'is not an amount'), not an unknown option. Every other token that
    looks like an option must be one of the command's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {
            **(kwargs.get("context_settings") or {}),
            "ignore_unknown_options": True,
        }
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        known = {name for param in self.get_params(ctx) for name in (*param.opts, *param.secondary_opts)}
        for token in args:
            if token == "--":
                break
            name = token.split("=", 1)[0]
            if token.startswith("-") and name not in known and not re.fullmatch(r"-[\d.,_]+", token):
                raise typer.BadParameter(f"no such option {name}", ctx=ctx)
        return super().parse_args(ctx, args)


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings | None = ctx.obj
    return settings or get_settings()


Currency = Annotated[
    str,
    typer.Option(parser=_currency, help="currency of amounts typed and shown (minor units follow ISO 4217)"),
]
Wait = Annotated[
    float, typer.Option(metavar="SECONDS", help="give up waiting for the workflow's answer after this long")
]
LoanId = Annotated[str, typer.Argument(metavar="LOAN_ID", show_default=False)]
AsJson = Annotated[
    bool, typer.Option("--json", help="print the workflow's answer as JSON (--async: what was sent)")
]


def async_option(signal: str) -> Any:
    """The `--async` option of a command whose update has the signal twin `signal`."""
    return typer.Option("--async", help=f"fire and forget: send signal {signal} instead of the update")


class Language(StrEnum):
    ZH_CN = "zh-CN"
    EN = "en"


# --- the commands -----------------------------------------------------------------------


@app.command(
    epilog='Example record: {"loan_id": "L-1001", "borrower_id": "B-1", "product": "installment", '
    '"principal": 1200000, "annual_rate_bps": 1800, "term_months": 12, '
    '"repayment_method": "equal_installment", "disbursed_on": "2025-01-15"}'
)
async def disburse(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE", help="JSON object, JSON array or JSON lines of LoanStart ('-' = stdin)"
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate only, start nothing")] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="treat already started loans as done instead of refusing them (resuming a file)",
        ),
    ] = False,
    concurrency: Annotated[int, typer.Option(metavar="N", help="starts in flight")] = 16,
) -> int:
    """Start the collection workflow of newly disbursed loans.

    Starts one LoanCollection workflow per loan (workflow id `loan-<loan_id>`). FILE holds
    one start input (a JSON object), an array of them, or JSON lines; '-' reads stdin.
    Every record is validated first (fields and the policy's terms); a bad record exits 2
    naming the record and the field, and nothing is started. A loan id already used
    (running or closed) is refused. A large file shows a progress bar on stderr.
    """
    records = read_start_file(file)
    if dry_run:
        print(f"{len(records)} record(s) valid; nothing started (--dry-run)")
        return EXIT_OK
    client = await connect(_settings(ctx))
    quiet = len(records) >= 200  # large files: problems only

    def line(o: StartOutcome) -> str:
        if o.result == "started":
            return f"started  {o.loan_id}  (workflow loan-{o.loan_id})"
        if o.result == "skipped":
            return f"skipped  {o.loan_id}  (already started)"
        return f"{o.result:<8} {o.loan_id}  {o.reason}"

    with Progress(
        TextColumn("disbursing"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        console=console(stderr=True),
        disable=len(records) < 20,
        redirect_stdout=sys.stdout.isatty(),  # loan lines above the bar, on stdout's terminal
        redirect_stderr=False,
    ) as bar:
        task = bar.add_task("disbursing", total=len(records))

        def show(o: StartOutcome) -> None:
            if not quiet or o.result in ("refused", "failed"):
                print(line(o), flush=True)
            bar.advance(task)

        report = await client.disburse(
            [r.start for r in records], skip_existing=skip_existing, concurrency=concurrency, on_outcome=show
        )
    parts = [f"{len(report.started)} started"]
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped (already started)")
    if report.refused:
        parts.append(f"{len(report.refused)} refused")
    print(", ".join(parts) + f" of {len(records)}")
    if report.refused:
        first_id, first_reason = report.refused[0]
        raise ClientError(
            f"loan {first_id}: {first_reason}"
            + (f" (and {len(report.refused) - 1} more refused)" if len(report.refused) > 1 else "")
        )
    return EXIT_OK


@app.command(
    cls=NegativeAmounts,
    epilog="Example: python starter.py pay L-1001 1100.16 --payment-id PAY-20250215-1 --channel alipay",
)
async def pay(
    ctx: typer.Context,
    loan_id: LoanId,
    amount: Annotated[
        str, typer.Argument(metavar="AMOUNT", help="e.g. 1234.56 (at most the currency's decimals)")
    ],
    payment_id: Annotated[str, typer.Option(help="the payment's unique id from the payment gateway")],
    channel: Annotated[
        str | None, typer.Option(help="how it was paid, e.g. bank_transfer, alipay, wechat_pay, counter")
    ] = None,
    paid_at: Annotated[
        str | None, typer.Option(metavar="ISO", help="when it was paid, ISO 8601 with offset (default: now)")
    ] = None,
    async_: Annotated[
        bool, typer.Option("--async", help=f"fire and forget: send signal {PAYMENT_RECEIVED}")
    ] = False,
    currency: Currency = "CNY",
    wait: Wait = 60.0,
) -> int:
    """Record a payment (update record_payment; --async: signal payment_received).

    AMOUNT is written as people write it (1234.56 or 1,234.56) and converted exactly to
    minor units; a comma only ever groups thousands (12,50 is refused: write 12.50).
    By default waits for the workflow's answer and prints the allocation and the new
    balance; a refusal (over the payoff amount, closed loan) exits 1 with the workflow's
    reason. The same --payment-id is never applied twice.
    """
    value, when = amount_arg(amount, currency, "amount"), parse_paid_at(paid_at)
    with wire_input("payment", {"amount": "AMOUNT"}):
        payment = PaymentIn(
            payment_id=payment_id,
            amount=value,
            paid_at=when,
            channel=channel,
            # The amount was read in this currency: the workflow refuses it for a loan in
            # another one, rather than booking 5000 yen as 500,000.
            currency=currency,
        )
    client = await connect(_settings(ctx))
    result = await client.record_payment(loan_id, payment, fire_and_forget=async_, wait=wait)
    if result is None:
        print(
            f"payment {payment.payment_id} of {_money(payment.amount, currency)} {currency} "
            f"sent to loan {loan_id} (signal {PAYMENT_RECEIVED}); check: "
            f"python starter.py status {loan_id}"
        )
    else:
        print(format_payment_result(loan_id, result, currency))
    return EXIT_OK


RESTRUCTURING_OPTIONS = {
    "kind": "KIND",
    "extension_days": "--days",
    "new_term_months": "--months",
    "waive_amount": "--amount",
}


def build_restructuring(
    kind: RestructuringKind,
    *,
    restructuring_id: str,
    approved_by: str,
    approval_ref: str,
    days: int | None,
    months: int | None,
    waive_penalty: bool,
    amount: str | None,
    currency: str,
) -> RestructuringIn:
    """The restructuring request, or a bad-input ClientError naming the option."""
    if kind is RestructuringKind.EXTENSION:
        if days is None:
            raise bad_input("extension: --days N is required (how many days the due dates move)")
        if months is not None or waive_penalty or amount is not None:
            raise bad_input("extension: only --days applies")
    elif kind is RestructuringKind.REINSTALLMENT:
        if months is None:
            raise bad_input("reinstallment: --months N is required (the new number of installments)")
        if days is not None or waive_penalty or amount is not None:
            raise bad_input("reinstallment: only --months applies")
    else:
        if not waive_penalty and amount is None:
            raise bad_input("waiver: give --waive-penalty (all penalty) and/or --amount X")
        if days is not None or months is not None:
            raise bad_input("waiver: --days and --months do not apply")
    for option, value in (("--days", days), ("--months", months)):
        if value is not None and value < 1:
            raise bad_input(f"{option}: must be at least 1 (got {value})")
    waive_amount = amount_arg(amount, currency, "--amount") if amount is not None else None
    with wire_input("restructuring", RESTRUCTURING_OPTIONS):
        return RestructuringIn(
            restructuring_id=restructuring_id,
            kind=kind,
            approved_by=approved_by,
            approval_ref=approval_ref,
            extension_days=days,
            new_term_months=months,
            waive_penalty=waive_penalty,
            waive_amount=waive_amount,
        )


@app.command(
    epilog="Example: python starter.py restructure L-1001 extension --days 30 --restructuring-id R-1 "
    "--approved-by supervisor.li --approval-ref APR-2025-0042"
)
async def restructure(
    ctx: typer.Context,
    loan_id: LoanId,
    kind: Annotated[RestructuringKind, typer.Argument(metavar="KIND", show_default=False)],
    restructuring_id: Annotated[str, typer.Option(help="unique id of this restructuring")],
    approved_by: Annotated[str, typer.Option(help="who approved it")],
    approval_ref: Annotated[str, typer.Option(help="the approval's reference (ticket, memo)")],
    days: Annotated[
        int | None, typer.Option(metavar="N", help="extension: days to move the due dates")
    ] = None,
    months: Annotated[
        int | None, typer.Option(metavar="N", help="reinstallment: the new number of installments")
    ] = None,
    waive_penalty: Annotated[bool, typer.Option("--waive-penalty", help="waiver: waive all penalty")] = False,
    amount: Annotated[
        str | None, typer.Option(metavar="X", help="waiver: waive this much (e.g. 120.50)")
    ] = None,
    async_: Annotated[
        bool, typer.Option("--async", help=f"fire and forget: send signal {RESTRUCTURING_APPROVED}")
    ] = False,
    currency: Currency = "CNY",
    wait: Wait = 60.0,
) -> int:
    """Apply an approved restructuring: extension, reinstallment or waiver.

    Sends the update apply_restructuring (--async: the signal restructuring_approved)
    and prints the new schedule. KIND is one of:

    - `extension --days N`: move the unpaid due dates N days later (延期还款);
    - `reinstallment --months N`: spread what is owed over N new installments (分期还款);
    - `waiver --waive-penalty` and/or `--amount X`: waive penalty (all, or X).
    """
    req = build_restructuring(
        kind,
        restructuring_id=restructuring_id,
        approved_by=approved_by,
        approval_ref=approval_ref,
        days=days,
        months=months,
        waive_penalty=waive_penalty,
        amount=amount,
        currency=currency,
    )
    client = await connect(_settings(ctx))
    summary = await client.apply_restructuring(loan_id, req, fire_and_forget=async_, wait=wait)
    if summary is None:
        print(
            f"restructuring {req.restructuring_id} sent to loan {loan_id} (signal "
            f"{RESTRUCTURING_APPROVED}); check: python starter.py status {loan_id}"
        )
        return EXIT_OK
    out = console()
    out.print(format_schedule_head(loan_id, summary, currency))
    out.print()
    out.print(installments_table(summary.installments, currency))
    return EXIT_OK


@app.command(epilog="Example: python starter.py status L-1001 --json | jq .stage")
async def status(
    ctx: typer.Context,
    loan_id: LoanId,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="print exactly the `state` query answer as JSON (the workflow's status: stderr)"
        ),
    ] = False,
    currency: Currency = "CNY",
    wait: Wait = 60.0,
) -> int:
    """Show a loan's case: its workflow's status, stage, DPD, balances, next action,
    installments, agent.

    Reads the workflow's execution status (Running, Completed, Failed, Terminated,
    TimedOut ...) and its `state` query. Exits 1 unless the workflow is Running or
    Completed: a Failed, Terminated or TimedOut loan, or a Running one that is stuck
    (its workflow task keeps failing), shows its status and why, and nothing will
    happen to it until someone acts. With --json, stdout is exactly the `state` answer
    (nothing when the workflow cannot answer) and the status line goes to stderr.
    """
    client = await connect(_settings(ctx))
    health = await client.health(loan_id)
    line = f"workflow {health.workflow_id}: {health.describe()}"
    if health.stuck:  # its tasks fail: it cannot answer a query either
        raise ClientError(f"loan {loan_id}: {line}")
    try:
        raw = await client.state(loan_id, wait)
    except ClientError as exc:
        if health.healthy:
            raise
        raise ClientError(f"loan {loan_id}: {line}; its case cannot be read: {exc.message}") from None
    if as_json:
        print(json.dumps(raw, indent=2, ensure_ascii=False))
        print(line, file=sys.stderr)
    else:
        view = CaseView.model_validate(raw)
        out = console()
        out.print(format_case_head(view, currency, health))
        out.print()
        out.print(installments_table(view.installments, currency))
    if health.healthy:
        return EXIT_OK
    if not as_json:
        print(f"error: loan {loan_id}: {line}: nothing more happens to this case", file=sys.stderr)
    return EXIT_REFUSED


@app.command("list", epilog="Example: python starter.py list --stage AGENT --min-dpd 45")
async def list_loans(
    ctx: typer.Context,
    stage: Annotated[
        str | None,
        typer.Option(parser=_stage, help="CURRENT, GRACE, EARLY, AGENT, LEGAL, CHARGED_OFF or PAID_OFF"),
    ] = None,
    min_dpd: Annotated[
        int | None, typer.Option(metavar="N", callback=_not_negative, help="at least N days past due")
    ] = None,
    agent: Annotated[
        str | None, typer.Option(metavar="AGENT_ID", help="assigned to this collection agent")
    ] = None,
    open_only: Annotated[
        bool, typer.Option("--open", help="running workflows only (not closed loans)")
    ] = False,
    limit: Annotated[int, typer.Option(metavar="N", help="at most N rows")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="print the rows as JSON")] = False,
    currency: Currency = "CNY",
) -> int:
    """List loans by stage, days past due or agent (visibility query).

    Filters on the search attributes (CollectionStage, DaysPastDue, AssignedAgent); the
    same query works in the Web UI. Visibility is eventually consistent: a loan that just
    changed may show its change a moment later.
    """
    query = build_list_query(stage, min_dpd, agent, open_only)
    client = await connect(_settings(ctx))
    rows = await client.list_cases(query, limit)
    rows.sort(key=lambda r: (r["status"] != "running", -(r["days_past_due"] or 0), r["loan_id"]))
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print(f"no loans match: {query}")
        return EXIT_OK

    def money(v: int | None) -> str:
        return "-" if v is None else _money(v, currency)

    t = table(
        "LOAN", "STAGE", "DPD", "OVERDUE", "OUTSTANDING", "AGENT", "NEXT ACTION AT", "STATUS", right={2, 3, 4}
    )
    for r in rows:
        t.add_row(
            r["loan_id"],
            r["stage"],
            "-" if r["days_past_due"] is None else str(r["days_past_due"]),
            money(r["overdue"]),
            money(r["outstanding"]),
            r["agent"] or "-",
            r["next_action_at"] or "-",
            r["status"],
        )
    out = console()
    out.print(t)
    more = " (limit reached: --limit N for more)" if len(rows) >= limit else ""
    out.print(f"\n{len(rows)} loan(s){more} · query: {query}")
    return EXIT_OK


# --- the collector's desk (DESIGN.md contract part 2) -----------------------------------


async def send_desk(
    ctx: typer.Context,
    loan_id: str,
    message: DeskIn,
    *,
    what: str,
    done: str,
    detail: str = "",
    async_: bool,
    as_json: bool,
    wait: float,
) -> int:
    """Send a desk message (its update, or with --async its signal twin) and print one
    line: what was done, or that it was already (a duplicate id changes nothing). A
    refusal by the workflow is a ClientError (exit 1) naming the field."""
    client = await connect(_settings(ctx))
    result = await client.desk(loan_id, message, fire_and_forget=async_, wait=wait)
    signal = DESK_MESSAGES[type(message)][1]
    if result is None:
        if as_json:
            print(json.dumps({"loan_id": loan_id, "signal": signal, "sent": message.model_dump(mode="json")}))
        else:
            print(
                f"{what} sent to loan {loan_id} (signal {signal}); check: python starter.py status {loan_id}"
            )
        return EXIT_OK
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        print(format_desk_result(loan_id, result, done, detail))
    return EXIT_OK


PROMISE_OPTIONS = {
    "promise_id": "--id",
    "amount": "--amount",
    "promised_date": "--date",
    "agent_id": "--agent",
}


@app.command(
    epilog="Example: python starter.py promise DEMO-027 --id PR-2025-0001 --amount 1,000 "
    "--date 2025-03-05 --agent agent-wang"
)
async def promise(
    ctx: typer.Context,
    loan_id: LoanId,
    promise_id: Annotated[str, typer.Option("--id", metavar="ID", help="the promise's unique id")],
    amount: Annotated[
        str, typer.Option(metavar="AMOUNT", help="how much the borrower promised, e.g. 1,000.00")
    ],
    promised_date: Annotated[
        str, typer.Option("--date", metavar="YYYY-MM-DD", help="by when (the borrower's local date)")
    ],
    agent: Annotated[str, typer.Option(metavar="AGENT_ID", help="the collector who took the promise")],
    made_at: Annotated[
        str | None,
        typer.Option(
            metavar="ISO", help="when it was made, ISO 8601 with offset, if entered later (default: now)"
        ),
    ] = None,
    async_: Annotated[bool, async_option(PROMISE_MADE)] = False,
    as_json: AsJson = False,
    currency: Currency = "CNY",
    wait: Wait = 60.0,
) -> int:
    """Record a promise to pay (承诺还款): update record_promise (--async: signal promise_made).

    While the promise is open the ladder holds (no overdue SMS, calls, letters, visits or
    escalation); it is kept once the payments since reach AMOUNT, and broken at the local
    midnight after --date otherwise. Only while something is overdue, one open promise at
    a time; the same --id is never recorded twice.
    """
    value = amount_arg(amount, currency, "--amount")
    day = date_arg(promised_date, "--date")
    when = instant_arg(made_at, "--made-at")
    with wire_input("promise", PROMISE_OPTIONS):
        # The currency the amount was read in: the workflow refuses it for a loan in
        # another currency rather than record a promise 100x off (as `pay` does).
        msg = PromiseIn(
            promise_id=promise_id,
            amount=value,
            promised_date=day,
            agent_id=agent,
            made_at=when,
            currency=currency,
        )
    detail = f"{_money(msg.amount, currency)} {currency} by {msg.promised_date.isoformat()}"
    return await send_desk(
        ctx,
        loan_id,
        msg,
        what=f"promise {msg.promise_id} ({detail})",
        done="recorded",
        detail=detail,
        async_=async_,
        as_json=as_json,
        wait=wait,
    )


DISPUTE_OPTIONS = {"dispute_id": "--id", "opened_by": "--by", "resolved_by": "--by"}


@dispute_app.command(
    "open", epilog="Example: python starter.py dispute open DEMO-014 --id DSP-1 --reason amount --by agent-li"
)
async def dispute_open(
    ctx: typer.Context,
    loan_id: LoanId,
    dispute_id: Annotated[str, typer.Option("--id", metavar="ID", help="the dispute's unique id")],
    reason: Annotated[DisputeReason, typer.Option(help="what the borrower contests", show_default=False)],
    by: Annotated[str, typer.Option(metavar="WHO", help="who took the dispute in")],
    opened_at: Annotated[
        str | None,
        typer.Option(
            metavar="ISO", help="when it was received, ISO 8601 with offset, if entered later (default: now)"
        ),
    ] = None,
    async_: Annotated[bool, async_option(DISPUTE_OPENED)] = False,
    as_json: AsJson = False,
    wait: Wait = 60.0,
) -> int:
    """Open a dispute (异议): update open_dispute (--async: signal dispute_opened).

    While it is open no collection contact, credit report or escalation runs; reminders
    of future due dates still go out. Still open after the policy's response days, it is
    escalated once and stays open.
    """
    when = instant_arg(opened_at, "--opened-at")
    with wire_input("dispute", DISPUTE_OPTIONS):
        msg = DisputeOpenIn(dispute_id=dispute_id, reason=reason, opened_by=by, opened_at=when)
    return await send_desk(
        ctx,
        loan_id,
        msg,
        what=f"dispute {msg.dispute_id}",
        done="opened",
        detail=f"reason {msg.reason.value}",
        async_=async_,
        as_json=as_json,
        wait=wait,
    )


@dispute_app.command(
    "resolve",
    epilog="Example: python starter.py dispute resolve DEMO-014 --id DSP-1 --outcome rejected "
    "--by supervisor.li",
)
async def dispute_resolve(
    ctx: typer.Context,
    loan_id: LoanId,
    dispute_id: Annotated[str, typer.Option("--id", metavar="ID", help="the open dispute's id")],
    outcome: Annotated[
        DisputeOutcome, typer.Option(help="upheld (the borrower is right) or rejected", show_default=False)
    ],
    by: Annotated[str, typer.Option(metavar="WHO", help="who resolved it")],
    async_: Annotated[bool, async_option(DISPUTE_RESOLVED)] = False,
    as_json: AsJson = False,
    wait: Wait = 60.0,
) -> int:
    """Resolve a dispute: update resolve_dispute (--async: signal dispute_resolved).

    The ladder resumes from today's days past due, never replaying held steps. An upheld
    dispute is normally followed by a waiver (restructure ... waiver).
    """
    with wire_input("dispute", DISPUTE_OPTIONS):
        msg = DisputeResolveIn(dispute_id=dispute_id, outcome=outcome, resolved_by=by)
    return await send_desk(
        ctx,
        loan_id,
        msg,
        what=f"dispute {msg.dispute_id} ({msg.outcome.value})",
        done="resolved",
        detail=msg.outcome.value,
        async_=async_,
        as_json=as_json,
        wait=wait,
    )


HARDSHIP_OPTIONS = {"hardship_id": "--id", "ended_by": "--by"}


@hardship_app.command(
    "start",
    epilog="Example: python starter.py hardship start DEMO-033 --id HS-1 --reason job_loss "
    "--until 2025-05-31 --approved-by supervisor.li --approval-ref APR-0101",
)
async def hardship_start(
    ctx: typer.Context,
    loan_id: LoanId,
    hardship_id: Annotated[str, typer.Option("--id", metavar="ID", help="the relief's unique id")],
    reason: Annotated[HardshipReason, typer.Option(help="why the borrower cannot pay", show_default=False)],
    until: Annotated[
        str, typer.Option(metavar="YYYY-MM-DD", help="the last day of the relief (the borrower's local date)")
    ],
    approved_by: Annotated[str, typer.Option(help="who approved it")],
    approval_ref: Annotated[str, typer.Option(help="the approval's reference (ticket, memo)")],
    async_: Annotated[bool, async_option(HARDSHIP_APPROVED)] = False,
    as_json: AsJson = False,
    wait: Wait = 60.0,
) -> int:
    """Approve hardship relief (困难帮扶): update start_hardship (--async: signal hardship_approved).

    Contacts and escalation hold through --until, and penalty does not accrue on those
    days. When it ends, the case goes to its agent (or the queue) for review.
    """
    day = date_arg(until, "--until")
    with wire_input("hardship", HARDSHIP_OPTIONS):
        msg = HardshipStartIn(
            hardship_id=hardship_id,
            reason=reason,
            until=day,
            approved_by=approved_by,
            approval_ref=approval_ref,
        )
    return await send_desk(
        ctx,
        loan_id,
        msg,
        what=f"hardship {msg.hardship_id} (until {msg.until.isoformat()})",
        done="started",
        detail=f"{msg.reason.value}, until {msg.until.isoformat()}",
        async_=async_,
        as_json=as_json,
        wait=wait,
    )


@hardship_app.command(
    "end", epilog="Example: python starter.py hardship end DEMO-033 --id HS-1 --by supervisor.li"
)
async def hardship_end(
    ctx: typer.Context,
    loan_id: LoanId,
    hardship_id: Annotated[str, typer.Option("--id", metavar="ID", help="the active relief's id")],
    by: Annotated[str, typer.Option(metavar="WHO", help="who ended it")],
    async_: Annotated[bool, async_option(HARDSHIP_ENDED)] = False,
    as_json: AsJson = False,
    wait: Wait = 60.0,
) -> int:
    """End hardship relief early: update end_hardship (--async: signal hardship_ended)."""
    with wire_input("hardship", HARDSHIP_OPTIONS):
        msg = HardshipEndIn(hardship_id=hardship_id, ended_by=by)
    return await send_desk(
        ctx,
        loan_id,
        msg,
        what=f"hardship end {msg.hardship_id}",
        done="ended",
        async_=async_,
        as_json=as_json,
        wait=wait,
    )


@app.command(
    epilog="Example: python starter.py preferences DEMO-012 --id PREF-1 --channels sms,email --by agent-li"
)
async def preferences(
    ctx: typer.Context,
    loan_id: LoanId,
    preference_id: Annotated[str, typer.Option("--id", metavar="ID", help="this change's unique id")],
    channels: Annotated[
        str,
        typer.Option(
            metavar="LIST",
            help="the channels the borrower accepts, comma-separated "
            f"({', '.join(c.value for c in Channel)}); a letter is always allowed",
        ),
    ],
    by: Annotated[str, typer.Option(metavar="WHO", help="who recorded the borrower's wish")],
    async_: Annotated[bool, async_option(CONTACT_PREFERENCES_SET)] = False,
    as_json: AsJson = False,
    wait: Wait = 60.0,
) -> int:
    """Set the channels a borrower accepts: update set_contact_preferences (--async:
    signal contact_preferences_set).

    Later contacts use only these channels: a step on another one falls back (voice ->
    SMS -> email -> letter) or is suppressed and logged.
    """
    chosen = channels_arg(channels)
    with wire_input("preferences", {"preference_id": "--id", "set_by": "--by"}):
        msg = PreferencesIn(preference_id=preference_id, channels=chosen, set_by=by)
    return await send_desk(
        ctx,
        loan_id,
        msg,
        what=f"preferences {msg.preference_id} ({', '.join(c.value for c in msg.channels)})",
        done="set",
        async_=async_,
        as_json=as_json,
        wait=wait,
    )


@app.command(
    "log-contact",
    epilog="Example: python starter.py log-contact DEMO-033 --id CALL-1 --agent agent-wang --channel voice "
    "--result reached --reason job_loss",
)
async def log_contact(
    ctx: typer.Context,
    loan_id: LoanId,
    contact_id: Annotated[str, typer.Option("--id", metavar="ID", help="the contact's unique id")],
    agents: Annotated[
        list[str],
        typer.Option(
            "--agent",
            metavar="AGENT_ID",
            help="a collector on the call or visit (repeat: a field visit needs two)",
        ),
    ],
    channel: Annotated[LoggedChannel, typer.Option(help="how", show_default=False)],
    result: Annotated[ContactResult, typer.Option(help="what came of it", show_default=False)],
    reason: Annotated[
        OverdueReason | None,
        typer.Option(help="why the loan is overdue, as the borrower said", show_default=False),
    ] = None,
    at: Annotated[
        str | None, typer.Option(metavar="ISO", help="when, ISO 8601 with offset (default: now)")
    ] = None,
    async_: Annotated[bool, async_option(CONTACT_LOGGED)] = False,
    as_json: AsJson = False,
    wait: Wait = 60.0,
) -> int:
    """Log a collector's call or visit: update log_contact (--async: signal contact_logged).

    The workflow is the compliance gate for people too: an outbound voice call outside
    the contact window or over the call caps is refused; the call counts toward the caps.
    """
    when = instant_arg(at, "--at") or datetime.now(UTC)
    with wire_input("contact", {"contact_id": "--id", "agent_ids": "--agent"}):
        msg = ContactLogIn(
            contact_id=contact_id, agent_ids=agents, channel=channel, result=result, reason=reason, at=when
        )
    from client.calls import borrower_caps_refusal, reserved_contact_id

    reserved = reserved_contact_id(msg.contact_id)
    if reserved is not None:
        raise bad_input(f"--id: {reserved}")
    if msg.channel is LoggedChannel.VOICE:
        over = _in_database(_settings(ctx), False, lambda s: borrower_caps_refusal(s, loan_id, when))
        if over is not None:
            raise ClientError(f"at: over the call caps across the borrower's loans: {over}")
    return await send_desk(
        ctx,
        loan_id,
        msg,
        what=f"contact {msg.contact_id} ({msg.channel.value}, {msg.result.value})",
        done="logged",
        detail=f"{msg.channel.value}, {msg.result.value}",
        async_=async_,
        as_json=as_json,
        wait=wait,
    )


@app.command(epilog="Example: python starter.py worklist --agent agent-wang")
async def worklist(
    ctx: typer.Context,
    agent: Annotated[str, typer.Option(metavar="AGENT_ID", help="the collector whose cases to list")],
    as_json: Annotated[
        bool, typer.Option("--json", help="print the rows as JSON (amounts in minor units)")
    ] = False,
    limit: Annotated[int, typer.Option(metavar="N", help="at most N cases")] = 500,
    concurrency: Annotated[int, typer.Option(metavar="N", help="state queries in flight")] = 8,
    currency: Currency = "CNY",
    wait: Wait = 30.0,
) -> int:
    """An agent's open cases in the order to work them, with what is next for each.

    First promises falling due today (the borrower's local today), then cases with
    broken promises in this episode, then by days past due × overdue, largest first.
    Cases are found by visibility (AssignedAgent, running: eventually consistent) and
    read by their `state` query. Exits 1 when a case's state could not be read (it is
    listed last, with the reason).
    """
    if not agent.strip():  # an empty agent would list every running loan (found by review)
        raise bad_input("--agent: must not be blank")
    if limit < 1 or concurrency < 1:
        raise bad_input(f"--{'limit' if limit < 1 else 'concurrency'}: must be at least 1")
    client = await connect(_settings(ctx))
    work = await client.worklist(agent.strip(), limit=limit, concurrency=concurrency, wait=wait)
    if as_json:
        print(json.dumps([item.row() for item in work.items], indent=2, ensure_ascii=False))
    elif not work.items:
        print(f"no open cases for agent {agent} (query: {work.query})")
    else:
        t = table("#", "LOAN", "STAGE", "DPD", "OVERDUE", "HOLD", "NEXT", "WHY FIRST", right={0, 3, 4})
        for n, item in enumerate(work.items, 1):
            v = item.view
            if v is None:
                t.add_row(str(n), item.loan_id, "?", "?", "?", "?", "?", item.why)
                continue
            t.add_row(
                str(n),
                item.loan_id,
                v.stage.value,
                str(v.days_past_due),
                _money(v.overdue, currency),
                hold_text(v.hold),
                next_text(v),
                item.why,
            )
        out = console()
        out.print(t)
        more = " (limit reached: --limit N for more)" if work.truncated else ""
        out.print(f"\n{len(work.items)} open case(s) for {agent}{more} · query: {work.query}")
    if work.unreadable:
        first = work.unreadable[0]
        raise ClientError(
            f"loan {first.loan_id}: {first.why}"
            + (f" (and {len(work.unreadable) - 1} more)" if len(work.unreadable) > 1 else "")
        )
    return EXIT_OK


# --- agents and borrowers (the lender's database) --------------------------------------


def _engine(settings: Settings) -> Any:
    from models.db import make_engine, upgrade_schema

    try:
        engine = make_engine(settings.database_url)
        upgrade_schema(engine)
    except Exception as exc:
        raise ClientError(f"database {settings.database_url}: {exc}") from None
    return engine


def _in_database(settings: Settings, write: bool, work: Any) -> Any:
    """Run `work(session)` in one transaction; a refusal by the repository is bad input."""
    from models.db import session_scope

    engine = _engine(settings)
    try:
        with session_scope(engine, immediate=write) as session:
            return work(session)
    except ValueError as exc:
        raise bad_input(str(exc)) from None
    finally:
        engine.dispose()


@agents_app.command("add")
def agents_add(
    ctx: typer.Context,
    agent_id: Annotated[str, typer.Argument(metavar="ID")],
    name: Annotated[str, typer.Argument(metavar="NAME")],
    max_cases: Annotated[int | None, typer.Option(metavar="N", help="at most N open cases")] = None,
) -> int:
    """Add (or reactivate) a collection agent."""
    from models import repo

    agent = _in_database(
        _settings(ctx), True, lambda s: repo.add_agent(s, agent_id, name, max_cases=max_cases)
    )
    print(f"agent {agent.agent_id} ({agent.name}) is active")
    return EXIT_OK


@agents_app.command("list")
def agents_list(ctx: typer.Context) -> int:
    """List agents and their open cases."""
    from models import repo

    agents, loads = _in_database(_settings(ctx), False, lambda s: (repo.list_agents(s), repo.agent_loads(s)))
    if not agents:
        print("no agents; add one with: python starter.py agents add ID NAME")
        return EXIT_OK
    t = table("AGENT", "NAME", "ACTIVE", "MAX CASES", "OPEN CASES", right={3, 4})
    for a in agents:
        t.add_row(
            a.agent_id,
            a.name,
            "yes" if a.active else "no",
            "-" if a.max_cases is None else str(a.max_cases),
            str(loads.get(a.agent_id, 0)),
        )
    console().print(t)
    return EXIT_OK


@app.command(
    epilog="Example: python starter.py audit DEMO-022 --event step_held --event dispute_opened",
)
def audit(
    ctx: typer.Context,
    loan_id: Annotated[str, typer.Argument(metavar="LOAN_ID")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            metavar="EVENT", help="only these events (repeatable): step_held, step_delayed, promise, ..."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="the latest N entries")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="print the entries as JSON lines")] = False,
) -> int:
    """A loan's audit log from the lender's database, oldest first: every message taken or
    refused, every step taken, and every step a hold, a preference, the contact window or
    a cap stopped or moved, with the rule (what compliance asks: why was this borrower not
    called on the 14th?)."""
    from models import repo

    if limit < 1:
        raise bad_input("--limit: must be at least 1")
    settings = _settings(ctx)
    wanted = event or ()
    rows = _in_database(settings, False, lambda s: repo.audit_log(s, loan_id, events=wanted, limit=limit))
    if as_json:
        for r in rows:
            line = {"at": r.at.isoformat(), "event": r.event, "detail": r.detail, "source": r.source}
            print(json.dumps(line, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        print(f"no audit entries for loan {loan_id} in {settings.database_url}")
        return EXIT_OK
    t = table("AT (UTC)", "EVENT", "DETAIL", "SOURCE")
    for r in rows:
        t.add_row(r.at.strftime("%Y-%m-%d %H:%M"), r.event, r.detail, r.source)
    console().print(t)
    return EXIT_OK


tasks_app = typer.Typer(
    help="Open case tasks (dispute_overdue, hardship_review): list them, mark one done.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("done", epilog="Example: python starter.py tasks done 12 --by agent-li")
def tasks_done(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="TASK_ID", help="the task's number (see `tasks`)")],
    by: Annotated[str, typer.Option(metavar="WHO", help="who did it")],
) -> int:
    """Mark a case task done (written to the loan's audit log with who did it)."""
    from models import repo

    if not by.strip():
        raise bad_input("--by: must not be blank")
    task = _in_database(_settings(ctx), True, lambda s: repo.finish_case_task(s, task_id, by.strip()))
    print(f"task {task.id} ({task.kind}, loan {task.loan_id}): {task.status}")
    return EXIT_OK


@tasks_app.callback(epilog="Example: python starter.py tasks --agent agent-li")
def tasks(
    ctx: typer.Context,
    agent: Annotated[str | None, typer.Option(metavar="AGENT_ID", help="this collector's tasks")] = None,
    queue: Annotated[bool, typer.Option("--queue", help="only the tasks no collector holds")] = False,
) -> int:
    """Open case tasks from the lender's database: a dispute left open past its response
    deadline (`dispute_overdue`) and a hardship that ended (`hardship_review`)."""
    from models import repo

    if ctx.invoked_subcommand is not None:
        return EXIT_OK
    if agent is not None and not agent.strip():
        raise bad_input("--agent: must not be blank")
    if agent is not None and queue:
        raise bad_input("--agent/--queue: give one of them, not both")
    rows = _in_database(_settings(ctx), False, lambda s: repo.open_case_tasks(s, agent, unassigned=queue))
    if not rows:
        print("no open case tasks")
        return EXIT_OK
    t = table("#", "FILED (UTC)", "LOAN", "TASK", "AGENT", "DPD", "OVERDUE", "DETAIL", right={0, 5, 6})
    for r in rows:
        t.add_row(
            str(r.id),
            r.at.strftime("%Y-%m-%d %H:%M"),
            r.loan_id,
            r.kind,
            r.agent_id or "(queue)",
            str(r.days_past_due),
            _money(r.overdue, r.currency),
            r.detail,
        )
    console().print(t)
    return EXIT_OK


@agents_app.command("deactivate")
def agents_deactivate(ctx: typer.Context, agent_id: Annotated[str, typer.Argument(metavar="ID")]) -> int:
    """Deactivate an agent: its open cases go to other agents or the unassigned queue."""
    from models import repo

    agent = _in_database(_settings(ctx), True, lambda s: repo.deactivate_agent(s, agent_id))
    print(f"agent {agent.agent_id} deactivated; open cases re-assigned or queued")
    return EXIT_OK


@borrowers_app.command(
    "upsert",
    epilog="Example: python starter.py borrowers upsert --borrower-id B-1 --name '王芳' "
    "--mobile '+86 100 0000 0001' --language zh-CN",
)
def borrowers_upsert(
    ctx: typer.Context,
    borrower_id: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    mobile: Annotated[str | None, typer.Option(help="mobile phone number")] = None,
    alt_phone: Annotated[str | None, typer.Option(help="another phone number")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    language: Annotated[Language, typer.Option(help="message language")] = Language.ZH_CN,
    timezone: Annotated[str, typer.Option(help="IANA time zone")] = "Asia/Shanghai",
) -> int:
    """Create or update a borrower; the next contact uses the new details."""
    from domain.calendar import CalendarError, zone
    from models import repo
    from models.tables import BorrowerCreate

    options = {"phone_mobile": "--mobile", "phone_alt": "--alt-phone", "preferred_language": "--language"}
    with wire_input("borrower", options):
        data = BorrowerCreate(
            borrower_id=borrower_id,
            name=name,
            phone_mobile=mobile,
            phone_alt=alt_phone,
            email=email,
            preferred_language=language.value,
            timezone=timezone,
        )
    try:
        zone(timezone)
    except CalendarError as exc:
        raise bad_input(f"--timezone: {str(exc).split(': ', 1)[-1]}") from None
    _in_database(_settings(ctx), False, lambda s: repo.upsert_borrower(s, data))
    print(f"borrower {borrower_id} saved in the lender's database (not in workflow history)")
    return EXIT_OK


# --- entry points -----------------------------------------------------------------------


async def amain(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run one command inside a running event loop (tests call this directly): parse
    with typer, then await the command. Errors are one line on stderr."""
    command = typer.main.get_command(app)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = command.main(args=args, prog_name=PROG, standalone_mode=False, obj=settings)
        if inspect.isawaitable(result):
            result = await result
        return EXIT_OK if result is None else int(result)
    except typer.TyperException as exc:  # a usage error: unknown option, missing argument ...
        where = getattr(getattr(exc, "ctx", None), "command_path", None) or PROG
        print(f"{where}: error: {exc.format_message()} (see {where} --help)", file=sys.stderr)
        return exc.exit_code if exc.exit_code else EXIT_BAD_INPUT
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # not input (that is wire_input's): an answer we cannot read
        print(f"error: unexpected data: {refused_fields(exc, {})}", file=sys.stderr)
        return EXIT_REFUSED
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(settled(amain(argv)))


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
