"""Local time: the borrower's wall clock across DST, month arithmetic, the contact window."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest

from domain.calendar import (
    CalendarError,
    add_months,
    at_local,
    in_contact_window,
    into_contact_window,
    local_date,
    next_local_midnight,
    parse_hhmm,
    zone,
)
from tests.test_domain_helpers import NY, SH, utc

OPENS, CLOSES = time(8), time(21)


@pytest.mark.parametrize(
    ("day", "clock", "tz", "expected"),
    [
        (date(2024, 3, 9), time(9), NY, utc(2024, 3, 9, 14)),  # EST
        (date(2024, 3, 10), time(9), NY, utc(2024, 3, 10, 13)),  # EDT
        (date(2024, 3, 10), time(2, 30), NY, utc(2024, 3, 10, 7, 30)),  # does not exist: 03:30 EDT
        (date(2024, 11, 3), time(1, 30), NY, utc(2024, 11, 3, 5, 30)),  # twice: the first (EDT)
        (date(2024, 2, 29), time(0), SH, utc(2024, 2, 28, 16)),
    ],
    ids=["ny-est", "ny-edt", "spring-gap-moves-forward", "fall-back-first", "shanghai-feb29"],
)
def test_at_local(day: date, clock: time, tz: str, expected: datetime) -> None:
    assert at_local(day, clock, tz) == expected


@pytest.mark.parametrize(
    ("instant", "tz", "expected"),
    [
        (utc(2024, 3, 10, 12), NY, utc(2024, 3, 11, 4)),  # a 23-hour day
        (utc(2024, 11, 3, 12), NY, utc(2024, 11, 4, 5)),  # a 25-hour day
        (utc(2024, 2, 28, 16), SH, utc(2024, 2, 29, 16)),
    ],
    ids=["spring-forward", "fall-back", "shanghai"],
)
def test_next_local_midnight(instant: datetime, tz: str, expected: datetime) -> None:
    assert next_local_midnight(instant, tz) == expected
    assert local_date(expected, tz) == local_date(instant, tz) + timedelta(days=1)


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        (utc(2024, 3, 1, 19), utc(2024, 3, 2, 0)),  # 03:00 -> 08:00
        (utc(2024, 3, 1, 23, 59), utc(2024, 3, 2, 0)),  # 07:59 -> 08:00
        (utc(2024, 3, 2, 0), utc(2024, 3, 2, 0)),  # 08:00 opens
        (utc(2024, 3, 2, 12, 59), utc(2024, 3, 2, 12, 59)),  # 20:59 inside
        (utc(2024, 3, 2, 13), utc(2024, 3, 3, 0)),  # 21:00 closed: next morning
        (utc(2024, 3, 2, 15, 30), utc(2024, 3, 3, 0)),  # 23:30
    ],
    ids=["03:00", "07:59", "08:00", "20:59", "21:00", "23:30"],
)
def test_contact_window(instant: datetime, expected: datetime) -> None:
    moved = into_contact_window(instant, SH, OPENS, CLOSES)
    assert moved == expected
    assert in_contact_window(instant, SH, OPENS, CLOSES) is (moved == instant)
    assert in_contact_window(moved, SH, OPENS, CLOSES)


@pytest.mark.parametrize(
    ("anchor", "months", "day_of_month", "expected"),
    [
        (date(2024, 1, 31), 1, None, date(2024, 2, 29)),
        (date(2023, 1, 31), 1, None, date(2023, 2, 28)),
        (date(2024, 2, 29), 1, 31, date(2024, 3, 31)),
        (date(2024, 2, 29), 12, None, date(2025, 2, 28)),
        (date(2024, 12, 15), 1, None, date(2025, 1, 15)),
        (date(2024, 1, 15), -1, None, date(2023, 12, 15)),
    ],
    ids=["jan31-leap", "jan31-common", "keeps-day-31", "feb29-next-year", "year-end", "backwards"],
)
def test_add_months(anchor: date, months: int, day_of_month: int | None, expected: date) -> None:
    assert add_months(anchor, months, day_of_month) == expected


@pytest.mark.parametrize("text", ["8", "24:00", "08:60", "8am", "08:00:01", ""], ids=str)
def test_parse_hhmm_refuses(text: str) -> None:
    with pytest.raises(CalendarError, match=r"^window\.opens: .* is not a time like 08:00"):
        parse_hhmm(text, "window.opens")
    assert parse_hhmm("8:05", "x") == time(8, 5)


@pytest.mark.parametrize("name", ["Nowhere/City", "", "../../etc/passwd"], ids=["unknown", "empty", "path"])
def test_zone_refuses(name: str) -> None:
    with pytest.raises(CalendarError, match=r"^tz: unknown IANA time zone"):
        zone(name, "tz")
