"""Found by the security review of payload encryption, the codec server and the API's
hardening (issue 11); each test failed on the code before its fix."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlmodel import Session, select

from activities.delivery import redact_contacts
from api import RateLimit, client_key, create_app
from codec_server import create_codec_app
from models.db import make_engine, upgrade_schema
from models.tables import ContactAttempt
from settings import Settings, SettingsInvalid, get_settings

KEY = base64.b64encode(b"\x01" * 32).decode()  # no '+' or '/': passes for a key id


def test_a_decryption_key_written_the_wrong_way_round_is_not_shown() -> None:
    """key=id instead of id=key puts the key where the id goes: the error names the entry
    by its position, never by what was given."""
    with pytest.raises(ValidationError) as refused:
        Settings(payload_decryption_keys=f"{KEY}=2024-07")
    assert KEY[:20] not in str(refused.value) and "entry 1" in str(refused.value)


def test_the_startup_line_for_it_does_not_show_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYLOAD_DECRYPTION_KEYS", f"{KEY}=2024-07")
    with pytest.raises(SettingsInvalid) as stopped:
        get_settings()
    assert KEY[:20] not in str(stopped.value.code)


SECRET = "review-webhook-secret"


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


async def test_a_receipt_echoing_the_number_is_kept_masked(tmp_path: Path) -> None:
    """A failed receipt's detail becomes the contact's reason, which can reach the loan's
    history: a number in it is masked before it is kept."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    with Session(engine) as s:
        s.add(
            ContactAttempt(
                idempotency_key="m-1",
                loan_id="L-1",
                borrower_id="B-1",
                kind="reminder",
                channel="sms",
                template="reminder_t3",
                scheduled_at=datetime.now(ZoneInfo("Asia/Shanghai")),
                status="accepted",
            )
        )
        s.commit()
    app = create_app(Settings(webhook_secret=SECRET, database_url=url), engine=engine)
    body = json.dumps(
        {"message_id": "m-1", "status": "failed", "detail": "UNDELIV: +86 139 7531 2468 absent subscriber"}
    ).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        answer = await http.post("/receipts", content=body, headers={"X-Signature": sign(body)})
        assert answer.status_code == 200, answer.text
    with Session(engine) as s:
        row = s.exec(select(ContactAttempt)).one()
        assert row.status == "failed"
        assert "7531" not in (row.reason or "") and "7531" not in (row.receipt_detail or "")
        assert "2468" in (row.reason or "")  # masked, not dropped: 861****2468
    engine.dispose()


@pytest.mark.parametrize(
    "text",
    [
        "rejected: wang.li%40example.com",  # percent-encoded echo of the request
        "rejected: 138_1234_5678",
        "rejected: 138/1234/5678",
        "rejected: wang.li(at)example.com",
        "number 1 3 8 1 2 3 4 5 6 7 8",
    ],
)
def test_provider_answers_lose_numbers_and_addresses_however_written(text: str) -> None:
    kept = redact_contacts(text)
    assert "wang.li" not in kept and "1234" not in kept and "12345678" not in kept.replace(" ", "")


async def _nothing(scope: object, receive: object, send: object) -> None:  # pragma: no cover
    return None


def test_a_held_back_client_is_not_forgotten_when_many_addresses_arrive() -> None:
    limit = RateLimit(_nothing, per_minute=60)
    now = 1000.0
    for _ in range(60):
        assert limit.take("flooder", now) == 0
    assert limit.take("flooder", now) > 0
    for n in range(RateLimit.MAX_CLIENTS + 1):
        limit.take(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", now)
    assert limit.take("flooder", now) > 0  # still held back
    assert len(limit.buckets) <= RateLimit.MAX_CLIENTS


def test_an_ipv6_host_counts_as_its_64_network() -> None:
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert client_key("2001:db8:0:1::1") != client_key("2001:db8::1")
    assert client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_key("10.0.0.2") == "10.0.0.2"


CODEC_KEY = base64.b64encode(b"\x02" * 32).decode()
TOKEN = "t"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def codec(**kw: object) -> TestClient:
    settings = Settings(
        payload_encryption_key=CODEC_KEY,
        payload_encryption_key_id="k",
        codec_token=TOKEN,
        **kw,  # type: ignore[arg-type]
    )
    return TestClient(create_codec_app(settings), raise_server_exceptions=False, client=("127.0.0.1", 40000))


def test_sealed_bytes_that_are_not_a_payload_are_a_400_not_a_500() -> None:
    nonce = os.urandom(12)
    data = nonce + AESGCM(b"\x02" * 32).encrypt(nonce, b"\xff\xff\xff", None)
    metadata = {
        "encoding": base64.b64encode(b"binary/encrypted").decode(),
        "encryption-key-id": base64.b64encode(b"k").decode(),
    }
    body = {"payloads": [{"metadata": metadata, "data": base64.b64encode(data).decode()}]}
    with codec() as http:
        assert http.post("/decode", json=body, headers=AUTH).status_code == 400


def test_the_local_opening_never_lets_anyone_seal_data() -> None:
    """CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN behind a proxy on the same host lets every
    request in from 127.0.0.1 with any Origin: /decode is what the UI needs; /encode keeps
    needing the token."""
    plain = {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(b'"forged"').decode(),
            }
        ]
    }
    with codec(codec_allow_ui_origin_without_token=True) as http:
        refused = http.post("/encode", json=plain, headers={"Origin": "http://localhost:8233"})
        assert refused.status_code == 401
        assert http.post("/encode", json=plain, headers=AUTH).status_code == 200


def test_a_short_number_is_never_shown_whole() -> None:
    from activities.delivery import mask_address

    assert mask_address("5551234") == "****34"
    assert mask_address("13812345678") == "138****5678"  # a mobile number: as before
    assert "5551234" not in redact_contacts("call 555-1234 refused")


def test_our_own_reasons_keep_their_times() -> None:
    reason = "call caps across the borrower's loans: next call allowed at 2026-12-06T01:00:00.000001+00:00"
    assert redact_contacts(reason) == reason
