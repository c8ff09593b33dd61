"""The client library of the collections system: what every door (the CLI
`starter.py`, the local stack, the demo, the HTTP API) uses to talk to Temporal.

- `search_attributes`: registering the search attributes in a namespace.
"""
