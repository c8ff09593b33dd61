"""LoanCollection: one long-running workflow per loan, from disbursal to payoff.

A thin interpreter over domain/planner.py: ask what is next, wait until it is due or a
message changes the case, run it as an activity, record the outcome, repeat. All rules
are in domain/; all side effects are activities; this file only sequences.
"""

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from activities.cases import CaseActivities
    from activities.contacts import ContactActivities
    from activities.records import RecordActivities
    from domain.case import Case, Rejection
    from domain.enums import CONTACT_KINDS, ActionKind, CollectionStage
    from domain.ledger import (
        CaseError,
        apply_payment,
        days_past_due,
        outstanding,
        overdue_amount,
        owed_on,
        payment_date,
        stage,
        today_for,
    )
    from domain.onboarding import open_case
    from domain.planner import Outcome, PlannedAction, next_action, reconcile, record_outcome, window_close
    from domain.policy import Policy, PolicyError, load_policy
    from domain.restructure import restructure
    from domain.schedule import TermsError
    from models import search
    from models.contract import WORKFLOW_TYPE
    from models.views import (
        case_view,
        details_markdown,
        installments_of,
        outstanding_of,
        overdue_since,
        payment_result,
        projection,
        query_time,
    )
    from models.wire import (
        AgentOutcome,
        AgentRelease,
        AgentRequest,
        AuditEvent,
        CarriedCase,
        CaseEvents,
        CaseFiling,
        CaseView,
        ContactOutcome,
        ContactParams,
        ContactRequest,
        LoanRecord,
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
MAX_REJECTIONS_KEPT = 50
ACTIVITY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=10))


@workflow.defn(name=WORKFLOW_TYPE)
class LoanCollection:
    @workflow.init
    def __init__(self, arg: LoanStart | CarriedCase) -> None:
        start, carried = (arg.start, arg.case) if isinstance(arg, CarriedCase) else (arg, None)
        self.start = start
        # None until run() has opened the case (a new loan: after its policy is loaded).
        self.case: Case | None = carried
        self.changed = False
        self.journal: list[AuditEvent] = []
        self.bookings: list[PaymentBooking] = []
        self.published: dict[str, object] = {}
        self.synced: object = None
        self.last_stage: CollectionStage | None = None

    # --- The loop ------------------------------------------------------------------------

    @workflow.run
    async def run(self, arg: LoanStart | CarriedCase) -> CaseView:
        if not isinstance(arg, CarriedCase):
            start = arg
            self.case = await self._open(start)
            await self._local(
                RecordActivities.record_loan,
                LoanRecord(
                    start=start,
                    first_due_date=self.case.first_due_date,
                    installments=installments_of(self.case, workflow.now()),
                ),
                summary=f"record loan {start.loan_id} and its schedule",
            )
            self._audit("opened", f"loan opened in stage {self._stage().value}", "start")
        while True:
            # Reset before anything awaits: a message handled while this pass writes
            # records or acts must cut the next wait short, or its booking would wait
            # for the next timer.
            self.changed = False
            now = workflow.now()
            self.case = reconcile(self._case, now)
            await self._flush(now)
            action = next_action(self._case, self._case.policy, now)
            if action is None:
                break
            if workflow.info().is_continue_as_new_suggested():
                await self._settle()
                workflow.continue_as_new(CarriedCase(start=self.start, case=self._case))
            if action.at > now:
                # Publish only when the case is settled until the next wake, so the
                # search attributes change once per wake, not once per step.
                self._publish(now)
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self.changed,
                        timeout=action.at - now,
                        timeout_summary=f"until {action.summary}",
                    )
                continue  # plan again: the time came, or a message changed the case
            outcome = await self._execute(action)
            self.case = record_outcome(self._case, action, outcome, workflow.now())
        await self._settle()
        self._publish(workflow.now())
        return case_view(self._case, workflow.now())

    async def _settle(self) -> None:
        """Write everything down before the run ends. A message handled while the last
        records are written queues more; loop until nothing is left and no handler runs,
        then end without awaiting again."""
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._flush(workflow.now())
            if not self.bookings and not self.journal and workflow.all_handlers_finished():
                return

    async def _open(self, start: LoanStart) -> Case:
        """The new case. The policy comes through an activity, so it is recorded in the
        history: a later edit of the policy file changes new loans, never the replay of
        running ones."""
        try:
            policy: Policy = await self._local(
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

    @staticmethod
    def _new_case(start: LoanStart, policy: Policy) -> Case:
        # The start input's fields are open_case's arguments; its policy name is resolved.
        return open_case(**start.model_dump(exclude={"policy"}), policy=policy, now=workflow.now())

    async def _opened(self) -> Case:
        """For handlers: messages that arrive before the case is opened wait for it."""
        await workflow.wait_condition(lambda: self.case is not None)
        return self._case

    @property
    def _case(self) -> Case:
        assert self.case is not None
        return self.case

    def _stage(self) -> CollectionStage:
        return stage(self._case, today_for(self._case, workflow.now()))

    # --- Actions ------------------------------------------------------------------------

    async def _execute(self, action: PlannedAction) -> Outcome:
        case = self._case
        now = workflow.now()
        today = today_for(case, now)
        kind = action.kind
        if kind is ActionKind.REFRESH:
            return Outcome()
        if kind in CONTACT_KINDS:
            inst = next((i for i in case.installments if i.seq == action.installment_seq), None)
            amount = (
                owed_on(case, inst, today).total
                if kind is ActionKind.REMINDER and inst
                else overdue_amount(case, today)
            )
            params = ContactParams(
                amount=amount,
                currency=case.currency,
                due_date=inst.due_date if inst else None,
                days_past_due=days_past_due(case, today),
                installment_seq=action.installment_seq,
                report_on=(today + timedelta(days=case.policy.credit_notice_lead_days))
                if kind is ActionKind.CREDIT_NOTICE
                else None,
            )
            assert action.channel is not None and action.template is not None
            result: ContactOutcome = await self._local(
                ContactActivities.send_contact,
                ContactRequest(
                    key=action.key,
                    loan_id=case.loan_id,
                    borrower_id=case.borrower_id,
                    kind=kind,
                    channel=action.channel,
                    template=action.template,
                    scheduled_at=action.at,
                    params=params,
                    not_after=window_close(case.policy, case.timezone, action.at),
                ),
                summary=action.summary,
            )
            if result.status == "deferred":
                return Outcome(delivered=False, deferred=True)
            delivered = result.status == "delivered"
            if kind is ActionKind.CREDIT_NOTICE and delivered:
                await self._file(action, now)
            return Outcome(
                delivered=delivered, dialed=result.dialed, connected=result.connected, line=result.line
            )
        if kind is ActionKind.ASSIGN_AGENT:
            assigned: AgentOutcome = await self._local(
                CaseActivities.assign_agent,
                AgentRequest(
                    key=action.key,
                    loan_id=case.loan_id,
                    borrower_id=case.borrower_id,
                    days_past_due=days_past_due(case, today),
                    overdue=overdue_amount(case, today),
                    at=now,
                ),
                summary=action.summary,
            )
            return Outcome(agent_id=assigned.agent_id)
        if kind is ActionKind.RELEASE_AGENT:
            await self._local(
                CaseActivities.release_agent,
                AgentRelease(
                    key=action.key,
                    loan_id=case.loan_id,
                    agent_id=case.assigned_agent,
                    reason="paid off" if case.closed else "cured",
                    at=now,
                ),
                summary=action.summary,
            )
            return Outcome()
        await self._file(action, now)
        return Outcome()

    async def _file(self, action: PlannedAction, now: datetime) -> None:
        case = self._case
        today = today_for(case, now)
        await self._local(
            CaseActivities.file_case_action,
            CaseFiling(
                key=action.key,
                loan_id=case.loan_id,
                borrower_id=case.borrower_id,
                kind=action.kind,
                at=now,
                days_past_due=days_past_due(case, today),
                overdue=overdue_amount(case, today),
                outstanding=outstanding_of(case, now),
                currency=case.currency,
                detail=action.summary,
            ),
            summary=action.summary,
        )

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

    # --- Bookkeeping: audit, payments booked, projection, search attributes ---------------

    def _audit(self, event: str, detail: str, source: str) -> None:
        workflow.logger.info("%s: %s (%s)", event, detail, source)
        now = workflow.now()
        key = f"{self._case.loan_id}/audit/{event}/{source}/{now.isoformat()}/{len(self.journal)}"
        self.journal.append(
            AuditEvent(key=key, loan_id=self._case.loan_id, at=now, event=event, detail=detail, source=source)
        )

    async def _flush(self, now: datetime) -> None:
        """Write down what happened since the last flush (payments, audit, the projection
        if it changed) in one activity."""
        current = self._stage()
        if self.last_stage is not None and current is not self.last_stage:
            self._audit("stage", f"{self.last_stage.value} -> {current.value}", "rule:stage")
        self.last_stage = current
        snapshot = projection(self._case, now)
        # Interest of a new period appears in the payoff as days pass; that alone is not
        # worth a write. The projection is rewritten (outstanding included, as of
        # `as_of`) whenever stage, DPD, overdue, agent, schedule or payments change.
        fingerprint = snapshot.model_dump(
            exclude={"as_of", "next_action_at", "next_action_kind", "outstanding"}
        )
        changed = fingerprint != self.synced
        if self.bookings or self.journal or changed:
            events = CaseEvents(
                payments=self.bookings, audit=self.journal, projection=snapshot if changed else None
            )
            self.bookings, self.journal = [], []
            await self._local(
                RecordActivities.record_case_events, events, summary=self._events_summary(events)
            )
            self.synced = fingerprint

    @staticmethod
    def _events_summary(events: CaseEvents) -> str:
        parts = [f"payment {p.payment_id}" for p in events.payments]
        parts += [e.event for e in events.audit if e.event != "payment"]
        if events.projection is not None:
            parts.append(f"projection {events.projection.stage.value} DPD {events.projection.days_past_due}")
        return "record: " + ", ".join(parts)

    def _publish(self, now: datetime) -> None:
        case = self._case
        view = case_view(case, now)
        values: dict[str, object] = {
            "CollectionStage": view.stage.value,
            "DaysPastDue": view.days_past_due,
            "AmountOverdue": view.overdue,
            "OutstandingBalance": view.outstanding.total,
            "AssignedAgent": view.assigned_agent,
            "NextActionAt": view.next_action.at if view.next_action else None,
            "OverdueSince": overdue_since(case, now),
        }
        if not self.published:
            values |= {
                "LoanId": case.loan_id,
                "BorrowerId": case.borrower_id,
                "LoanProduct": case.product.value,
            }
        updates: list[SearchAttributeUpdate] = []
        for key in search.ALL_KEYS:
            name = key.name
            if name not in values or self.published.get(name, ...) == values[name]:
                continue
            value = values[name]
            updates.append(key.value_unset() if value is None else key.value_set(value))  # type: ignore[arg-type]
            self.published[name] = value
        if updates:
            workflow.upsert_search_attributes(updates)
            workflow.set_current_details(details_markdown(view, case.currency, case.timezone))

    # --- Messages ------------------------------------------------------------------------

    def _check_payment(self, payment: PaymentIn) -> None:
        """Raises CaseError naming the field; changes nothing."""
        case = self._case
        if payment.payment_id in case.payments:
            return  # answered as a duplicate
        if case.closed:
            raise CaseError("loan_id", f"loan {case.loan_id} is closed (paid off)")
        if payment.currency is not None and payment.currency != case.currency:
            raise CaseError("currency", f"{payment.currency} is not the loan's currency {case.currency}")
        if isinstance(payment.amount, bool) or payment.amount <= 0:
            raise CaseError("amount", f"must be an integer > 0 in minor units (got {payment.amount})")
        now = workflow.now()
        paid_at = payment_date(case, payment.paid_at or now, now)
        payoff = outstanding(case, today_for(case, paid_at)).total
        if payment.amount > payoff:
            raise CaseError("amount", f"{payment.amount} is above the payoff amount {payoff}")

    def _apply_payment(self, payment: PaymentIn, source: str) -> PaymentResult:
        case = self._case
        now = workflow.now()
        if payment.payment_id in case.payments:
            return payment_result(
                case, payment.payment_id, case.payments[payment.payment_id], now, duplicate=True
            )
        paid_at = payment_date(case, payment.paid_at or now, now)
        case, allocation = apply_payment(case, payment.amount, paid_at)
        case = case.model_copy(update={"payments": {**case.payments, payment.payment_id: allocation}})
        self.case = reconcile(case, now)
        self.bookings.append(
            PaymentBooking(
                loan_id=case.loan_id,
                payment_id=payment.payment_id,
                amount=payment.amount,
                currency=case.currency,
                paid_at=paid_at,
                channel=payment.channel,
                allocation=payment_result(case, payment.payment_id, allocation, now, False).allocation,
            )
        )
        self._audit(
            "payment",
            f"payment {payment.payment_id} of {payment.amount} applied: {allocation.model_dump()}",
            source,
        )
        self.changed = True
        return payment_result(self._case, payment.payment_id, allocation, now, duplicate=False)

    def _decoded(self, model: type[M], raw: M | dict[str, Any], message: str, id_field: str) -> M | None:
        if isinstance(raw, model):
            return raw
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            reason = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}" for err in exc.errors()
            )
            ref = raw.get(id_field) if isinstance(raw, dict) else None
            self._reject(message, str(ref) if ref is not None else None, reason)
            return None

    def _reject(self, message: str, ref: str | None, reason: str) -> None:
        rejection = Rejection(at=workflow.now(), message=message, ref=ref, reason=reason)
        kept = [*self._case.rejections, rejection][-MAX_REJECTIONS_KEPT:]
        self.case = self._case.model_copy(update={"rejections": kept})
        self._audit("rejected", f"{message} {ref or ''} rejected: {reason}", f"signal:{message}")
        self.changed = True

    @workflow.update  # name: record_payment (the method name; the bare form types async handlers)
    async def record_payment(self, payment: PaymentIn) -> PaymentResult:
        await self._opened()
        try:
            self._check_payment(payment)
            return self._apply_payment(payment, "update:record_payment")
        except CaseError as exc:  # state changed between validator and handler
            raise ApplicationError(str(exc), type="InvalidPayment") from exc

    @record_payment.validator
    def _validate_payment(self, payment: PaymentIn) -> None:
        if self.case is None:
            return  # not opened yet: the handler checks once it is
        try:
            self._check_payment(payment)
        except CaseError as exc:
            raise ApplicationError(str(exc), type="InvalidPayment") from exc

    @workflow.signal(name="payment_received")
    async def payment_received(self, raw: PaymentIn | dict[str, Any]) -> None:
        await self._opened()
        # A payload that does not even decode arrives as a dict, so it is recorded as
        # rejected too instead of being dropped unseen.
        payment = self._decoded(PaymentIn, raw, "payment_received", "payment_id")
        if payment is None:
            return
        try:
            self._check_payment(payment)
            self._apply_payment(payment, "signal:payment_received")
        except CaseError as exc:
            self._reject("payment_received", payment.payment_id, str(exc))

    def _check_restructuring(self, req: RestructuringIn) -> None:
        if any(r.restructuring_id == req.restructuring_id for r in self._case.restructurings):
            return
        self._restructured(req)  # pure: validates by computing, the result is dropped

    def _restructured(self, req: RestructuringIn) -> Case:
        return restructure(
            self._case,
            restructuring_id=req.restructuring_id,
            kind=req.kind,
            approved_by=req.approved_by,
            approval_ref=req.approval_ref,
            extension_days=req.extension_days,
            new_term_months=req.new_term_months,
            waive_penalty=req.waive_penalty,
            waive_amount=req.waive_amount,
            now=workflow.now(),
        )

    def _apply_restructuring(self, req: RestructuringIn, source: str) -> ScheduleSummary:
        duplicate = any(r.restructuring_id == req.restructuring_id for r in self._case.restructurings)
        if not duplicate:
            self.case = reconcile(self._restructured(req), workflow.now())
            last = self._case.restructurings[-1]
            self._audit(
                "restructuring",
                f"{last.detail}; approved by {last.approved_by} ({last.approval_ref})",
                source,
            )
            self.changed = True
        now = workflow.now()
        case = self._case
        today = today_for(case, now)
        return ScheduleSummary(
            restructuring_id=req.restructuring_id,
            kind=req.kind,
            duplicate=duplicate,
            outstanding=outstanding_of(case, now),
            overdue=overdue_amount(case, today),
            days_past_due=days_past_due(case, today),
            stage=stage(case, today),
            installments=installments_of(case, now),
        )

    @workflow.update  # name: apply_restructuring
    async def apply_restructuring(self, req: RestructuringIn) -> ScheduleSummary:
        await self._opened()
        try:
            self._check_restructuring(req)
            return self._apply_restructuring(req, "update:apply_restructuring")
        except CaseError as exc:
            raise ApplicationError(str(exc), type="InvalidRestructuring") from exc

    @apply_restructuring.validator
    def _validate_restructuring(self, req: RestructuringIn) -> None:
        if self.case is None:
            return  # not opened yet: the handler checks once it is
        try:
            self._check_restructuring(req)
        except CaseError as exc:
            raise ApplicationError(str(exc), type="InvalidRestructuring") from exc

    @workflow.signal(name="restructuring_approved")
    async def restructuring_approved(self, raw: RestructuringIn | dict[str, Any]) -> None:
        await self._opened()
        req = self._decoded(RestructuringIn, raw, "restructuring_approved", "restructuring_id")
        if req is None:
            return
        try:
            self._check_restructuring(req)
            self._apply_restructuring(req, "signal:restructuring_approved")
        except CaseError as exc:
            self._reject("restructuring_approved", req.restructuring_id, str(exc))

    @workflow.query(name="state")
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
