"""RFC 3339 time, written one way everywhere: UTC with a `Z`, as Kubernetes writes it.

Whole seconds for API objects and the checkpoint (metav1.Time has no fraction), and
microseconds for data values when they have any, so a datetime column keeps its precision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload


@overload
def format_time(moment: datetime, *, fraction: bool = False) -> str: ...
@overload
def format_time(moment: None, *, fraction: bool = False) -> None: ...
def format_time(moment: datetime | None, *, fraction: bool = False) -> str | None:
    if moment is None:
        return None
    utc = moment.astimezone(UTC)
    if fraction:
        return utc.isoformat().replace("+00:00", "Z")
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def now_text() -> str:
    """The current time as an RFC 3339 string (whole seconds)."""
    return format_time(datetime.now(UTC))


def parse_time(value: Any) -> datetime | None:
    """Parse an RFC 3339 timestamp as Kubernetes and the worker write it; None if absent
    or unreadable. A timestamp without an offset is taken as UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
