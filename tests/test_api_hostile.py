"""The inbound API under hostile input (issue 11, security part 3), served by uvicorn on a
free port as in production, called over real sockets: bodies past the limit without a
Content-Length, malformed and deeply nested JSON, slow clients, and a flood of requests.
Each gets a clear status, and the API keeps answering the others. The deadlines are
generous: they say "still answers", not how fast."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from temporalio.testing import WorkflowEnvironment

from api import create_app
from client import CollectionsClient
from models.db import make_engine, upgrade_schema
from tests.conftest import running_worker
from tests.test_api import (
    WEBHOOK_SECRET,
    api_settings,
    closed_port,
    online_settings,
    overdue,
    sign,
)
from tests.test_workflow_ladder import seed

STILL_ANSWERS = 60.0  # seconds: a generous deadline for "the API still answers"


@asynccontextmanager
async def uvicorn_serving(app: FastAPI, **config: Any) -> AsyncIterator[str]:
    """`app` under uvicorn on a free port of 127.0.0.1, in this event loop: its base URL."""
    port = closed_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **config)
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture
def offline_app(tmp_path: Path) -> Any:
    """A factory of apps pointed at a Temporal port nobody listens on, with a real
    database: the routes that need Temporal answer 503, the others really answer."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    upgrade_schema(url)
    engines: list[Engine] = []

    def make(**overrides: Any) -> FastAPI:
        options = {k: overrides.pop(k) for k in ("rate_limit", "body_timeout") if k in overrides}
        engine = make_engine(url)
        engines.append(engine)
        settings = api_settings(temporal_address=f"127.0.0.1:{closed_port()}", database_url=url, **overrides)
        return create_app(settings, engine=engine, **options)

    yield make
    for engine in engines:
        engine.dispose()


async def still_answers(base: str) -> None:
    """Others are served: the OpenAPI document (no Temporal needed) and a signed receipt
    for an unknown message (the database answers 404)."""
    async with httpx.AsyncClient(base_url=base, timeout=STILL_ANSWERS) as http:
        assert (await http.get("/openapi.json")).status_code == 200
        body = json.dumps({"message_id": "no-such-message", "status": "delivered"}).encode()
        answer = await http.post(
            "/receipts", content=body, headers={"X-Signature": sign(body, WEBHOOK_SECRET)}
        )
        assert answer.status_code == 404, answer.text


def problem(answer: httpx.Response) -> str:
    return str(answer.json()["problem"])


# --- sizes ---------------------------------------------------------------------------------


async def post_raw(port: int, head: bytes, body: AsyncIterator[bytes]) -> bytes:
    """A POST over a raw socket: `head`, then the body's pieces while the answer is read
    at the same time (as a careful client does: the server may answer mid-body and
    close). The answer's status line and headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            async for piece in body:
                writer.write(piece)
                await writer.drain()

    sending = asyncio.create_task(send())
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STILL_ANSWERS)
    finally:
        sending.cancel()
        writer.close()


async def test_bodies_past_the_limit_are_413_with_or_without_a_length(offline_app: Any) -> None:
    async with uvicorn_serving(offline_app()) as base:
        port = int(base.rsplit(":", 1)[1])
        head = (
            b"POST /payments HTTP/1.1\r\nHost: api\r\nX-Signature: sha256=00\r\n"
            b"Content-Type: application/json\r\n"
        )

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: up to 1 MB
            for _ in range(256):
                yield b"1000\r\n" + b" " * 4096 + b"\r\n"
                await asyncio.sleep(0)

        answer = await post_raw(port, head + b"Transfer-Encoding: chunked\r\n\r\n", chunked())
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert b"connection: close" in answer.lower()

        async def lying() -> AsyncIterator[bytes]:  # far more than the Content-Length says
            for _ in range(256):
                yield b" " * 4096

        answer = await post_raw(port, head + b"Content-Length: 100\r\n\r\n", lying())
        assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 400")), answer  # read as its 100 bytes

        async def nothing() -> AsyncIterator[bytes]:
            yield b"{"

        answer = await post_raw(port, head + b"Content-Length: 999999999\r\n\r\n", nothing())
        assert answer.startswith(b"HTTP/1.1 413"), answer  # by its Content-Length, at once
        await still_answers(base)


# --- bodies that are not what they say -----------------------------------------------------


NESTED = 100_000


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * NESTED + b"]" * NESTED,
        b'{"a":' * NESTED + b"1" + b"}" * NESTED,
        b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 100, "channel": '
        + b"[" * NESTED
        + b"]" * NESTED
        + b"}",
        b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 100',
        b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 100}}',
        b'{"loan_id": "L\xff", "payment_id": "P-1", "amount": 100}',
        b"\xef\xbb\xbf\x00\x00",
        b'{"loan_id": "L-1", "payment_id": "P-1", "amount": NaN}',
        b'{"loan_id": "L-1", "payment_id": "P-1", "amount": ' + b"9" * 5000 + b"}",
        b'{"loan_id": "L-1", "payment_id": "P-1", "amount": 1e999}',
        b"null",
        b'"' + b"x" * 100_000 + b'"',
    ],
    ids=[
        "nested-arrays",
        "nested-objects",
        "nested-field",
        "truncated",
        "trailing",
        "bad-utf8",
        "binary",
        "nan",
        "huge-number",
        "infinite-number",
        "null",
        "long-string",
    ],
)
async def test_malformed_and_deeply_nested_json_is_a_clear_422(offline_app: Any, raw: bytes) -> None:
    app = offline_app(api_max_body_bytes=1_000_000)
    async with uvicorn_serving(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        answer = await http.post(
            "/payments", content=raw, headers={"X-Signature": sign(raw), "Content-Type": "application/json"}
        )
        assert answer.status_code == 422, answer.text[:500]
        content = answer.json()
        assert content["problem"] == "bad_input" and content["errors"], content
        assert len(answer.content) < 4096  # names the problem, never echoes the body
        await still_answers(base)


async def test_deep_nesting_past_the_default_limit_is_413(offline_app: Any) -> None:
    raw = b"[" * NESTED + b"]" * NESTED
    async with uvicorn_serving(offline_app(api_max_body_bytes=64 * 1024)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            answer = await http.post("/payments", content=raw, headers={"X-Signature": sign(raw)})
        assert answer.status_code == 413 and problem(answer) == "too_large"


# --- slow clients -----------------------------------------------------------------------------


async def trickle(
    port: int, declared: int, sent: bytearray, stop: asyncio.Event, dripping_for: float = 0.6
) -> bytes:
    """A slow client: the headers of a signed POST, then one byte of the body every 0.2 s
    for `dripping_for` seconds, then nothing more (never the whole body); what the server
    answers, read to the connection's end. It stops sending well before the server's body
    timeout: bytes still arriving when the server answers and closes make the kernel reset
    the connection, which can discard the answer before the client reads it (seen on a
    loaded machine)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /payments HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
        + b"X-Signature: sha256="
        + b"0" * 64
        + f"\r\nContent-Length: {declared}\r\n\r\n".encode()
    )
    await writer.drain()

    async def drip() -> None:
        until = asyncio.get_running_loop().time() + dripping_for
        with contextlib.suppress(ConnectionError):
            while not stop.is_set() and len(sent) < declared - 1:
                writer.write(b" ")
                await writer.drain()
                sent.extend(b" ")
                if asyncio.get_running_loop().time() >= until:
                    return
                await asyncio.sleep(0.2)

    dripping = asyncio.create_task(drip())
    try:
        return await asyncio.wait_for(reader.read(), STILL_ANSWERS)
    finally:
        dripping.cancel()
        writer.close()


async def test_a_slow_client_gets_408_and_the_others_are_answered_meanwhile(offline_app: Any) -> None:
    app = offline_app(body_timeout=2.0)
    async with uvicorn_serving(app, timeout_keep_alive=2) as base:
        port = int(base.rsplit(":", 1)[1])
        stop = asyncio.Event()
        sent = [bytearray() for _ in range(20)]
        slow = [asyncio.create_task(trickle(port, 1000, s, stop)) for s in sent]
        await asyncio.sleep(0.5)  # the slow ones are connected and dripping
        started = time.monotonic()
        await still_answers(base)  # while 20 bodies trickle in
        answered_while_slow = time.monotonic() - started
        answers = await asyncio.gather(*slow)
        stop.set()
    for answer, got in zip(answers, sent, strict=True):
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"problem":"timeout"' in answer and b"within 2 seconds" in answer
        assert b"connection: close" in answer.lower()
        assert 0 < len(got) < 1000  # cut off mid-body, by the server
    assert answered_while_slow < STILL_ANSWERS


async def test_idle_and_half_sent_requests_do_not_hold_up_the_others(offline_app: Any) -> None:
    """Connections that send nothing, or half their headers, and stay: the others are
    answered meanwhile. (uvicorn has no timeout for a request's headers: it never calls
    the app for them, and such a connection stays open until the client leaves; a proxy's
    header timeout, e.g. nginx client_header_timeout, or --limit-concurrency bounds them.)"""
    async with uvicorn_serving(offline_app(), timeout_keep_alive=1) as base:
        port = int(base.rsplit(":", 1)[1])
        held = []
        for n in range(50):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            if n % 2:
                writer.write(b"POST /payments HTTP/1.1\r\nHost: api\r\nX-Sig")
                await writer.drain()
            held.append(writer)
        await asyncio.sleep(1.5)  # past the keep-alive timeout
        await still_answers(base)
        for writer in held:
            writer.close()


# --- a flood --------------------------------------------------------------------------------


FLOOD = 500
GOOD = 3


@pytest.mark.temporal
@pytest.mark.parametrize("rate_limit", [0, 60], ids=["no-limit", "limit-60-a-minute"])
async def test_a_flood_of_bad_signatures_leaves_good_payments_answered(
    dev_env: WorkflowEnvironment, task_queue: str, wf_db: Engine, rate_limit: int
) -> None:
    """500 concurrent POST /payments with bad signatures from one client, and at the same
    time signed payments from another address (127.0.0.2) and health checks. Without a
    limit every bad one is 401; with API_RATE_LIMIT the flooding client gets 429 with
    Retry-After once its bucket is empty. Either way the good payments are applied and
    the health check answers, during and after the flood."""
    seed(wf_db)
    settings = online_settings(dev_env, task_queue)
    client = CollectionsClient(dev_env.client, settings)
    async with running_worker(dev_env.client, task_queue, wf_db):
        loan_id = await overdue(dev_env, task_queue, dpd=10)
        app = create_app(settings, client=client, engine=wf_db, rate_limit=rate_limit)
        async with uvicorn_serving(app) as base:
            # No connection is reused: a kept-alive connection that the server closes
            # (its keep-alive timeout) just as the next request goes out is a client-side
            # race, not the server failing to answer (seen on a loaded machine).
            flood_limits = httpx.Limits(max_connections=FLOOD, max_keepalive_connections=0)
            good_transport = httpx.AsyncHTTPTransport(
                local_address="127.0.0.2", limits=httpx.Limits(max_keepalive_connections=0)
            )
            async with (
                httpx.AsyncClient(base_url=base, timeout=STILL_ANSWERS, limits=flood_limits) as flooder,
                httpx.AsyncClient(base_url=base, timeout=STILL_ANSWERS, transport=good_transport) as good,
            ):

                async def bad(n: int) -> httpx.Response:
                    body = json.dumps({"loan_id": loan_id, "payment_id": f"BAD-{n}", "amount": 1}).encode()
                    return await flooder.post(
                        "/payments", content=body, headers={"X-Signature": sign(body, "x")}
                    )

                retried: set[int] = set()

                async def pay(n: int) -> httpx.Response:
                    """As a gateway pays: a 503 (Temporal did not answer in time, as on a
                    machine this busy) is retried with the same payment id."""
                    body = json.dumps({"loan_id": loan_id, "payment_id": f"GOOD-{n}", "amount": 100}).encode()
                    deadline = asyncio.get_running_loop().time() + STILL_ANSWERS * 2
                    while True:
                        answer = await good.post(
                            "/payments", content=body, headers={"X-Signature": sign(body)}
                        )
                        if answer.status_code != 503 or asyncio.get_running_loop().time() > deadline:
                            return answer
                        retried.add(n)
                        await asyncio.sleep(1.0)

                async def healthy() -> httpx.Response:
                    """Answered; a 503 (Temporal slow to answer the probe on a machine
                    this busy) is asked again, as a load balancer would."""
                    deadline = asyncio.get_running_loop().time() + STILL_ANSWERS * 2
                    while True:
                        answer = await flooder.get("/healthz")
                        if answer.status_code != 503 or asyncio.get_running_loop().time() > deadline:
                            return answer
                        await asyncio.sleep(1.0)

                async def during() -> list[httpx.Response]:
                    await asyncio.sleep(0.05)  # once the flood is under way
                    return list(await asyncio.gather(*(pay(n) for n in range(GOOD)), healthy()))

                flood, answered = await asyncio.wait_for(
                    asyncio.gather(asyncio.gather(*(bad(n) for n in range(FLOOD))), during()),
                    STILL_ANSWERS * 3,
                )
                after_pay = await pay(GOOD)
                after_health = await healthy()
            # A third address, never limited: its bad signature is simply a 401.
            other = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
            async with httpx.AsyncClient(base_url=base, timeout=STILL_ANSWERS, transport=other) as third:
                body = json.dumps({"loan_id": loan_id, "payment_id": "OTHER", "amount": 1}).encode()
                other_bad = await third.post(
                    "/payments", content=body, headers={"X-Signature": sign(body, "x")}
                )

    codes = Counter(r.status_code for r in flood)
    assert other_bad.status_code == 401 and problem(other_bad) == "unauthorized"
    if rate_limit == 0:
        assert codes == {401: FLOOD}, codes
    else:
        assert set(codes) == {401, 429}, codes
        assert codes[401] <= rate_limit + 5, codes  # the bucket's depth, and a little refill
        limited = next(r for r in flood if r.status_code == 429)
        assert limited.headers["Retry-After"].isdigit() and int(limited.headers["Retry-After"]) >= 1
        assert problem(limited) == "rate_limited"
    *payments, health = answered
    for n, answer in enumerate((*payments, after_pay)):
        assert answer.status_code == 200, answer.text
        # Booked once: a first answer is new; a retried one may find it already applied.
        assert answer.json()["duplicate"] is False or n in retried, answer.text
    assert health.status_code == 200 and after_health.status_code == 200
