"""The loans on Temporal as the doors (CLI, local stack, demo, HTTP API) see them:
connect, start, send a message (an update, or its signal twin), ask for the state,
list and count. Every Temporal error comes out as a ClientError."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    GetWorkflowExecutionHistoryReverseRequest,
)
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from client.errors import ClientError, Problem, answer, namespace_problem, rpc_error
from client.queries import build_list_query, case_row
from client.starts import start_search_attributes, static_details, static_summary
from client.worklist import WorkItem, order_worklist
from models.contract import (
    APPLY_RESTRUCTURING,
    CONTACT_LOGGED,
    CONTACT_PREFERENCES_SET,
    DISPUTE_OPENED,
    DISPUTE_RESOLVED,
    END_HARDSHIP,
    HARDSHIP_APPROVED,
    HARDSHIP_ENDED,
    LOG_CONTACT,
    OPEN_DISPUTE,
    PAYMENT_RECEIVED,
    PROMISE_MADE,
    RECORD_PAYMENT,
    RECORD_PROMISE,
    RESOLVE_DISPUTE,
    RESTRUCTURING_APPROVED,
    SET_CONTACT_PREFERENCES,
    START_HARDSHIP,
    STATE,
    WORKFLOW_TYPE,
    workflow_id,
)
from models.wire import (
    CaseView,
    ContactLogIn,
    DeskResult,
    DisputeOpenIn,
    DisputeResolveIn,
    HardshipEndIn,
    HardshipStartIn,
    LoanStart,
    PaymentIn,
    PaymentResult,
    PreferencesIn,
    PromiseIn,
    RestructuringIn,
    ScheduleSummary,
)
from settings import Settings, TemporalUnreachable, get_settings
from settings import connect as connect_temporal

__all__ = [
    "DESK_MESSAGES",
    "CollectionsClient",
    "DeskIn",
    "DisburseReport",
    "LoanHealth",
    "StartOutcome",
    "Worklist",
    "connect",
    "execution_status_label",
]

T = TypeVar("T")

# The collector's desk (DESIGN.md contract part 2): each input type goes as its update
# (answered with a DeskResult) or, fire-and-forget, as the update's signal twin.
DeskIn = (
    PromiseIn
    | DisputeOpenIn
    | DisputeResolveIn
    | HardshipStartIn
    | HardshipEndIn
    | PreferencesIn
    | ContactLogIn
)
DESK_MESSAGES: dict[type[DeskIn], tuple[str, str]] = {
    PromiseIn: (RECORD_PROMISE, PROMISE_MADE),
    DisputeOpenIn: (OPEN_DISPUTE, DISPUTE_OPENED),
    DisputeResolveIn: (RESOLVE_DISPUTE, DISPUTE_RESOLVED),
    HardshipStartIn: (START_HARDSHIP, HARDSHIP_APPROVED),
    HardshipEndIn: (END_HARDSHIP, HARDSHIP_ENDED),
    PreferencesIn: (SET_CONTACT_PREFERENCES, CONTACT_PREFERENCES_SET),
    ContactLogIn: (LOG_CONTACT, CONTACT_LOGGED),
}


@dataclass(frozen=True)
class StartOutcome:
    """What became of one loan of a disbursal."""

    loan_id: str
    result: Literal["started", "skipped", "refused", "failed"]
    reason: str = ""


@dataclass
class DisburseReport:
    started: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already started, skip_existing
    refused: list[tuple[str, str]] = field(default_factory=list)  # (loan_id, reason)


@dataclass(frozen=True)
class Worklist:
    """An agent's open cases in working order (client/worklist.py), the visibility
    query that found them, and whether it stopped at its limit (more cases exist)."""

    agent: str
    query: str
    items: list[WorkItem]
    truncated: bool = False

    @property
    def unreadable(self) -> list[WorkItem]:
        return [i for i in self.items if i.view is None]


# The names the Web UI and visibility queries use (`ExecutionStatus = "Running"`).
EXECUTION_STATUS = {
    WorkflowExecutionStatus.RUNNING: "Running",
    WorkflowExecutionStatus.COMPLETED: "Completed",
    WorkflowExecutionStatus.FAILED: "Failed",
    WorkflowExecutionStatus.CANCELED: "Canceled",
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "ContinuedAsNew",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
}
# How far back (events) `health` looks for the last workflow task of a running loan.
HEALTH_HISTORY_EVENTS = 100

_TASK_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
}


def execution_status_label(status: int) -> str:
    """'Running', 'Completed', 'Failed', 'Terminated', 'TimedOut', ... for a raw status."""
    try:
        return EXECUTION_STATUS[WorkflowExecutionStatus(status)]
    except (ValueError, KeyError):
        return f"Unknown({status})"


@dataclass(frozen=True)
class LoanHealth:
    """What Temporal says about a loan's workflow, apart from the case it answers.

    `healthy`: Running and not stuck, or Completed (paid off). Anything else (Failed,
    Terminated, Canceled, TimedOut, a run that ContinuedAsNew but has no successor, or a
    Running workflow whose workflow task keeps failing, `stuck`) is not: nothing more
    will happen to the case until someone acts. `failure` says why, when Temporal knows."""

    loan_id: str
    workflow_id: str
    run_id: str
    status: str  # EXECUTION_STATUS's names
    stuck: bool = False
    task_attempt: int = 0  # of the pending workflow task (0: none pending)
    failure: str | None = None  # the last workflow task failure, or why the run closed

    @property
    def running(self) -> bool:
        return self.status == "Running"

    @property
    def healthy(self) -> bool:
        return (self.running and not self.stuck) or self.status == "Completed"

    def describe(self) -> str:
        """One line: 'Running', 'Completed', 'Terminated: reason', 'Running but stuck: ...'."""
        if self.stuck:
            attempt = f" (attempt {self.task_attempt})" if self.task_attempt > 1 else ""
            why = f": {self.failure}" if self.failure else ""
            return (
                f"Running but stuck: its workflow task keeps failing{attempt}{why}; nothing happens to "
                "this loan until the worker's error (see its log) is fixed"
            )
        return self.status + (f": {self.failure}" if self.failure else "")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _task_failure(event: HistoryEvent) -> str:
    """'<the exception's message> (<cause>)' of a WorkflowTaskFailed event."""
    attrs = event.workflow_task_failed_event_attributes
    try:
        cause = WorkflowTaskFailedCause.Name(attrs.cause).removeprefix("WORKFLOW_TASK_FAILED_CAUSE_").lower()
    except ValueError:
        cause = f"cause {attrs.cause}"
    message = _one_line(attrs.failure.message) if attrs.HasField("failure") else ""
    return f"{message} ({cause})" if message else cause


def _close_reason(event: HistoryEvent) -> str | None:
    kind = event.event_type
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        f = event.workflow_execution_failed_event_attributes.failure
        return _one_line(f.message) or None
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        attrs = event.workflow_execution_terminated_event_attributes
        reason = _one_line(attrs.reason) or "no reason given"
        return reason + (f" (by {_one_line(attrs.identity, 100)})" if attrs.identity else "")
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
        return "the workflow's execution timeout passed"
    if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
        return "canceled"
    return None


async def connect(settings: Settings | None = None) -> CollectionsClient:
    """A client for the configured namespace (`settings.connect`: a temporal.toml profile
    for TLS / API keys / Temporal Cloud, then TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE).
    An unreachable server is a one-line ClientError naming the address."""
    settings = settings or get_settings()
    try:
        return CollectionsClient(await connect_temporal(settings), settings)
    except Exception as exc:  # TemporalUnreachable, or a bad TLS / profile configuration
        text = str(exc.__cause__ if isinstance(exc, TemporalUnreachable) and exc.__cause__ else exc)
        reason = text.removeprefix("Failed client connect: ").split("(", 1)[0].strip() or type(exc).__name__
        if "onnection refused" in text:
            reason = "connection refused"
        raise ClientError(
            f"cannot reach the Temporal server at {settings.temporal_address} "
            f"(namespace {settings.temporal_namespace}): {reason}. Is it running? "
            "Start the local stack with ./run or set TEMPORAL_ADDRESS.",
            Problem.UNAVAILABLE,
        ) from None


@dataclass
class CollectionsClient:
    temporal: Client
    settings: Settings

    def handle(self, loan_id: str) -> WorkflowHandle[Any, Any]:
        return self.temporal.get_workflow_handle(workflow_id(loan_id))

    async def start(self, start: LoanStart) -> WorkflowHandle[Any, Any]:
        """Start one loan's workflow. Raises WorkflowAlreadyStartedError for a loan id
        that was ever used (running or closed): a loan id is never reused."""
        return await self.temporal.start_workflow(
            WORKFLOW_TYPE,
            start,
            id=workflow_id(start.loan_id),
            task_queue=self.settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=start_search_attributes(start),
            static_summary=static_summary(start),
            static_details=static_details(start),
        )

    async def disburse(
        self,
        starts: Sequence[LoanStart],
        *,
        skip_existing: bool = False,
        concurrency: int = 16,
        on_outcome: Callable[[StartOutcome], None] | None = None,
    ) -> DisburseReport:
        """Start every loan (`concurrency` at a time), reported in input order. A loan
        already started is refused (or skipped with `skip_existing`). A problem every
        start would hit (namespace, server) stops the run with a ClientError."""
        report = DisburseReport()
        gate = asyncio.Semaphore(max(1, concurrency))
        fatal: list[str] = []  # a problem of the namespace or the server, not of one loan

        async def one(start: LoanStart) -> None:
            loan_id = start.loan_id
            async with gate:
                if fatal:
                    return
                try:
                    await self.start(start)
                    report.started.append(loan_id)
                    outcome = StartOutcome(loan_id, "started")
                except WorkflowAlreadyStartedError:
                    if skip_existing:
                        report.skipped.append(loan_id)
                        outcome = StartOutcome(loan_id, "skipped", "already started")
                    else:
                        reason = (
                            f"already started: workflow {workflow_id(loan_id)} exists (running or "
                            "closed) and a loan id is never reused"
                        )
                        report.refused.append((loan_id, reason))
                        outcome = StartOutcome(loan_id, "refused", reason)
                except RPCError as exc:
                    problem = namespace_problem(exc, self.settings)
                    if problem:
                        fatal.append(problem)
                        return
                    report.refused.append((loan_id, exc.message))
                    outcome = StartOutcome(loan_id, "failed", exc.message)
            if on_outcome:
                on_outcome(outcome)

        await asyncio.gather(*(one(s) for s in starts))
        if fatal:
            done = len(report.started) + len(report.skipped)
            raise ClientError(
                f"{fatal[0]} ({len(report.started)} started, {len(report.skipped)} skipped, "
                f"{len(starts) - done} not started: run the same file again with --skip-existing)",
                Problem.UNAVAILABLE,
            )
        order = {s.loan_id: i for i, s in enumerate(starts)}
        report.started.sort(key=order.__getitem__)
        report.skipped.sort(key=order.__getitem__)
        report.refused.sort(key=lambda item: order[item[0]])
        return report

    async def send(
        self,
        loan_id: str,
        update: str,
        signal: str,
        arg: Any,
        result_type: type[T],
        *,
        fire_and_forget: bool = False,
        wait: float = 60.0,
    ) -> T | None:
        """The update `update` and the workflow's answer, or (fire_and_forget) its signal
        twin `signal` and None. A refusal by the workflow's validator is a ClientError."""
        handle = self.handle(loan_id)
        if fire_and_forget:
            await answer(handle.signal(signal, arg), loan_id, self.settings, wait)
            return None
        return await answer(
            handle.execute_update(update, arg, result_type=result_type), loan_id, self.settings, wait
        )

    async def record_payment(
        self, loan_id: str, payment: PaymentIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> PaymentResult | None:
        return await self.send(
            loan_id,
            RECORD_PAYMENT,
            PAYMENT_RECEIVED,
            payment,
            PaymentResult,
            fire_and_forget=fire_and_forget,
            wait=wait,
        )

    async def apply_restructuring(
        self, loan_id: str, req: RestructuringIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> ScheduleSummary | None:
        return await self.send(
            loan_id,
            APPLY_RESTRUCTURING,
            RESTRUCTURING_APPROVED,
            req,
            ScheduleSummary,
            fire_and_forget=fire_and_forget,
            wait=wait,
        )

    # --- the collector's desk: one generic path, one typed method per update ---------------

    async def desk(
        self, loan_id: str, message: DeskIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> DeskResult | None:
        """Any desk message: its update and the workflow's DeskResult, or (fire_and_forget)
        its signal twin and None. The names come from DESK_MESSAGES by the input's type."""
        update, signal = DESK_MESSAGES[type(message)]
        return await self.send(
            loan_id, update, signal, message, DeskResult, fire_and_forget=fire_and_forget, wait=wait
        )

    async def record_promise(
        self, loan_id: str, promise: PromiseIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> DeskResult | None:
        """A promise to pay (record_promise / promise_made)."""
        return await self.desk(loan_id, promise, fire_and_forget=fire_and_forget, wait=wait)

    async def open_dispute(
        self, loan_id: str, dispute: DisputeOpenIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> DeskResult | None:
        """The borrower contests the debt (open_dispute / dispute_opened)."""
        return await self.desk(loan_id, dispute, fire_and_forget=fire_and_forget, wait=wait)

    async def resolve_dispute(
        self, loan_id: str, resolution: DisputeResolveIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> DeskResult | None:
        """A dispute upheld or rejected (resolve_dispute / dispute_resolved)."""
        return await self.desk(loan_id, resolution, fire_and_forget=fire_and_forget, wait=wait)

    async def start_hardship(
        self, loan_id: str, hardship: HardshipStartIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> DeskResult | None:
        """Approved hardship relief (start_hardship / hardship_approved)."""
        return await self.desk(loan_id, hardship, fire_and_forget=fire_and_forget, wait=wait)

    async def end_hardship(
        self, loan_id: str, end: HardshipEndIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> DeskResult | None:
        """Hardship relief ended early (end_hardship / hardship_ended)."""
        return await self.desk(loan_id, end, fire_and_forget=fire_and_forget, wait=wait)

    async def set_contact_preferences(
        self, loan_id: str, preferences: PreferencesIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> DeskResult | None:
        """The channels the borrower accepts (set_contact_preferences / contact_preferences_set)."""
        return await self.desk(loan_id, preferences, fire_and_forget=fire_and_forget, wait=wait)

    async def log_contact(
        self, loan_id: str, contact: ContactLogIn, *, fire_and_forget: bool = False, wait: float = 60.0
    ) -> DeskResult | None:
        """A collector's call or visit (log_contact / contact_logged)."""
        return await self.desk(loan_id, contact, fire_and_forget=fire_and_forget, wait=wait)

    async def state(self, loan_id: str, wait: float = 30.0) -> dict[str, Any]:
        """The `state` query answer exactly as the workflow sent it (decoded JSON)."""
        raw: dict[str, Any] = await answer(self.handle(loan_id).query(STATE), loan_id, self.settings, wait)
        return raw

    async def health(self, loan_id: str) -> LoanHealth:
        """The execution status of the loan's workflow (its latest run), and whether a
        running one is stuck: its pending workflow task is a retry (attempt > 1) or its
        last workflow task failed. Unknown loan, unreachable server: ClientError."""
        service = self.temporal.workflow_service
        execution = WorkflowExecution(workflow_id=workflow_id(loan_id))
        namespace = self.temporal.namespace
        try:
            desc = await service.describe_workflow_execution(
                DescribeWorkflowExecutionRequest(namespace=namespace, execution=execution)
            )
        except RPCError as exc:
            raise rpc_error(exc, loan_id, self.settings) from None
        info = desc.workflow_execution_info
        status = execution_status_label(info.status)
        attempt = desc.pending_workflow_task.attempt if desc.HasField("pending_workflow_task") else 0
        last_events = await self._last_events(
            loan_id, WorkflowExecution(workflow_id=info.execution.workflow_id, run_id=info.execution.run_id)
        )
        stuck, failure = attempt > 1, None
        if status == "Running":
            last_task = next((e for e in last_events if e.event_type in _TASK_EVENTS), None)
            if last_task is not None and last_task.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                stuck, failure = True, _task_failure(last_task)
        elif last_events:
            failure = _close_reason(last_events[0])
        return LoanHealth(
            loan_id=loan_id,
            workflow_id=info.execution.workflow_id,
            run_id=info.execution.run_id,
            status=status,
            stuck=stuck and status == "Running",
            task_attempt=attempt,
            failure=failure,
        )

    async def _last_events(self, loan_id: str, execution: WorkflowExecution) -> list[HistoryEvent]:
        """The run's last events, newest first (empty where the server cannot say: the
        health check then rests on the pending task's attempt alone)."""
        try:
            page = await self.temporal.workflow_service.get_workflow_execution_history_reverse(
                GetWorkflowExecutionHistoryReverseRequest(
                    namespace=self.temporal.namespace,
                    execution=execution,
                    maximum_page_size=HEALTH_HISTORY_EVENTS,
                )
            )
        except RPCError as exc:
            if exc.status in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.PERMISSION_DENIED):
                return []
            raise rpc_error(exc, loan_id, self.settings) from None
        return list(page.history.events)

    async def list_cases(self, query: str, limit: int = 100) -> list[dict[str, Any]]:
        """The loans a visibility query finds (eventually consistent: a loan just
        started or changed may not show yet)."""
        try:
            return [case_row(wf) async for wf in self.temporal.list_workflows(query, limit=limit)]
        except RPCError as exc:
            raise ClientError(f"visibility query {query!r} refused: {exc.message}") from None

    async def worklist(
        self, agent: str, *, limit: int = 500, concurrency: int = 8, wait: float = 30.0
    ) -> Worklist:
        """The agent's open cases (visibility: AssignedAgent = agent, running) in the order
        to work them. One list call, then each case's `state` query, `concurrency` at a
        time; the `state` answer is the truth, so a case visibility still shows for the
        agent but that has been handed on or has closed since is left out. A case whose
        state cannot be read (a stuck workflow, no worker) is kept, last, with the reason."""
        query = build_list_query(agent=agent, open_only=True)
        rows = await self.list_cases(query, limit)
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(loan_id: str) -> WorkItem | None:
            async with gate:
                try:
                    view = CaseView.model_validate(await self.state(loan_id, wait))
                except ClientError as exc:
                    return WorkItem(loan_id, None, exc.message)
            if view.closed or view.assigned_agent != agent:
                return None
            return WorkItem(loan_id, view)

        found = await asyncio.gather(*(one(r["loan_id"]) for r in rows))
        items = order_worklist(i for i in found if i is not None)
        return Worklist(agent, query, items, truncated=len(rows) >= limit)

    async def count(self, query: str) -> int:
        """How many loans a visibility query finds (eventually consistent)."""
        try:
            return (await self.temporal.count_workflows(query)).count
        except RPCError as exc:
            raise ClientError(f"visibility query {query!r} refused: {exc.message}") from None
