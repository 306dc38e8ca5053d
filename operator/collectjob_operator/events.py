"""Events off the reconcile path, as client-go's event recorder sends them.

An Event tells people what happened to a job; nothing reads one back to decide. So a
reconcile hands its events to the recorder and goes on: a few sender tasks post them through
the reconciler's API threads. Under a mass suspend that takes one API round trip out of
every transition, and the round trips are what bound the operator there, not its CPU.

The queue is bounded, as client-go's broadcaster drops past 1,000 queued events: a slow API
server costs events (each drop counted in `collectjob_events_dropped_total`), never memory,
and never a reconcile's time. An event keeps the time it was recorded, not sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collectjob_api.rfc3339 import now_text
from collectjob_operator import metrics
from collectjob_operator.decisions import JobEvent
from collectjob_operator.job import JobRef

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000
SENDERS = 4


@dataclass(frozen=True)
class Event:
    """What `decide` said happened (`what`), as a core/v1 Event about the CollectJob `ref`
    (`uid`) that `kubectl describe` shows. `labels` are the job's provenance labels, so
    `kubectl get events -l collect.dev/request=R` finds what one request's jobs went through."""

    ref: JobRef
    uid: str
    what: JobEvent
    labels: Mapping[str, str] = field(default_factory=dict)
    time: str = field(default_factory=now_text)
    """When it happened (RFC 3339): when it was recorded, not sent."""


Send = Callable[[Event], Awaitable[Any]]


class EventRecorder:
    def __init__(self, send: Send, limit: int = QUEUE_LIMIT, senders: int = SENDERS) -> None:
        self._send = send
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=limit)
        self._senders = senders
        self._tasks: list[asyncio.Task[None]] = []
        self._dropping = False
        """Events are being dropped: warned once, until the queue takes one again."""

    def start(self) -> None:
        """Start the senders on the running loop."""
        self._tasks = [
            asyncio.create_task(self._sender(), name=f"event-sender-{i}")
            for i in range(self._senders)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def record(self, event: Event) -> None:
        """Queue `event` (never blocks; dropped when the queue is full)."""
        try:
            self._queue.put_nowait(event)
            self._dropping = False
        except asyncio.QueueFull:
            metrics.EVENTS_DROPPED.inc()
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "events dropped from CollectJob %s on: %d are waiting for the API server",
                    event.ref,
                    self._queue.maxsize,
                )

    async def flush(self) -> None:
        """Send what is queued now, in this task (tests: no sender needs to run)."""
        while not self._queue.empty():
            await self._deliver(self._queue.get_nowait())

    async def _sender(self) -> None:
        while True:
            await self._deliver(await self._queue.get())

    async def _deliver(self, event: Event) -> None:
        try:
            await self._send(event)
        except Exception as e:  # an event is not worth a retry; the next pass goes on
            metrics.EVENTS_DROPPED.inc()
            log.warning("CollectJob %s: event %s not posted: %s", event.ref, event.what.reason, e)
