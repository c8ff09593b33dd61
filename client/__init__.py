"""The client library of the collections system: what every door (the CLI
`starter.py`, the local stack, the demo, the HTTP API) uses to talk to Temporal.

- `loans`: connect, start and disburse loans, send messages, state, a loan's workflow
  health (execution status, stuck), list and count;
- `starts`: start inputs read and validated as the workflow will, and their Web UI texts;
- `queries`: visibility queries over the search attributes;
- `errors`: Temporal's errors as one actionable line and a kind (exit code, HTTP status);
- `search_attributes`: registering the search attributes in a namespace.
"""

from client.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_REFUSED, ClientError, Problem
from client.loans import CollectionsClient, DisburseReport, LoanHealth, StartOutcome, connect
from client.queries import build_list_query
from client.search_attributes import SearchAttributesMissing, ensure_search_attributes
from client.starts import StartRecord, parse_start_records, validate_start

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_REFUSED",
    "ClientError",
    "CollectionsClient",
    "DisburseReport",
    "LoanHealth",
    "Problem",
    "SearchAttributesMissing",
    "StartOutcome",
    "StartRecord",
    "build_list_query",
    "connect",
    "ensure_search_attributes",
    "parse_start_records",
    "validate_start",
]
