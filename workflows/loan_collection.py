"""LoanCollection: one long-running workflow per loan, from disbursal to payoff.

A thin interpreter over domain/planner.py: ask what is next, wait until it is due or a
message changes the case, run it as an activity, record the outcome, repeat. The rules
are in domain/ (the planner, the ledger, message intake), the activity payloads and
answers in models/ (actions, messages, views); the side effects are activities. This
file only sequences.
"""

import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from activities.cases import CaseActivities
    from activities.contacts import ContactActivities
    from activities.records import RecordActivities
    from domain.case import Case
    from domain.enums import CONTACT_KINDS, ActionKind, CollectionStage
    from domain.intake import record_rejection
    from domain.ledger import CaseError, stage, today_for
    from domain.onboarding import open_case
    from domain.planner import Outcome, PlannedAction, next_action, reconcile, record_outcome
    from domain.policy import Policy, PolicyError, load_policy
    from domain.schedule import TermsError
    from models import actions, contract, search
    from models.messages import PAYMENT, RESTRUCTURING, Intake, Undecodable
    from models.views import (
        case_view,
        details_markdown,
        projection,
        projection_fingerprint,
        query_time,
        search_values,
    )
    from models.wire import (
        AuditEvent,
        CarriedCase,
        CaseEvents,
        CaseView,
        LoanStart,
        PaymentBooking,
        PaymentIn,
        PaymentResult,
        PolicyRequest,
        RestructuringIn,
        ScheduleSummary,
    )

M = TypeVar("M", bound=BaseModel)
A = TypeVar("A")
R = TypeVar("R")
P = ParamSpec("P")
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=10))


def typed_update(name: str) -> Callable[[Callable[P, Awaitable[R]]], workflow.UpdateMethodMultiParam[P, R]]:
    """`@workflow.update(name=name)`, typed as the bare decorator types an async handler:
    callers' `execute_update` answers the handler's result, not a coroutine."""
    return workflow.update(name=name)  # type: ignore[return-value]


@workflow.defn(name=contract.WORKFLOW_TYPE)
class LoanCollection:
    @workflow.init
    def __init__(self, arg: LoanStart | CarriedCase) -> None:
        start, carried = (arg.start, arg.case) if isinstance(arg, CarriedCase) else (arg, None)
        self.start = start
        # None until run() has opened the case (a new loan: after its policy is loaded).
        self.case: Case | None = carried
        self.changed = False  # a message changed the case: cut the current wait short
        self.journal: list[AuditEvent] = []  # audit entries not yet written down
        self.bookings: list[PaymentBooking] = []  # payments not yet booked
        self.published: dict[str, object] = {}  # search attributes as last upserted
        self.synced: object = None  # fingerprint of the projection last written
        self.last_stage: CollectionStage | None = None

    # --- The story of a loan ------------------------------------------------------------

    @workflow.run
    async def run(self, arg: LoanStart | CarriedCase) -> CaseView:
        if not isinstance(arg, CarriedCase):
            self.case = await self._open(arg)
            await self._record_loan(arg)
        while True:
            # Reset before anything awaits: a message handled while this pass writes
            # records or acts must cut the next wait short.
            self.changed = False
            now = workflow.now()
            self.case = reconcile(self._case, now)
            await self._write_down(now)
            action = next_action(self._case, self._case.policy, now)
            if action is None:
                break  # closed, nothing owed
            if workflow.info().is_continue_as_new_suggested():
                await self._settle()
                workflow.continue_as_new(CarriedCase(start=self.start, case=self._case))
            if action.at > now:
                # Publish only when the case is settled until the next wake, so the
                # search attributes change once per wake, not once per step.
                self._publish(now)
                await self._sleep_until(action, now)
                continue  # plan again: the time came, or a message changed the case
            outcome = await self._act(action)
            self.case = record_outcome(self._case, action, outcome, workflow.now())
        await self._settle()
        self._publish(workflow.now())
        return case_view(self._case, workflow.now())

    async def _open(self, start: LoanStart) -> Case:
        """The new case. The policy comes through an activity, so it is recorded in the
        history: a later edit of the policy file changes new loans, never the replay of
        running ones."""
        try:
            policy = await self._local(
                RecordActivities.load_policy,
                PolicyRequest(name=start.policy, product=start.product),
                summary=f"load policy {start.policy} for {start.product.value}",
            )
            return self._new_case(start, policy)
        except ActivityError as exc:
            reason = exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc)
            raise ApplicationError(
                f"invalid start input: {reason}", type="InvalidLoan", non_retryable=True
            ) from exc
        except TermsError as exc:
            raise ApplicationError(
                f"invalid start input: {exc}", type="InvalidLoan", non_retryable=True
            ) from exc

    async def _record_loan(self, start: LoanStart) -> None:
        await self._local(
            RecordActivities.record_loan,
            actions.loan_record(start, self._case, workflow.now()),
            summary=f"record loan {start.loan_id} and its schedule",
        )
        self._audit("opened", f"loan opened in stage {self._stage().value}", "start")

    async def _sleep_until(self, action: PlannedAction, now: datetime) -> None:
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self.changed, timeout=action.at - now, timeout_summary=f"until {action.summary}"
            )

    async def _settle(self) -> None:
        """Write everything down before the run ends. A message handled while the last
        records are written queues more; loop until nothing is left and no handler runs,
        then end without awaiting again."""
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._write_down(workflow.now())
            if not self.bookings and not self.journal and workflow.all_handlers_finished():
                return

    # --- Steps: each planned action is one activity (two for a delivered credit notice) -----

    async def _act(self, action: PlannedAction) -> Outcome:
        case, now, kind = self._case, workflow.now(), action.kind
        if kind is ActionKind.REFRESH:
            return Outcome()
        if kind in CONTACT_KINDS:
            contact = actions.contact_request(case, action, now)
            sent = await self._local(ContactActivities.send_contact, contact, summary=action.summary)
            if kind is ActionKind.CREDIT_NOTICE and sent.status == "delivered":
                await self._file(action, now)
            return actions.contact_outcome(sent)
        if kind is ActionKind.ASSIGN_AGENT:
            wanted = actions.agent_request(case, action, now)
            assigned = await self._local(CaseActivities.assign_agent, wanted, summary=action.summary)
            return Outcome(agent_id=assigned.agent_id)
        if kind is ActionKind.RELEASE_AGENT:
            release = actions.agent_release(case, action, now)
            await self._local(CaseActivities.release_agent, release, summary=action.summary)
            return Outcome()
        await self._file(action, now)
        return Outcome()

    async def _file(self, action: PlannedAction, now: datetime) -> None:
        filing = actions.case_filing(self._case, action, now)
        await self._local(CaseActivities.file_case_action, filing, summary=action.summary)

    async def _local(self, activity: Callable[[Any, A], R], arg: A, *, summary: str) -> R:
        # Local activities: each side effect is one marker event in history instead of
        # three activity events plus a workflow task, which keeps a 10-year loan well
        # inside the history budget. Each activity is idempotent by its business key.
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=ACTIVITY_RETRY,
            summary=summary[:400],
        )

    # --- Writing down: audit, payments booked, projection; search attributes ------------

    def _audit(self, event: str, detail: str, source: str) -> None:
        workflow.logger.info("%s: %s (%s)", event, detail, source)
        now = workflow.now()
        key = f"{self._case.loan_id}/audit/{event}/{source}/{now.isoformat()}/{len(self.journal)}"
        self.journal.append(
            AuditEvent(key=key, loan_id=self._case.loan_id, at=now, event=event, detail=detail, source=source)
        )

    async def _write_down(self, now: datetime) -> None:
        """Write down what happened since the last time (payments, audit, the projection
        if it changed) in one activity."""
        current = self._stage()
        if self.last_stage is not None and current is not self.last_stage:
            self._audit("stage", f"{self.last_stage.value} -> {current.value}", "rule:stage")
        self.last_stage = current
        snapshot = projection(self._case, now)
        fingerprint = projection_fingerprint(snapshot)
        changed = fingerprint != self.synced
        if self.bookings or self.journal or changed:
            events = CaseEvents(
                payments=self.bookings, audit=self.journal, projection=snapshot if changed else None
            )
            self.bookings, self.journal = [], []
            summary = actions.events_summary(events)
            await self._local(RecordActivities.record_case_events, events, summary=summary)
            self.synced = fingerprint

    def _publish(self, now: datetime) -> None:
        view = case_view(self._case, now)
        updates, self.published = search.upserts(self.published, search_values(self._case, view, now))
        if updates:
            workflow.upsert_search_attributes(updates)
            workflow.set_current_details(details_markdown(view, self._case.currency, self._case.timezone))

    # --- Messages: every update, its validator and its signal twin share one intake -------

    @typed_update(contract.RECORD_PAYMENT)
    async def record_payment(self, payment: PaymentIn) -> PaymentResult:
        return await self._update(PAYMENT, payment)

    @record_payment.validator
    def _validate_payment(self, payment: PaymentIn) -> None:
        self._validate(PAYMENT, payment)

    @workflow.signal(name=contract.PAYMENT_RECEIVED)
    async def payment_received(self, raw: PaymentIn | dict[str, Any]) -> None:
        await self._signal(PAYMENT, raw)

    @typed_update(contract.APPLY_RESTRUCTURING)
    async def apply_restructuring(self, req: RestructuringIn) -> ScheduleSummary:
        return await self._update(RESTRUCTURING, req)

    @apply_restructuring.validator
    def _validate_restructuring(self, req: RestructuringIn) -> None:
        self._validate(RESTRUCTURING, req)

    @workflow.signal(name=contract.RESTRUCTURING_APPROVED)
    async def restructuring_approved(self, raw: RestructuringIn | dict[str, Any]) -> None:
        await self._signal(RESTRUCTURING, raw)

    def _validate(self, intake: Intake[M, Any], message: M) -> None:
        """Refuses bad input before it is accepted: nothing is added to history."""
        if self.case is None:
            return  # not opened yet: the handler checks once it is
        try:
            intake.check(self.case, message, workflow.now())
        except CaseError as exc:
            raise ApplicationError(str(exc), type=intake.error_type) from exc

    async def _update(self, intake: Intake[M, A], message: M) -> A:
        await self._opened()
        try:
            return self._take(intake, message, f"update:{intake.update}")
        except CaseError as exc:  # the case changed between validator and handler
            raise ApplicationError(str(exc), type=intake.error_type) from exc

    async def _signal(self, intake: Intake[M, Any], raw: M | dict[str, Any]) -> None:
        """Fire-and-forget: an invalid message is recorded as rejected, never raised (a
        signal handler that raises fails the workflow)."""
        await self._opened()
        message = intake.decode(raw)
        if isinstance(message, Undecodable):
            self._reject(intake.signal, message.ref, message.reason)
            return
        try:
            self._take(intake, message, f"signal:{intake.signal}")
        except CaseError as exc:
            self._reject(intake.signal, intake.ref(message), str(exc))

    def _take(self, intake: Intake[M, A], message: M, source: str) -> A:
        taken = intake.take(self._case, message, workflow.now())
        if taken.changed:
            self.case = taken.case
            self.bookings += taken.bookings
            if taken.audit is not None:
                self._audit(*taken.audit, source)
            self.changed = True
        return taken.answer

    def _reject(self, message: str, ref: str | None, reason: str) -> None:
        self.case = record_rejection(self._case, message=message, ref=ref, reason=reason, at=workflow.now())
        self._audit("rejected", f"{message} {ref or ''} rejected: {reason}", f"signal:{message}")
        self.changed = True

    async def _opened(self) -> Case:
        """For handlers: messages that arrive before the case is opened wait for it."""
        await workflow.wait_condition(lambda: self.case is not None)
        return self._case

    @workflow.query(name=contract.STATE)
    def state(self) -> CaseView:
        now = query_time(workflow.now())
        if self.case is not None:
            return case_view(self.case, now)
        # Asked before the first task opened the case: answer from the policy file as it
        # is now. A query is read-only and never replayed, so this cannot change history.
        try:
            provisional = self._new_case(self.start, load_policy(self.start.policy, self.start.product.value))
        except (TermsError, PolicyError) as exc:
            raise ApplicationError(f"invalid start input: {exc}", type="InvalidLoan") from exc
        return case_view(provisional, now)

    # --- The case ------------------------------------------------------------------------

    @staticmethod
    def _new_case(start: LoanStart, policy: Policy) -> Case:
        # The start input's fields are open_case's arguments; its policy name is resolved.
        return open_case(**start.model_dump(exclude={"policy"}), policy=policy, now=workflow.now())

    @property
    def _case(self) -> Case:
        assert self.case is not None
        return self.case

    def _stage(self) -> CollectionStage:
        return stage(self._case, today_for(self._case, workflow.now()))
