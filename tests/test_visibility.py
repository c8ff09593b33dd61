"""The polling helper every visibility assertion uses."""

from __future__ import annotations

from tests.visibility import eventually


async def test_eventually_polls_until_the_condition_holds() -> None:
    answers = iter([[], ["loan-1"], ["loan-1", "loan-2"]])

    async def probe() -> list[str]:
        return next(answers)

    assert await eventually(probe, lambda ids: "loan-2" in ids, interval=0) == ["loan-1", "loan-2"]


async def test_eventually_gives_the_last_answer_when_the_deadline_passes() -> None:
    calls = 0

    async def probe() -> int:
        nonlocal calls
        calls += 1
        return calls

    last = await eventually(probe, lambda n: n < 0, timeout=0.05, interval=0.01)
    assert last == calls and calls >= 2
