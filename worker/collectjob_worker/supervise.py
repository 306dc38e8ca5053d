"""Running the pipeline under SIGTERM/SIGINT: stop promptly, keep the in-flight chunk if it
can still finish in time, abandon it otherwise.

The pipeline runs in a thread so that the main thread is always free to react: Python runs
signal handlers only in the main thread, and not while it is inside a long pyarrow call.
On the first signal the stop flag is set and the pipeline commits the chunk it is on, then
returns. If that chunk is not expected to finish within the budget, or the budget runs out,
the chunk is abandoned: nothing of it was committed, and it will be redone identically. A
second signal abandons at once (Ctrl-C twice). A stop before the take-over ended the
process at once (early_stop.py); one recorded during the take-over counts as the first.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

from collectjob_worker import early_stop
from collectjob_worker.pipeline import TARGET_CHUNK_SECONDS, Outcome, Pipeline

_POLL_SECONDS = 0.05


def expected_remaining(pipeline: Pipeline, now: float) -> float:
    """Seconds the in-flight chunk probably still needs, judged by the previous one."""
    started = pipeline.chunk_started
    if started is None:
        return 0.0
    typical = pipeline.last_chunk_seconds or TARGET_CHUNK_SECONDS
    return max(0.0, 1.5 * typical - (now - started))


def run_supervised(pipeline: Pipeline, budget: float) -> Outcome | None:
    """Run to completion or to a stop; None means the in-flight chunk was abandoned and the
    caller must exit at once (the pipeline thread may still be inside it)."""
    result: list[Outcome] = []
    failure: list[BaseException] = []
    abandon = threading.Event()
    deadline: list[float] = []

    def work() -> None:
        try:
            result.append(pipeline.run())
        except BaseException as e:
            failure.append(e)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if pipeline.stop.is_set():
            abandon.set()
            return
        pipeline.stop.set()
        now = time.monotonic()
        deadline.append(now + budget)
        if expected_remaining(pipeline, now) > budget:
            abandon.set()

    thread = threading.Thread(target=work, name="pipeline", daemon=True)
    previous = {sig: signal.signal(sig, on_signal) for sig in early_stop.STOP_SIGNALS}
    if (early := early_stop.take_over()) is not None:
        on_signal(early, None)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(_POLL_SECONDS)
            if abandon.is_set() or (deadline and time.monotonic() > deadline[0]):
                return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]
    return result[0]
