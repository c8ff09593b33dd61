"""The inbound HTTP API (api.py, DESIGN.md contract part 3) over the real app: httpx
drives it in-process (ASGITransport), with a real Temporal dev server, a worker and the
test's database behind it. Every route and answer code of the contract."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from api import create_app
from client import CollectionsClient
from models import repo
from models.db import make_engine, upgrade_schema
from models.tables import AuditLog, ContactAttempt, Payment
from settings import Settings
from tests.conftest import running_worker
from tests.loans import SHANGHAI, loan_start, local_today, start_loan
from tests.test_workflow_ladder import seed
from tests.visibility import eventually

PAYMENT_SECRET = "gateway-secret"
WEBHOOK_SECRET = "provider-secret"
TOKEN = "api-token-1"


def sign(body: bytes, secret: str = PAYMENT_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def api_settings(**overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "payment_webhook_secret": PAYMENT_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
        "api_token": TOKEN,
        "api_max_body_bytes": 2048,
    }
    return Settings(**fields | overrides)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Api:
    """The app under test and a few ways to call it."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(
        self, path: str, payload: Any, *, secret: str = PAYMENT_SECRET, raw: bytes | None = None
    ) -> httpx.Response:
        body = raw if raw is not None else encode(payload)
        headers = {"X-Signature": sign(body, secret), "Content-Type": "application/json"}
        return await self.http.post(path, content=body, headers=headers)

    async def pay(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.post("/payments", payload)

    async def loan(self, loan_id: str, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await self.http.get(f"/loans/{loan_id}", headers=headers)


@asynccontextmanager
async def serve(settings: Settings, **kw: Any) -> AsyncIterator[Api]:
    app = create_app(settings, **kw)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield Api(http)


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[Api]:
    """The app pointed at a Temporal port nobody listens on (and a real database)."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade_schema(url)
    engine = make_engine(url)
    settings = api_settings(temporal_address=f"127.0.0.1:{closed_port()}", database_url=url)
    async with serve(settings, engine=engine) as api:
        yield api
    engine.dispose()


def online_settings(env: WorkflowEnvironment, task_queue: str) -> Settings:
    return api_settings(
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=env.client.namespace,
        temporal_task_queue=task_queue,
    )


async def overdue(env: WorkflowEnvironment, task_queue: str, dpd: int) -> str:
    today = local_today(datetime.now().astimezone())
    start = loan_start(today - timedelta(days=dpd + 31), first_due_date=today - timedelta(days=dpd))
    await start_loan(env.client, task_queue, start)
    return start.loan_id


# --- before anything reaches Temporal: signatures, sizes, bodies -------------------------


async def test_signatures_are_checked_before_the_body(offline: Api) -> None:
    payment = {"loan_id": "L-1", "payment_id": "P-1", "amount": 100}
    body = encode(payment)
    missing = await offline.http.post("/payments", content=body)
    assert missing.status_code == 401 and "X-Signature" in missing.json()["detail"]
    for bad in (
        sign(body, "wrong-secret"),
        sign(body + b" "),
        "sha256=",
        "garbage",
        sign(body, WEBHOOK_SECRET),
    ):
        answer = await offline.http.post("/payments", content=body, headers={"X-Signature": bad})
        assert answer.status_code == 401, bad
        assert answer.json()["problem"] == "unauthorized"
    # A body that is not even JSON is refused for its signature first.
    unsigned = await offline.http.post("/payments", content=b"{nope", headers={"X-Signature": "sha256=00"})
    assert unsigned.status_code == 401
    # The providers' routes use WEBHOOK_SECRET, not the gateway's.
    receipt = encode({"message_id": "M-1", "status": "delivered"})
    for path in ("/receipts", "/calls"):
        wrong = await offline.http.post(path, content=receipt, headers={"X-Signature": sign(receipt)})
        assert wrong.status_code == 401, path
        assert (await offline.http.post(path, content=receipt)).status_code == 401, path


async def test_an_empty_secret_refuses_everything(tmp_path: Path) -> None:
    settings = api_settings(
        payment_webhook_secret="", api_token="", database_url=f"sqlite:///{tmp_path}/x.db"
    )
    async with serve(settings) as api:
        body = encode({"loan_id": "L-1", "payment_id": "P-1", "amount": 100})
        empty_key = "sha256=" + hmac.new(b"", body, hashlib.sha256).hexdigest()
        answer = await api.http.post("/payments", content=body, headers={"X-Signature": empty_key})
        assert answer.status_code == 401
        assert (await api.loan("L-1", token="")).status_code == 401


async def test_oversized_bodies_are_refused(offline: Api) -> None:
    big = encode({"loan_id": "L-1", "payment_id": "P-1", "amount": 100, "channel": "x" * 4000})
    by_length = await offline.post("/payments", None, raw=big)
    assert by_length.status_code == 413 and "2048 bytes" in by_length.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
        for _ in range(10):
            yield b" " * 500

    streamed = await offline.http.post("/payments", content=chunks(), headers={"X-Signature": sign(b"")})
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    receipt = await offline.post("/receipts", None, raw=big, secret=WEBHOOK_SECRET)
    assert receipt.status_code == 413


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 1.5}', "amount"),
        (b'{"loan_id": "L-1", "payment_id": "P-1", "amount": "100"}', "amount"),
        (b'{"loan_id": "L-1", "payment_id": "P-1", "amount": true}', "amount"),
        (b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 100, "tip": 5}', "tip"),
        (b'{"loan_id": "L-1", "amount": 100}', "payment_id"),
        (b'{"loan_id": "L-1", "payment_id": "  ", "amount": 100}', "payment_id"),
        (b'{"loan_id": "L 1", "payment_id": "P-1", "amount": 100}', "loan_id"),
        (b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 100, "paid_at": 1700000000}', "paid_at"),
        (b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 100, "paid_at": "yesterday"}', "paid_at"),
        (b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 10000000000000000}', "amount"),
        (b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 100,', "body"),
        (b"[1, 2]", "body"),
        (b"", "body"),
    ],
    ids=[
        "float",
        "string",
        "bool",
        "unknown-field",
        "missing",
        "blank-id",
        "bad-loan-id",
        "epoch",
        "not-a-time",
        "too-large",
        "malformed-json",
        "array",
        "empty",
    ],
)
async def test_bad_payment_bodies_are_422_naming_the_field(offline: Api, raw: bytes, field: str) -> None:
    answer = await offline.post("/payments", None, raw=raw)
    assert answer.status_code == 422, answer.text
    content = answer.json()
    assert content["problem"] == "bad_input"
    assert field in [e["field"] for e in content["errors"]], content
    assert content["detail"].startswith(f"{field}: ") or f"; {field}: " in content["detail"]


async def test_bad_receipt_and_call_bodies_are_422(offline: Api) -> None:
    for path, payload, field in [
        ("/receipts", {"message_id": "M-1", "status": "read"}, "status"),
        ("/receipts", {"message_id": "M-1", "status": "delivered", "extra": 1}, "extra"),
        ("/calls", {"message_id": "M-1", "result": "maybe", "at": "2026-01-01T10:00:00+08:00"}, "result"),
        ("/calls", {"message_id": "M-1", "result": "reached"}, "at"),
    ]:
        answer = await offline.post(path, payload, secret=WEBHOOK_SECRET)
        assert answer.status_code == 422, (path, answer.text)
        assert field in [e["field"] for e in answer.json()["errors"]], (path, answer.text)


# --- Temporal out of reach ---------------------------------------------------------------


async def test_temporal_unreachable_is_503_with_retry_after(offline: Api) -> None:
    answer = await offline.pay({"loan_id": "L-1", "payment_id": "P-1", "amount": 100})
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"].isdigit()
    assert answer.json()["problem"] == "unavailable"
    assert "127.0.0.1" not in answer.text  # the caller is not told where the server is
    assert (await offline.loan("L-1")).status_code == 503
    health = await offline.http.get("/healthz")
    assert health.status_code == 503 and health.json() == {"temporal": "unavailable", "database": "ok"}


async def test_docs_are_served(offline: Api) -> None:
    assert (await offline.http.get("/docs")).status_code == 200
    schema = (await offline.http.get("/openapi.json")).json()
    assert {"/payments", "/receipts", "/calls", "/loans/{loan_id}", "/healthz"} <= set(schema["paths"])
    assert "payment_id" in schema["components"]["schemas"]["PaymentCallback"]["properties"]


# --- with a server, a worker and the database behind the app ------------------------------


@pytest.mark.temporal
async def test_payments_are_applied_once_refused_with_the_reason_and_closed_loans_refused(
    dev_env: WorkflowEnvironment,
    task_queue: str,
    wf_db: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed(wf_db)
    settings = online_settings(dev_env, task_queue)
    client = CollectionsClient(dev_env.client, settings)
    caplog.set_level(logging.INFO, logger="api")
    async with running_worker(dev_env.client, task_queue, wf_db):
        loan_id = await overdue(dev_env, task_queue, dpd=10)
        async with serve(settings, client=client, engine=wf_db) as api:
            state = await eventually(lambda: api.loan(loan_id), lambda r: r.json().get("stage") == "EARLY")
            assert state.status_code == 200 and state.json()["loan_id"] == loan_id
            assert state.json()["outstanding"]["penalty"] > 0

            payment = {
                "loan_id": loan_id,
                "payment_id": "PAY-1",
                "amount": 50_000,
                "currency": "CNY",
                "paid_at": datetime.now(SHANGHAI).isoformat(),
                "channel": "alipay",
            }
            paid = await api.pay(payment)
            assert paid.status_code == 200, paid.text
            result = paid.json()
            assert result["payment_id"] == "PAY-1" and result["duplicate"] is False
            assert sum(result["allocation"].values()) == 50_000
            assert result["allocation"]["penalty"] > 0  # penalty first
            again = await api.pay(payment)
            assert again.status_code == 200 and again.json()["duplicate"] is True
            assert again.json()["allocation"] == result["allocation"]

            def booked() -> list[Payment]:
                with Session(wf_db) as s:
                    return repo.payments_for_loan(s, loan_id)

            async def booked_async() -> list[Payment]:
                return booked()

            rows = await eventually(booked_async, lambda r: len(r) >= 1)
            assert [(p.payment_id, p.amount) for p in rows] == [("PAY-1", 50_000)]

            payoff = (await api.loan(loan_id)).json()["outstanding"]["total"]
            above = await api.pay(payment | {"payment_id": "PAY-2", "amount": payoff + 1})
            assert above.status_code == 422, above.text
            assert above.json()["problem"] == "refused"
            assert f"amount: {payoff + 1} is above the payoff amount {payoff}" in above.json()["detail"]
            currency = await api.pay(payment | {"payment_id": "PAY-3", "currency": "USD"})
            assert currency.status_code == 422 and "currency:" in currency.json()["detail"]

            unknown = await api.pay(payment | {"loan_id": "NO-SUCH-LOAN"})
            assert unknown.status_code == 404 and unknown.json()["detail"] == "unknown loan NO-SUCH-LOAN"
            assert (await api.loan("NO-SUCH-LOAN")).status_code == 404
            assert (await api.loan(loan_id, token="wrong")).status_code == 401
            assert (await api.loan(loan_id, token=None)).status_code == 401
            assert (await api.loan("bad%20id")).status_code == 422

            # Paid off: the workflow completes, and a later payment is refused (422, closed).
            closing = await api.pay(payment | {"payment_id": "PAY-4", "amount": payoff})
            assert closing.status_code == 200 and closing.json()["stage"] == "PAID_OFF"
            await dev_env.client.get_workflow_handle(f"loan-{loan_id}").result()
            closed = await api.pay(payment | {"payment_id": "PAY-5", "amount": 100})
            assert closed.status_code == 422, closed.text
            assert closed.json()["problem"] == "closed" and "is closed" in closed.json()["detail"]
            assert (await api.loan(loan_id)).json()["closed"] is True
            assert [p.payment_id for p in booked()] == ["PAY-1", "PAY-4"]

    logged = caplog.text
    assert f"POST /payments 200 loan={loan_id}" in logged
    assert "GET /loans/{loan_id} 404 loan=NO-SUCH-LOAN" in logged
    assert "alipay" not in logged and "PAY-1" not in logged  # no bodies in the log


def outbox_row(db: Engine, key: str, loan_id: str, channel: str) -> None:
    with Session(db) as s:
        s.add(
            ContactAttempt(
                idempotency_key=key,
                loan_id=loan_id,
                borrower_id="B-1",
                kind="test",
                channel=channel,
                template="test",
                scheduled_at=datetime.now(SHANGHAI),
            )
        )
        s.commit()


@pytest.mark.temporal
async def test_receipts_update_the_outbox_and_calls_reach_the_loan(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine
) -> None:
    seed(wf_db)
    settings = online_settings(dev_env, task_queue)
    client = CollectionsClient(dev_env.client, settings)
    async with running_worker(dev_env.client, task_queue, wf_db):
        loan_id = await overdue(dev_env, task_queue, dpd=10)
        outbox_row(wf_db, "api-test:sms-1", loan_id, "sms")
        outbox_row(wf_db, "api-test:voice-1", loan_id, "voice")
        async with serve(settings, client=client, engine=wf_db) as api:

            async def receipt(message_id: str, status: str, detail: str | None = None) -> httpx.Response:
                payload = {"message_id": message_id, "status": status, "detail": detail}
                return await api.post("/receipts", payload, secret=WEBHOOK_SECRET)

            delivered = await receipt("api-test:sms-1", "delivered", "DELIVRD")
            assert delivered.status_code == 200, delivered.text
            assert delivered.json() == {
                "message_id": "api-test:sms-1",
                "status": "delivered",
                "applied": True,
            }
            contradicting = await receipt("api-test:sms-1", "failed", "late")
            assert contradicting.status_code == 200
            assert contradicting.json()["status"] == "delivered" and contradicting.json()["applied"] is False
            with Session(wf_db) as s:
                row = repo.contact_by_key(s, "api-test:sms-1")
                assert row is not None and (row.status, row.receipt_detail) == ("delivered", "DELIVRD")
            assert (await receipt("no-such-message", "delivered")).status_code == 404

            at = datetime.now(SHANGHAI).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(
                days=1
            )
            call = {"message_id": "api-test:voice-1", "result": "no_answer", "at": at.isoformat()}
            accepted = await api.post("/calls", call, secret=WEBHOOK_SECRET)
            assert accepted.status_code == 202, accepted.text
            assert accepted.json() == {"loan_id": loan_id, "contact_id": "ivr:api-test:voice-1"}
            unknown = await api.post("/calls", call | {"message_id": "no-such"}, secret=WEBHOOK_SECRET)
            assert unknown.status_code == 404
            not_a_call = await api.post(
                "/calls", call | {"message_id": "api-test:sms-1"}, secret=WEBHOOK_SECRET
            )
            assert not_a_call.status_code == 422 and not_a_call.json()["detail"].startswith("message_id:")

            async def logged() -> tuple[list[str], list[str]]:
                with Session(wf_db) as s:
                    events = [a.event for a in s.exec(select(AuditLog).where(AuditLog.loan_id == loan_id))]
                    contacts = [c.contact_id for c in repo.desk_records(s, loan_id).contacts]
                return events, contacts

            events, contacts = await eventually(logged, lambda r: "contact_logged" in r[0] and bool(r[1]))
            assert events.count("contact_logged") == 1
            assert contacts == ["ivr:api-test:voice-1"]


@pytest.mark.temporal
async def test_healthz_names_what_does_not_answer(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, tmp_path: Path
) -> None:
    settings = online_settings(dev_env, task_queue)
    client = CollectionsClient(dev_env.client, settings)
    async with serve(settings, client=client, engine=wf_db) as api:
        health = await api.http.get("/healthz")
        assert health.status_code == 200 and health.json() == {"temporal": "ok", "database": "ok"}
    broken = make_engine(f"sqlite:///{tmp_path}")  # a directory: the database cannot open
    async with serve(settings, client=client, engine=broken) as api:
        health = await api.http.get("/healthz")
        assert health.status_code == 503 and health.json() == {"temporal": "ok", "database": "unavailable"}
        assert "Retry-After" in health.headers
        receipt = encode({"message_id": "M-1", "status": "delivered"})
        down = await api.post("/receipts", None, raw=receipt, secret=WEBHOOK_SECRET)
        assert down.status_code == 503 and down.json()["problem"] == "unavailable"
    broken.dispose()
