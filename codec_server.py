"""The codec server of the Web UI (DESIGN.md part 3, "Payload encryption"): it opens
sealed payloads for operators the lender trusts, so the UI can still show a case.

    uvicorn codec_server:app --port 8081
    temporal server start-dev --ui-codec-endpoint http://localhost:8081

| route        | auth                              | answers         |
|--------------|-----------------------------------|-----------------|
| POST /decode | Authorization: Bearer CODEC_TOKEN | 200 400 401 422 |
| POST /encode | Authorization: Bearer CODEC_TOKEN | 200 400 401 422 |

Both take and give Temporal's codec-server JSON, `{"payloads": [{"metadata": {"k":
"<base64>"}, "data": "<base64>"}]}` (the proto3 JSON of `Payloads`); the UI also sends
`X-Namespace`, which is accepted (one key set serves every namespace). The keys are
those of the worker (PAYLOAD_ENCRYPTION_KEY, PAYLOAD_ENCRYPTION_KEY_ID,
PAYLOAD_DECRYPTION_KEYS, client/codec.py); payloads that are not sealed come back as
they are. CORS answers the UI's origins (CODEC_CORS_ORIGINS, comma-separated, default
the dev server's UI http://localhost:8233), preflights without a token. A blank
CODEC_TOKEN refuses every request (401). Nothing decoded is ever logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

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


def create_codec_app(settings: Settings | None = None) -> FastAPI:
    """The codec server over `settings` (default: the environment)."""
    settings = settings or get_settings()
    codec = codec_from_settings(settings) or EncryptionCodec()
    token = settings.codec_token.get_secret_value().encode()
    origins = [o.strip() for o in settings.codec_cors_origins.split(",") if o.strip()]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not token:
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
        if not token or scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise HTTPException(
                401,
                "a valid Authorization: Bearer <CODEC_TOKEN> is needed",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def payloads_of(request: Request) -> Payloads:
        try:
            return json_format.Parse(await request.body(), Payloads())
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

    @app.post("/encode", dependencies=[Depends(authorised)])
    async def encode(request: Request, x_namespace: Namespace = None) -> JSONResponse:
        payloads = await payloads_of(request)
        return answer(Payloads(payloads=await codec.encode(payloads.payloads)))

    return app


app = create_codec_app()
