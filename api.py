"""The inbound HTTP API (DESIGN.md "Talking to the world", contract part 3).

    uvicorn api:app            # OpenAPI docs at /docs

| route                | auth                                | answers                                    |
|----------------------|-------------------------------------|--------------------------------------------|
| POST /payments       | X-Signature, PAYMENT_WEBHOOK_SECRET | 200 (dup. too) 401 404 408 413 422 429 503 |
| POST /receipts       | X-Signature, WEBHOOK_SECRET         | 200 401 404 408 413 422 429 503            |
| POST /calls          | X-Signature, WEBHOOK_SECRET         | 202 401 404 408 413 422 429 503            |
| GET /loans/{loan_id} | Authorization: Bearer API_TOKEN     | 200 401 404 422 429 503                    |
| GET /healthz         | none                                | 200 503                                    |

A signed route checks, in this order: the X-Signature header is there (401), the body
fits API_MAX_BODY_BYTES by its Content-Length and by the bytes read (413) and arrives
whole within API_BODY_TIMEOUT seconds (408: a client that sends its headers and then
trickles the body, or stops), the signature `sha256=<hex HMAC-SHA256 of the raw body>`
matches in constant time (401), the body is JSON of the route's strict wire type (422
naming the field; malformed JSON, bad UTF-8, numbers out of range and nesting deeper than
the parser's recursion limit are 422 too, never a 500). Only then is anything sent to
Temporal or written to the database.

Hostile clients. Each client address may send API_RATE_LIMIT requests a minute (a token
bucket as deep as the limit: bursts up to it, then limit/60 a second; 0 turns it off);
beyond that it gets 429 with Retry-After, before its body is read. GET /healthz is not
limited. Behind a reverse proxy every client has the proxy's address: run uvicorn with
`--proxy-headers --forwarded-allow-ips=<the proxy>` so the limit is per real client, or
limit at the proxy. One slow or flooding client never stops the others: the server is
asynchronous, a body that does not arrive in time is 408, and uvicorn's
`--timeout-keep-alive` closes idle connections (`--limit-concurrency` caps connections:
503 beyond it).

Every message goes through the client library (client/): its `Problem` kinds become the
status: unknown loan 404; bad input, a refusal by the workflow and a closed loan 422
(`problem` says which: a payment on a loan that is closing is refused by the workflow
itself, on one already completed by the server, and the gateway sees the same code);
no server or no worker answering 503 with Retry-After (a payment is retried with the
same payment_id, which is never applied twice).

The log gets the method, the route, the status and the loan id of each request; never a
body, a header or anything personal.

The app is built by `create_app(settings, client=..., engine=...)`: tests hand it a
client of their server and their database; `app` below reads the environment, connects
to Temporal at the first request that needs it and reconnects after a failed connect.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError, field_validator
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from activities.delivery import redact_contacts
from client.errors import ClientError, Problem
from client.loans import CollectionsClient, connect
from domain.desk import CALL_RESULT_PREFIX, CONTACT_LOG_BACKDATE_DAYS
from domain.enums import ContactResult, LoggedChannel
from domain.ledger import PAID_AT_SKEW
from models import repo
from models.db import make_engine, session_scope
from models.wire import (
    CaseView,
    ContactLogIn,
    Ident,
    Instant,
    LoanStart,
    PaymentIn,
    PaymentResult,
    Text,
    Wire,
)
from settings import Settings, get_settings

__all__ = ["CallIn", "PaymentCallback", "ReceiptIn", "app", "create_app"]

log = logging.getLogger("api")

M = TypeVar("M", bound=BaseModel)

SIGNATURE_PREFIX = "sha256="
RETRY_AFTER_SECONDS = 5  # what a 503 tells the caller to wait before retrying
PAYMENT_WAIT_SECONDS = 30.0  # how long a payment waits for the workflow's answer
STATE_WAIT_SECONDS = 15.0
HEALTH_WAIT_SECONDS = 3.0
# Hostile clients: API_RATE_LIMIT (requests a minute per client address; default 6000,
# 100 a second sustained: far above a gateway's, far below a flood) and API_BODY_TIMEOUT
# (seconds for a body to arrive) come from Settings; create_app's arguments override.
UNLIMITED_PATHS = frozenset({"/healthz"})
# The voice calls the IVR provider reports are logged on the loan as this collector, as
# contact `ivr:<message_id>`: the workflow matches it to the call it placed, which
# counted toward the caps once, when it was placed.
IVR_AGENT = "ivr"

# What each kind of problem the client library reports is for an HTTP caller.
STATUS: dict[Problem, int] = {
    Problem.BAD_INPUT: 422,
    Problem.UNKNOWN_LOAN: 404,
    Problem.CLOSED: 422,
    Problem.REFUSED: 422,
    Problem.NO_ANSWER: 503,
    Problem.UNAVAILABLE: 503,
}


# --- bodies ------------------------------------------------------------------------------

# The loan id exactly as a start input has it (the pattern, the length).
LoanId = Annotated[str, LoanStart.model_fields["loan_id"]]
LOAN_ID = TypeAdapter(LoanId)


class PaymentCallback(PaymentIn):
    """POST /payments: the payment gateway's callback, the `record_payment` argument
    (payment_id, amount in minor units, currency, paid_at, channel) and the loan."""

    loan_id: LoanId


class ReceiptIn(Wire):
    """POST /receipts: the provider's final word on a message the worker sent."""

    message_id: Ident
    status: Literal["delivered", "failed"]
    detail: Text | None = None


class CallIn(Wire):
    """POST /calls: the outcome of a voice call the IVR provider placed."""

    message_id: Ident
    result: ContactResult
    at: Instant

    @field_validator("at")
    @classmethod
    def _when_the_call_was(cls, at: datetime) -> datetime:
        # The result goes to the loan as a signal (the contract's contact_logged), whose
        # refusals only reach the audit log: refuse here, with a 422 naming `at`, what
        # the workflow refuses of any call report (a loan's own rules stay its own).
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-03-01T10:00:00+08:00")
        now = datetime.now(UTC)
        if at > now + PAID_AT_SKEW:
            raise ValueError(f"{at.isoformat()} is in the future")
        if at < now - timedelta(days=CONTACT_LOG_BACKDATE_DAYS):
            raise ValueError(f"{at.isoformat()} is more than {CONTACT_LOG_BACKDATE_DAYS} days ago")
        return at


BODIES: tuple[type[BaseModel], ...] = (PaymentCallback, ReceiptIn, CallIn)


# --- errors ------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than success: `detail` is one line saying what is wrong."""

    def __init__(
        self,
        status: int,
        detail: str,
        problem: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problem = problem
        self.errors = errors
        self.headers = headers

    def response(self) -> JSONResponse:
        content: dict[str, Any] = {"detail": self.detail, "problem": self.problem}
        if self.errors is not None:
            content["errors"] = self.errors
        return JSONResponse(content, status_code=self.status, headers=self.headers)


# An answer given before the body was read whole: the connection cannot be reused.
CLOSE = {"Connection": "close"}


def unavailable(what: str) -> ApiError:
    return ApiError(
        503,
        f"{what} is unavailable: retry later",
        "unavailable",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def unauthorized(detail: str, scheme: str) -> ApiError:
    return ApiError(401, detail, "unauthorized", headers={"WWW-Authenticate": scheme})


def from_client(exc: ClientError, loan_id: str) -> ApiError:
    """The client library's error as an answer. Where Temporal is out of reach the
    details (addresses, task queue) go to the log, not to the caller."""
    status = STATUS[exc.problem]
    if status == 503:
        log.warning("temporal %s for loan %s: %s", exc.problem.value, loan_id, exc.message)
        return unavailable("the collections service")
    detail = f"unknown loan {loan_id}" if exc.problem is Problem.UNKNOWN_LOAN else exc.message
    return ApiError(status, detail, exc.problem.value)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def invalid(exc: ValidationError | RequestValidationError) -> ApiError:
    """422 naming each field (never echoing the values sent)."""
    errors = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return ApiError(422, detail, Problem.BAD_INPUT.value, errors=errors)


def parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise invalid(exc) from None


# --- signatures and bodies -----------------------------------------------------------------


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of body>`: the X-Signature of a body, both directions."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: SecretStr, header: str, body: bytes, name: str) -> None:
    key = secret.get_secret_value()
    if not key:  # an empty key would make every caller's signature "valid"
        log.error("%s is not set: every signed request is refused", name)
        raise unauthorized("the signature cannot be verified", "Signature")
    expected = signature(key, body).encode()
    if not hmac.compare_digest(expected, header.strip().lower().encode("latin-1", "replace")):
        raise unauthorized("bad X-Signature: expected sha256=<hex HMAC-SHA256 of the raw body>", "Signature")


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The raw body, refused (413) above `limit` bytes by its Content-Length or, without
    one or with a lying one, by the bytes actually read; and (408, the connection closed)
    when the whole of it has not arrived `timeout` seconds after we began to read it."""
    too_large = ApiError(413, f"body too large: at most {limit} bytes", "too_large", headers=CLOSE)
    length = request.headers.get("content-length")
    if length is not None:
        if not (length.isascii() and length.strip().isdigit()):
            raise ApiError(400, "bad Content-Length", "bad_request", headers=CLOSE)
        if int(length) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408, f"request body not received within {timeout:g} seconds", "timeout", headers=CLOSE
        ) from None
    return b"".join(chunks)


async def signed_body(
    request: Request,
    header: str | None,
    secret: SecretStr,
    name: str,
    limit: int,
    timeout: float | None = None,
) -> bytes:
    if not header:
        raise unauthorized("X-Signature missing: send sha256=<hex HMAC-SHA256 of the raw body>", "Signature")
    raw = await read_body(request, limit, timeout)
    verify_signature(secret, header, raw, name)
    return raw


# --- the app -------------------------------------------------------------------------------


class Backends:
    """What the routes talk to: the collections client (connected at first use, again
    after a failed connect) and the database engine."""

    def __init__(self, settings: Settings, client: CollectionsClient | None, engine: Engine | None) -> None:
        self.settings = settings
        self._client = client
        self._lock = asyncio.Lock()
        self._engine = engine
        self.owns_engine = engine is None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.settings.database_url)
        return self._engine

    def close(self) -> None:
        if self.owns_engine and self._engine is not None:
            self._engine.dispose()

    async def collections(self) -> CollectionsClient:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await connect(self.settings)  # ClientError UNAVAILABLE
        return self._client

    async def db(self, work: Callable[[Session], Any]) -> Any:
        """Run `work` in one unit of work in a worker thread; a database that fails is 503."""

        def unit() -> Any:
            with session_scope(self.engine, immediate=True) as session:
                return work(session)

        try:
            return await run_in_threadpool(unit)
        except SQLAlchemyError as exc:
            log.warning("database error: %s", type(exc).__name__)
            raise unavailable("the database") from None


class AccessLog:
    """ASGI middleware: one log line per request (method, route, status, loan id)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def capture(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", None) or "(no route)"
            loan_id = scope.get("state", {}).get("loan_id", "-")
            log.info("%s %s %s loan=%s", scope["method"], route, status, loan_id)


def client_key(address: str) -> str:
    """Who a request is counted against: its IPv4 address, or its IPv6 /64 network (one
    host usually holds a whole /64 and could change address every request)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else str(ip)


class RateLimit:
    """ASGI middleware: at most `per_minute` requests a minute from each client address
    (a token bucket `per_minute` deep, refilled at per_minute/60 a second); beyond it
    429 with Retry-After, before the body is read. `per_minute` 0: no limit. Paths in
    UNLIMITED_PATHS (health checks) are not counted."""

    MAX_CLIENTS = 10_000  # buckets kept (least recently seen first)

    def __init__(self, app: Callable[..., Awaitable[None]], per_minute: int) -> None:
        self.app = app
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        # client -> (tokens, as of), least recently seen first: dropping refilled buckets
        # from the front costs O(1) a request (found by review: a scan of all of them).
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        """0 when `client` may go now (one token taken), else the seconds to wait."""
        self._prune(now)
        if client not in self.buckets and len(self.buckets) >= self.MAX_CLIENTS:
            # Every bucket kept is still in use: a new address waits rather than a held
            # back one being forgotten and starting afresh (found by review).
            return 1.0 / self.rate
        tokens, since = self.buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - since) * self.rate)
        if tokens >= 1.0:
            self.buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self.buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        self.buckets.move_to_end(client)
        return wait

    def _prune(self, now: float) -> None:
        """Forget the buckets at the front that have refilled (as good as new)."""
        full_after = self.capacity / self.rate
        while self.buckets:
            _, since = next(iter(self.buckets.values()))
            if now - since < full_after:
                return
            self.buckets.popitem(last=False)

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.capacity <= 0 or scope.get("path") in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.take(client_key(client[0] if client else "-"), asyncio.get_running_loop().time())
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(wait))
        answer = ApiError(
            429,
            f"too many requests: at most {self.capacity:g} a minute from one client; retry in {retry} s",
            "rate_limited",
            headers={"Retry-After": str(retry), **CLOSE},
        )
        await answer.response()(scope, receive, send)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The routes read their raw bodies (the signature is over the bytes), so FastAPI
    cannot see the body types: they are added to the schema here."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in BODIES:
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in body.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components[model.__name__] = body
        app.openapi_schema = schema
        return schema

    return build


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "missing or bad signature / token",
        404: "unknown loan or message",
        408: "the body did not arrive in time (API_BODY_TIMEOUT)",
        413: "body too large",
        422: "bad input (naming the field) or refused by the loan's workflow",
        429: "too many requests from this client (API_RATE_LIMIT a minute): retry (Retry-After)",
        503: "Temporal or the database unavailable: retry (Retry-After)",
    }
    return {code: {"description": text[code]} for code in codes}


BearerCredentials = Annotated[
    HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False, description="API_TOKEN"))
]
SignatureHeader = Annotated[
    str | None,
    Header(alias="X-Signature", description="sha256=<hex HMAC-SHA256 of the raw body>"),
]


def create_app(
    settings: Settings | None = None,
    *,
    client: CollectionsClient | None = None,
    engine: Engine | None = None,
    rate_limit: int | None = None,
    body_timeout: float | None = None,
) -> FastAPI:
    """The API over `settings` (default: the environment). `client`: an already
    connected collections client (else one is connected at first use); `engine`: the
    lender's database (else one for settings.database_url); `rate_limit` (requests a
    minute per client, 0: none) and `body_timeout` (seconds) override the settings'."""
    settings = settings or get_settings()
    backends = Backends(settings, client, engine)
    limit = settings.api_max_body_bytes
    if rate_limit is None:
        rate_limit = settings.api_rate_limit
    if body_timeout is None:
        body_timeout = settings.api_body_timeout
    if rate_limit < 0 or body_timeout <= 0:
        raise ValueError("API_RATE_LIMIT must be >= 0 and API_BODY_TIMEOUT > 0")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Served (uvicorn api:app): our lines go to stderr at LOG_LEVEL, beside uvicorn's.
        log.setLevel(settings.log_level.upper())
        if not log.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
            log.addHandler(handler)
        for name, secret in (
            ("PAYMENT_WEBHOOK_SECRET", settings.payment_webhook_secret),
            ("WEBHOOK_SECRET", settings.webhook_secret),
            ("API_TOKEN", settings.api_token),
        ):
            if not secret.get_secret_value():
                log.warning("%s is not set: the routes it guards refuse every request (401)", name)
        yield
        backends.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Loan collections: inbound API",
        version="1",
        description="Payments, delivery receipts and call outcomes in; a loan's state out "
        "(DESIGN.md, contract part 3).",
    )
    app.state.backends = backends
    app.add_middleware(RateLimit, per_minute=rate_limit)
    app.add_middleware(AccessLog)  # outermost: a 429 is logged too
    app.openapi = _openapi(app)  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(exc).response()

    @app.post(
        "/payments",
        response_model=PaymentResult,
        summary="A payment from the gateway: the record_payment update",
        responses=_answers(401, 404, 408, 413, 422, 429, 503),
        openapi_extra=_json_body(PaymentCallback),
    )
    async def payments(request: Request, x_signature: SignatureHeader = None) -> PaymentResult:
        raw = await signed_body(
            request,
            x_signature,
            settings.payment_webhook_secret,
            "PAYMENT_WEBHOOK_SECRET",
            limit,
            body_timeout,
        )
        body = parse(PaymentCallback, raw)
        loan_id = request.state.loan_id = body.loan_id
        payment = PaymentIn.model_validate(body.model_dump(exclude={"loan_id"}))
        try:
            collections = await backends.collections()
            result = await collections.record_payment(loan_id, payment, wait=PAYMENT_WAIT_SECONDS)
        except ClientError as exc:
            raise from_client(exc, loan_id) from None
        assert result is not None  # an update always answers
        return result

    @app.post(
        "/receipts",
        summary="A delivery receipt from the SMS / voice provider: the outbox row",
        responses=_answers(401, 404, 408, 413, 422, 429, 503),
        openapi_extra=_json_body(ReceiptIn),
    )
    async def receipts(request: Request, x_signature: SignatureHeader = None) -> dict[str, Any]:
        raw = await signed_body(
            request, x_signature, settings.webhook_secret, "WEBHOOK_SECRET", limit, body_timeout
        )
        body = parse(ReceiptIn, raw)

        def apply(session: Session) -> dict[str, Any] | None:
            try:
                # A receipt may echo the number or address, and a failed one becomes the
                # contact's reason, which can reach the loan's history: masked before it
                # is kept (found by review).
                detail = redact_contacts(body.detail) if body.detail is not None else None
                result = repo.record_receipt(session, body.message_id, body.status, detail)
            except LookupError:
                return None
            row = repo.contact_by_key(session, body.message_id)
            loan_id = row.loan_id if row is not None else None
            # `applied`: false when a final status already stood (the first final word stands).
            return {
                "message_id": body.message_id,
                "loan_id": loan_id,
                "status": result.status,
                "applied": result.changed,
            }

        answer = await backends.db(apply)
        if answer is None:
            raise ApiError(404, f"unknown message {body.message_id}", "unknown_message")
        request.state.loan_id = answer.pop("loan_id")
        return answer

    @app.post(
        "/calls",
        status_code=202,
        summary="A voice call's outcome from the IVR provider: the contact_logged signal",
        responses=_answers(401, 404, 408, 413, 422, 429, 503),
        openapi_extra=_json_body(CallIn),
    )
    async def calls(request: Request, x_signature: SignatureHeader = None) -> dict[str, Any]:
        raw = await signed_body(
            request, x_signature, settings.webhook_secret, "WEBHOOK_SECRET", limit, body_timeout
        )
        body = parse(CallIn, raw)

        def outbox_row(session: Session) -> tuple[str, str] | None:
            row = repo.contact_by_key(session, body.message_id)
            return None if row is None else (row.loan_id, row.channel)

        found = await backends.db(outbox_row)
        if found is None:
            raise ApiError(404, f"unknown message {body.message_id}", "unknown_message")
        loan_id, channel = found
        request.state.loan_id = loan_id
        if channel != LoggedChannel.VOICE.value:
            raise ApiError(
                422, f"message_id: {body.message_id} is a {channel} message, not a call", "bad_input"
            )
        try:
            contact = ContactLogIn(
                contact_id=CALL_RESULT_PREFIX + body.message_id,
                agent_ids=[IVR_AGENT],
                channel=LoggedChannel.VOICE,
                result=body.result,
                at=body.at,
            )
        except ValidationError as exc:  # an id at the length limit is too long with the prefix
            raise ApiError(
                422, f"message_id: too long for a contact id ({exc.error_count()} errors)", "bad_input"
            ) from None
        try:
            collections = await backends.collections()
            await collections.log_contact(loan_id, contact, fire_and_forget=True, wait=PAYMENT_WAIT_SECONDS)
        except ClientError as exc:
            raise from_client(exc, loan_id) from None
        return {"loan_id": loan_id, "contact_id": contact.contact_id}

    @app.get(
        "/loans/{loan_id}",
        summary="A loan's case: the state query",
        responses={200: {"model": CaseView}, **_answers(401, 404, 422, 429, 503)},
    )
    async def loan_state(
        request: Request,
        loan_id: str,
        credentials: BearerCredentials,
    ) -> JSONResponse:
        token = settings.api_token.get_secret_value()
        given = credentials.credentials if credentials is not None else ""
        if not token:
            log.error("API_TOKEN is not set: every GET /loans is refused")
        if not (token and given and hmac.compare_digest(token.encode(), given.encode("utf-8", "replace"))):
            raise unauthorized("missing or bad bearer token", "Bearer")
        try:
            loan_id = LOAN_ID.validate_python(loan_id)
        except ValidationError as exc:
            raise ApiError(422, f"loan_id: {exc.errors()[0]['msg']}", Problem.BAD_INPUT.value) from None
        request.state.loan_id = loan_id
        try:
            collections = await backends.collections()
            state = await collections.state(loan_id, wait=STATE_WAIT_SECONDS)
        except ClientError as exc:
            if exc.problem is Problem.REFUSED:  # the workflow could not answer the query
                raise from_client(ClientError(exc.message, Problem.NO_ANSWER), loan_id) from None
            raise from_client(exc, loan_id) from None
        return JSONResponse(state)

    @app.get("/healthz", summary="Temporal and the database answer", responses=_answers(503))
    async def healthz() -> JSONResponse:
        async def temporal() -> None:
            collections = await backends.collections()
            service = collections.temporal.workflow_service
            await service.describe_namespace(
                DescribeNamespaceRequest(namespace=collections.temporal.namespace),
                retry=False,
                timeout=timedelta(seconds=HEALTH_WAIT_SECONDS),
            )

        async def database() -> None:
            def select_one() -> None:
                with backends.engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))

            await run_in_threadpool(select_one)

        async def check(name: str, probe: Callable[[], Awaitable[None]]) -> str:
            try:
                await asyncio.wait_for(probe(), timeout=HEALTH_WAIT_SECONDS + 2)
                return "ok"
            except Exception as exc:  # any failure is "does not answer"
                log.warning("healthz: %s does not answer (%s)", name, type(exc).__name__)
                return "unavailable"

        answers = dict(
            zip(
                ("temporal", "database"),
                await asyncio.gather(check("temporal", temporal), check("database", database)),
                strict=True,
            )
        )
        ok = all(v == "ok" for v in answers.values())
        return JSONResponse(
            answers,
            status_code=200 if ok else 503,
            headers=None if ok else {"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    return app


app = create_app()
