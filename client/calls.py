"""A collector's call against the borrower's calls on ALL loans, before it is logged.

The loan's workflow is the compliance gate for a logged call, but it sees only its own
loan's calls (a workflow does no I/O). The call caps hold per borrower across loans
(DESIGN.md, contract part 3), so the CLI first checks an outbound call against the
borrower's call ledger (`borrower_call`: the automated calls of every loan and the calls
collectors logged) and refuses, naming `--at`, a call that would break a cap there. Not
atomic with the log itself: two collectors logging at the same second on two loans can
both pass; the automated calls, checked at send time under the borrower's lock, are.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session

from activities._support import as_utc
from domain.calendar import in_contact_window
from domain.case import CallAttempt
from domain.planner import CALL_RESULT_PREFIX, first_full_later_week, next_call_at
from domain.policy import PolicyError, load_policy
from models import repo
from models.tables import Loan

LOOKBACK = timedelta(days=8)  # the caps look 7 days back, a day more for far time zones


def reserved_contact_id(contact_id: str) -> str | None:
    """Why `contact_id` may not be used by a person, or None: `ivr:<message id>` is how the
    IVR's result of an automated call is logged (POST /calls)."""
    if contact_id.startswith(CALL_RESULT_PREFIX):
        return f"ids starting with {CALL_RESULT_PREFIX!r} are reserved for the IVR's call results"
    return None


def borrower_caps_refusal(session: Session, loan_id: str, when: datetime) -> str | None:
    """Why one more outbound call at `when` on `loan_id` would break the policy's call
    caps counted over the borrower's calls on all loans, or None. A loan not in the
    database, or a call outside the contact window, is left to the workflow to judge."""
    loan = session.get(Loan, loan_id)
    if loan is None:
        return None
    try:
        policy = load_policy(loan.policy, loan.product)
    except PolicyError:
        return None
    window = policy.contact_window
    try:
        if not in_contact_window(when, loan.timezone, window.opens, window.closes):
            return None
        since = when - LOOKBACK
    except (OverflowError, ValueError):  # an instant at the edge of the calendar
        return None  # the workflow refuses it, naming at
    calls = repo.borrower_calls(session, loan.borrower_id, since)
    log = [CallAttempt(at=as_utc(c.at), line=c.line, connected=c.connected) for c in calls]
    full = first_full_later_week(policy.call_caps, log, when)
    if full is not None:
        cap = policy.call_caps.call_attempts_per_7_days
        return (
            f"with the borrower's calls on all loans, more than {cap} calls in the 7 days up to "
            f"{full.isoformat()}"
        )
    allowed = next_call_at(policy.call_caps, window, loan.timezone, log, when)
    if allowed != when:
        return f"the borrower's next call (counting all loans) is allowed at {allowed.isoformat()}"
    return None
