"""LoanCollection: one long-running workflow per loan, from disbursal to payoff.

A thin interpreter over domain/planner.py: ask what is next, wait until it is due or a
message changes the case, run it as an activity, record the outcome, repeat. The rules
are in domain/ (the planner, the ledger, message intake), the activity payloads and
answers in models/ (actions, messages, views); the side effects are activities. This
file only sequences.
"""

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from activities.cases import CaseActivities
    from activities.contacts import ContactActivities
    from activities.records import RecordActivities
    from domain.calendar import zone
    from domain.case import Case
    from domain.enums import CONTACT_KINDS, ActionKind, CollectionStage
    from domain.intake import REASON_MAX, REF_MAX, clip_text, record_failure, record_rejection
    from domain.ledger import CaseError, stage, today_for
    from domain.onboarding import open_case
    from domain.planner import ACROSS_LOANS, Outcome, PlannedAction, next_action, reconcile, record_outcome
    from domain.policy import Policy, PolicyError, load_policy
    from domain.protections import open_disputes
    from domain.schedule import TermsError
    from models import actions, contract, messages, search
    from models.messages import PAYMENT, RESTRUCTURING, Intake, Undecodable
    from models.views import (
        case_view,
        details_markdown,
        query_time,
        search_values,
    )
    from models.wire import (
        CarriedCase,
        CaseView,
        DeskResult,
        LoanStart,
        PaymentResult,
        PolicyRequest,
        ScheduleSummary,
    )
    from workflows.books import Books
    from workflows.support import ActivityFailed, Backoff, decode_start, typed_update

M = TypeVar("M", bound=BaseModel)
A = TypeVar("A")
R = TypeVar("R")
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=10))
LOG_MAX = 500  # characters of an audit detail (and its log line)
# workflow.patched ids: logic that changed after loans were running (they replay it).
CALL_KEYS_PATCH = "call-keys"  # a dialed call keeps its outbox key (the IVR's report)
# A step the window or the caps moved says so when it runs (it is planned again then, so
# the planner judges the move from the moment it fell due; before, it never said so).
DELAY_REASONS_PATCH = "delay-reasons"


@workflow.defn(name=contract.WORKFLOW_TYPE)
class LoanCollection:
    @workflow.init
    def __init__(self, arg: Any = None, *extra: Any) -> None:
        # The argument is taken undecoded (see decode_start): an invalid one is refused by
        # run(); until then handlers wait and the query refuses.
        self.invalid: ApplicationError | None = None
        self.start: LoanStart | None = None
        carried: Case | None = None
        try:
            decoded = decode_start(arg, *extra, continued=workflow.info().continued_run_id is not None)
        except ApplicationError as exc:
            self.invalid = exc
        else:
            self.start, carried = (
                (decoded.start, decoded.case) if isinstance(decoded, CarriedCase) else (decoded, None)
            )
        # None until run() has opened the case (a new loan: after its policy is loaded).
        self.case: Case | None = carried
        self.changed = False  # a message changed the case: cut the current wait short
        self.books = Books()  # what is still to be written down, and what was last written
        self.published: dict[str, object] = {}  # search attributes as last upserted
        self.last_stage: CollectionStage | None = None
        self.loan_recorded = carried is not None  # record_loan done (a continued run: long ago)
        self.write_retry = Backoff()  # writing down (record_loan, record_case_events) failed
        self.act_retry = Backoff()  # a planned step's activity failed

    # --- The story of a loan ------------------------------------------------------------

    @workflow.run
    async def run(self, arg: Any = None, *extra: Any) -> CaseView:
        if self.invalid is not None:
            raise self.invalid
        if self.case is None:  # a new loan (a continued run carries its case)
            self.case = await self._open(self._start)
            await self._record_loan(self._start)
        while True:
            # Reset before anything awaits: a message handled while this pass writes
            # records or acts must cut the next wait short.
            self.changed = False
            now = workflow.now()
            self.case = reconcile(self._case, now)
            await self._write_down(now)
            action = next_action(self._case, self._case.policy, now)
            if action is None and not open_disputes(self._case):
                break  # closed, nothing owed
            if workflow.info().is_continue_as_new_suggested():
                await self._settle()
                workflow.continue_as_new(CarriedCase(start=self._start, case=self._case))
            if action is None:
                # Paid off with a dispute still open: it is still heard, and the run waits
                # for its resolution, writing down meanwhile what failed to be written.
                self._publish(now)
                retry = self.write_retry.until
                await self._sleep(retry - now if retry and retry > now else None, "dispute open at payoff")
                continue
            wake, summary = self._next_wake(action, now)
            if wake > now:
                # Publish only when the case is settled until the next wake, so the
                # search attributes change once per wake, not once per step.
                self._publish(now)
                await self._sleep(wake - now, summary)
                continue  # plan again: the time came, or a message changed the case
            outcome = await self._act(action)
            if outcome is None:
                continue  # its activity failed for good: tried again after a backoff
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
        except ActivityFailed as exc:
            raise ApplicationError(
                f"invalid start input: {exc.message}", type="InvalidLoan", non_retryable=True
            ) from None
        except TermsError as exc:
            raise ApplicationError(
                f"invalid start input: {exc}", type="InvalidLoan", non_retryable=True
            ) from exc

    async def _record_loan(self, start: LoanStart) -> None:
        await self._try_record_loan(start, workflow.now())
        self._audit("opened", f"loan opened in stage {self._stage().value}", "start")

    async def _try_record_loan(self, start: LoanStart, now: datetime) -> bool:
        """record_loan; a loan id already closed (LoanConflict) fails the workflow as a
        deliberate start-time refusal, any other failure is retried with the write-down."""
        try:
            await self._local(
                RecordActivities.record_loan,
                actions.loan_record(start, self._case, now),
                summary=f"record loan {start.loan_id} and its schedule",
            )
        except ActivityFailed as exc:
            if exc.error_type == "LoanConflict":
                raise ApplicationError(exc.message, type="LoanConflict", non_retryable=True) from None
            self._failed(exc, self.write_retry)
            return False
        self.loan_recorded = True
        return True

    def _next_wake(self, action: PlannedAction, now: datetime) -> tuple[datetime, str]:
        """When to plan again: when the action is due, or, while a failed activity backs
        off, when it is tried again."""
        wake, summary = action.at, f"until {action.summary}"
        if action.at <= now and self.act_retry.waiting(now):
            assert self.act_retry.until is not None
            wake, summary = self.act_retry.until, f"retry {action.summary} after a failure"
        if self.write_retry.until is not None and now < self.write_retry.until < wake:
            wake, summary = self.write_retry.until, "retry writing down after a failure"
        return wake, summary

    async def _sleep(self, timeout: timedelta | None, summary: str) -> None:
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self.changed, timeout=timeout, timeout_summary=summary[:400]
            )

    def _unwritten(self) -> bool:
        return bool(self.books.queued or not self.loan_recorded or self.write_retry.until)

    async def _settle(self) -> None:
        """Write everything down before the run ends. A message handled while the last
        records are written queues more; loop until nothing is left and no handler runs,
        then end without awaiting again. While writing down fails, wait for its backoff
        (the run stays open until its records are written)."""
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            now = workflow.now()
            if self.write_retry.waiting(now):
                assert self.write_retry.until is not None
                await workflow.sleep(
                    self.write_retry.until - now, summary="retry writing down after a failure"
                )
                continue
            await self._write_down(now)
            if not self._unwritten() and workflow.all_handlers_finished():
                return

    # --- Steps: each planned action is one activity (two for a delivered credit notice) -----

    async def _act(self, action: PlannedAction) -> Outcome | None:
        """The step's outcome, or None when an activity failed for good: the step stays
        owed and is tried again after a backoff. A contact that failed for good counts
        as not delivered (like a suppressed one) and is not retried."""
        now = workflow.now()
        try:
            outcome = await self._perform(action, now)
        except ActivityFailed as exc:
            self._failed(exc, self.act_retry)
            return None
        self.act_retry.ok()
        if outcome.not_before is not None:
            self._audit(
                "step_delayed",
                f"{action.summary}: moved by the {ACROSS_LOANS} to "
                f"{outcome.not_before.astimezone(zone(self._case.timezone)).isoformat()}",
                "rule",
            )
        elif action.delayed_by is not None and not outcome.deferred and workflow.patched(DELAY_REASONS_PATCH):
            due = action.due_at.isoformat() if action.due_at else "earlier"
            self._audit(
                "step_delayed", f"{action.summary}: due {due}, moved by the {action.delayed_by}", "rule"
            )
        return outcome

    async def _perform(self, action: PlannedAction, now: datetime) -> Outcome:
        case, kind = self._case, action.kind
        if kind is ActionKind.REFRESH:
            return Outcome()
        if action.held_by is not None:
            # Stopped by a hold or the borrower's preferences: written down, not done.
            self._audit(
                "step_held", f"{action.summary}: stopped by {action.held_by}", f"rule:{action.held_by}"
            )
            return Outcome(delivered=False)
        if kind in (ActionKind.DISPUTE_OVERDUE, ActionKind.HARDSHIP_REVIEW):
            await self._file(action, now)
            self._audit(kind.value, action.summary, f"rule:{kind.value}")
            return Outcome()
        if kind in CONTACT_KINDS:
            contact = actions.contact_request(case, action, now)
            try:
                sent = await self._local(ContactActivities.send_contact, contact, summary=action.summary)
            except ActivityFailed as exc:
                self._failed(exc, None)
                return Outcome(delivered=False)
            if kind is ActionKind.CREDIT_NOTICE and sent.status == "delivered":
                await self._file(action, now)
            # Since the borrower's call ledger: a call remembers its outbox key so the IVR's
            # report of it counts once (a history from before replays without keys).
            keyed = sent.dialed and workflow.patched(CALL_KEYS_PATCH)
            return actions.contact_outcome(sent, call_key=contact.key if keyed else None)
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
        try:
            return await workflow.execute_local_activity_method(
                activity,
                arg,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=ACTIVITY_RETRY,
                summary=summary[:400],
            )
        except ActivityError as exc:
            cause = exc.cause
            name = exc.activity_type or getattr(activity, "__name__", "activity")
        except ApplicationError as exc:
            cause, name = exc, getattr(activity, "__name__", "activity")
        if isinstance(cause, ApplicationError):
            raise ActivityFailed(name, cause.type, cause.message)
        raise ActivityFailed(name, None, str(cause))

    # --- Writing down: audit, payments booked, projection; search attributes ------------

    def _failed(self, exc: ActivityFailed, backoff: Backoff | None) -> None:
        """An activity failed for good: remembered on the case (the `state` answer's
        `activity_failures`) and audited; `backoff` says when to try again, counted from
        now (the activity may have retried for minutes since the step began)."""
        now = workflow.now()
        error = f"{exc.error_type}: {exc.message}" if exc.error_type else exc.message
        activity = exc.activity
        retry_at = backoff.fail(now) if backoff is not None else None
        self.case = record_failure(self._case, activity=activity, error=error, at=now, retry_at=retry_at)
        then = f"; retry at {retry_at.isoformat()}" if retry_at else "; not retried"
        self._audit("activity_failed", f"{activity} failed: {error}{then}", f"activity:{activity}")

    def _audit(self, event: str, detail: str, source: str, once_per: str | None = None) -> None:
        """An audit entry, written down with the next batch (see Books.audit)."""
        # Clipped: what a caller sends (a huge id) must not grow the audit log or the logs.
        detail, source = clip_text(detail, LOG_MAX), clip_text(source, REF_MAX)
        workflow.logger.info("%s: %s (%s)", event, detail, source)
        self.books.audit(self._case.loan_id, event, detail, source, workflow.now(), once_per)

    async def _write_down(self, now: datetime) -> None:
        """Write down what happened since the last time (payments, audit, the projection
        and desk records if they changed) in one activity."""
        current = self._stage()
        if self.last_stage is not None and current is not self.last_stage:
            self._audit("stage", f"{self.last_stage.value} -> {current.value}", "rule:stage")
        self.last_stage = current
        if self.write_retry.waiting(now):
            return  # failed lately: tried again when the backoff ends
        if not self.loan_recorded and not await self._try_record_loan(self._start, now):
            return
        batch = self.books.take(self._case, now)
        if batch is not None:
            summary = actions.events_summary(batch.events)
            try:
                await self._local(RecordActivities.record_case_events, batch.events, summary=summary)
            except ActivityFailed as exc:
                self.books.failed(batch)
                self._failed(exc, self.write_retry)
                return
            self.books.written(batch)
        self.write_retry.ok()

    def _publish(self, now: datetime) -> None:
        view = case_view(self._case, now)
        updates, self.published = search.upserts(self.published, search_values(self._case, view, now))
        if updates:
            workflow.upsert_search_attributes(updates)
            workflow.set_current_details(details_markdown(view, self._case.currency, self._case.timezone))

    # --- Messages: every update, its validator and its signal twin share one intake -------

    # Handlers take their payload undecoded (plain JSON, any count of arguments) and decode
    # it through the intake: a payload of any shape is refused naming the field (update) or
    # recorded as rejected (signal), never left to the SDK's decoding.

    @typed_update(contract.RECORD_PAYMENT)
    async def record_payment(self, payment: Any = None, *extra: Any) -> PaymentResult:
        return await self._update(PAYMENT, payment, extra)

    @record_payment.validator
    def _validate_payment(self, payment: Any = None, *extra: Any) -> None:
        self._validate(PAYMENT, payment, extra)

    @workflow.signal(name=contract.PAYMENT_RECEIVED)
    async def payment_received(self, payment: Any = None, *extra: Any) -> None:
        await self._signal(PAYMENT, payment, extra)

    @typed_update(contract.APPLY_RESTRUCTURING)
    async def apply_restructuring(self, req: Any = None, *extra: Any) -> ScheduleSummary:
        return await self._update(RESTRUCTURING, req, extra)

    @apply_restructuring.validator
    def _validate_restructuring(self, req: Any = None, *extra: Any) -> None:
        self._validate(RESTRUCTURING, req, extra)

    @workflow.signal(name=contract.RESTRUCTURING_APPROVED)
    async def restructuring_approved(self, req: Any = None, *extra: Any) -> None:
        await self._signal(RESTRUCTURING, req, extra)

    # The collector's desk (contract part 2). Declared on the class like the payment's:
    # a signal that arrives in a run's first workflow task (signal-with-start, or sent
    # before any worker ran) is delivered before __init__ runs, so a handler registered
    # there would miss it.

    @typed_update(contract.RECORD_PROMISE)
    async def record_promise(self, req: Any = None, *extra: Any) -> DeskResult:
        return await self._update(messages.PROMISE, req, extra)

    @record_promise.validator
    def _validate_record_promise(self, req: Any = None, *extra: Any) -> None:
        self._validate(messages.PROMISE, req, extra)

    @workflow.signal(name=contract.PROMISE_MADE)
    async def promise_made(self, req: Any = None, *extra: Any) -> None:
        await self._signal(messages.PROMISE, req, extra)

    @typed_update(contract.OPEN_DISPUTE)
    async def open_dispute(self, req: Any = None, *extra: Any) -> DeskResult:
        return await self._update(messages.DISPUTE_OPEN, req, extra)

    @open_dispute.validator
    def _validate_open_dispute(self, req: Any = None, *extra: Any) -> None:
        self._validate(messages.DISPUTE_OPEN, req, extra)

    @workflow.signal(name=contract.DISPUTE_OPENED)
    async def dispute_opened(self, req: Any = None, *extra: Any) -> None:
        await self._signal(messages.DISPUTE_OPEN, req, extra)

    @typed_update(contract.RESOLVE_DISPUTE)
    async def resolve_dispute(self, req: Any = None, *extra: Any) -> DeskResult:
        return await self._update(messages.DISPUTE_RESOLVE, req, extra)

    @resolve_dispute.validator
    def _validate_resolve_dispute(self, req: Any = None, *extra: Any) -> None:
        self._validate(messages.DISPUTE_RESOLVE, req, extra)

    @workflow.signal(name=contract.DISPUTE_RESOLVED)
    async def dispute_resolved(self, req: Any = None, *extra: Any) -> None:
        await self._signal(messages.DISPUTE_RESOLVE, req, extra)

    @typed_update(contract.START_HARDSHIP)
    async def start_hardship(self, req: Any = None, *extra: Any) -> DeskResult:
        return await self._update(messages.HARDSHIP_START, req, extra)

    @start_hardship.validator
    def _validate_start_hardship(self, req: Any = None, *extra: Any) -> None:
        self._validate(messages.HARDSHIP_START, req, extra)

    @workflow.signal(name=contract.HARDSHIP_APPROVED)
    async def hardship_approved(self, req: Any = None, *extra: Any) -> None:
        await self._signal(messages.HARDSHIP_START, req, extra)

    @typed_update(contract.END_HARDSHIP)
    async def end_hardship(self, req: Any = None, *extra: Any) -> DeskResult:
        return await self._update(messages.HARDSHIP_END, req, extra)

    @end_hardship.validator
    def _validate_end_hardship(self, req: Any = None, *extra: Any) -> None:
        self._validate(messages.HARDSHIP_END, req, extra)

    @workflow.signal(name=contract.HARDSHIP_ENDED)
    async def hardship_ended(self, req: Any = None, *extra: Any) -> None:
        await self._signal(messages.HARDSHIP_END, req, extra)

    @typed_update(contract.SET_CONTACT_PREFERENCES)
    async def set_contact_preferences(self, req: Any = None, *extra: Any) -> DeskResult:
        return await self._update(messages.PREFERENCES, req, extra)

    @set_contact_preferences.validator
    def _validate_set_contact_preferences(self, req: Any = None, *extra: Any) -> None:
        self._validate(messages.PREFERENCES, req, extra)

    @workflow.signal(name=contract.CONTACT_PREFERENCES_SET)
    async def contact_preferences_set(self, req: Any = None, *extra: Any) -> None:
        await self._signal(messages.PREFERENCES, req, extra)

    @typed_update(contract.LOG_CONTACT)
    async def log_contact(self, req: Any = None, *extra: Any) -> DeskResult:
        return await self._update(messages.CONTACT_LOG, req, extra)

    @log_contact.validator
    def _validate_log_contact(self, req: Any = None, *extra: Any) -> None:
        self._validate(messages.CONTACT_LOG, req, extra)

    @workflow.signal(name=contract.CONTACT_LOGGED)
    async def contact_logged(self, req: Any = None, *extra: Any) -> None:
        await self._signal(messages.CONTACT_LOG, req, extra)

    @workflow.signal(dynamic=True)
    async def unknown_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """A signal this workflow has no handler for: recorded as rejected, not dropped."""
        await self._opened()
        self._reject(name, None, f"unknown signal ({len(args)} argument(s)); nothing was applied")

    def _decoded(self, intake: Intake[M, Any], raw: Any, extra: Sequence[Any]) -> M:
        message = intake.decode(raw, *extra)
        if isinstance(message, Undecodable):
            raise ApplicationError(message.reason, type=intake.error_type)
        return message

    def _validate(self, intake: Intake[M, Any], raw: Any, extra: Sequence[Any]) -> None:
        """Refuses bad input before it is accepted: nothing is added to history."""
        message = self._decoded(intake, raw, extra)
        if self.case is None:
            return  # not opened yet: the handler checks once it is
        try:
            intake.check(self.case, message, workflow.now())
        except CaseError as exc:
            raise ApplicationError(clip_text(str(exc), REASON_MAX), type=intake.error_type) from exc

    async def _update(self, intake: Intake[M, A], raw: Any, extra: Sequence[Any]) -> A:
        message = self._decoded(intake, raw, extra)
        await self._opened()
        try:
            return self._take(intake, message, f"update:{intake.update}")
        except CaseError as exc:  # the case changed between validator and handler
            raise ApplicationError(clip_text(str(exc), REASON_MAX), type=intake.error_type) from exc
        except ApplicationError:
            raise
        except Exception as exc:  # a bug must fail this update, never the workflow task
            workflow.logger.exception("%s failed", intake.update)
            raise ApplicationError(
                clip_text(f"could not apply: {type(exc).__name__}: {exc}", REASON_MAX), type=intake.error_type
            ) from exc

    async def _signal(self, intake: Intake[M, Any], raw: Any, extra: Sequence[Any]) -> None:
        """Fire-and-forget: an invalid message is recorded as rejected, never raised (a
        signal handler that raises fails the workflow)."""
        await self._opened()
        message = intake.decode(raw, *extra)
        if isinstance(message, Undecodable):
            self._reject(intake.signal, message.ref, message.reason)
            return
        try:
            self._take(intake, message, f"signal:{intake.signal}")
        except CaseError as exc:
            self._reject(intake.signal, intake.ref(message), str(exc))
        except Exception as exc:  # anything else: still applied or rejected, never raised
            workflow.logger.exception("%s failed", intake.signal)
            self._reject(intake.signal, intake.ref(message), f"could not apply: {type(exc).__name__}: {exc}")

    def _take(self, intake: Intake[M, A], message: M, source: str) -> A:
        taken = intake.take(self._case, message, workflow.now())
        if taken.changed:
            self.case = taken.case
            self.books.book(taken.bookings)
            if taken.audit is not None:
                self._audit(*taken.audit, source, once_per=intake.ref(message))
            self.changed = True
        return taken.answer

    def _reject(self, message: str, ref: str | None, reason: str) -> None:
        self.case = record_rejection(self._case, message=message, ref=ref, reason=reason, at=workflow.now())
        last = self._case.rejections[-1]  # as kept: clipped
        self._audit(
            "rejected", f"{last.message} {last.ref or ''} rejected: {last.reason}", f"signal:{last.message}"
        )
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
        if self.invalid is not None:
            raise self.invalid
        # Asked before the first task opened the case: answer from the policy file as it
        # is now. A query is read-only and never replayed, so this cannot change history.
        try:
            provisional = self._new_case(
                self._start, load_policy(self._start.policy, self._start.product.value)
            )
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

    @property
    def _start(self) -> LoanStart:
        assert self.start is not None
        return self.start

    def _stage(self) -> CollectionStage:
        return stage(self._case, today_for(self._case, workflow.now()))
