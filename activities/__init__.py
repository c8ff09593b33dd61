"""The side effects of the loan workflow, as activities on classes that hold their
dependencies: `RecordActivities` (the loan, its projection, payments, the audit log, the
policy), `ContactActivities` (messages to the borrower, through a deliverer) and
`CaseActivities` (collectors and case filings).

The activities are SYNCHRONOUS (`def`): they use blocking SQLAlchemy sessions and a
blocking deliverer, so the worker MUST be given an `activity_executor`
(a `concurrent.futures.ThreadPoolExecutor`):

    Worker(client, task_queue=..., workflows=[LoanCollection],
           activities=collection_activities(engine, deliverer),
           activity_executor=ThreadPoolExecutor(max_workers=...))

Every activity is idempotent by its payload's business key; input that can never succeed
raises `ApplicationError(non_retryable=True)`, database outages and deliverer exceptions
are retryable. The registered names (the method names) are recorded in every loan's
history: renaming one breaks the replay of running loans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from activities.cases import CaseActivities
from activities.contacts import ContactActivities
from activities.delivery import Deliverer
from activities.records import RecordActivities


def collection_activities(engine: Engine, deliverer: Deliverer | None = None) -> list[Callable[..., Any]]:
    """Every activity of the loan workflow, bound to `engine` (and `deliverer`, default
    `LoggingDeliverer()`), for `Worker(activities=...)`."""
    records, contacts, cases = (
        RecordActivities(engine),
        ContactActivities(engine, deliverer),
        CaseActivities(engine),
    )
    return [
        records.record_loan,
        records.sync_loan,
        records.book_payment,
        records.write_audit,
        records.record_case_events,
        records.load_policy,
        contacts.send_contact,
        cases.assign_agent,
        cases.release_agent,
        cases.file_case_action,
    ]
