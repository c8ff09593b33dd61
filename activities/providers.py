"""Deliverers that talk to real providers, and the routing built from configuration.

- `SmtpDeliverer`: email (and letters sent by mail) through an SMTP server, with the
  standard library's `smtplib` (blocking: the contact activity runs in the worker's
  thread pool). `SMTP_URL` is `smtp://user:pass@host:port` (plain, or STARTTLS with
  `?starttls=true`) or `smtps://...` (implicit TLS); it logs in when a user is given.
  The mail is a MIME message with one plain-text UTF-8 part in the borrower's language,
  `From: MAIL_FROM`, a UTF-8 subject and a `Message-ID` derived from the outbox key
  (the same on every retry). A letter is `multipart/mixed`: the same plain-text part,
  then the letter as a printable PDF attachment (`activities/letters.py`). The server
  accepting the mail counts as delivered.
- `WebhookDeliverer`: the signed JSON webhook of an SMS or voice (IVR) provider adapter,
  with `httpx`: `POST {"message_id", "channel", "to", "text", "language", "loan_id"}`
  with `Idempotency-Key: <message_id>` and `X-Signature: sha256=<hex HMAC-SHA256 of the
  raw body with WEBHOOK_SECRET>`. A 2xx is accepted (a receipt or, for voice, a call
  outcome follows), every 4xx a final refusal (408 and 429 included: an adapter that wants
  the message again answers with a 5xx), a 5xx / timeout / refused connection
  `DeliveryUnavailable` (retried).
- `RoutingDeliverer`: one deliverer per channel, a fallback for the others.
- `deliverer_from_settings(settings)`: the worker's deliverer. With nothing configured,
  `LoggingDeliverer` (the development default) and a loud warning. With `LETTERS_DIR`
  set, the letters that are not mailed are written there as PDFs (`LetterFolder`).

Addresses are never logged or put into an error message unmasked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from activities.delivery import (
    Deliverer,
    DeliveryReceipt,
    DeliveryUnavailable,
    LoggingDeliverer,
    OutboundMessage,
    mask_address,
    redact_contacts,
)
from activities.letters import LetterFolder, attachment_name, letter_pdf
from domain.enums import Channel

if TYPE_CHECKING:
    from settings import Settings

log = logging.getLogger(__name__)

ANSWER_MAX = 200  # characters of a provider's answer kept in the outbox row
MAIL_CHANNELS = frozenset({Channel.EMAIL, Channel.LETTER})


class DeliveryConfigError(RuntimeError):
    """The delivery configuration cannot work (the worker refuses to start)."""


def _answer(text: str) -> str:
    """A provider's answer as it is kept: one line, short, no number or address in it."""
    text = redact_contacts(" ".join(text.split()))
    return text if len(text) <= ANSWER_MAX else text[: ANSWER_MAX - 1] + "…"


# --- SMTP ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool = False
    starttls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """`smtp://[user[:pass]@]host[:port][?starttls=true]` or `smtps://...` (implicit
        TLS); user and password are percent-decoded. Default ports 25 / 465 (587 with
        STARTTLS)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise DeliveryConfigError("SMTP_URL must start with smtp:// or smtps://")
        if not parts.hostname:
            raise DeliveryConfigError("SMTP_URL has no host")
        query = {k.lower(): v[-1].strip().lower() for k, v in parse_qs(parts.query).items()}
        starttls = query.get("starttls", "false") in ("1", "true", "yes", "on")
        implicit = scheme == "smtps"
        if implicit and starttls:
            raise DeliveryConfigError("SMTP_URL: smtps:// is already TLS; drop ?starttls=true")
        try:
            port = parts.port
        except ValueError as e:
            raise DeliveryConfigError("SMTP_URL has an invalid port") from e
        default_port = 465 if implicit else (587 if starttls else 25)
        return cls(
            host=parts.hostname,
            port=port or default_port,
            implicit_tls=implicit,
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )


def message_id_for(key: str, mail_from: str) -> str:
    """A Message-ID derived from the outbox key: the same on every retry, so a server or
    mailbox that deduplicates by Message-ID keeps one copy."""
    domain = mail_from.rpartition("@")[2].strip(" >") or "localhost"
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:40]}@{domain}>"


def build_email(message: OutboundMessage, mail_from: str, *, lender: str | None = None) -> EmailMessage:
    """The mail for `message`; a letter with its PDF attached (`lender` on its letterhead)."""
    mail = EmailMessage()
    mail["From"] = mail_from
    mail["To"] = Address(addr_spec=message.to)
    mail["Subject"] = message.subject or message.text.splitlines()[0][:120]
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = message_id_for(message.message_id, mail_from)
    mail.set_content(message.text, subtype="plain", charset="utf-8")
    if message.channel == Channel.LETTER:
        # The text stays the first part (what a mail client shows, and what the outbox
        # recorded); the PDF is the letter to print or keep.
        mail.add_attachment(
            letter_pdf(message, lender=lender),
            maintype="application",
            subtype="pdf",
            filename=attachment_name(message),
        )
    mail["Content-Language"] = message.language  # after set_content, which clears Content-*
    return mail


class SmtpDeliverer:
    """Email through SMTP. A new connection per message (reminders are few per minute,
    and a long-lived connection would need keep-alive across idle hours).
    `ssl_context` defaults to the system's trust store."""

    letters_by_mail = True

    def __init__(
        self,
        config: SmtpConfig,
        mail_from: str,
        *,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        lender: str | None = None,
    ) -> None:
        if not mail_from or "@" not in mail_from:
            raise DeliveryConfigError("MAIL_FROM must be an email address when SMTP_URL is set")
        self.config = config
        self.mail_from = mail_from
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.lender = lender  # the letterhead of mailed letters (None: the default name)

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        server: smtplib.SMTP
        if c.implicit_tls:
            server = smtplib.SMTP_SSL(c.host, c.port, timeout=self.timeout, context=self.ssl_context)
        else:
            server = smtplib.SMTP(c.host, c.port, timeout=self.timeout)
        try:
            server.ehlo()
            if c.starttls:
                server.starttls(context=self.ssl_context)
                server.ehlo()
            if c.username:
                server.login(c.username, c.password or "")
        except BaseException:
            server.close()
            raise
        return server

    def deliver(self, message: OutboundMessage) -> DeliveryReceipt:
        if message.channel not in MAIL_CHANNELS:
            return DeliveryReceipt(delivered=False, detail=f"smtp: cannot send {message.channel.value}")
        if "@" not in message.to:
            return DeliveryReceipt(delivered=False, detail="smtp: no email address")
        mail = build_email(message, self.mail_from, lender=self.lender)
        try:
            server = self._connect()
            try:
                server.send_message(mail)
            finally:
                try:
                    server.quit()
                except (smtplib.SMTPException, OSError):
                    server.close()
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()), (0, b""))
            return self._refused(code, text, message.to)
        except smtplib.SMTPDataError as e:  # the server refused this message's content
            return self._refused(e.smtp_code, e.smtp_error, message.to)
        except smtplib.SMTPResponseException as e:
            # The sender refused, authentication, STARTTLS required, the server busy: our
            # configuration to fix or a passing state, not this borrower's message. The
            # contact stays queued and is retried (then deferred to the next window).
            raise DeliveryUnavailable(f"smtp: {e.smtp_code} {type(e).__name__}") from None
        except (smtplib.SMTPException, OSError) as e:  # refused, reset, timeout, TLS
            raise DeliveryUnavailable(f"smtp: {type(e).__name__}: cannot reach the mail server") from None
        log.info("mail sent id=%s to=%s", message.message_id, mask_address(message.to))
        return DeliveryReceipt(delivered=True, detail="smtp: 250 accepted")

    @staticmethod
    def _refused(code: int, text: bytes | str, address: str) -> DeliveryReceipt:
        if 400 <= code < 500:  # transient (greylisting, mailbox busy): try again
            raise DeliveryUnavailable(f"smtp: {code} temporary refusal")
        # A 5xx refusal is final. The server's text may echo the address: masked.
        said = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        said = said.replace(address, mask_address(address))
        return DeliveryReceipt(delivered=False, detail=_answer(f"smtp: {code} {said}"))


# --- signed webhooks -----------------------------------------------------------------


def sign(body: bytes, secret: str) -> str:
    """The `X-Signature` value for `body`: `sha256=<hex HMAC-SHA256>`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def webhook_body(message: OutboundMessage) -> bytes:
    """The exact bytes sent (and signed): compact UTF-8 JSON."""
    payload = {
        "message_id": message.message_id,
        "channel": message.channel.value,
        "to": message.to,
        "text": message.text,
        "language": message.language,
        "loan_id": message.loan_id,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


DEFAULT_WEBHOOK_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class WebhookDeliverer:
    """An SMS or voice provider adapter behind a signed JSON webhook. The client is
    synchronous and kept for the worker's life (connection pooling, thread-safe).

    For voice a 2xx means the call is queued: the contact counts as a dial attempt (for
    the caps) that did not (yet) connect; the call's result comes back through
    `POST /calls` as a logged contact."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        name: str = "webhook",
        timeout: httpx.Timeout = DEFAULT_WEBHOOK_TIMEOUT,
    ) -> None:
        if not url.lower().startswith(("https://", "http://")):
            raise DeliveryConfigError(f"{name}: the webhook URL must be http(s)://")
        if not secret:
            raise DeliveryConfigError(f"{name}: WEBHOOK_SECRET must be set to sign webhook deliveries")
        self.url = url
        self.name = name
        self._secret = secret
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def deliver(self, message: OutboundMessage) -> DeliveryReceipt:
        body = webhook_body(message)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": message.message_id,
            "X-Signature": sign(body, self._secret),
        }
        try:
            answer = self._client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryUnavailable(f"{self.name}: the provider did not answer in time") from None
        except httpx.TransportError as e:  # refused, reset, DNS, TLS
            raise DeliveryUnavailable(
                f"{self.name}: cannot reach the provider ({type(e).__name__})"
            ) from None
        code = answer.status_code
        said = _answer(f"{code} {answer.text}")
        if 200 <= code < 300:
            log.info("%s accepted id=%s to=%s", self.name, message.message_id, mask_address(message.to))
            return DeliveryReceipt(delivered=True, connected=False, detail=said, awaiting_receipt=True)
        if 400 <= code < 500:
            # Final: the contract makes every 4xx a refusal (recorded, not retried), 408
            # and 429 too: an adapter that wants the message again answers with a 5xx.
            log.warning("%s refused id=%s: %s", self.name, message.message_id, code)
            return DeliveryReceipt(delivered=False, detail=said)
        raise DeliveryUnavailable(f"{self.name}: the provider answered {code}")


# --- routing -------------------------------------------------------------------------


class RoutingDeliverer:
    """Each channel to its deliverer; channels without one go to `fallback`. A letter
    goes by mail only when it has an email address (else to the fallback, which stands
    for the print house)."""

    def __init__(self, routes: Mapping[Channel, Deliverer], fallback: Deliverer | None = None) -> None:
        self.routes = dict(routes)
        self.fallback: Deliverer = fallback if fallback is not None else LoggingDeliverer()

    @property
    def letters_by_mail(self) -> bool:
        return Channel.LETTER in self.routes

    def route(self, message: OutboundMessage) -> Deliverer:
        chosen = self.routes.get(message.channel)
        if chosen is None or (message.channel == Channel.LETTER and "@" not in message.to):
            return self.fallback
        return chosen

    def deliver(self, message: OutboundMessage) -> DeliveryReceipt:
        return self.route(message).deliver(message)


def _secret(value: object) -> str | None:
    """The value of a setting (a SecretStr or a str), None when unset or blank."""
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    if raw is None:
        return None
    return str(raw).strip() or None


def deliverer_from_settings(settings: Settings) -> Deliverer:
    """The worker's deliverer: SMTP for email and letters (SMTP_URL, MAIL_FROM), the SMS
    and voice webhooks (SMS_WEBHOOK_URL, VOICE_WEBHOOK_URL, signed with WEBHOOK_SECRET),
    the log for every channel without a provider (push always). Letters that are not
    mailed go to the print house: the PDF in LETTERS_DIR when it is set, else the log.
    With nothing configured, the LoggingDeliverer and a loud warning: nothing reaches any
    borrower."""
    smtp_url = _secret(settings.smtp_url)
    secret = _secret(settings.webhook_secret)
    sms_url = (settings.sms_webhook_url or "").strip()
    voice_url = (settings.voice_webhook_url or "").strip()
    letters_dir = (settings.letters_dir or "").strip()
    lender = (settings.lender_name or "").strip() or None
    fallback: Deliverer = LoggingDeliverer()
    if letters_dir:
        fallback = LetterFolder(letters_dir, fallback, lender=lender)
        log.info("letters that are not mailed are written as PDF under %s", letters_dir)
    routes: dict[Channel, Deliverer] = {}
    if smtp_url:
        smtp = SmtpDeliverer(SmtpConfig.from_url(smtp_url), (settings.mail_from or "").strip(), lender=lender)
        routes[Channel.EMAIL] = routes[Channel.LETTER] = smtp
    if sms_url:
        routes[Channel.SMS] = WebhookDeliverer(sms_url, secret or "", name="sms")
    if voice_url:
        routes[Channel.VOICE] = WebhookDeliverer(voice_url, secret or "", name="voice")
    if not routes:
        log.warning(
            "NO DELIVERY PROVIDER CONFIGURED: every SMS, call, email and letter is only "
            "written to this log and reaches nobody (development default). Set SMTP_URL + "
            "MAIL_FROM, SMS_WEBHOOK_URL, VOICE_WEBHOOK_URL and WEBHOOK_SECRET to send."
            + (" Letters are written as PDF to LETTERS_DIR for printing." if letters_dir else "")
        )
        return fallback
    for channel in (Channel.SMS, Channel.VOICE, Channel.EMAIL):
        if channel not in routes:
            log.warning("no provider for %s: those messages are only logged", channel.value)
    log.info(
        "delivery: %s",
        ", ".join(f"{c.value} -> {type(d).__name__}" for c, d in sorted(routes.items())),
    )
    return RoutingDeliverer(routes, fallback)
