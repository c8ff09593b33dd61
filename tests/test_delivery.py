"""Outbound delivery against real servers started here: an aiosmtpd SMTP server in
process, and a local HTTP server playing the SMS / voice provider (it verifies the
signature over the raw body and deduplicates by Idempotency-Key, as a provider would).
No mocks: the deliverers speak SMTP and HTTP over sockets."""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from sqlalchemy.engine import Engine

from activities.contacts import ContactActivities
from activities.delivery import (
    DeliveryUnavailable,
    LoggingDeliverer,
    OutboundMessage,
    RecordingDeliverer,
)
from activities.providers import (
    DeliveryConfigError,
    RoutingDeliverer,
    SmtpConfig,
    SmtpDeliverer,
    WebhookDeliverer,
    deliverer_from_settings,
    message_id_for,
    sign,
)
from activities.templates import SUBJECTS, TEMPLATE_NAMES, TEMPLATES, render
from domain.enums import ActionKind, Channel
from models import repo
from models.db import session_scope
from models.tables import ContactAttempt
from models.wire import ContactParams
from settings import Settings
from tests.db_fixtures import db_url, engine  # noqa: F401
from tests.test_activities import add_borrower, contact, run

SECRET = "test-webhook-secret"
MAIL_FROM = "collections@lender.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the provider: a local HTTP server ------------------------------------------------


@dataclass
class Provider:
    """Answers each POST with the next scripted answer (then 200): an int status, or
    ("sleep", seconds) to be slower than the client's timeout. Verifies the signature of
    the raw body, and counts each message once by its Idempotency-Key."""

    script: list[Any] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_signatures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self) -> Any:
        with self.lock:
            return self.script.pop(0) if self.script else 200


@pytest.fixture
def provider() -> Iterator[Provider]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            key = self.headers.get("Idempotency-Key", "")
            signature = self.headers.get("X-Signature", "")
            expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
            with state.lock:
                state.requests.append({"key": key, "raw": raw, "signature": signature, "path": self.path})
            if not hmac.compare_digest(signature, expected):
                with state.lock:
                    state.bad_signatures += 1
                self._reply(401, {"error": "bad signature"})
                return
            answer = state.answer()
            if isinstance(answer, tuple):
                time.sleep(answer[1])
                answer = 200
            if 200 <= answer < 300:
                with state.lock:
                    state.accepted.setdefault(key, json.loads(raw))  # one message per key
                self._reply(answer, {"id": f"prov-{key}", "status": "queued"})
            else:
                self._reply(answer, {"error": f"scripted {answer}", "detail": "number not reachable"})

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/sms"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def sms(provider: Provider, timeout: float = 2.0) -> WebhookDeliverer:
    return WebhookDeliverer(provider.url, SECRET, name="sms", timeout=httpx.Timeout(timeout))


def message(
    key: str = "L1:reminder:1", channel: Channel = Channel.SMS, to: str = "13812345678"
) -> OutboundMessage:
    return OutboundMessage(
        message_id=key,
        channel=channel,
        to=to,
        text="【还款提醒】您的借款（编号L1）第1期应还款¥1,100.16",
        language="zh-CN",
        loan_id="L1",
        subject="还款提醒：借款L1第1期应还¥1,100.16",
    )


def row(engine: Engine, key: str = "L1:reminder:1") -> ContactAttempt:  # noqa: F811
    with session_scope(engine) as s:
        found = repo.contact_by_key(s, key)
        assert found is not None
        s.expunge(found)
        return found


# --- the webhook ----------------------------------------------------------------------


def test_webhook_body_is_signed_exactly_as_sent(provider: Provider) -> None:
    receipt = sms(provider).deliver(message())
    assert receipt.delivered and receipt.awaiting_receipt and not receipt.connected
    assert receipt.detail is not None and receipt.detail.startswith("200 ")
    (req,) = provider.requests
    assert provider.bad_signatures == 0
    assert req["signature"] == sign(req["raw"], SECRET)
    assert req["key"] == "L1:reminder:1"
    assert json.loads(req["raw"]) == {
        "message_id": "L1:reminder:1",
        "channel": "sms",
        "to": "13812345678",
        "text": "【还款提醒】您的借款（编号L1）第1期应还款¥1,100.16",
        "language": "zh-CN",
        "loan_id": "L1",
    }


def test_a_wrong_secret_is_refused_by_the_provider_and_final(provider: Provider) -> None:
    wrong = WebhookDeliverer(provider.url, "not-the-secret", name="sms")
    receipt = wrong.deliver(message())
    assert not receipt.delivered and (receipt.detail or "").startswith("401")
    assert provider.bad_signatures == 1 and provider.accepted == {}


def test_503_then_200_is_retried_with_the_same_key_and_counted_once(
    engine: Engine,  # noqa: F811
    provider: Provider,
) -> None:
    add_borrower(engine)
    provider.script = [503]
    acts = ContactActivities(engine, sms(provider))
    with pytest.raises(DeliveryUnavailable, match="503"):
        run(acts.send_contact, contact())
    assert row(engine).status == "queued"
    out = run(acts.send_contact, contact())  # the activity's retry
    assert out.status == "delivered" and out.line == "mobile"
    assert [r["key"] for r in provider.requests] == ["L1:reminder:1", "L1:reminder:1"]
    assert list(provider.accepted) == ["L1:reminder:1"]
    saved = row(engine)
    assert saved.status == "accepted" and saved.sent_at is not None
    assert (saved.provider_answer or "").startswith("200 ")
    # A repeat of the contact never posts again.
    assert run(acts.send_contact, contact()) == out
    assert len(provider.requests) == 2


def test_a_send_whose_record_was_lost_is_not_sent_twice_by_the_provider(
    engine: Engine,  # noqa: F811
    provider: Provider,
) -> None:
    """The worker died after the provider took the message and before the row was
    updated: the retry posts again under the same Idempotency-Key and the provider keeps
    one message."""
    add_borrower(engine)
    acts = ContactActivities(engine, sms(provider))
    provider.script = [503]
    with pytest.raises(DeliveryUnavailable):
        run(acts.send_contact, contact())  # the row is written queued
    sms(provider).deliver(message())  # "sent, then killed before recording"
    assert run(acts.send_contact, contact()).status == "delivered"
    assert [r["key"] for r in provider.requests] == ["L1:reminder:1"] * 3
    assert len(provider.accepted) == 1


def test_a_400_is_final_and_not_retried(engine: Engine, provider: Provider) -> None:  # noqa: F811
    add_borrower(engine)
    provider.script = [400]
    acts = ContactActivities(engine, sms(provider))
    out = run(acts.send_contact, contact())
    assert out.status == "failed" and (out.reason or "").startswith("400 ")
    assert "number not reachable" in (out.reason or "")
    assert run(acts.send_contact, contact()) == out
    assert len(provider.requests) == 1 and provider.accepted == {}
    saved = row(engine)
    assert saved.status == "failed" and (saved.provider_answer or "").startswith("400 ")


@pytest.mark.parametrize("code", [408, 429])
def test_408_and_429_are_final_refusals_too(engine: Engine, provider: Provider, code: int) -> None:  # noqa: F811
    """The contract makes every 4xx final: a provider adapter that is only busy or rate
    limited and wants the message again answers with a 5xx."""
    add_borrower(engine)
    provider.script = [code]
    acts = ContactActivities(engine, sms(provider))
    out = run(acts.send_contact, contact())
    assert out.status == "failed" and (out.reason or "").startswith(f"{code} ")
    assert run(acts.send_contact, contact()) == out  # the repeat is answered from the row
    assert len(provider.requests) == 1 and provider.accepted == {}
    assert row(engine).status == "failed"


def test_a_timeout_is_retried(engine: Engine, provider: Provider) -> None:  # noqa: F811
    add_borrower(engine)
    provider.script = [("sleep", 1.5)]
    acts = ContactActivities(engine, sms(provider, timeout=0.5))
    with pytest.raises(DeliveryUnavailable, match="in time"):
        run(acts.send_contact, contact())
    assert row(engine).status == "queued"
    assert run(acts.send_contact, contact()).status == "delivered"
    assert {r["key"] for r in provider.requests} == {"L1:reminder:1"}
    assert row(engine).status == "accepted"


def test_a_refused_connection_is_retried() -> None:
    closed = WebhookDeliverer(f"http://127.0.0.1:{free_port()}/sms", SECRET, name="sms")
    with pytest.raises(DeliveryUnavailable, match="cannot reach") as e:
        closed.deliver(message())
    assert "13812345678" not in str(e.value)


def test_a_retried_contact_past_the_window_is_deferred(engine: Engine, provider: Provider) -> None:  # noqa: F811
    from datetime import UTC, datetime, timedelta

    add_borrower(engine)
    provider.script = [503]
    acts = ContactActivities(engine, sms(provider))
    with pytest.raises(DeliveryUnavailable):
        run(acts.send_contact, contact(not_after=datetime.now(UTC) + timedelta(hours=1)))
    late = run(acts.send_contact, contact(not_after=datetime.now(UTC) - timedelta(seconds=1)))
    assert late.status == "deferred" and len(provider.requests) == 1
    assert row(engine).status == "queued"


def test_voice_accepted_counts_as_a_dial_that_did_not_connect(
    engine: Engine,  # noqa: F811
    provider: Provider,
) -> None:
    add_borrower(engine)
    voice = WebhookDeliverer(provider.url, SECRET, name="voice")
    acts = ContactActivities(engine, RoutingDeliverer({Channel.VOICE: voice}, RecordingDeliverer()))
    out = run(
        acts.send_contact,
        contact("L1:voice_call:1", kind=ActionKind.VOICE_CALL, channel=Channel.VOICE, template="voice_call"),
    )
    assert (out.status, out.dialed, out.connected, out.line) == ("delivered", True, False, "mobile")
    assert json.loads(provider.requests[0]["raw"])["channel"] == "voice"


# --- the outbox and receipts ----------------------------------------------------------


def test_outbox_queued_accepted_then_delivered_by_a_receipt(
    engine: Engine,  # noqa: F811
    provider: Provider,
) -> None:
    add_borrower(engine)
    acts = ContactActivities(engine, sms(provider))
    run(acts.send_contact, contact())
    assert row(engine).status == "accepted"
    with session_scope(engine, immediate=True) as s:
        first = repo.record_receipt(s, "L1:reminder:1", "delivered", "DELIVRD at handset")
    assert (first.status, first.changed) == ("delivered", True)
    with session_scope(engine, immediate=True) as s:
        again = repo.record_receipt(s, "L1:reminder:1", "delivered", "DELIVRD at handset")
        older = repo.record_receipt(s, "L1:reminder:1", "failed", "expired")
    assert (again.status, again.changed) == ("delivered", False)
    assert (older.status, older.changed) == ("delivered", False)  # final is not overwritten
    saved = row(engine)
    assert saved.status == "delivered" and saved.receipt_detail == "DELIVRD at handset"
    assert saved.receipt_at is not None and saved.reason is None
    assert run(acts.send_contact, contact()).status == "delivered"
    assert len(provider.requests) == 1


def test_a_failed_receipt_keeps_the_providers_word(engine: Engine, provider: Provider) -> None:  # noqa: F811
    add_borrower(engine)
    run(ContactActivities(engine, sms(provider)).send_contact, contact())
    with session_scope(engine, immediate=True) as s:
        result = repo.record_receipt(s, "L1:reminder:1", "failed", "UNDELIV: absent subscriber")
    assert (result.status, result.changed) == ("failed", True)
    saved = row(engine)
    assert saved.status == "failed" and saved.reason == "UNDELIV: absent subscriber"


def test_a_receipt_for_a_queued_row_settles_it_and_the_retry_does_not_send(
    engine: Engine,  # noqa: F811
    provider: Provider,
) -> None:
    add_borrower(engine)
    provider.script = [503]
    acts = ContactActivities(engine, sms(provider))
    with pytest.raises(DeliveryUnavailable):
        run(acts.send_contact, contact())
    with session_scope(engine, immediate=True) as s:
        assert repo.record_receipt(s, "L1:reminder:1", "delivered", None).changed
    assert run(acts.send_contact, contact()).status == "delivered"
    assert len(provider.requests) == 1


def test_receipt_bad_input(engine: Engine) -> None:  # noqa: F811
    with session_scope(engine) as s, pytest.raises(LookupError, match="message_id"):
        repo.record_receipt(s, "nope", "delivered", None)
    with session_scope(engine) as s, pytest.raises(ValueError, match="status"):
        repo.record_receipt(s, "nope", "accepted", None)
    with session_scope(engine) as s, pytest.raises(ValueError, match="message_id"):
        repo.record_receipt(s, " ", "delivered", None)


def test_a_receipt_never_touches_a_suppressed_row(engine: Engine) -> None:  # noqa: F811
    add_borrower(engine, phone_mobile=None, phone_alt=None)
    assert run(ContactActivities(engine, RecordingDeliverer()).send_contact, contact()).status == "suppressed"
    with session_scope(engine, immediate=True) as s:
        assert repo.record_receipt(s, "L1:reminder:1", "delivered", "x").status == "suppressed"


# --- SMTP -----------------------------------------------------------------------------


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    port: int = 0

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"


def _start_smtp(inbox: Inbox, **kwargs: Any) -> Controller:
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    inbox.port = controller.port
    return controller


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    box = Inbox()
    controller = _start_smtp(box)
    try:
        yield box
    finally:
        controller.stop()


def smtp_to(inbox: Inbox, url: str | None = None, **kw: Any) -> SmtpDeliverer:
    return SmtpDeliverer(SmtpConfig.from_url(url or f"smtp://127.0.0.1:{inbox.port}"), MAIL_FROM, **kw)


def test_the_mail_arrives_with_headers_and_utf8_text(inbox: Inbox) -> None:
    mail = message(channel=Channel.EMAIL, to="wang.li@example.com")
    receipt = smtp_to(inbox).deliver(mail)
    assert receipt.delivered and not receipt.awaiting_receipt
    (got,) = inbox.messages
    assert got["From"] == MAIL_FROM and got["To"] == "wang.li@example.com"
    assert got["Subject"] == "还款提醒：借款L1第1期应还¥1,100.16"
    assert got["Message-ID"] == message_id_for("L1:reminder:1", MAIL_FROM)
    assert got["Message-ID"].endswith("@lender.example>")
    assert got.get_content_type() == "text/plain" and got.get_content_charset() == "utf-8"
    assert got.get_content().strip() == mail.text
    assert inbox.envelopes == [(MAIL_FROM, ["wang.li@example.com"])]
    # The same outbox key: the same Message-ID on a retry.
    smtp_to(inbox).deliver(mail)
    assert inbox.messages[1]["Message-ID"] == got["Message-ID"]


def test_a_refused_mailbox_is_final_and_the_address_is_masked(inbox: Inbox) -> None:
    inbox.refuse.add("gone@example.com")
    receipt = smtp_to(inbox).deliver(message(channel=Channel.EMAIL, to="gone@example.com"))
    assert not receipt.delivered and (receipt.detail or "").startswith("smtp: 550")
    assert "gone@example.com" not in (receipt.detail or "") and "g***@example.com" in (receipt.detail or "")
    assert inbox.messages == []


def test_an_unreachable_mail_server_is_retried() -> None:
    deliverer = SmtpDeliverer(SmtpConfig.from_url(f"smtp://127.0.0.1:{free_port()}"), MAIL_FROM, timeout=2)
    with pytest.raises(DeliveryUnavailable, match="cannot reach"):
        deliverer.deliver(message(channel=Channel.EMAIL, to="wang.li@example.com"))


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login() -> None:
    box = Inbox()

    def authenticate(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"p@ss word")
        if ok:
            box.logins.append(data.login.decode())
        return AuthResult(success=ok)

    controller = _start_smtp(box, authenticator=authenticate, auth_require_tls=False, auth_required=True)
    try:
        good = smtp_to(box, f"smtp://mailer:p%40ss%20word@127.0.0.1:{box.port}")
        assert good.deliver(message(channel=Channel.EMAIL, to="wang.li@example.com")).delivered
        assert box.logins == ["mailer"] and len(box.messages) == 1
        bad = smtp_to(box, f"smtp://mailer:wrong@127.0.0.1:{box.port}", timeout=2)
        with pytest.raises(DeliveryUnavailable):  # refused (535), then the server hangs up
            bad.deliver(message(channel=Channel.EMAIL, to="wang.li@example.com"))
        assert len(box.messages) == 1
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl; skipped without it)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"no openssl to make a test certificate: {e}")
    return cert, key


def test_starttls_and_implicit_tls(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    mail = message(channel=Channel.EMAIL, to="wang.li@example.com")

    starttls_box = Inbox()
    controller = _start_smtp(starttls_box, tls_context=server_tls, require_starttls=True)
    try:
        plain = smtp_to(starttls_box)
        with pytest.raises(DeliveryUnavailable):  # the server wants STARTTLS first
            plain.deliver(mail)
        url = f"smtp://127.0.0.1:{starttls_box.port}?starttls=true"
        assert smtp_to(starttls_box, url, ssl_context=client_tls).deliver(mail).delivered
        assert len(starttls_box.messages) == 1
    finally:
        controller.stop()

    implicit_box = Inbox()
    controller = _start_smtp(implicit_box, ssl_context=server_tls)
    try:
        url = f"smtps://127.0.0.1:{implicit_box.port}"
        assert smtp_to(implicit_box, url, ssl_context=client_tls).deliver(mail).delivered
        assert len(implicit_box.messages) == 1
        untrusted = smtp_to(implicit_box, url)  # the system trust store does not know it
        with pytest.raises(DeliveryUnavailable):
            untrusted.deliver(mail)
    finally:
        controller.stop()


def test_an_email_contact_arrives_in_the_borrowers_language(
    engine: Engine,  # noqa: F811
    inbox: Inbox,
) -> None:
    add_borrower(engine, email="wang.li@example.com", preferred_language="en")
    acts = ContactActivities(engine, RoutingDeliverer({Channel.EMAIL: smtp_to(inbox)}, RecordingDeliverer()))
    out = run(acts.send_contact, contact("L1:reminder:e1", channel=Channel.EMAIL))
    assert out.status == "delivered"
    (got,) = inbox.messages
    assert got["Subject"] == "Payment reminder: CNY 1,100.16 on loan L1 is due on 15 Mar 2025"
    assert "CNY 1,100.16" in got.get_content() and got["Content-Language"] == "en"
    saved = row(engine, "L1:reminder:e1")
    assert saved.status == "delivered" and saved.line == "email" and saved.language == "en"
    assert saved.rendered_text == got.get_content().strip()
    assert run(acts.send_contact, contact("L1:reminder:e1", channel=Channel.EMAIL)) == out
    assert len(inbox.messages) == 1


def test_a_letter_goes_by_mail_when_letters_are_mailed(engine: Engine, inbox: Inbox) -> None:  # noqa: F811
    add_borrower(engine, email="wang.li@example.com")
    print_house = RecordingDeliverer()
    smtp = smtp_to(inbox)
    acts = ContactActivities(
        engine, RoutingDeliverer({Channel.LETTER: smtp, Channel.EMAIL: smtp}, print_house)
    )
    letter = contact(
        "L1:demand_letter:1", kind=ActionKind.DEMAND_LETTER, channel=Channel.LETTER, template="demand_letter"
    )
    assert run(acts.send_contact, letter).status == "delivered"
    (got,) = inbox.messages
    body = got.get_body(("plain",))
    assert got["Subject"].startswith("催告函") and body is not None and "催告函" in body.get_content()
    (pdf,) = got.iter_attachments()  # the printable letter (tests/test_letters.py)
    assert (
        pdf.get_content_type() == "application/pdf" and pdf.get_filename() == "demand_letter-L1.pdf"
    )  # named by its kind
    assert row(engine, "L1:demand_letter:1").line == "email"
    # Without an email address the letter goes to the print house (the postal reference).
    add_borrower(engine, borrower_id="B2", email=None)
    other = letter.model_copy(update={"key": "L2:demand_letter:1", "loan_id": "L2", "borrower_id": "B2"})
    assert run(acts.send_contact, other).status == "delivered"
    assert [m.to for m in print_house.sent] == ["borrower:B2"] and len(inbox.messages) == 1


# --- routing and configuration --------------------------------------------------------


def test_routing_picks_the_deliverer_per_channel(inbox: Inbox, provider: Provider) -> None:
    fallback = RecordingDeliverer()
    voice = WebhookDeliverer(provider.url.replace("/sms", "/voice"), SECRET, name="voice")
    router = RoutingDeliverer(
        {Channel.EMAIL: smtp_to(inbox), Channel.SMS: sms(provider), Channel.VOICE: voice}, fallback
    )
    assert router.deliver(message("k-sms", Channel.SMS)).awaiting_receipt
    assert router.deliver(message("k-voice", Channel.VOICE)).awaiting_receipt
    assert router.deliver(message("k-mail", Channel.EMAIL, "a@example.com")).delivered
    assert router.deliver(message("k-push", Channel.PUSH, "borrower:B1")).delivered
    assert router.deliver(message("k-letter", Channel.LETTER, "borrower:B1")).delivered
    assert [(r["path"], r["key"]) for r in provider.requests] == [("/sms", "k-sms"), ("/voice", "k-voice")]
    assert len(inbox.messages) == 1 and inbox.messages[0]["To"] == "a@example.com"
    assert [m.message_id for m in fallback.sent] == ["k-push", "k-letter"]
    assert not router.letters_by_mail


def test_nothing_configured_is_the_logging_default_with_a_loud_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SMTP_URL", "MAIL_FROM", "SMS_WEBHOOK_URL", "VOICE_WEBHOOK_URL", "WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LETTERS_DIR", raising=False)  # else letters are written, not only logged
    caplog.set_level(logging.WARNING)
    assert isinstance(deliverer_from_settings(Settings()), LoggingDeliverer)
    assert "NO DELIVERY PROVIDER CONFIGURED" in caplog.text


def test_routing_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SMTP_URL", "smtps://mailer:secret@mail.example:2465")
    monkeypatch.setenv("MAIL_FROM", MAIL_FROM)
    monkeypatch.setenv("SMS_WEBHOOK_URL", "https://sms.example/send")
    monkeypatch.delenv("VOICE_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    caplog.set_level(logging.WARNING)
    settings = Settings()
    assert "secret" not in repr(settings.smtp_url) and SECRET not in repr(settings)
    router = deliverer_from_settings(settings)
    assert isinstance(router, RoutingDeliverer) and router.letters_by_mail
    smtp = router.routes[Channel.EMAIL]
    assert isinstance(smtp, SmtpDeliverer) and router.routes[Channel.LETTER] is smtp
    assert smtp.config == SmtpConfig(
        "mail.example", 2465, implicit_tls=True, username="mailer", password="secret"
    )
    assert isinstance(router.routes[Channel.SMS], WebhookDeliverer)
    assert Channel.VOICE not in router.routes and "no provider for voice" in caplog.text
    assert isinstance(router.route(message(channel=Channel.VOICE)), LoggingDeliverer)


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"SMS_WEBHOOK_URL": "https://sms.example/send"}, "WEBHOOK_SECRET"),
        ({"SMTP_URL": "smtp://mail.example"}, "MAIL_FROM"),
        ({"SMTP_URL": "http://mail.example", "MAIL_FROM": MAIL_FROM}, "smtp://"),
        ({"SMTP_URL": "smtps://mail.example?starttls=true", "MAIL_FROM": MAIL_FROM}, "already TLS"),
        ({"VOICE_WEBHOOK_URL": "ftp://voice.example", "WEBHOOK_SECRET": SECRET}, "http"),
    ],
)
def test_a_configuration_that_cannot_work_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    for name in ("SMTP_URL", "MAIL_FROM", "SMS_WEBHOOK_URL", "VOICE_WEBHOOK_URL", "WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LETTERS_DIR", raising=False)  # else letters are written, not only logged
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DeliveryConfigError, match=error):
        deliverer_from_settings(Settings())


def test_smtp_url_forms() -> None:
    assert SmtpConfig.from_url("smtp://localhost") == SmtpConfig("localhost", 25)
    assert SmtpConfig.from_url("smtp://u@h?starttls=true") == SmtpConfig(
        "h", 587, starttls=True, username="u"
    )
    assert SmtpConfig.from_url("smtps://h") == SmtpConfig("h", 465, implicit_tls=True)


# --- templates ------------------------------------------------------------------------


def test_every_template_has_a_subject_in_both_languages_with_the_one_money_format() -> None:
    assert set(SUBJECTS["zh-CN"]) == set(SUBJECTS["en"]) == set(TEMPLATES["en"]) == TEMPLATE_NAMES
    params = ContactParams(amount=110_016, due_date=None, days_past_due=5, installment_seq=1)
    for template in TEMPLATE_NAMES:
        zh, en = render(template, "zh-CN", params, "L1"), render(template, "en", params, "L1")
        assert zh.subject and en.subject and "L1" in zh.subject and "L1" in en.subject
        assert "\n" not in zh.subject + en.subject
        if "¥" in zh.subject:
            assert "¥1,100.16" in zh.subject
        if "CNY" in en.subject:
            assert "CNY 1,100.16" in en.subject
    assert "¥1,100.16" in render("reminder_t1", "zh-CN", params, "L1").subject
