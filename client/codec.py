"""Payload encryption (DESIGN.md part 3, "Payload encryption (optional)"): an AES-GCM
payload codec, and the one data converter that the worker, the CLI, the API and the
codec server all use.

    PAYLOAD_ENCRYPTION_KEY=<base64 of 32 bytes>   # AES-256-GCM; blank: encryption off
    PAYLOAD_ENCRYPTION_KEY_ID=2025-01             # written beside every sealed payload
    PAYLOAD_DECRYPTION_KEYS=2024-07=<base64>,...  # older keys, still read

A sealed payload is `metadata {encoding: binary/encrypted, encryption-key-id: <id>}` and
`data = nonce (12 random bytes) || AES-GCM(key, nonce, the whole original Payload)`, so
the original encoding and metadata come back on decode. Payloads that are not
`binary/encrypted` pass through decoding unchanged: loans started before encryption was
turned on still read. The current key also decrypts; rotating means: new key and id in
PAYLOAD_ENCRYPTION_KEY(_ID), the old `id=key` appended to PAYLOAD_DECRYPTION_KEYS.

With a codec the data converter also moves failure messages and stack traces into the
failure's encoded attributes, so they are sealed too. Search attributes and workflow ids
are never payloads of the codec: they stay readable (no personal data in them).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

if TYPE_CHECKING:
    from settings import Settings

__all__ = [
    "ENCODING",
    "KEY_ID_METADATA",
    "EncryptionCodec",
    "EncryptionSettingsError",
    "PayloadDecryptionError",
    "codec_from_settings",
    "data_converter",
]

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class EncryptionSettingsError(ValueError):
    """A payload key setting that cannot be used; the message names the variable and
    never shows a key."""


class PayloadDecryptionError(ValueError):
    """A sealed payload that this codec cannot open (unknown key id, or tampered)."""


def _key(name: str, text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionSettingsError(f"{name}: not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise EncryptionSettingsError(
            f"{name}: must be base64 of {KEY_BYTES} bytes (AES-256), got {len(raw)} bytes; "
            'make one with: python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"'
        )
    return raw


def _key_id(name: str, text: str) -> str:
    key_id = text.strip()
    if not _KEY_ID.fullmatch(key_id):  # not shown: it may be a key in the wrong place
        raise EncryptionSettingsError(f"{name}: a key id is 1-64 letters, digits or . _ : - (no = or ,)")
    return key_id


def parse_decryption_keys(text: str) -> dict[str, bytes]:
    """`id=base64key,id2=base64key` (blank: none)."""
    name = "PAYLOAD_DECRYPTION_KEYS"
    keys: dict[str, bytes] = {}
    for n, item in enumerate(part for part in text.split(",") if part.strip()):
        key_id, sep, key = item.partition("=")
        if not sep or not key_id.strip() or not key.strip("= \t"):  # a bare key ends in "="
            raise EncryptionSettingsError(f"{name}: entry {n + 1} is not id=base64key (a key without an id?)")
        # Entries are named by position, never by what was given: an entry written the
        # wrong way round (key=id) puts a key where the id goes (found by review).
        key_id = _key_id(f"{name} (entry {n + 1})", key_id)
        raw = _key(f"{name} (entry {n + 1})", key)
        if keys.get(key_id, raw) != raw:
            raise EncryptionSettingsError(f"{name}: entry {n + 1} gives a key id again with a different key")
        keys[key_id] = raw
    return keys


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole payload, a fresh 12-byte random nonce each time.
    `key_id`/`key` seal (None: decrypt only, payloads are sent as they are);
    `decryption_keys` (id → key) open older payloads, besides the current key."""

    def __init__(
        self,
        key_id: str | None = None,
        key: bytes | None = None,
        decryption_keys: Mapping[str, bytes] | None = None,
    ) -> None:
        if (key_id is None) != (key is None):
            raise EncryptionSettingsError("PAYLOAD_ENCRYPTION_KEY_ID: a key needs an id and an id a key")
        self.key_id = key_id
        self._sealer = AESGCM(key) if key is not None else None
        self._openers = {kid: AESGCM(raw) for kid, raw in (decryption_keys or {}).items()}
        if key_id is not None and self._sealer is not None:
            self._openers[key_id] = self._sealer
        self._key_id_bytes = key_id.encode() if key_id is not None else b""

    @property
    def seals(self) -> bool:
        return self._sealer is not None

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._openers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(p) for p in payloads]

    def seal(self, payload: Payload) -> Payload:
        if self._sealer is None:
            return payload
        nonce = os.urandom(NONCE_BYTES)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self._key_id_bytes},
            data=nonce + self._sealer.encrypt(nonce, payload.SerializeToString(), None),
        )

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # plaintext: written before encryption was turned on
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        opener = self._openers.get(key_id)
        if opener is None:
            known = ", ".join(self.key_ids) or "none"
            raise PayloadDecryptionError(
                f"payload sealed with key id {key_id!r}, which is not a known key "
                f"(known: {known}); add it to PAYLOAD_DECRYPTION_KEYS as {key_id}=<base64 key>"
            )
        data = payload.data
        if len(data) <= NONCE_BYTES:
            raise PayloadDecryptionError(f"payload sealed with key id {key_id!r} is truncated")
        try:
            plain = opener.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload sealed with key id {key_id!r} does not decrypt: tampered with, "
                "or the key given for that id is not the one that sealed it"
            ) from None
        opened = Payload()
        try:
            opened.ParseFromString(plain)
        except DecodeError:  # sealed with the key, but not a payload (found by review)
            raise PayloadDecryptionError(f"payload sealed with key id {key_id!r} is not a payload") from None
        return opened


def codec_from_settings(settings: Settings) -> EncryptionCodec | None:
    """The codec the settings ask for (None: no key at all, encryption off). Raises
    EncryptionSettingsError naming the variable for a key that cannot be used."""
    key_text = settings.payload_encryption_key.get_secret_value().strip()
    key_id_text = settings.payload_encryption_key_id.strip()
    old = parse_decryption_keys(settings.payload_decryption_keys.get_secret_value())
    if key_text and not key_id_text:
        raise EncryptionSettingsError(
            "PAYLOAD_ENCRYPTION_KEY_ID: must be set when PAYLOAD_ENCRYPTION_KEY is (the key's id)"
        )
    if key_id_text and not key_text:
        raise EncryptionSettingsError("PAYLOAD_ENCRYPTION_KEY: must be set when PAYLOAD_ENCRYPTION_KEY_ID is")
    if not key_text:
        return EncryptionCodec(decryption_keys=old) if old else None
    key = _key("PAYLOAD_ENCRYPTION_KEY", key_text)
    key_id = _key_id("PAYLOAD_ENCRYPTION_KEY_ID", key_id_text)
    if old.get(key_id, key) != key:
        raise EncryptionSettingsError(
            f"PAYLOAD_DECRYPTION_KEYS: key id {key_id!r} is PAYLOAD_ENCRYPTION_KEY_ID with another key"
        )
    return EncryptionCodec(key_id, key, old)


def data_converter(settings: Settings) -> DataConverter:
    """The project's data converter (pydantic) with the settings' codec, if any. The
    worker, the CLI and the API connect with it (settings.connect)."""
    codec = codec_from_settings(settings)
    if codec is None:
        return pydantic_data_converter
    if not codec.seals:  # decrypt only: old sealed payloads still read, new ones are plain
        return dataclasses.replace(pydantic_data_converter, payload_codec=codec)
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
