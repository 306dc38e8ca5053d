"""Pure formatting shared by the plugin and the console: progress bars, rates, ETAs, ages."""

from __future__ import annotations

from datetime import UTC, datetime

from collectjob_api.client import Job

BAR_WIDTH = 20


def bar(percent: float, width: int = BAR_WIDTH) -> str:
    """`██████░░░░ 60.0%`: whole cells only, so 99.9% never looks finished."""
    clamped = max(0.0, min(100.0, percent))
    filled = int(clamped * width / 100)
    return "█" * filled + "░" * (width - filled) + f" {clamped:5.1f}%"


def rate(job: Job) -> str:
    if job.rows_per_second is None:
        return "-"
    value = job.rows_per_second
    for unit in ("", "k", "M"):
        if value < 1000:
            return f"{value:.0f}{unit} rows/s" if unit == "" else f"{value:.1f}{unit} rows/s"
        value /= 1000
    return f"{value:.1f}G rows/s"


def duration(seconds: float) -> str:
    """`45s`, `3m05s`, `2h07m`, `3d4h`: at most two units, like kubectl's ages."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def eta(job: Job, now: datetime | None = None) -> str:
    if job.eta is None or job.phase != "Running":
        return "-"
    return duration((job.eta - (now or datetime.now(UTC))).total_seconds())


def age(job: Job, now: datetime | None = None) -> str:
    if job.created is None:
        return "-"
    return duration(((now or datetime.now(UTC)) - job.created).total_seconds())


def throttle(job: Job) -> str:
    value = float(job.throttle_bytes_per_second)
    if not value:
        return "-"
    for unit in ("B/s", "KiB/s", "MiB/s"):
        if value < 1024:
            return f"{value:g}{unit}"
        value = round(value / 1024, 1)
    return f"{value:g}GiB/s"


def table(rows: list[list[str]]) -> str:
    """Columns left-aligned and separated by three spaces, as kubectl prints them."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
