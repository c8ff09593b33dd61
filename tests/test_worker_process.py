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
from temporalio.testing import WorkflowEnvironment

from models import repo
from models.db import make_engine
from models.tables import BorrowerCreate
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
