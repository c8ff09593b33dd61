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
        ({"payload_decryption_keys": "old=abc"}, "PAYLOAD_DECRYPTION_KEYS (entry 1): not valid base64"),
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


def test_a_body_above_the_limit_is_refused_413() -> None:
    settings = sealing(codec_token=TOKEN, codec_max_body_bytes="2048")
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    fits = json.dumps(wire(Payload(metadata={"encoding": b"binary/plain"}, data=b"x" * 900))).encode()
    too_big = json.dumps(wire(Payload(metadata={"encoding": b"binary/plain"}, data=b"x" * 4000))).encode()
    assert len(fits) <= 2048 < len(too_big)
    with TestClient(create_codec_app(settings)) as http:
        assert http.post("/decode", content=fits, headers=auth).status_code == 200
        for route in ("/decode", "/encode"):
            by_length = http.post(route, content=too_big, headers=auth)  # Content-Length says so
            assert by_length.status_code == 413, by_length.text
            assert "CODEC_MAX_BODY_BYTES" in by_length.json()["detail"]
        # Without a Content-Length (chunked): refused by the bytes read.
        chunked = http.post("/decode", content=iter([too_big[:1500], too_big[1500:]]), headers=auth)
        assert chunked.status_code == 413, chunked.text
        lying = http.post("/decode", content=too_big, headers={**auth, "Content-Length": "x1"})
        assert lying.status_code == 400
        # The token is checked before the body is read: a stranger gets 401, not 413.
        assert http.post("/decode", content=too_big).status_code == 401
    assert Settings().codec_max_body_bytes == 4 * 1024 * 1024


def test_the_ui_origin_opens_without_a_token_only_when_allowed_and_local() -> None:
    origins = f"{UI},http://127.0.0.1:8233,https://ui.lender.example"
    body = wire(Payload(metadata={"encoding": b"json/plain"}, data=b'"x"'))
    local = ("127.0.0.1", 50000)
    relaxed = sealing(
        codec_token=TOKEN, codec_cors_origins=origins, codec_allow_ui_origin_without_token="true"
    )
    with TestClient(create_codec_app(relaxed), client=local) as http:
        for origin in (UI, "http://127.0.0.1:8233"):
            assert http.post("/decode", json=body, headers={"Origin": origin}).status_code == 200, origin
        # Not an allowed origin, not on loopback, or no origin at all (curl): the token is needed.
        for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": "https://ui.lender.example"}):
            assert http.post("/decode", json=body, headers=headers).status_code == 401, headers
        with_token = http.post("/decode", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert with_token.status_code == 200
    with TestClient(create_codec_app(relaxed), client=("203.0.113.7", 50000)) as remote:
        assert remote.post("/decode", json=body, headers={"Origin": UI}).status_code == 401
    strict = sealing(codec_token=TOKEN, codec_cors_origins=origins)  # the default: off
    assert strict.codec_allow_ui_origin_without_token is False
    with TestClient(create_codec_app(strict), client=local) as http:
        assert http.post("/decode", json=body, headers={"Origin": UI}).status_code == 401
        assert http.get("/healthz").json() == {"status": "ok"}


# --- ./run --encrypt (scripts/stack.py) -------------------------------------------------


async def test_the_stack_makes_the_payload_key_once_and_keeps_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # as `python scripts/stack.py` runs
    import stack

    assert stack.load_encryption_secrets(tmp_path, generate=False) == {}  # never --encrypt: none
    assert stack.encryption_env({}, encrypt=False) == {}
    base = stack.load_secrets(tmp_path)
    keys = stack.load_encryption_secrets(tmp_path, generate=True)
    assert set(keys) == {"PAYLOAD_ENCRYPTION_KEY", "PAYLOAD_ENCRYPTION_KEY_ID", "CODEC_TOKEN"}
    assert len(base64.b64decode(keys["PAYLOAD_ENCRYPTION_KEY"], validate=True)) == 32
    assert re.fullmatch(r"[0-9a-f]{64}", keys["CODEC_TOKEN"])
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    # Kept: a second --encrypt run and a run without it find the same key; the others stay.
    assert stack.load_encryption_secrets(tmp_path, generate=True) == keys
    assert stack.load_encryption_secrets(tmp_path, generate=False) == keys
    assert stack.load_secrets(tmp_path) == base

    def settings_of(env: dict[str, str]) -> Settings:
        return Settings.model_validate({name.lower(): value for name, value in env.items()})

    sealer = the_codec(settings_of(stack.encryption_env(keys, encrypt=True)))
    assert sealer.seals and sealer.key_id == keys["PAYLOAD_ENCRYPTION_KEY_ID"]
    (sealed,) = await sealer.encode([await plain_payload({"loan_id": "L-KEPT"})])
    # Without --encrypt: nothing new is sealed, and what was sealed still opens.
    reader = the_codec(settings_of(stack.encryption_env(keys, encrypt=False)))
    assert not reader.seals
    assert (await reader.decode([sealed]))[0] == await plain_payload({"loan_id": "L-KEPT"})
    codec_env = stack.codec_env(stack.parse_args(["--ui-port", "9233"]), keys)
    served = settings_of(codec_env)
    assert served.codec_allow_ui_origin_without_token
    assert served.codec_cors_origins == "http://localhost:9233,http://127.0.0.1:9233"
    assert served.codec_token.get_secret_value() == keys["CODEC_TOKEN"]
