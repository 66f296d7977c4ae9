"""Times: every importer ends with naive datetimes (local where the export is local, else UTC)."""
from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_APPLE_EPOCH = 978307200  # 2001-01-01 in Unix seconds: iMessage counts from there
_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M",
                 "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M",
                 "%b %d, %Y %I:%M:%S %p", "%b %d, %Y %I:%M %p", "%d-%b-%y %I:%M %p", "%d %b %Y %H:%M")


def parse_time_text(value) -> datetime | None:
    """A time written as Unix or Apple epoch numbers, ISO 8601, or a few common layouts; None if not."""
    text = " ".join(str(value or "").replace("\u202f", " ").split())
    if re.fullmatch(r"-?\d+(?:\.\d+)?", text):
        return from_epoch(float(text))
    try:
        return naive_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        pass
    for layout in _TIME_FORMATS:
        try:
            return datetime.strptime(text, layout)
        except ValueError:
            continue
    return None


def from_epoch(number: float) -> datetime:
    if number >= 1e17:  # nanoseconds: Apple's (since 2001) below 1e18, Unix ones above
        seconds = number / 1e9 + (_APPLE_EPOCH if number < 1e18 else 0)
    elif number >= 1e11:  # milliseconds
        seconds = number / 1000
    else:
        seconds = number
    return datetime(1970, 1, 1) + timedelta(seconds=seconds)


def naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
