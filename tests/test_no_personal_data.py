"""No personal data in any history, and none in the logs (issue 11, security).

The design keeps the borrower's name, phones and email in the lender's database only:
the workflow carries the borrower id, and the contact activity reads the address and
renders the text at send time. These tests check that on the real pieces:

- `test_no_history_holds_personal_data`: borrowers with distinctive names, phones and
  emails; the real worker (`python worker.py`, configured by the environment, at DEBUG)
  sends their loans' reminders, overdue SMS, credit notice and call through signed
  webhooks, and (a borrower who accepts email only) the same ladder and the demand letter
  through a real SMTP server (aiosmtpd); payments come through the API, a promise (then
  broken: its SMS), a logged call, a dispute and contact preferences through the client
  library, and the `state` query is asked. Then EVERY history of the namespace is
  exported (list open + closed executions, fetch_history, to_json) and searched for the
  names, the phones (as given, digits only, national) and the emails (as given,
  lowercase, local part), every payload decoded. Twice: without the codec (plain JSON
  payloads: the workflow never carries personal data) and with the AES-GCM codec on
  (sealed: every payload but the search attributes is binary/encrypted, and opened with
  the key it still holds none). The worker's log, the API's log and the sinks' log lines
  hold none either.
- `test_deliverers_log_masked_addresses`: SMTP (accepted, refused with the address
  echoed, unreachable), webhook (accepted, refused, down) and the log deliverer log and
  raise with masked addresses only.

Runs on the time-skipping server (a fresh one per mode, so "every history" is exactly
this test's): it lists open and closed executions (ListWorkflowExecutions is not
implemented there, ListOpen/ListClosed are).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from google.protobuf.json_format import MessageToDict
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.api.common.v1 import Payload
from temporalio.api.workflowservice.v1 import (
    ListClosedWorkflowExecutionsRequest,
    ListClosedWorkflowExecutionsResponse,
    ListOpenWorkflowExecutionsRequest,
    ListOpenWorkflowExecutionsResponse,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from activities.delivery import DeliveryUnavailable, LoggingDeliverer, OutboundMessage, mask_address
from activities.providers import SmtpConfig, SmtpDeliverer, WebhookDeliverer
from api import create_app
from client.codec import ENCODING, EncryptionCodec, codec_from_settings, data_converter
from client.loans import CollectionsClient
from client.search_attributes import ensure_search_attributes
from domain.enums import Channel, ContactResult, DisputeReason, LoggedChannel
from models import repo
from models.db import make_engine, upgrade_schema
from models.tables import BorrowerCreate, ContactAttempt
from models.wire import ContactLogIn, DisputeOpenIn, PaymentIn, PreferencesIn, PromiseIn
from settings import Settings
from tests.conftest import _binary
from tests.loans import loan_start, local_today, sleep_until_local

SCRIPTS = str(Path(__file__).resolve().parent.parent / "scripts")
if SCRIPTS not in sys.path:  # imported as scripts/stack.py does (scripts/ is no package)
    sys.path.insert(0, SCRIPTS)

from inbox import SMTP_SINK_LOGGER, Inbox, MailHandler, make_handler  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "pii-probe-webhook-secret"
PAYMENT_SECRET = "pii-probe-gateway-secret"
API_TOKEN = "pii-probe-token"
MAIL_FROM = "collections@lender.example"
TZ = "Asia/Shanghai"


@dataclass(frozen=True)
class Person:
    borrower_id: str
    name: str
    phone: str
    alt: str | None
    email: str
    language: str

    def needles(self) -> list[str]:
        """Every form of this person's data that must not appear: the name and its parts,
        the phones as given, digits only and national (without +86), the email as given,
        lowercase and its local part."""
        found = [self.name, *(part for part in self.name.split() if len(part) >= 4)]
        if " " not in self.name and len(self.name) >= 4:  # 欧阳娜娜娜: surname 欧阳, given name 娜娜娜
            found.append(self.name[2:])
        for phone in (self.phone, self.alt):
            if phone:
                digits = "".join(ch for ch in phone if ch.isdigit())
                found += [phone, digits, digits.removeprefix("86"), phone.replace(" ", "")]
        local = self.email.partition("@")[0]
        found += [self.email, self.email.lower(), local, local.lower()]
        return sorted(set(found))


PEOPLE = (
    Person(
        "B-PII-1",
        name="Zhivago Quintessa Marlowe",
        phone="+86 139 7531 2468",
        alt="+86 186 0246 8135",
        email="Quintessa.Marlowe@pii-probe.example",
        language="en",
    ),
    Person(
        "B-PII-2",
        name="欧阳娜娜娜",
        phone="+86 158 6420 9753",
        alt=None,
        email="ouyang.nanana@pii-probe.example",
        language="zh-CN",
    ),
)
NEEDLES = sorted({n for p in PEOPLE for n in p.needles()})
# The SDK core's own bookkeeping in marker events, never passed through the codec: a local
# activity's seq / attempt / type / times, a patch id. (The local activity's result beside
# it is sealed.) Still searched for personal data like everything else.
CORE_MARKER_DATA = re.compile(r"markerRecordedEventAttributes\.details\.(data|patch-data)\.")


def personal_data_in(texts: dict[str, str]) -> list[str]:
    """Each (needle, where, context) found in `texts` (source name -> text), case-insensitive."""
    found = []
    for source, text in texts.items():
        lowered = text.lower()
        for needle in NEEDLES:
            at = lowered.find(needle.lower())
            if at >= 0:
                found.append(f"{needle!r} in {source}: ...{text[max(0, at - 120) : at + 80]!r}...")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- what a history holds, every payload decoded --------------------------------------------


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


@dataclass
class Exported:
    """The readable text of one history: every string of its JSON, every base64 value
    decoded (a payload's data and metadata), JSON payloads re-dumped unescaped; with a
    codec also every sealed payload opened."""

    texts: list[str]
    encodings: list[tuple[str, str]]  # (path, encoding) of every payload outside search attributes


def readable(history_json: str, opener: Any = None) -> Exported:
    texts: list[str] = [history_json]
    encodings: list[tuple[str, str]] = []

    def decoded(raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        texts.append(text)
        with suppress(ValueError):
            texts.append(json.dumps(json.loads(text), ensure_ascii=False))

    def payload(node: dict[str, Any], path: str) -> None:
        metadata = {k: _b64(v) or b"" for k, v in node.get("metadata", {}).items()}
        data = _b64(node.get("data", "")) or b""
        encoding = metadata.get("encoding", b"").decode(errors="replace")
        if "searchAttributes" not in path:
            encodings.append((path, encoding))
        if opener is not None and encoding == ENCODING.decode():
            opened = opener.open(Payload(metadata=metadata, data=data))
            decoded(opened.data)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("metadata"), dict) and "encoding" in node["metadata"]:
                payload(node, path)
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for n, value in enumerate(node):
                walk(value, f"{path}[{n}]")
        elif isinstance(node, str):
            texts.append(node)
            raw = _b64(node) if len(node) >= 8 else None
            if raw is not None:
                decoded(raw)

    walk(json.loads(history_json), "")
    return Exported(texts, encodings)


async def every_history(client: Client) -> dict[str, str]:
    """`workflow_id/run_id` -> WorkflowHistory.to_json() for every execution of the
    namespace, open and closed (each run of a continue-as-new chain is its own)."""
    executions: set[tuple[str, str]] = set()
    service = client.workflow_service
    for kind in ("open", "closed"):
        token = b""
        while True:
            page: ListOpenWorkflowExecutionsResponse | ListClosedWorkflowExecutionsResponse
            if kind == "open":
                page = await service.list_open_workflow_executions(
                    ListOpenWorkflowExecutionsRequest(
                        namespace=client.namespace, maximum_page_size=100, next_page_token=token
                    )
                )
            else:
                page = await service.list_closed_workflow_executions(
                    ListClosedWorkflowExecutionsRequest(
                        namespace=client.namespace, maximum_page_size=100, next_page_token=token
                    )
                )
            executions |= {(e.execution.workflow_id, e.execution.run_id) for e in page.executions}
            token = page.next_page_token
            if not token:
                break
    histories = {}
    for workflow_id, run_id in sorted(executions):
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories[f"{workflow_id}/{run_id}"] = history.to_json()
    return histories


# --- the providers' stand-ins: the local inbox's SMTP and webhook sinks -----------------------


@contextmanager
def inbox_sinks(directory: Path) -> Iterator[tuple[int, int]]:
    """The local inbox (scripts/inbox.py) on free ports: (smtp_port, http_port)."""
    inbox = Inbox(directory)
    smtp_port, http_port = free_port(), free_port()
    smtp = Controller(MailHandler(inbox), hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    http = ThreadingHTTPServer(("127.0.0.1", http_port), make_handler(inbox, WEBHOOK_SECRET))
    http.daemon_threads = True
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield smtp_port, http_port
    finally:
        http.shutdown()
        http.server_close()
        smtp.stop()


def seed(db: Engine) -> None:
    with Session(db) as s:
        for p in PEOPLE:
            repo.upsert_borrower(
                s,
                BorrowerCreate(
                    borrower_id=p.borrower_id,
                    name=p.name,
                    phone_mobile=p.phone,
                    phone_alt=p.alt,
                    email=p.email,
                    preferred_language=p.language,
                    timezone=TZ,
                ),
            )
        repo.add_agent(s, "agent-1", "Agent One")
        s.commit()


@asynccontextmanager
async def worker_process(env: dict[str, str], log_file: Path) -> AsyncIterator[None]:
    """`python worker.py` as an operator runs it, its log (stdout + stderr) in `log_file`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PAYLOAD_", "SMTP_"))}
    with open(log_file, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=ROOT,
            env={**clean, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(PAYMENT_SECRET.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Run:
    histories: dict[str, str]
    outbox: list[ContactAttempt]
    inbox: dict[str, int]
    worker_log: str
    codec: Any


async def run_the_book(mode: str, tmp_path: Path) -> Run:
    """Two borrowers' loans through reminders, the ladder, the desk and the API, on a
    fresh time-skipping server with the real worker; every history exported."""
    settings_fields: dict[str, Any] = {}
    if mode == "sealed":
        settings_fields = {
            "payload_encryption_key": base64.b64encode(os.urandom(32)).decode(),
            "payload_encryption_key_id": "pii-probe-1",
        }
    task_queue = f"pii-{mode}"
    db_url = f"sqlite:///{tmp_path / 'collections.db'}"
    settings = Settings(
        temporal_task_queue=task_queue,
        database_url=db_url,
        payment_webhook_secret=PAYMENT_SECRET,
        api_token=API_TOKEN,
        **settings_fields,
    )
    converter: DataConverter = data_converter(settings)
    assert (converter is pydantic_data_converter) == (mode == "plain")
    upgrade_schema(db_url)
    db = make_engine(db_url)
    seed(db)
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=converter
    )
    try:
        await ensure_search_attributes(env.client, env.client.namespace)
        collections = CollectionsClient(env.client, settings)
        worker_env = {
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": env.client.namespace,
            "TEMPORAL_TASK_QUEUE": task_queue,
            "DATABASE_URL": db_url,
            "MAIL_FROM": MAIL_FROM,
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "LOG_LEVEL": "DEBUG",
            **{k.upper(): v for k, v in settings_fields.items()},
        }
        log_file = tmp_path / "worker.log"
        with inbox_sinks(tmp_path / "inbox") as (smtp_port, http_port):
            worker_env |= {
                "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
                "SMS_WEBHOOK_URL": f"http://127.0.0.1:{http_port}/sms",
                "VOICE_WEBHOOK_URL": f"http://127.0.0.1:{http_port}/voice",
            }
            async with worker_process(worker_env, log_file):
                await drive(env, collections, settings, db)
        histories = await every_history(env.client)
    finally:
        await env.shutdown()
    with Session(db) as s:
        outbox = list(s.exec(select(ContactAttempt).order_by(col(ContactAttempt.id))))
    db.dispose()
    inbox = {
        name: len((tmp_path / "inbox" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines())
        for name in ("mail", "sms", "voice")
        if (tmp_path / "inbox" / f"{name}.jsonl").exists()
    }
    return Run(histories, outbox, inbox, log_file.read_text(encoding="utf-8"), codec_from_settings(settings))


async def drive(
    env: WorkflowEnvironment, collections: CollectionsClient, settings: Settings, db: Engine
) -> None:
    today = local_today(await env.get_current_time(), TZ)
    due = today + timedelta(days=4)
    sms_borrower = loan_start(
        today - timedelta(days=27), first_due_date=due, borrower_id="B-PII-1", term_months=3
    )
    mail_borrower = loan_start(
        today - timedelta(days=27), first_due_date=due, borrower_id="B-PII-2", term_months=3
    )
    a, b = sms_borrower.loan_id, mail_borrower.loan_id
    await collections.start(sms_borrower)
    await collections.start(mail_borrower)
    # The worker process is up once it answers a query.
    for _ in range(120):
        try:
            await collections.state(a, wait=5)
            break
        except Exception:  # ClientError: no worker answered yet
            await asyncio.sleep(0.5)
    await collections.state(a, wait=30)
    await collections.set_contact_preferences(
        b, PreferencesIn(preference_id="pref-1", channels=[Channel.EMAIL], set_by="ops-1")
    )
    # Reminders t-3, t-1, due today; DPD 1 and 3 SMS, the DPD 5 credit notice, the DPD 7 call.
    await sleep_until_local(env, due + timedelta(days=8), tz=TZ)
    now = await env.get_current_time()
    await collections.log_contact(
        a,
        ContactLogIn(
            contact_id="call-1",
            agent_ids=["agent-1"],
            channel=LoggedChannel.VOICE,
            result=ContactResult.REACHED,
            at=now - timedelta(hours=1),
        ),
    )
    await collections.record_promise(
        a,
        PromiseIn(
            promise_id="P-1", amount=10_000, promised_date=due + timedelta(days=10), agent_id="agent-1"
        ),
    )
    await sleep_until_local(env, due + timedelta(days=12), tz=TZ)  # broken: its SMS
    app = create_app(settings, client=collections, engine=db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:

        async def pay(loan_id: str, payment_id: str, amount: int) -> dict[str, Any]:
            body = json.dumps(
                {"loan_id": loan_id, "payment_id": payment_id, "amount": amount, "currency": "CNY"}
            ).encode()
            answer = await api.post(
                "/payments",
                content=body,
                headers={"X-Signature": sign(body), "Content-Type": "application/json"},
            )
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        async def loan(loan_id: str) -> dict[str, Any]:
            answer = await api.get(f"/loans/{loan_id}", headers={"Authorization": f"Bearer {API_TOKEN}"})
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        await pay(a, "PAY-A-1", 20_000)
        await collections.open_dispute(
            a, DisputeOpenIn(dispute_id="D-1", reason=DisputeReason.AMOUNT, opened_by="ops-1")
        )
        assert (await loan(a))["hold"]["reason"] == "DISPUTE"
        # The email-only borrower's ladder runs on to the DPD 61 demand letter (by mail).
        await sleep_until_local(env, due + timedelta(days=63), tz=TZ)
        payoff = (await loan(b))["outstanding"]["total"]
        closing = await pay(b, "PAY-B-1", payoff)
        assert closing["stage"] == "PAID_OFF"
        await collections.record_payment(a, PaymentIn(payment_id="PAY-A-2", amount=5_000))
        await collections.state(a)
    await collections.handle(b).result()
    await collections.handle(a).terminate("test finished")


@pytest.mark.temporal
@pytest.mark.parametrize("mode", ["plain", "sealed"])
async def test_no_history_holds_personal_data(
    mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    quiet_smtp_sink(caplog)
    caplog.set_level(logging.DEBUG)  # after: the handler's level too
    run = await run_the_book(mode, tmp_path)
    sinks_log = capfd.readouterr().err  # the webhook sink's request lines

    # Contacts really went out, on every channel, to these borrowers.
    sent = [r for r in run.outbox if r.status in ("accepted", "delivered")]
    by_kind = {(r.borrower_id, r.channel, r.kind) for r in sent}
    assert {("B-PII-1", "sms", "reminder"), ("B-PII-1", "sms", "overdue_sms")} <= by_kind, by_kind
    assert {("B-PII-1", "sms", "credit_notice"), ("B-PII-1", "voice", "voice_call")} <= by_kind, by_kind
    assert ("B-PII-1", "sms", "broken_promise") in by_kind, by_kind
    assert {("B-PII-2", "email", "overdue_sms"), ("B-PII-2", "letter", "demand_letter")} <= by_kind, by_kind
    assert {r.line for r in sent} <= {"mobile", "alt", "email"}
    assert run.inbox.get("sms", 0) >= 5 and run.inbox.get("voice", 0) >= 1 and run.inbox.get("mail", 0) >= 3

    # Every history of the namespace: both loans (one closed by its payoff).
    loans = {key.split("/")[0] for key in run.histories}
    assert {f"loan-{r.loan_id}" for r in sent} <= loans, loans
    texts: dict[str, str] = {}
    for key, history in run.histories.items():
        exported = readable(history, run.codec)
        texts[f"history {key}"] = "\n".join(exported.texts)
        plain = {enc for _, enc in exported.encodings}
        if mode == "plain":
            assert ENCODING.decode() not in plain, key
            assert "json/plain" in plain, key
        else:  # sealed: inputs, results, memo, summaries, failures: every payload
            unsealed = [
                (path, enc)
                for path, enc in exported.encodings
                if enc != ENCODING.decode() and not CORE_MARKER_DATA.search(path)
            ]
            assert not unsealed, (key, unsealed[:5])
            assert exported.encodings, key
    (tmp_path / "histories.json").write_text(json.dumps(run.histories), encoding="utf-8")

    assert "deliver" in run.worker_log or "accepted id=" in run.worker_log, run.worker_log[-2000:]
    texts["worker log"] = run.worker_log
    texts["test process log"] = caplog.text
    texts["inbox sinks log"] = sinks_log
    assert not personal_data_in(texts), "\n".join(personal_data_in(texts))


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_the_search_finds_personal_data_planted_in_a_payload(sealed: bool) -> None:
    """The control: each needle planted in a history's payload is found (sealed: once
    opened with the key, and not without it)."""
    codec = EncryptionCodec("control", os.urandom(32)) if sealed else None
    for needle in NEEDLES:
        payload = pydantic_data_converter.payload_converter.to_payloads([{"note": needle}])[0]
        if codec is not None:
            payload = codec.seal(payload)
        history = json.dumps({"events": [{"input": {"payloads": [MessageToDict(payload)]}}]})
        assert personal_data_in({"planted": "\n".join(readable(history, codec).texts)}), needle
        if codec is not None:
            assert not personal_data_in({"sealed": "\n".join(readable(history).texts)}), needle


# --- logs mask phones and emails ----------------------------------------------------------


class _RefusingHandler:
    """An SMTP server that refuses every recipient, echoing the address (as many do)."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


def _webhook_sink(code: int) -> tuple[ThreadingHTTPServer, str]:
    """A provider that answers `code`, echoing the number it was sent (as some do)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps({"error": f"number {body['to']} is not reachable"}).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/sms"


def _message(channel: Channel, person: Person) -> OutboundMessage:
    to = person.email if channel in (Channel.EMAIL, Channel.LETTER) else person.phone
    return OutboundMessage(
        message_id=f"probe:{channel.value}",
        channel=channel,
        to=to,
        text="您的还款已逾期。",
        language="zh-CN",
        loan_id="L-PII",
        subject="Overdue",
    )


def quiet_smtp_sink(caplog: pytest.LogCaptureFixture) -> None:
    """The stand-in mail server's own log (aiosmtpd's `mail.log`) at WARNING, as the local
    inbox sets it: at INFO it logs every command, recipients included. It stands for the
    provider, which is given the address by design; our own lines stay at DEBUG."""
    caplog.set_level(logging.WARNING, logger=SMTP_SINK_LOGGER)


def test_deliverers_log_masked_addresses(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    quiet_smtp_sink(caplog)
    caplog.set_level(logging.DEBUG)  # after: the handler's level too
    person = PEOPLE[0]
    said: list[str] = []  # what goes back to the workflow (receipt details) and errors raised
    with inbox_sinks(tmp_path / "inbox") as (smtp_port, http_port):
        mail = SmtpDeliverer(SmtpConfig.from_url(f"smtp://127.0.0.1:{smtp_port}"), MAIL_FROM)
        for channel in (Channel.EMAIL, Channel.LETTER):
            receipt = mail.deliver(_message(channel, person))
            assert receipt.delivered, receipt
        sms = WebhookDeliverer(f"http://127.0.0.1:{http_port}/sms", WEBHOOK_SECRET, name="sms")
        voice = WebhookDeliverer(f"http://127.0.0.1:{http_port}/voice", WEBHOOK_SECRET, name="voice")
        for deliverer, channel in ((sms, Channel.SMS), (voice, Channel.VOICE)):
            receipt = deliverer.deliver(_message(channel, person))
            assert receipt.delivered and receipt.awaiting_receipt, receipt
        sms.close()
        voice.close()
        stored = (tmp_path / "inbox" / "sms.jsonl").read_text(encoding="utf-8")
        assert mask_address(person.phone) in stored  # the sink got the number and kept it masked
    refusing = Controller(_RefusingHandler(), hostname="127.0.0.1", port=free_port())
    refusing.start()
    try:
        refused = SmtpDeliverer(SmtpConfig.from_url(f"smtp://127.0.0.1:{refusing.port}"), MAIL_FROM).deliver(
            _message(Channel.EMAIL, person)
        )
    finally:
        refusing.stop()
    assert not refused.delivered and refused.detail and "550" in refused.detail
    assert "Q***@pii-probe.example" in refused.detail
    said.append(refused.detail)
    down = SmtpDeliverer(SmtpConfig.from_url(f"smtp://127.0.0.1:{free_port()}"), MAIL_FROM, timeout=2)
    with pytest.raises(DeliveryUnavailable) as unreachable:
        down.deliver(_message(Channel.EMAIL, person))
    said.append(str(unreachable.value))
    for code in (500, 503):
        server, url = _webhook_sink(code)
        try:
            with pytest.raises(DeliveryUnavailable) as failing:
                WebhookDeliverer(url, WEBHOOK_SECRET, name="sms").deliver(_message(Channel.SMS, person))
        finally:
            server.shutdown()
            server.server_close()
        said.append(str(failing.value))
    server, url = _webhook_sink(422)  # a final refusal: logged with its code only
    try:
        WebhookDeliverer(url, WEBHOOK_SECRET, name="sms").deliver(_message(Channel.SMS, person))
    finally:
        server.shutdown()
        server.server_close()
    for channel in Channel:
        LoggingDeliverer().deliver(_message(channel, person))

    logged = caplog.text
    assert "mail sent id=probe:email to=Q***@pii-probe.example" in logged
    assert f"sms accepted id=probe:sms to={mask_address(person.phone)}" in logged
    assert f"deliver (log only) id=probe:voice channel=voice to={mask_address(person.phone)}" in logged
    assert "sms refused id=probe:sms: 422" in logged
    assert not personal_data_in({"log": logged, "said": "\n".join(said)}), personal_data_in(
        {"log": logged, "said": "\n".join(said)}
    )


def test_a_provider_refusal_that_echoes_the_number_is_masked_before_it_reaches_the_workflow() -> None:
    """The provider's answer becomes the outbox reason and the contact's reason in the
    workflow's history: a number or address it echoes is masked first (found by this
    test: the webhook kept the answer as it came)."""
    person = PEOPLE[0]
    server, url = _webhook_sink(400)
    try:
        receipt = WebhookDeliverer(url, WEBHOOK_SECRET, name="sms").deliver(_message(Channel.SMS, person))
    finally:
        server.shutdown()
        server.server_close()
    assert not receipt.delivered and receipt.detail and receipt.detail.startswith("400 ")
    assert not personal_data_in({"receipt detail": receipt.detail}), receipt.detail
