"""The search attributes of DESIGN.md: typed keys the workflow upserts, and the list the
worker and the local stack register."""

from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

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
# Contract part 2: the strongest hold, when it lifts, and promises broken this episode.
COLLECTION_HOLD = SearchAttributeKey.for_keyword("CollectionHold")
HOLD_UNTIL = SearchAttributeKey.for_datetime("HoldUntil")
# A Double, not the Int DESIGN.md names: Temporal's SQL visibility (the dev server, and a
# self-hosted server on PostgreSQL or MySQL) allows at most 3 Int attributes per
# namespace, and DaysPastDue, AmountOverdue and OutstandingBalance use them (money stays
# exact in Int). A count is exact as a Double, and `BrokenPromises >= 2` reads the same.
BROKEN_PROMISES = SearchAttributeKey.for_float("BrokenPromises")

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
    COLLECTION_HOLD,
    HOLD_UNTIL,
    BROKEN_PROMISES,
)


def upserts(
    published: dict[str, object], values: dict[str, object]
) -> tuple[list[SearchAttributeUpdate], dict[str, object]]:
    """The updates that bring the attributes published so far to `values` (a None value
    unsets), in the order of ALL_KEYS, and what is published after them."""
    updates: list[SearchAttributeUpdate] = []
    now_published = dict(published)
    for key in ALL_KEYS:
        name = key.name
        if name not in values or published.get(name, ...) == values[name]:
            continue
        value = values[name]
        updates.append(key.value_unset() if value is None else key.value_set(value))  # type: ignore[arg-type]
        now_published[name] = value
    return updates, now_published
