"""Where a parked loan's worker memory goes: tracemalloc in a worker process (slow, so
never for the figures of `python -m bench`), the source files whose allocations grew
most while it parked N loans, per loan, next to the same for N bare workflows.

    .venv/bin/python -m bench.memory_where [--loans 20]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.live import (
    WARMUP,
    bare_parked,
    dev_server,
    loan_parked,
    park,
    start_bare,
    start_loan,
    worker_process,
)
from models.db import upgrade_schema

ROOT = str(Path(__file__).resolve().parent.parent)


async def run(loans: int) -> None:
    env = await dev_server()
    try:
        client = env.client
        address = client.service_client.config.target_host
        with tempfile.TemporaryDirectory() as tmp:
            db_url = f"sqlite:///{Path(tmp) / 'm.db'}"
            upgrade_schema(db_url)
            kinds = (("loan", start_loan, loan_parked), ("bare", start_bare, bare_parked))
            for kind, starter, parked in kinds:
                async with worker_process(
                    kind, address, client.namespace, db_url, 1000, Path(tmp) / f"{kind}.log", "--tracemalloc"
                ) as side:
                    await park(client, side, WARMUP, starter, parked)
                    await side.ask("snap")
                    await park(client, side, loans, starter, parked)
                    raw = await side.ask("top")
                    while not raw.startswith("["):  # a stray line of the worker on stdout
                        print(f"(worker said: {raw[:200]})")
                        assert side.proc.stdout is not None
                        raw = (await side.proc.stdout.readline()).decode().strip()
                    top = json.loads(raw)
                total = sum(kib for _f, kib, _n in top)
                print(f"\n== {kind}: {loans} parked; top files grew {total / loans:.0f} KiB per workflow")
                for filename, kib, count in top[:15]:
                    name = filename.replace(ROOT + "/", "")
                    print(f"  {kib / loans:7.1f} KiB  {count / loans:7.0f} blocks  {name}")
    finally:
        await env.shutdown()
        gc.collect()
        await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loans", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(run(args.loans))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
