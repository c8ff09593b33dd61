"""The public names of the contract (DESIGN.md): the one home of the workflow type, its
id, the default task queue and the message and query names. The workflow, the client
library, the CLI, the stack and the API all import them from here. Pure: importable
inside the workflow sandbox.

Search attribute names live beside their typed keys in `models/search.py`."""

WORKFLOW_TYPE = "LoanCollection"
DEFAULT_TASK_QUEUE = "loan-collections"
WORKFLOW_ID_PREFIX = "loan-"

# Updates (answered) and their signal twins (fire-and-forget).
RECORD_PAYMENT = "record_payment"
PAYMENT_RECEIVED = "payment_received"
APPLY_RESTRUCTURING = "apply_restructuring"
RESTRUCTURING_APPROVED = "restructuring_approved"

# The collector's desk and borrower protections (DESIGN.md contract part 2).
RECORD_PROMISE = "record_promise"
PROMISE_MADE = "promise_made"
OPEN_DISPUTE = "open_dispute"
DISPUTE_OPENED = "dispute_opened"
RESOLVE_DISPUTE = "resolve_dispute"
DISPUTE_RESOLVED = "dispute_resolved"
START_HARDSHIP = "start_hardship"
HARDSHIP_APPROVED = "hardship_approved"
END_HARDSHIP = "end_hardship"
HARDSHIP_ENDED = "hardship_ended"
SET_CONTACT_PREFERENCES = "set_contact_preferences"
CONTACT_PREFERENCES_SET = "contact_preferences_set"
LOG_CONTACT = "log_contact"
CONTACT_LOGGED = "contact_logged"

# Queries.
STATE = "state"


def workflow_id(loan_id: str) -> str:
    """`loan-<loan_id>`: one workflow per loan, never reused."""
    return f"{WORKFLOW_ID_PREFIX}{loan_id}"
