"""The phase history of a job, drawn from its events: who sees it gets the story."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from collectjob_api.client import Event, Job

REASON_PHASE = {
    "Started": "Running",
    "Resumed": "Running",
    "Suspending": "Suspending",
    "Suspended": "Suspended",
    "Stopping": "Stopping",
    "Stopped": "Stopped",
    "Terminated": "Terminated",
    "Completed": "Succeeded",
    "Failed": "Failed",
}
WIDTH = 1000.0
"""The SVG's width in user units; segments are placed proportionally to their duration."""


@dataclass(frozen=True)
class Segment:
    phase: str
    start: datetime
    end: datetime
    x: float
    width: float

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def timeline(job: Job, events: list[Event], now: datetime) -> list[Segment]:
    """One segment per phase the job was in, from its creation to now (or completion)."""
    created = job.created
    if created is None:
        return []
    points = [(created, "Pending")]
    for event in sorted(events, key=lambda e: (e.time or created, e.sequence)):
        phase = REASON_PHASE.get(event.reason)
        if phase and event.time and phase != points[-1][1]:
            points.append((max(event.time, points[-1][0]), phase))
    end = job.completion_time if job.final and job.completion_time else now
    end = max(end, points[-1][0])
    total = (end - created).total_seconds() or 1.0
    segments = []
    for (start, phase), (stop, _) in zip(points, [*points[1:], (end, "")], strict=True):
        x = (start - created).total_seconds() / total * WIDTH
        width = (stop - start).total_seconds() / total * WIDTH
        segments.append(Segment(phase, start, stop, round(x, 1), round(max(width, 2.0), 1)))
    return segments
