"""Visibility (list / count) is eventually consistent on every server: a workflow that
one query finds may not show in the next yet, and a search attribute just upserted may
not be indexed. Every visibility assertion polls until its own condition holds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import Client, WorkflowExecution

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
) -> T:
    """Call `probe()` until `until(answer)` holds or `timeout` seconds have passed, and
    return the last answer: the caller asserts on it, so a test that times out shows what
    visibility last said."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        answer = await probe()
        if until(answer) or loop.time() >= deadline:
            return answer
        await asyncio.sleep(interval)


async def listed(client: Client, query: str) -> list[WorkflowExecution]:
    """The workflows a visibility query finds now."""
    return [wf async for wf in client.list_workflows(query)]
