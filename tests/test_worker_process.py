"""worker.py as an operator runs it: a separate process, configured by the environment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from client.search_attributes import ensure_search_attributes
from models import contract, repo, search
from models.db import make_engine, session_scope, upgrade_schema
from models.tables import BorrowerCreate
from tests.conftest import _binary
from tests.loans import loan_start, local_today, start_loan, state, terminate_started

pytestmark = pytest.mark.temporal
ROOT = Path(__file__).resolve().parent.parent


def spawn(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_worker_process_runs_loans_logs_the_loan_id_and_stops_cleanly(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    address = dev_env.client.service_client.config.target_host
    proc = spawn({"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue, "DATABASE_URL": url})
    try:
        today = local_today(datetime.now().astimezone())
        start = loan_start(today - timedelta(days=40), first_due_date=today - timedelta(days=9))
        handle = await start_loan(dev_env.client, task_queue, start)
        for _ in range(100):
            s = await state(handle)
            if s.contacts_sent or s.stage == "EARLY":
                break
            await asyncio.sleep(0.2)
        assert s.stage == "EARLY" and s.days_past_due in (9, 10)  # 10 if the local day turned
        # The worker brought the schema up on start and writes the lender's records.
        engine = make_engine(url)
        with Session(engine) as db:
            repo.upsert_borrower(db, BorrowerCreate(borrower_id="B-x", name="n"))
            db.commit()
        engine.dispose()
    finally:
        await terminate_started()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"loan={start.loan_id}" in out
    assert "worker stopped" in out


def test_worker_names_an_unreachable_server_and_exits_non_zero(tmp_path: Path) -> None:
    # Nothing listens on this port.
    proc = spawn({"TEMPORAL_ADDRESS": "127.0.0.1:1", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "cannot reach the Temporal server at 127.0.0.1:1" in out


def test_worker_refuses_to_start_where_search_attributes_cannot_be_registered(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    # A namespace the server does not have: its search attributes can be neither listed
    # nor registered, and a workflow there would be stuck, so the worker does not start.
    address = dev_env.client.service_client.config.target_host
    proc = spawn(
        {
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "no-such-namespace",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        }
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "search attributes of namespace 'no-such-namespace'" in out


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out


async def test_worker_starts_where_the_attributes_exist_but_cannot_be_listed(
    task_queue: str, tmp_path: Path
) -> None:
    # Defect 9: the time-skipping server cannot list search attributes and answers
    # "already exists" to adding one. With them registered, the worker used to take that
    # answer as a refusal and exit 2. A server of its own: a worker process stopped
    # mid-case must not hold up the time skipping of the session's server.
    ts_env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"), data_converter=pydantic_data_converter
    )
    assert sorted(await ensure_search_attributes(ts_env.client, ts_env.client.namespace)) == sorted(
        key.name for key in search.ALL_KEYS
    )
    address = ts_env.client.service_client.config.target_host
    url = f"sqlite:///{tmp_path / 'w.db'}"
    proc = spawn({"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue, "DATABASE_URL": url})
    try:
        today = local_today(await ts_env.get_current_time())
        start = loan_start(today - timedelta(days=40), first_due_date=today - timedelta(days=9))
        handle = await start_loan(ts_env.client, task_queue, start)
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # the worker process runs the loan: its query answers
            assert proc.poll() is None, f"the worker exited {proc.returncode}:\n{_stop(proc)}"
            try:
                s = await asyncio.wait_for(state(handle), timeout=5)
                if s.stage == "EARLY":
                    break
            except TimeoutError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "the worker did not run the loan"
            await asyncio.sleep(0.2)
        assert s.loan_id == start.loan_id and s.days_past_due in (9, 10)
    finally:
        await terminate_started()
        out = _stop(proc)
        await ts_env.shutdown()
    assert proc.returncode == 0, out
    assert "worker stopped" in out


async def test_two_workers_starting_at_once_on_a_fresh_namespace(tmp_path: Path) -> None:
    # A dev server started without the search attributes: two workers register them at
    # the same moment. Both start, and a loan then upserts every attribute.
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=[],
    )
    task_queue = "tq-race"
    url = f"sqlite:///{tmp_path / 'w.db'}"
    upgrade_schema(url)  # migrated once here: the race under test is Temporal's
    engine = make_engine(url)
    with session_scope(engine) as db:
        repo.add_agent(db, "agent-race", "Agent Race")
    engine.dispose()
    address = env.client.service_client.config.target_host
    config = {"TEMPORAL_ADDRESS": address, "TEMPORAL_TASK_QUEUE": task_queue, "DATABASE_URL": url}
    procs = [spawn(config), spawn(config)]
    try:
        request = DescribeTaskQueueRequest(
            namespace=env.client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        deadline = asyncio.get_running_loop().time() + 120
        while True:  # both workers poll
            for proc in procs:
                assert proc.poll() is None, f"a worker exited {proc.returncode}:\n{_stop(proc)}"
            described = await env.client.workflow_service.describe_task_queue(request)
            if len(described.pollers) >= 2:
                break
            assert asyncio.get_running_loop().time() < deadline, "the workers do not both poll"
            await asyncio.sleep(0.3)

        today = local_today(datetime.now().astimezone())
        start = loan_start(today - timedelta(days=71), first_due_date=today - timedelta(days=40))
        handle = await start_loan(env.client, task_queue, start)
        # A promise to pay: the hold's attributes are set too (unset while nothing holds).
        promise = {"promise_id": "P-race", "amount": 1_000, "agent_id": "agent-race"}
        promise["promised_date"] = (today + timedelta(days=3)).isoformat()
        await handle.execute_update(contract.RECORD_PROMISE, promise)
        wanted = {key.name for key in search.ALL_KEYS}
        deadline = asyncio.get_running_loop().time() + 60
        while True:  # every attribute of models/search.py upserted (an agent took the case)
            desc = await handle.describe()
            names = {pair.key.name for pair in desc.typed_search_attributes}
            if wanted <= names:
                break
            assert asyncio.get_running_loop().time() < deadline, f"missing: {sorted(wanted - names)}"
            await asyncio.sleep(0.3)
        assert {p.key.name: p.value for p in desc.typed_search_attributes}["AssignedAgent"] == "agent-race"
    finally:
        await terminate_started()
        outs = [_stop(proc) for proc in procs]
        await env.shutdown()
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out
