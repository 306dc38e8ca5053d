"""The event recorder: a reconcile never waits for an Event, and a slow API costs events only."""

from __future__ import annotations

import asyncio

from collectjob_operator import metrics
from collectjob_operator.decisions import EventType, JobEvent
from collectjob_operator.events import Event, EventRecorder
from collectjob_operator.job import JobRef

REF = JobRef("team-a", "orders")


def dropped() -> float:
    return metrics.EVENTS_DROPPED._value.get()


def record(recorder: EventRecorder, reason: str) -> None:
    what = JobEvent(EventType.NORMAL, reason, f"{reason} happened")
    recorder.record(Event(REF, "uid-1", what, {"team": "a"}))


def test_recording_returns_before_the_event_is_sent_and_a_sender_posts_it():
    async def scenario() -> list[Event]:
        release, sent = asyncio.Event(), []

        async def send(event: Event) -> None:
            await release.wait()  # an API server that has not answered yet
            sent.append(event)

        recorder = EventRecorder(send, senders=1)
        recorder.start()
        record(recorder, "Suspending")
        record(recorder, "Suspended")
        assert sent == []  # record() returned with the API call still pending
        release.set()
        async with asyncio.timeout(5):
            while len(sent) < 2:
                await asyncio.sleep(0.01)
        await recorder.stop()
        return sent

    sent = asyncio.run(scenario())
    assert [e.what.reason for e in sent] == ["Suspending", "Suspended"]
    assert sent[0].labels == {"team": "a"} and sent[0].time.endswith("Z")


def test_a_full_queue_drops_and_counts_events_instead_of_growing():
    async def scenario() -> list[str]:
        sent: list[str] = []

        async def send(event: Event) -> None:
            sent.append(event.what.reason)

        recorder = EventRecorder(send, limit=2)  # not started: nothing drains it
        for reason in ("A", "B", "C", "D"):
            record(recorder, reason)
        await recorder.flush()
        return sent

    before = dropped()
    assert asyncio.run(scenario()) == ["A", "B"]
    assert dropped() - before == 2


def test_a_refused_event_is_counted_and_the_next_one_is_still_sent():
    async def scenario() -> list[str]:
        sent: list[str] = []

        async def send(event: Event) -> None:
            if event.what.reason == "Bad":
                raise RuntimeError("403 Forbidden")
            sent.append(event.what.reason)

        recorder = EventRecorder(send)
        record(recorder, "Bad")
        record(recorder, "Good")
        await recorder.flush()
        return sent

    before = dropped()
    assert asyncio.run(scenario()) == ["Good"]
    assert dropped() - before == 1
