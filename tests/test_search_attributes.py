"""Registering the search attributes (client/search_attributes.py), which the worker and
the local stack do before any loan upserts them. Defect 9: an attribute that exists but
could not be listed, or that another worker registered a moment earlier, is success."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
    ListSearchAttributesResponse,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from client.search_attributes import SearchAttributesMissing, ensure_search_attributes
from models import search
from tests.conftest import _binary

ALL = sorted(key.name for key in search.ALL_KEYS)
KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
INT = IndexedValueType.INDEXED_VALUE_TYPE_INT


@pytest.mark.temporal
async def test_two_workers_registering_at_once_on_a_fresh_server_both_succeed() -> None:
    # The time-skipping server cannot list, and refuses an attribute that exists with
    # "already exists": two workers starting together on it used to leave one refusing.
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server")
    )
    try:
        client = env.client
        first, second = await asyncio.gather(
            ensure_search_attributes(client, client.namespace),
            ensure_search_attributes(client, client.namespace),
        )
        assert sorted(first + second) == ALL  # each registered once, by one of them
        assert await ensure_search_attributes(client, client.namespace) == []  # and again: nothing to do
    finally:
        await env.shutdown()


def _rpc(status: RPCStatusCode, message: str) -> RPCError:
    return RPCError(message, status, b"")


@dataclass
class FakeOperator:
    """An operator service: `registered` attributes exist; `listable` False answers the
    list call with `list_error`; adding one of `refused` fails with `add_error`."""

    registered: dict[str, IndexedValueType.ValueType] = field(default_factory=dict)
    listable: bool = True
    list_error: RPCStatusCode = RPCStatusCode.PERMISSION_DENIED
    refused: set[str] = field(default_factory=set)
    add_error: RPCStatusCode = RPCStatusCode.PERMISSION_DENIED
    adds: list[list[str]] = field(default_factory=list)

    async def list_search_attributes(self, req: ListSearchAttributesRequest) -> ListSearchAttributesResponse:
        if not self.listable:
            raise _rpc(self.list_error, "listing search attributes is not allowed")
        return ListSearchAttributesResponse(custom_attributes=self.registered)

    async def add_search_attributes(self, req: AddSearchAttributesRequest) -> None:
        names = sorted(req.search_attributes)
        self.adds.append(names)
        if set(names) & self.refused:
            raise _rpc(self.add_error, "Request unauthorized.")
        existing = [n for n in names if n in self.registered]
        if existing:  # the time-skipping server's wording, one attribute at a time
            raise _rpc(RPCStatusCode.INVALID_ARGUMENT, f"Search attribute {existing[0]} already exists.")
        self.registered.update(req.search_attributes)


def _client(operator: FakeOperator) -> Client:
    return cast(Client, SimpleNamespace(operator_service=operator))


def _all_registered() -> dict[str, Any]:
    return {key.name: IndexedValueType.ValueType(key.indexed_value_type.value) for key in search.ALL_KEYS}


async def test_attributes_that_exist_but_cannot_be_listed_are_success() -> None:
    operator = FakeOperator(registered=_all_registered(), listable=False)
    assert await ensure_search_attributes(_client(operator), "ns") == []
    assert operator.adds == [[name] for name in ALL]  # one by one: each "already exists"


async def test_only_the_missing_attributes_are_registered() -> None:
    registered = _all_registered()
    del registered["OverdueSince"], registered["AssignedAgent"]
    operator = FakeOperator(registered=registered, listable=False, list_error=RPCStatusCode.UNIMPLEMENTED)
    assert await ensure_search_attributes(_client(operator), "ns") == ["AssignedAgent", "OverdueSince"]
    assert set(operator.registered) == set(ALL)


async def test_a_missing_attribute_that_cannot_be_registered_is_refused_by_name() -> None:
    registered = _all_registered()
    del registered["OverdueSince"]
    operator = FakeOperator(registered=registered, refused={"OverdueSince"})
    with pytest.raises(SearchAttributesMissing, match=r"lacks search attribute OverdueSince and it cannot"):
        await ensure_search_attributes(_client(operator), "ns")

    # The same where the list call is forbidden: the others exist, that one is refused.
    operator = FakeOperator(registered=dict(registered), listable=False, refused={"OverdueSince"})
    with pytest.raises(SearchAttributesMissing) as err:
        await ensure_search_attributes(_client(operator), "ns")
    assert "lacks search attribute OverdueSince " in str(err.value)
    assert "Request unauthorized" in str(err.value)


async def test_an_attribute_of_another_type_is_refused_by_name() -> None:
    registered = _all_registered()
    registered["DaysPastDue"] = KEYWORD
    with pytest.raises(SearchAttributesMissing, match=r"DaysPastDue of type Keyword, not Int"):
        await ensure_search_attributes(_client(FakeOperator(registered=registered)), "ns")


async def test_a_namespace_that_cannot_be_read_is_refused() -> None:
    operator = FakeOperator(listable=False, list_error=RPCStatusCode.NOT_FOUND)
    with pytest.raises(SearchAttributesMissing, match=r"cannot list search attributes of namespace 'ns'"):
        await ensure_search_attributes(_client(operator), "ns")
