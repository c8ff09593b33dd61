"""What the loan workflow needs beside its story: the backoff after an activity that
failed for good, that failure as one exception, the decoding of the workflow's argument,
and the typed update decorator. Deterministic: used inside the workflow sandbox."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ParamSpec, TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from models.messages import validation_reason
    from models.wire import CarriedCase, LoanStart

R = TypeVar("R")
P = ParamSpec("P")

# An activity that refused for good (non-retryable) never ends the loan's workflow: what it
# had to do is tried again after a backoff that doubles from RETRY_FIRST up to RETRY_MAX.
RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=6)


@dataclass
class Backoff:
    """When to try again after an activity failed for good: never a hot loop."""

    failures: int = 0
    until: datetime | None = None

    def fail(self, now: datetime) -> datetime:
        delay = min(RETRY_FIRST * 2 ** min(self.failures, 16), RETRY_MAX)
        self.failures += 1
        self.until = now + delay
        return self.until

    def ok(self) -> None:
        self.failures, self.until = 0, None

    def waiting(self, now: datetime) -> bool:
        return self.until is not None and now < self.until


class ActivityFailed(Exception):
    """A local activity that failed for good (non-retryable; retryable errors are retried
    by the activity's retry policy and never end here). Raised by `_local` for whichever
    form the SDK reports it in (an ActivityError, or the activity's ApplicationError), and
    always caught in this file: it never reaches the SDK."""

    def __init__(self, activity: str, error_type: str | None, message: str) -> None:
        super().__init__(f"{activity}: {message}")
        self.activity, self.error_type, self.message = activity, error_type, message


def decode_start(arg: object, *extra: object, continued: bool) -> LoanStart | CarriedCase:
    """The workflow's argument: a start input (DESIGN.md) or, only in a run continued by
    continue-as-new (`continued`), the carried case: a caller starting a loan can never
    hand it a made-up case. Decoded here rather than by the SDK, so an invalid start input
    (also none, or more than one argument) fails the workflow as `InvalidLoan` naming the
    field instead of failing its first task forever."""
    try:
        if extra:
            raise ApplicationError(
                f"invalid start input: (record): expected one argument, got {1 + len(extra)}",
                type="InvalidLoan",
                non_retryable=True,
            )
        if continued and isinstance(arg, CarriedCase):
            return arg
        if isinstance(arg, LoanStart):
            return arg
        if continued and isinstance(arg, dict) and set(arg) == {"start", "case"}:
            return CarriedCase.model_validate(arg)
        if not isinstance(arg, dict):
            raise ApplicationError(
                "invalid start input: (record): expected a JSON object",
                type="InvalidLoan",
                non_retryable=True,
            )
        return LoanStart.model_validate(arg)
    except ValidationError as exc:
        raise ApplicationError(
            f"invalid start input: {validation_reason(exc)}", type="InvalidLoan", non_retryable=True
        ) from None


def typed_update(name: str) -> Callable[[Callable[P, Awaitable[R]]], workflow.UpdateMethodMultiParam[P, R]]:
    """`@workflow.update(name=name)`, typed as the bare decorator types an async handler:
    callers' `execute_update` answers the handler's result, not a coroutine."""
    return workflow.update(name=name)  # type: ignore[return-value]
