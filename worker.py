"""The worker: runs LoanCollection workflows and the activities behind them.

    python worker.py

Configuration comes from the environment (settings.py). On start it brings the database
schema up to date and makes sure every search attribute the workflow upserts is
registered in its namespace: a workflow that upserts an unregistered attribute is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker

from activities import collection_activities
from activities.providers import deliverer_from_settings
from client.search_attributes import SearchAttributesMissing, ensure_search_attributes
from domain.policy import POLICY_DIR, load_policy
from models.db import make_engine, upgrade_schema
from settings import Settings, connect, get_settings, settled
from workflows.loan_collection import LoanCollection

log = logging.getLogger("worker")


class LoanLogFormatter(logging.Formatter):
    """Puts the loan id on every line logged inside a workflow or an activity, so one
    loan's story can be grepped out of many workers' logs."""

    def format(self, record: logging.LogRecord) -> str:
        workflow_id = ""
        for extra in ("temporal_workflow", "temporal_activity"):
            info = getattr(record, extra, None)
            if isinstance(info, dict):
                workflow_id = str(info.get("workflow_id", ""))
        if not workflow_id and activity.in_activity():
            workflow_id = activity.info().workflow_id or ""
        record.loan_id = workflow_id.removeprefix("loan-") or "-"
        return super().format(record)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(LoanLogFormatter("%(asctime)s %(levelname)s %(name)s loan=%(loan_id)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def preload_policies() -> None:
    """Read every policy file now, so workflow code never touches the disk."""
    for path in sorted(POLICY_DIR.glob("*.toml")):
        for product in (None, "credit", "installment", "auto"):
            load_policy(path.stem, product)


def build_worker(
    client: Client, task_queue: str, activities: list[Callable[..., Any]], executor: ThreadPoolExecutor
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[LoanCollection],
        activities=activities,
        activity_executor=executor,
        graceful_shutdown_timeout=timedelta(seconds=30),
    )


async def run_worker(settings: Settings, *, stop_event: asyncio.Event | None = None) -> None:
    preload_policies()
    upgrade_schema(settings.database_url)
    deliverer = deliverer_from_settings(settings)  # a bad delivery configuration stops the start
    engine = make_engine(settings.database_url)
    client = await connect(settings)
    added = await ensure_search_attributes(client, client.namespace)
    if added:
        log.info("registered search attributes %s", ", ".join(added))
    stop = stop_event or asyncio.Event()
    with ThreadPoolExecutor(max_workers=16) as executor:
        worker = build_worker(
            client, settings.temporal_task_queue, collection_activities(engine, deliverer), executor
        )
        log.info(
            "worker polling task queue %r on %s namespace %r",
            settings.temporal_task_queue,
            settings.temporal_address,
            settings.temporal_namespace,
        )
        async with worker:
            await stop.wait()
        log.info("worker stopped: in-flight activities finished")
    engine.dispose()


def main() -> int:
    settings = get_settings()
    configure_logging(settings.log_level)
    if settings.metrics_port:
        Runtime.set_default(
            Runtime(
                telemetry=TelemetryConfig(
                    metrics=PrometheusConfig(bind_address=f"0.0.0.0:{settings.metrics_port}")
                )
            ),
            error_if_already_set=False,
        )

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_worker(settings, stop_event=stop)
            code = 0
        except SearchAttributesMissing as exc:
            log.error("%s", exc)
            code = 2
        except RuntimeError as exc:
            log.error("cannot run the worker: %s", exc)
            code = 1
        return code

    code = asyncio.run(settled(serve()))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
