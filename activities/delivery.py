"""Handing a rendered message to the outside world.

`Deliverer` is the port; an SMS gateway, dialer, mail service or print house implements
`deliver(channel, address, text) -> DeliveryReceipt`. `address` is the phone number,
email address, or for letter/push a reference ("borrower:<id>") the provider resolves.

For voice, `delivered` means a dial attempt was made and `connected` that it was
answered. Implementations must not raise for a final refusal (return
`delivered=False` with a `detail`); raising means "try again" (the activity is retried
and the outbox row stays queued).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from domain.enums import Channel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryReceipt:
    delivered: bool
    connected: bool = False
    detail: str | None = None


@runtime_checkable
class Deliverer(Protocol):
    def deliver(self, channel: Channel, address: str, text: str) -> DeliveryReceipt: ...


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
    if len(digits) >= 7:
        return f"{digits[:3]}****{digits[-4:]}"
    return "***"


class LoggingDeliverer:
    """Default deliverer: logs the channel, a masked address and the text length, and
    reports success (voice: connected)."""

    def __init__(self, *, voice_connected: bool = True) -> None:
        self.voice_connected = voice_connected

    def deliver(self, channel: Channel, address: str, text: str) -> DeliveryReceipt:
        log.info("deliver channel=%s to=%s chars=%d", channel.value, mask_address(address), len(text))
        connected = self.voice_connected if channel == Channel.VOICE else False
        return DeliveryReceipt(delivered=True, connected=connected, detail="logged")


@dataclass
class Delivered:
    channel: Channel
    address: str
    text: str


@dataclass
class RecordingDeliverer:
    """For tests: remembers every message in memory (thread-safe) and answers with
    `receipt` (voice: `connected` from `voice_connected`)."""

    voice_connected: bool = True
    delivered: bool = True
    sent: list[Delivered] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def deliver(self, channel: Channel, address: str, text: str) -> DeliveryReceipt:
        with self._lock:
            self.sent.append(Delivered(channel, address, text))
        return DeliveryReceipt(
            delivered=self.delivered,
            connected=self.delivered and channel == Channel.VOICE and self.voice_connected,
            detail=None if self.delivered else "refused",
        )
