"""The client library of the collections system: what every door (the CLI
`starter.py`, the local stack, the demo, the HTTP API) uses to talk to Temporal.

- `loans`: connect, start and disburse loans, send messages (payments, restructurings
  and the collector's desk: promises, disputes, hardship, contact preferences, logged
  contacts), state, a loan's workflow health (execution status, stuck), list and count,
  an agent's worklist;
- `worklist`: the order an agent works their cases in (pure);
- `starts`: start inputs read and validated as the workflow will, and their Web UI texts;
- `queries`: visibility queries over the search attributes;
- `errors`: Temporal's errors as one actionable line and a kind (exit code, HTTP status);
- `search_attributes`: registering the search attributes in a namespace.
"""

from client.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_REFUSED, ClientError, Problem
from client.loans import (
    DESK_MESSAGES,
    CollectionsClient,
    DeskIn,
    DisburseReport,
    LoanHealth,
    StartOutcome,
    Worklist,
    connect,
)
from client.queries import build_list_query
from client.search_attributes import SearchAttributesMissing, ensure_search_attributes
from client.starts import StartRecord, parse_start_records, validate_start
from client.worklist import WorkItem, order_worklist

__all__ = [
    "DESK_MESSAGES",
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "ClientError",
    "CollectionsClient",
    "DeskIn",
    "DisburseReport",
    "LoanHealth",
    "Problem",
    "SearchAttributesMissing",
    "StartOutcome",
    "StartRecord",
    "WorkItem",
    "Worklist",
    "build_list_query",
    "connect",
    "ensure_search_attributes",
    "order_worklist",
    "parse_start_records",
    "validate_start",
]
