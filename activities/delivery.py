"""Handing a rendered message to the outside world: the port and the in-process
deliverers (the providers that talk to real servers are in `activities/providers.py`).

`Deliverer` is the port: `deliver(message: OutboundMessage) -> DeliveryReceipt`. The
message carries what a provider needs: the outbox key as `message_id` (a provider's
idempotency key: the same across every retry of one contact), the channel, the address
`to` (a phone number, an email address, or for letter/push a reference
"borrower:<id>" the provider resolves), the text, an email subject, the language and the
loan id; a letter may also carry its kind and the borrower's local date (for the
printable PDF, `activities/letters.py`).

Answers:
- `DeliveryReceipt(delivered=True)`: the provider has the message and nothing more will
  be heard of it (SMTP: the server accepted the mail) -> the outbox row is `delivered`;
- `DeliveryReceipt(delivered=True, awaiting_receipt=True)`: the provider accepted it and
  a later receipt says delivered or failed (an SMS / voice webhook's 2xx) -> `accepted`;
- `DeliveryReceipt(delivered=False, detail=...)`: a final refusal (a 4xx, a mailbox
  that does not exist), never retried -> `failed`, with the provider's answer;
- raising (`DeliveryUnavailable` for a 5xx, a timeout, a refused connection): try again.
  The activity is retried with backoff and the outbox row stays `queued`; past the
  contact window the contact is deferred to the next one.

For voice, `delivered` means a dial attempt was made (or queued with the provider) and
`connected` that it was answered.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, runtime_checkable

from domain.enums import Channel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboundMessage:
    message_id: str  # the outbox key (contact_attempt.idempotency_key): the idempotency key
    channel: Channel
    to: str
    text: str
    language: str
    loan_id: str
    subject: str | None = None  # email (and letters sent by mail)
    # Letters (activities/letters.py): the contact kind ('demand_letter', names the PDF)
    # and the borrower's local date of sending (printed on it; without it, the UTC date).
    kind: str | None = None
    local_date: date | None = None


@dataclass(frozen=True)
class DeliveryReceipt:
    delivered: bool
    connected: bool = False
    detail: str | None = None
    # The provider took the message; its outcome comes later as a receipt (POST /receipts).
    awaiting_receipt: bool = False


class DeliveryUnavailable(Exception):
    """The provider could not take the message now (a 5xx, a timeout, a refused
    connection): retryable. The message never contains the address."""


@runtime_checkable
class Deliverer(Protocol):
    def deliver(self, message: OutboundMessage) -> DeliveryReceipt: ...


def mails_letters(deliverer: Deliverer) -> bool:
    """Whether `deliverer` sends letters by mail (to the borrower's email address) rather
    than to a print house that resolves a postal reference."""
    return bool(getattr(deliverer, "letters_by_mail", False))


def mask_address(address: str) -> str:
    """A loggable form of a contact address: '13812345678' -> '138****5678',
    'wang.li@example.com' -> 'w***@example.com', references stay as they are."""
    if not address:
        return ""
    if address.startswith("borrower:"):
        return address
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    digits = "".join(ch for ch in address if ch.isdigit())
    if len(digits) >= 11:  # a mobile number with its prefix: 7 of 11 digits shown, as usual
        return f"{digits[:3]}****{digits[-4:]}"
    if len(digits) >= 7:  # shorter: never all of it (found by review: 7 of 7 were shown)
        return f"****{digits[-2:]}"
    return "***"


# A provider's answer is kept (outbox, the workflow's history as a contact's reason), and
# providers echo the number or address they refused, in any format: every email-shaped
# string and every run of 7+ digits (spaces, dashes, dots, brackets and a leading + within
# it) is masked before it is kept (found by the no-personal-data test).
_EMAIL = re.compile(r"[\w.+-]+(?:@|\(at\)|\[at\])[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)
_PHONE = re.compile(r"\+?\d(?:[\s()./\\_-]*\d){6,}")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# ISO dates and times (what our own reasons say: "next call allowed at 2026-12-06T01:00:
# 00.000001+00:00") are left as they are.
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?")


def redact_contacts(text: str) -> str:
    """`text` with every email address and phone number in it masked (`mask_address`);
    ISO dates and times are left as they are."""
    kept = _ISO_TIME.split(text)
    times = _ISO_TIME.findall(text)
    parts = [_redact_part(part) for part in kept]
    return "".join(p + t for p, t in zip(parts, [*times, ""], strict=True))


def _redact_part(text: str) -> str:
    # A provider echoing its request may percent-encode it (wang.li%40example.com).
    text = urllib.parse.unquote(text)
    text = _EMAIL.sub(lambda m: mask_address(re.sub(r"\(at\)|\[at\]", "@", m.group(), flags=re.I)), text)
    return _PHONE.sub(lambda m: m.group() if _DATE.fullmatch(m.group()) else mask_address(m.group()), text)


class LoggingDeliverer:
    """The development default: logs the channel, a masked address and the text length,
    and reports success (voice: connected). Nothing leaves the machine."""

    def __init__(self, *, voice_connected: bool = True) -> None:
        self.voice_connected = voice_connected

    def deliver(self, message: OutboundMessage) -> DeliveryReceipt:
        log.info(
            "deliver (log only) id=%s channel=%s to=%s chars=%d",
            message.message_id,
            message.channel.value,
            mask_address(message.to),
            len(message.text),
        )
        connected = self.voice_connected if message.channel == Channel.VOICE else False
        return DeliveryReceipt(delivered=True, connected=connected, detail="logged")


@dataclass
class RecordingDeliverer:
    """For tests: remembers every message in memory (thread-safe) and answers with
    `delivered` (voice: `connected` from `voice_connected`)."""

    voice_connected: bool = True
    delivered: bool = True
    sent: list[OutboundMessage] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def deliver(self, message: OutboundMessage) -> DeliveryReceipt:
        with self._lock:
            self.sent.append(message)
        return DeliveryReceipt(
            delivered=self.delivered,
            connected=self.delivered and message.channel == Channel.VOICE and self.voice_connected,
            detail=None if self.delivered else "refused",
        )
