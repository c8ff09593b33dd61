"""The search attributes of DESIGN.md: typed keys the workflow upserts, and the list the
worker and the local stack register."""

from temporalio.common import SearchAttributeKey

LOAN_ID = SearchAttributeKey.for_keyword("LoanId")
BORROWER_ID = SearchAttributeKey.for_keyword("BorrowerId")
LOAN_PRODUCT = SearchAttributeKey.for_keyword("LoanProduct")
COLLECTION_STAGE = SearchAttributeKey.for_keyword("CollectionStage")
DAYS_PAST_DUE = SearchAttributeKey.for_int("DaysPastDue")
AMOUNT_OVERDUE = SearchAttributeKey.for_int("AmountOverdue")
OUTSTANDING_BALANCE = SearchAttributeKey.for_int("OutstandingBalance")
ASSIGNED_AGENT = SearchAttributeKey.for_keyword("AssignedAgent")
NEXT_ACTION_AT = SearchAttributeKey.for_datetime("NextActionAt")
OVERDUE_SINCE = SearchAttributeKey.for_datetime("OverdueSince")

ALL_KEYS = (
    LOAN_ID,
    BORROWER_ID,
    LOAN_PRODUCT,
    COLLECTION_STAGE,
    DAYS_PAST_DUE,
    AMOUNT_OVERDUE,
    OUTSTANDING_BALANCE,
    ASSIGNED_AGENT,
    NEXT_ACTION_AT,
    OVERDUE_SINCE,
)
