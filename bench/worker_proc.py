"""A benchmark worker in its own process, so its memory is measured apart from the
benchmark's: the real LoanCollection with its real activities, and the baselines.

    python -m bench.worker_proc --address HOST:PORT --task-queue Q --db sqlite:///x.db

Prints `ready` once polling. Then answers lines on stdin: `rss` -> a full garbage
collection (and glibc's malloc_trim, so freed memory is given back) then the resident
set size in KiB; `stop` or end of input -> exits. With --tracemalloc (slow: for finding
where memory goes, never for the figures): `snap` remembers the allocations now, `top`
prints one line of JSON, the 25 source files whose allocations grew most since `snap`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import os
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities import collection_activities
from bench.baseline import BareWorkflow, MinimalLoan, bare_open, remind
from models.db import make_engine
from worker import preload_policies
from workflows.loan_collection import LoanCollection


def rss_kib() -> int:
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: the figure keeps freed-but-held memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def serve(address: str, namespace: str, task_queue: str, db_url: str, cache: int) -> None:
    preload_policies()
    engine = make_engine(db_url)
    client = await Client.connect(address, namespace=namespace, data_converter=pydantic_data_converter)
    loop = asyncio.get_running_loop()
    snapshot: tracemalloc.Snapshot | None = None
    with ThreadPoolExecutor(max_workers=8) as executor:
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[LoanCollection, BareWorkflow, MinimalLoan],
            activities=[*collection_activities(engine), bare_open, remind],
            activity_executor=executor,
            max_cached_workflows=cache,
        ):
            print("ready", flush=True)
            while True:
                line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
                if line == "rss":
                    print(rss_kib(), flush=True)
                elif line == "snap":
                    gc.collect()
                    snapshot = tracemalloc.take_snapshot()
                    print("ok", flush=True)
                elif line == "top" and snapshot is not None:
                    gc.collect()
                    diff = tracemalloc.take_snapshot().compare_to(snapshot, "filename")
                    top = [[d.traceback[0].filename, d.size_diff // 1024, d.count_diff] for d in diff[:25]]
                    print(json.dumps(top), flush=True)
                elif line in ("stop", ""):
                    break
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--cache", type=int, default=1000)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start()

    async def run() -> None:
        try:
            await serve(args.address, args.namespace, args.task_queue, args.db, args.cache)
        finally:
            gc.collect()
            await asyncio.sleep(0.2)  # let the SDK's threads wind down (sdk-python #300)

    asyncio.run(run())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
