"""Seen in a real browser: a sealed loan read through the codec server (issue 11).

A dev server whose Web UI is pointed at a codec server (`--ui-codec-endpoint`), the
codec server itself (codec_server.py under uvicorn, in a thread) with the local-only
opening for the UI's origin on (CODEC_ALLOW_UI_ORIGIN_WITHOUT_TOKEN, as ./run --encrypt
runs it), and a worker that seals payloads. One loan is started: a client without the
codec sees only `binary/encrypted` payloads in its history, and headless chromium shows
the loan's input and summary in clear, decoded by the codec server (the test watches the
UI's POSTs to /decode succeed). A second codec server with the opening off (the default)
refuses the same request without the token.

Chromium is Debian's package, as in tests/test_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.api.history.v1 import History
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from client import connect
from client.codec import ENCODING, KEY_ID_METADATA
from codec_server import create_codec_app
from models import search
from models.contract import workflow_id
from settings import Settings
from tests.loans import loan_start
from tests.test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    _free_port,
    _need_chromium,
    _temporal,
    _text_shown,
)

pytestmark = [pytest.mark.browser, pytest.mark.temporal]

TOKEN = "codec-token-for-the-browser-test"
KEY_ID = "browser-test"
SHANGHAI = ZoneInfo("Asia/Shanghai")


class ThreadedServer:
    """uvicorn serving `app` on 127.0.0.1:`port` in a thread of its own (it installs no
    signal handlers there), so the test's event loop stays free for the browser."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"codec-{port}", daemon=True)

    async def __aenter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = asyncio.get_running_loop().time() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the codec server on port {self.port} did not start")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the codec server on port {self.port} did not start in 30s")
            await asyncio.sleep(0.05)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        await asyncio.to_thread(self.thread.join, 15)


def codec_settings(ui_port: int, *, relaxed: bool, key: str) -> Settings:
    return Settings(
        payload_encryption_key=key,
        payload_encryption_key_id=KEY_ID,
        codec_token=TOKEN,
        codec_cors_origins=f"http://127.0.0.1:{ui_port},http://localhost:{ui_port}",
        codec_allow_ui_origin_without_token=relaxed,
    )


@dataclass
class SealedStack:
    env: WorkflowEnvironment
    settings: Settings  # the worker's: sealing
    ui: str  # http://127.0.0.1:PORT, the page's origin
    codec: ThreadedServer  # the UI's codec server, opening for the UI's origin
    strict: ThreadedServer  # the same keys, the opening off (the default)


@pytest_asyncio.fixture(scope="module")
async def sealed_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SealedStack]:
    _need_chromium()
    from worker import run_worker

    key = base64.b64encode(os.urandom(32)).decode()
    ui_port = _free_port()
    relaxed_app = create_codec_app(codec_settings(ui_port, relaxed=True, key=key))
    strict_app = create_codec_app(codec_settings(ui_port, relaxed=False, key=key))
    async with (
        ThreadedServer(relaxed_app, _free_port()) as codec,
        ThreadedServer(strict_app, _free_port()) as strict,
    ):
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=_temporal(),
            ui=True,
            ui_port=ui_port,
            search_attributes=list(search.ALL_KEYS),
            data_converter=pydantic_data_converter,  # no codec: this client sees what is stored
            dev_server_extra_args=["--ui-codec-endpoint", codec.url],
        )
        tmp = tmp_path_factory.mktemp("ui-codec")
        settings = Settings(
            temporal_address=env.client.service_client.config.target_host,
            temporal_namespace=env.client.namespace,
            temporal_task_queue=f"ui-codec-{uuid.uuid4().hex[:8]}",
            database_url=f"sqlite:///{tmp / 'collections.db'}",
            payload_encryption_key=key,
            payload_encryption_key_id=KEY_ID,
        )
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(settings, stop_event=stop))
        try:
            yield SealedStack(env, settings, f"http://127.0.0.1:{ui_port}", codec, strict)
        finally:
            stop.set()
            await asyncio.wait_for(worker, timeout=60)
            await env.shutdown()


def _wire(payloads: Payloads) -> dict[str, Any]:
    return {"payloads": json_format.MessageToDict(payloads).get("payloads", [])}


async def test_the_web_ui_reads_a_sealed_loan_through_the_codec_server(sealed_stack: SealedStack) -> None:
    from playwright.async_api import async_playwright, expect

    secret = uuid.uuid4().hex[:8].upper()
    loan_id, borrower_id = f"SEAL{secret}", f"BORROWER-{secret}"
    wid = workflow_id(loan_id)
    first_due = datetime.now(SHANGHAI).date() + timedelta(days=10)
    sealed = await connect(sealed_stack.settings)
    await sealed.start(
        loan_start(
            first_due - timedelta(days=30),
            loan_id=loan_id,
            borrower_id=borrower_id,
            principal=1_234_500,
            first_due_date=first_due,
        )
    )

    # Without the codec, the history holds only sealed payloads: input and summary.
    history = History(events=(await sealed_stack.env.client.get_workflow_handle(wid).fetch_history()).events)
    started = history.events[0]
    attributes = started.workflow_execution_started_event_attributes
    metadata = started.user_metadata
    for payload in [*attributes.input.payloads, metadata.summary, metadata.details]:
        assert payload.metadata["encoding"] == ENCODING
        assert payload.metadata[KEY_ID_METADATA] == KEY_ID.encode()
        assert secret.encode() not in payload.data and b"1234500" not in payload.data

    # The strict codec server (the opening off, the default) wants the token, Origin or not.
    request = _wire(Payloads(payloads=list(attributes.input.payloads)))
    async with httpx.AsyncClient(timeout=10) as http:
        for headers in ({"Origin": sealed_stack.ui}, {}):
            refused = await http.post(f"{sealed_stack.strict.url}/decode", json=request, headers=headers)
            assert refused.status_code == 401, (headers, refused.text)
            assert secret not in refused.text
        opened = await http.post(
            f"{sealed_stack.strict.url}/decode", json=request, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert opened.status_code == 200, opened.text
        assert borrower_id in base64.b64decode(opened.json()["payloads"][0]["data"]).decode()
        # The relaxed one opens for the UI's origin only: no Origin and no token is refused.
        assert (await http.post(f"{sealed_stack.codec.url}/decode", json=request)).status_code == 401

    ARTIFACTS.mkdir(exist_ok=True)
    decodes: list[tuple[str, int]] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.on(
                "response",
                lambda r: (
                    decodes.append((r.request.method, r.status))
                    if r.url.startswith(sealed_stack.codec.url + "/decode")
                    else None
                ),
            )
            await page.goto(f"{sealed_stack.ui}/namespaces/default/workflows/{quote(wid)}")
            await expect(page.get_by_role("heading", name=wid).first).to_be_visible()
            # The Input panel: the start input, in clear, only the codec server could open.
            shown = await _text_shown(page, f'"borrower_id": "{borrower_id}"', '"principal": 1234500')
            assert "binary/encrypted" not in shown
            await page.screenshot(path=str(ARTIFACTS / "ui-codec-loan-input.png"), full_page=True)
            # The summary and details (sealed user metadata), as markdown in iframes.
            await page.get_by_role("tab", name="User Metadata").click()
            await _text_shown(
                page,
                f"Loan {loan_id} · credit · ¥12,345.00 · 12 mo at 18.00% · policy standard",  # summary
                "18.00% a year (1800 bps)",  # details
            )
            await page.screenshot(path=str(ARTIFACTS / "ui-codec-loan-user-metadata.png"), full_page=True)
        finally:
            await browser.close()
    # What the page showed came from the codec server, answered for the UI's origin.
    assert decodes, "the Web UI never called the codec server"
    assert all(status == 200 for _method, status in decodes), decodes
