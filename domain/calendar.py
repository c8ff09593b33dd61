"""Local time: the borrower's calendar, month arithmetic, and the contact window."""

from __future__ import annotations

import calendar as _cal
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class CalendarError(ValueError):
    """A bad time zone or date; the message names the field."""


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise CalendarError(f"{field}: unknown IANA time zone {name!r}") from exc


def local_date(instant: datetime, tz: str) -> date:
    return instant.astimezone(zone(tz)).date()


# Pure and asked thousands of times per planning pass (every reminder and step of every
# installment, into the window): remembered (bench/profile_year.py: the planner's largest
# cost). Bounded, so a long-lived worker's cache stays small.
@lru_cache(maxsize=4096)
def at_local(day: date, clock: time, tz: str) -> datetime:
    """The UTC instant of a local wall-clock time. A time that does not exist (spring
    forward) moves forward with the gap; an ambiguous one (fall back) takes the first."""
    local = datetime.combine(day, clock, tzinfo=zone(tz))
    # Round-trip through UTC normalises a non-existent wall time.
    return local.astimezone(UTC)


def start_of_day(day: date, tz: str) -> datetime:
    return at_local(day, time(0, 0), tz)


def next_local_midnight(instant: datetime, tz: str) -> datetime:
    return start_of_day(local_date(instant, tz) + timedelta(days=1), tz)


def add_months(anchor: date, months: int, day_of_month: int | None = None) -> date:
    """`anchor` moved by whole months, keeping `day_of_month` (default the anchor's day)
    where the month has it and the month's last day otherwise: Jan 31 -> Feb 28/29 -> Mar 31."""
    day = day_of_month or anchor.day
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    last = _cal.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day, last))


def parse_hhmm(text: str, field: str) -> time:
    """'08:00' as policy files write it, or '08:00:00' as a serialized policy carried
    across continue-as-new comes back."""
    try:
        hours, minutes, *seconds = text.split(":")
        if seconds not in ([], ["00"]):
            raise ValueError("seconds")
        return time(int(hours), int(minutes))
    except (ValueError, TypeError) as exc:
        raise CalendarError(f"{field}: {text!r} is not a time like 08:00") from exc


def into_contact_window(instant: datetime, tz: str, opens: time, closes: time) -> datetime:
    """The first instant at or after `instant` inside [opens, closes) local time."""
    local = instant.astimezone(zone(tz))
    today = local.date()
    open_today = at_local(today, opens, tz)
    close_today = at_local(today, closes, tz)
    if instant < open_today:
        return open_today
    if instant < close_today:
        return instant
    return at_local(today + timedelta(days=1), opens, tz)


def in_contact_window(instant: datetime, tz: str, opens: time, closes: time) -> bool:
    return into_contact_window(instant, tz, opens, closes) == instant
