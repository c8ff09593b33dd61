"""The codec server of the Web UI (DESIGN.md part 3, "Payload encryption"): it opens
sealed payloads for operators the lender trusts, so the UI can still show a case.

    uvicorn codec_server:app --port 8081
    temporal server start-dev --ui-codec-endpoint http://localhost:8081

| route        | auth                              | answers             |
|--------------|-----------------------------------|---------------------|
| POST /decode | Authorization: Bearer CODEC_TOKEN | 200 400 401 413 422 |
| POST /encode | Authorization: Bearer CODEC_TOKEN | 200 400 401 413 422 |
| GET /healthz | none (says nothing of the keys)   | 200                 |

Both take and give Temporal's codec-server JSON, `{"payloads": [{"metadata": {"k":
"<base64>"}, "data": "<base64>"}]}` (the proto3 JSON of `Payloads`); the UI also sends
`X-Namespace`, which is accepted (one key set serves every namespace). The keys are
those of the worker (PAYLOAD_ENCRYPTION_KEY, PAYLOAD_ENCRYPTION_KEY_ID,
PAYLOAD_DECRYPTION_KEYS, client/codec.py); payloads that are not sealed come back as
they are. CORS answers the UI's origins (CODEC_CORS_ORIGINS, comma-separated, default
the dev server's UI http://localhost:8233), preflights without a token. A blank
CODEC_TOKEN refuses every request (401). A body above CODEC_MAX_BODY_BYTES (default
4 MiB), by its Content-Length or by the bytes read, is refused (413). Nothing decoded is
ever logged.

The Web UI cannot send CODEC_TOKEN: it sends `Content-Type` and `X-Namespace`, plus
`Authorization: Bearer <the UI's own login token>` only when its codec setting "pass
access token" is on (and only to an https endpoint), and cookies when "include
credentials" is on. The dev server (`temporal server start-dev`) has no login and sets
only the endpoint. For the local stack alone, CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN=true
(default false; ./run --encrypt turns it on) also opens a request without the token when
it comes from a loopback client address with an `Origin` that is one of
CODEC_CORS_ORIGINS and itself on loopback (http://localhost:..., http://127.0.0.1:...).
An Origin header is easily forged by any local program, so this is no authentication:
in production leave it off and put the codec server behind an authenticating proxy that
adds the bearer token for operators it has logged in (or check the UI's forwarded
access token there).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from client.codec import EncryptionCodec, PayloadDecryptionError, codec_from_settings
from settings import Settings, get_settings

__all__ = ["app", "create_codec_app"]

log = logging.getLogger("collections.codec_server")

# Sent by the Web UI; accepted: one key set serves every namespace.
Namespace = Annotated[str | None, Header(alias="X-Namespace")]


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def loopback_origins(origins: list[str]) -> frozenset[str]:
    """The CORS origins that name a loopback host (the local Web UI): the only ones that
    CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN can ever open without the token."""
    found = set()
    for origin in origins:
        with contextlib.suppress(ValueError):
            if _loopback(urlsplit(origin).hostname):
                found.add(origin.rstrip("/"))
    return frozenset(found)


def create_codec_app(settings: Settings | None = None) -> FastAPI:
    """The codec server over `settings` (default: the environment)."""
    settings = settings or get_settings()
    codec = codec_from_settings(settings) or EncryptionCodec()
    token = settings.codec_token.get_secret_value().encode()
    origins = [o.strip() for o in settings.codec_cors_origins.split(",") if o.strip()]
    max_body = settings.codec_max_body_bytes
    ui_origins = loopback_origins(origins) if settings.codec_allow_ui_origin_without_token else frozenset()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.codec_allow_ui_origin_without_token:
            if ui_origins:
                log.warning(
                    "CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN is on: requests from this machine with Origin %s "
                    "are opened without CODEC_TOKEN. Local development only: never in production",
                    ", ".join(sorted(ui_origins)),
                )
            else:
                log.warning(
                    "CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN is on but no CODEC_CORS_ORIGINS is on loopback: "
                    "it opens nothing, the token is still needed"
                )
        if not token and not ui_origins:
            log.warning("CODEC_TOKEN is not set: every request is refused (401)")
        if not codec.key_ids:
            log.warning("no payload key is set (PAYLOAD_ENCRYPTION_KEY): payloads pass through as they are")
        yield

    app = FastAPI(
        lifespan=lifespan,
        title="Loan collections: codec server",
        version="1",
        description="Opens and seals payloads for the Temporal Web UI (DESIGN.md part 3).",
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_credentials=True,
        allow_methods=["POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        max_age=600,
    )

    def authorised(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token):
            return
        # Local development only (CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN): the local Web UI.
        origin = request.headers.get("origin", "").rstrip("/")
        if ui_origins and origin in ui_origins and _loopback(request.client.host if request.client else None):
            return
        raise HTTPException(
            401,
            "a valid Authorization: Bearer <CODEC_TOKEN> is needed",
            headers={"WWW-Authenticate": "Bearer"},
        )

    def token_only(request: Request) -> None:
        """Sealing data needs the token, always: the Web UI only decodes, and the local
        opening must not let anyone on this host seal what they like (found by review)."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not (token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)):
            raise HTTPException(
                401,
                "a valid Authorization: Bearer <CODEC_TOKEN> is needed",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def read_body(request: Request) -> bytes:
        """The raw body, refused (413) above CODEC_MAX_BODY_BYTES by its Content-Length
        or, without one or with a lying one, by the bytes actually read."""
        too_large = HTTPException(413, f"body too large: at most {max_body} bytes (CODEC_MAX_BODY_BYTES)")
        length = request.headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.strip().isdigit()):
                raise HTTPException(400, "bad Content-Length")
            if int(length) > max_body:
                raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def payloads_of(request: Request) -> Payloads:
        body = await read_body(request)
        try:
            return json_format.Parse(body, Payloads())
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            raise HTTPException(422, f'not a codec request {{"payloads": [...]}}: {exc}') from None

    def answer(payloads: Payloads) -> JSONResponse:
        body: dict[str, Any] = json_format.MessageToDict(payloads)
        return JSONResponse({"payloads": body.get("payloads", [])})

    @app.post("/decode", dependencies=[Depends(authorised)])
    async def decode(request: Request, x_namespace: Namespace = None) -> JSONResponse:
        payloads = await payloads_of(request)
        try:
            opened = await codec.decode(payloads.payloads)
        except PayloadDecryptionError as exc:
            raise HTTPException(400, str(exc)) from None
        return answer(Payloads(payloads=opened))

    @app.post("/encode", dependencies=[Depends(token_only)])
    async def encode(request: Request, x_namespace: Namespace = None) -> JSONResponse:
        payloads = await payloads_of(request)
        return answer(Payloads(payloads=await codec.encode(payloads.payloads)))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_codec_app()
