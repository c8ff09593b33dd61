"""Temporal's errors as one line a person can act on, and what kind of problem each is
(the CLI turns the kind into an exit code, the HTTP API into a status)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from enum import StrEnum
from typing import TypeVar

from temporalio.client import (
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.service import RPCError, RPCStatusCode

from models.contract import workflow_id
from settings import Settings

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "ClientError",
    "Problem",
    "answer",
    "namespace_problem",
    "rpc_error",
]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2

T = TypeVar("T")


class Problem(StrEnum):
    BAD_INPUT = "bad_input"  # the caller's input is wrong: nothing was sent
    UNKNOWN_LOAN = "unknown_loan"  # no workflow for this loan id
    CLOSED = "closed"  # the loan's workflow has completed
    REFUSED = "refused"  # the workflow (or the server) refused the request
    NO_ANSWER = "no_answer"  # no worker answered in time
    UNAVAILABLE = "unavailable"  # the server cannot be reached or refused us


class ClientError(Exception):
    """An error a person can act on: `message` is one line saying what to do."""

    def __init__(self, message: str, problem: Problem = Problem.REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.problem = problem

    @property
    def exit_code(self) -> int:
        """0 done, 1 refused or failed, 2 bad input (nothing sent)."""
        return EXIT_BAD_INPUT if self.problem is Problem.BAD_INPUT else EXIT_REFUSED


def bad_input(message: str) -> ClientError:
    return ClientError(message, Problem.BAD_INPUT)


def _is_closed_error(exc: RPCError) -> bool:
    return "already completed" in exc.message or "already finished" in exc.message


def namespace_problem(exc: RPCError, settings: Settings) -> str | None:
    """A start failure that every loan would hit (so stop at once), as one line."""
    if "search attribute" in exc.message:
        return (
            f"namespace {settings.temporal_namespace} lacks the search attributes of models/search.py "
            f"({exc.message}): start the worker once (it registers them) or register them with "
            "`temporal operator search-attribute create`"
        )
    if exc.status in (
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.UNAUTHENTICATED,
        RPCStatusCode.PERMISSION_DENIED,
    ):
        return f"the Temporal server at {settings.temporal_address} refused: {exc.message}"
    if exc.status == RPCStatusCode.NOT_FOUND and "amespace" in exc.message:
        return (
            f"namespace {settings.temporal_namespace} not found at {settings.temporal_address}: {exc.message}"
        )
    return None


def rpc_error(exc: RPCError, loan_id: str, settings: Settings) -> ClientError:
    """A one-line, actionable message for an RPC error about one loan."""
    wid = workflow_id(loan_id)
    if _is_closed_error(exc):
        return ClientError(
            f"loan {loan_id} is closed (workflow {wid} has completed): nothing can be applied", Problem.CLOSED
        )
    if exc.status == RPCStatusCode.NOT_FOUND:
        return ClientError(
            f"unknown loan {loan_id}: no workflow {wid} in namespace {settings.temporal_namespace}",
            Problem.UNKNOWN_LOAN,
        )
    # A connection lost mid-call (the server restarting): tonic answers UNKNOWN
    # "transport error". Nothing refused the request, and its outcome is unknown: it is the
    # server being unavailable (retry the same message), never a refusal.
    transport = exc.status == RPCStatusCode.UNKNOWN and "transport error" in exc.message
    if exc.status == RPCStatusCode.UNAVAILABLE or transport:
        return ClientError(
            f"the Temporal server at {settings.temporal_address} is unavailable: {exc.message}",
            Problem.UNAVAILABLE,
        )
    if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
        return ClientError(
            f"no answer for loan {loan_id} in time: is a worker running on task queue "
            f"{settings.temporal_task_queue}? ({exc.message})",
            Problem.NO_ANSWER,
        )
    if "Workflow Task in failed state" in exc.message:
        return ClientError(
            f"loan {loan_id}: its workflow is failing its tasks, so it cannot answer now; see the "
            f"worker's log ({exc.message})",
            Problem.NO_ANSWER,
        )
    return ClientError(f"loan {loan_id}: {exc.message}")


async def answer(call: Awaitable[T], loan_id: str, settings: Settings, wait_seconds: float) -> T:
    """Await a message to a loan's workflow; Temporal's errors become ClientError."""
    no_worker = f"is a worker running on task queue {settings.temporal_task_queue}?"
    try:
        return await asyncio.wait_for(call, timeout=wait_seconds)
    except TimeoutError:
        raise ClientError(
            f"no answer from loan {loan_id} within {wait_seconds:g}s: {no_worker}", Problem.NO_ANSWER
        ) from None
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = getattr(cause, "message", None) or str(cause or exc)
        raise ClientError(f"refused by loan {loan_id}: {message}") from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise ClientError(f"no answer from loan {loan_id}: {no_worker}", Problem.NO_ANSWER) from None
    except WorkflowQueryFailedError as exc:
        raise ClientError(f"loan {loan_id}: the workflow could not answer the query: {exc.message}") from None
    except RPCError as exc:
        raise rpc_error(exc, loan_id, settings) from None
