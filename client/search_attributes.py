"""The search attributes of models/search.py, registered in a namespace: the worker and
the local stack make sure they exist before any loan upserts them (a workflow that
upserts an unregistered attribute is stuck)."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from models import search

__all__ = ["SearchAttributesMissing", "ensure_search_attributes"]


class SearchAttributesMissing(RuntimeError):
    """An attribute the workflow upserts is not registered and cannot be registered here."""


def _already_exists(exc: RPCError) -> bool:
    # The dev server answers ALREADY_EXISTS; the time-skipping server words it
    # "Search attribute X already exists." under another status.
    return exc.status == RPCStatusCode.ALREADY_EXISTS or "already exists" in exc.message.lower()


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register every search attribute of DESIGN.md that the namespace lacks; returns
    the names this call added. An attribute that turns out to exist already (a server
    that cannot list them, or another worker registering them at the same moment) is
    success. Raises SearchAttributesMissing naming the attribute where one is missing
    and cannot be registered."""
    wanted = {key.name: IndexedValueType.ValueType(key.indexed_value_type.value) for key in search.ALL_KEYS}
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.PERMISSION_DENIED):
            raise SearchAttributesMissing(
                f"cannot list search attributes of namespace {namespace!r}: {exc.message}"
            ) from exc
        # The time-skipping server cannot list, a restricted API key may not: adding
        # each one answers whether it exists.
        return await _add_one_by_one(client, namespace, wanted)
    registered = dict(listed.custom_attributes)
    clashing = sorted(n for n, kind in wanted.items() if n in registered and registered[n] != kind)
    if clashing:
        raise SearchAttributesMissing(
            f"namespace {namespace!r} has search attribute{'s' if len(clashing) > 1 else ''} "
            + ", ".join(
                f"{n} of type {_type_name(registered[n])}, not {_type_name(wanted[n])}" for n in clashing
            )
            + ": a loan could not upsert it; remove or rename it in the namespace"
        )
    missing = {name: kind for name, kind in wanted.items() if name not in registered}
    if not missing:
        return []
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
        return sorted(missing)
    except RPCError as exc:
        if not _already_exists(exc):
            raise _cannot_register(namespace, sorted(missing), exc) from exc
    # Another worker registered some of them since the list: each one's own answer counts.
    return await _add_one_by_one(client, namespace, missing)


async def _add_one_by_one(
    client: Client, namespace: str, attributes: dict[str, IndexedValueType.ValueType]
) -> list[str]:
    """Add each attribute on its own: added, or "already exists" (success), or refused.
    Returns the names added; raises SearchAttributesMissing naming every refused one."""
    added: list[str] = []
    refused: list[str] = []
    first_error: RPCError | None = None
    for name, kind in sorted(attributes.items()):
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes={name: kind})
            )
            added.append(name)
        except RPCError as exc:
            if not _already_exists(exc):
                refused.append(name)
                first_error = first_error or exc
    if first_error is not None:
        raise _cannot_register(namespace, refused, first_error) from first_error
    return added


def _type_name(kind: IndexedValueType.ValueType) -> str:
    return IndexedValueType.Name(kind).removeprefix("INDEXED_VALUE_TYPE_").title()


def _cannot_register(namespace: str, names: list[str], exc: RPCError) -> SearchAttributesMissing:
    return SearchAttributesMissing(
        f"namespace {namespace!r} lacks search attribute{'s' if len(names) > 1 else ''} "
        f"{', '.join(names)} and {'they' if len(names) > 1 else 'it'} cannot be registered here "
        f"({exc.message}); register {'them' if len(names) > 1 else 'it'} with `temporal operator "
        "search-attribute create` (or in Temporal Cloud) and start the worker again"
    )
