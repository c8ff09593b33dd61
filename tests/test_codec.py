"""Payload encryption (DESIGN.md part 3, client/codec.py) and the Web UI's codec server
(codec_server.py): the codec alone, the settings that turn it on, a loan on a real dev
server sealed at rest, and the codec server over HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from google.protobuf.message import Message
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from temporalio.api.common.v1 import Payload
from temporalio.api.history.v1 import History
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from client import ClientError, Problem, connect
from client.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadDecryptionError,
    codec_from_settings,
    data_converter,
)
from codec_server import create_codec_app
from models.contract import STATE, workflow_id
from models.wire import PaymentIn
from settings import Settings, SettingsInvalid, get_settings
from tests.conftest import running_worker
from tests.loans import loan_start

ROOT = Path(__file__).resolve().parent.parent
KEY_2024 = base64.b64encode(b"\x01" * 32).decode()
KEY_2025 = base64.b64encode(b"\x02" * 32).decode()
TOKEN = "codec-token-for-tests"
UI = "http://localhost:8233"
LOCAL_ACTIVITY_MARKER_KEYS = {
    "seq",
    "attempt",
    "activity_id",
    "activity_type",
    "complete_time",
    "backoff",
    "original_schedule_time",
    "activation_index",
}


def sealing(**overrides: str) -> Settings:
    fields = {"payload_encryption_key": KEY_2025, "payload_encryption_key_id": "k2025", **overrides}
    return Settings.model_validate(fields)


def the_codec(settings: Settings) -> EncryptionCodec:
    codec = codec_from_settings(settings)
    assert codec is not None
    return codec


async def plain_payload(value: object) -> Payload:
    return (await pydantic_data_converter.encode([value]))[0]


# --- the codec -------------------------------------------------------------------------


async def test_a_payload_round_trips_sealed_under_its_key_id() -> None:
    codec = the_codec(sealing())
    original = await plain_payload({"loan_id": "L-SECRET-1", "borrower": "Zhang Wei"})
    sealed, again = await codec.encode([original, original])
    assert sealed.metadata["encoding"] == ENCODING == b"binary/encrypted"
    assert sealed.metadata[KEY_ID_METADATA] == b"k2025"
    assert b"L-SECRET-1" not in sealed.data and b"Zhang" not in sealed.data
    assert sealed.data[:12] != again.data[:12]  # a fresh nonce each time
    assert await codec.decode([sealed, again]) == [original, original]
    converter = data_converter(sealing())
    assert converter.payload_codec is not None
    assert await converter.decode(await converter.encode(["L-SECRET-1"])) == ["L-SECRET-1"]


async def test_an_old_key_still_reads_after_rotation() -> None:
    before = the_codec(sealing(payload_encryption_key=KEY_2024, payload_encryption_key_id="k2024"))
    original = await plain_payload("a case sealed last year")
    (old,) = await before.encode([original])

    rotated = the_codec(sealing(payload_decryption_keys=f"k2024={KEY_2024}"))
    assert await rotated.decode([old]) == [original]
    (new,) = await rotated.encode([original])
    assert new.metadata[KEY_ID_METADATA] == b"k2025"

    forgotten = the_codec(sealing())
    with pytest.raises(PayloadDecryptionError, match=r"'k2024'.*PAYLOAD_DECRYPTION_KEYS"):
        await forgotten.decode([old])
    # Decrypt only (encryption turned off): old payloads read, new ones go out plain.
    reader = the_codec(Settings(payload_decryption_keys=f"k2024={KEY_2024}"))
    assert await reader.decode([old]) == [original]
    assert await reader.encode([original]) == [original]


async def test_plaintext_passes_through_decoding() -> None:
    """Loans started before encryption was turned on still read."""
    codec = the_codec(sealing())
    original = await plain_payload({"loan_id": "L-1"})
    assert await codec.decode([original]) == [original]
    assert data_converter(Settings()) is pydantic_data_converter  # no key: no codec


async def test_a_tampered_payload_does_not_open() -> None:
    codec = the_codec(sealing())
    (sealed,) = await codec.encode([await plain_payload("L-1")])
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 0x01
    tampered = Payload(metadata=dict(sealed.metadata), data=bytes(flipped))
    with pytest.raises(PayloadDecryptionError, match="does not decrypt"):
        await codec.decode([tampered])
    with pytest.raises(PayloadDecryptionError, match="does not decrypt"):  # same id, another key
        await the_codec(sealing(payload_encryption_key=KEY_2024)).decode([sealed])


# --- the settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"payload_encryption_key": "not base64 at all!"}, "PAYLOAD_ENCRYPTION_KEY: not valid base64"),
        (
            {"payload_encryption_key": base64.b64encode(b"short").decode()},
            "PAYLOAD_ENCRYPTION_KEY: must be base64 of 32 bytes",
        ),
        ({"payload_encryption_key_id": ""}, "PAYLOAD_ENCRYPTION_KEY_ID: must be set"),
        ({"payload_encryption_key_id": "a=b"}, "PAYLOAD_ENCRYPTION_KEY_ID: a key id is"),
        ({"payload_encryption_key": ""}, "PAYLOAD_ENCRYPTION_KEY: must be set"),
        ({"payload_decryption_keys": KEY_2024}, "PAYLOAD_DECRYPTION_KEYS: entry 1 is not id=base64key"),
        ({"payload_decryption_keys": "k2024"}, "PAYLOAD_DECRYPTION_KEYS: entry 1 is not id=base64key"),
        ({"payload_decryption_keys": f"=={KEY_2024}"}, "PAYLOAD_DECRYPTION_KEYS: entry 1 is not"),
        ({"payload_decryption_keys": f"k1=,k2={KEY_2024}"}, "PAYLOAD_DECRYPTION_KEYS: entry 1 is not"),
        ({"payload_decryption_keys": "old=abc"}, "PAYLOAD_DECRYPTION_KEYS (key id 'old'): not valid base64"),
        ({"payload_decryption_keys": f"k2025={KEY_2024}"}, "PAYLOAD_DECRYPTION_KEYS: key id 'k2025'"),
    ],
)
def test_an_unusable_key_setting_is_refused_naming_the_variable(
    overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(variable)) as refused:
        sealing(**overrides)
    assert KEY_2024[:20] not in str(refused.value) and KEY_2025[:20] not in str(refused.value)


def test_get_settings_stops_with_one_line_that_shows_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYLOAD_ENCRYPTION_KEY", KEY_2024[:-8])
    monkeypatch.setenv("PAYLOAD_ENCRYPTION_KEY_ID", "k2024")
    with pytest.raises(SettingsInvalid) as stopped:
        get_settings()
    line = str(stopped.value.code)
    assert line.startswith("error: invalid configuration: PAYLOAD_ENCRYPTION_KEY: ")
    assert "\n" not in line and KEY_2024[:-8] not in line


@pytest.mark.parametrize(
    "door",
    [
        ["worker.py"],
        ["starter.py", "status", "L-1"],
        ["-m", "uvicorn", "api:app"],
        ["-m", "uvicorn", "codec_server:app"],
    ],
    ids=["worker", "cli", "api", "codec_server"],
)
def test_a_door_with_a_bad_key_exits_1_with_one_line(door: list[str]) -> None:
    env = {**os.environ, "PAYLOAD_ENCRYPTION_KEY": "AAAA", "PAYLOAD_ENCRYPTION_KEY_ID": "k1"}
    done = subprocess.run(
        [sys.executable, *door], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: invalid configuration: PAYLOAD_ENCRYPTION_KEY: must be base64 of 32 bytes (AES-256), "
        'got 3 bytes; make one with: python -c "import os, base64; '
        'print(base64.b64encode(os.urandom(32)).decode())"'
    ]


# --- a loan on a real dev server -------------------------------------------------------


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload inside a proto message, with where it sits."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        where = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    yield from payloads_in(item, f"{where}[{key}]")
        elif field.is_repeated:
            for n, item in enumerate(value):
                yield from payloads_in(item, f"{where}[{n}]")
        else:
            yield from payloads_in(value, where)


@pytest.mark.temporal
async def test_a_loan_is_sealed_at_rest_and_reads_with_the_codec(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    settings = sealing(
        temporal_address=dev_env.client.service_client.config.target_host,
        temporal_namespace=dev_env.client.namespace,
        temporal_task_queue=task_queue,
    )
    sealed = await connect(settings)  # what the worker, the CLI and the API connect with
    assert sealed.temporal.data_converter.payload_codec is not None
    secret = uuid.uuid4().hex[:8].upper()
    loan_id, borrower_id = f"LN-{secret}", f"BORROWER-{secret}"
    first_due = datetime.now(ZoneInfo("Asia/Shanghai")).date() - timedelta(days=2)
    start = loan_start(
        first_due - timedelta(days=30), loan_id=loan_id, borrower_id=borrower_id, first_due_date=first_due
    )
    async with running_worker(sealed.temporal, task_queue, wf_db):
        await sealed.start(start)
        deadline = asyncio.get_running_loop().time() + 60
        while (state := await sealed.state(loan_id))["stage"] != "GRACE":
            assert asyncio.get_running_loop().time() < deadline, state
            await asyncio.sleep(0.2)
        paid = await sealed.record_payment(loan_id, PaymentIn(payment_id=f"PAY-{secret}", amount=110_016))
        assert paid is not None and paid.stage.value == "CURRENT"
        assert (await sealed.state(loan_id))["loan_id"] == loan_id  # the codec reads the state query
        # Failure messages travel sealed (encoded attributes) and read back in full.
        with pytest.raises(ClientError) as refused:
            await sealed.record_payment(loan_id, PaymentIn(payment_id=f"PAY2-{secret}", amount=10**12))
        assert refused.value.problem is Problem.REFUSED
        assert "Encoded failure" not in refused.value.message and "above the payoff" in refused.value.message

        # A client without the codec sees only sealed payloads, in history and in answers.
        plain = dev_env.client.get_workflow_handle(workflow_id(loan_id))
        with pytest.raises(Exception, match="binary/encrypted"):
            await plain.query(STATE)
        history = History(events=(await plain.fetch_history()).events)

    found = [(where, p) for where, p in payloads_in(history) if ".search_attributes" not in where]
    kinds = {where.split(".")[2].split("[")[0] for where, _ in found}
    assert {
        "workflow_execution_started_event_attributes",  # the start input
        "workflow_execution_update_accepted_event_attributes",  # the payment
        "workflow_execution_update_completed_event_attributes",  # its answer
        "marker_recorded_event_attributes",  # local activities' results
        "user_metadata",  # static summary and details, activity summaries
    } <= kinds, kinds
    for where, payload in found:
        if where.endswith("marker_recorded_event_attributes.details[data].payloads[0]"):
            # The SDK core's own bookkeeping of a local activity, never through the codec:
            # sequence, attempt, activity id and type, times. No loan data in it.
            assert payload.metadata["encoding"] == b"json/plain", where
            assert set(json.loads(payload.data)) <= LOCAL_ACTIVITY_MARKER_KEYS, payload.data
            continue
        assert payload.metadata["encoding"] == ENCODING, where
        assert payload.metadata[KEY_ID_METADATA] == b"k2025", where
    for where, payload in found:
        raw = payload.SerializeToString()
        assert secret.encode() not in raw, where
    # Outside the payloads, the loan id appears only as the workflow id, the loan and
    # borrower ids only as search attributes (never encrypted, by design: opaque ids).
    stripped = History()
    stripped.CopyFrom(history)
    for event in stripped.events:
        for _field, attributes in event.ListFields():
            if not isinstance(attributes, Message):
                continue
            if "search_attributes" in attributes.DESCRIPTOR.fields_by_name:
                attributes.ClearField("search_attributes")
    assert secret.encode() not in stripped.SerializeToString().replace(workflow_id(loan_id).encode(), b"")


# --- the codec server ------------------------------------------------------------------


@pytest.fixture
def codec_http() -> Iterator[TestClient]:
    settings = sealing(codec_token=TOKEN, payload_decryption_keys=f"k2024={KEY_2024}")
    with TestClient(create_codec_app(settings)) as http:
        yield http


def wire(*payloads: Payload) -> dict[str, object]:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


async def test_the_codec_server_opens_for_the_token_only(codec_http: TestClient) -> None:
    original = await plain_payload({"loan_id": "L-SECRET-9"})
    old_codec = the_codec(sealing(payload_encryption_key=KEY_2024, payload_encryption_key_id="k2024"))
    (old,) = await old_codec.encode([original])
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Namespace": "default", "Origin": UI}

    opened = codec_http.post("/decode", json=wire(old, original), headers=auth)
    assert opened.status_code == 200, opened.text
    assert opened.json() == wire(original, original)
    assert opened.headers["access-control-allow-origin"] == UI

    sealed = codec_http.post("/encode", json=wire(original), headers=auth)
    assert sealed.status_code == 200
    (answer,) = sealed.json()["payloads"]
    assert base64.b64decode(answer["metadata"]["encoding"]) == b"binary/encrypted"
    assert base64.b64decode(answer["metadata"][KEY_ID_METADATA]) == b"k2025"
    assert codec_http.post("/decode", json=sealed.json(), headers=auth).json() == wire(original)

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        refused = codec_http.post("/decode", json=wire(old), headers=headers)
        assert refused.status_code == 401, headers
        assert "L-SECRET-9" not in refused.text

    bad = codec_http.post("/decode", content=b'{"payloads": 3}', headers=auth)
    assert bad.status_code == 422
    unknown = the_codec(sealing(payload_encryption_key_id="k-other"))
    (stranger,) = await unknown.encode([original])
    assert codec_http.post("/decode", json=wire(stranger), headers=auth).status_code == 400


def test_the_codec_server_answers_the_ui_preflight_without_a_token(codec_http: TestClient) -> None:
    preflight = codec_http.options(
        "/decode",
        headers={
            "Origin": UI,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == UI
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    other = codec_http.options(
        "/decode", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_a_blank_codec_token_refuses_everything() -> None:
    with TestClient(create_codec_app(sealing())) as http:
        blank = http.post("/decode", json={"payloads": []}, headers={"Authorization": "Bearer "})
        assert blank.status_code == 401
