"""Stop signals that arrive while the worker is still starting.

In a container the worker is PID 1, and the kernel does not deliver a signal to a PID
namespace's init unless it has a handler for it: with the default action, SIGTERM is dropped.
run_supervised installs the real handler only once the worker has imported its libraries,
read its checkpoint and opened its source and sink (a second or more), so a suspension that
lands in that window was lost, and the worker went on to process the whole job after it was
told to stop, until the kubelet killed it at the end of the grace period.

The entry point (__main__) therefore installs this latch before anything heavy is imported.
It only records the signal; run_supervised and idle_until_stopped ask `received()` when they
take over, and a worker stopped while starting stops before its first chunk.
"""

from __future__ import annotations

import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[int] = []


def _latch(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)


def install() -> None:
    """Record SIGTERM and SIGINT from now on (until a real handler replaces the latch)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _latch)


def received() -> int | None:
    """The first stop signal the latch recorded, or None."""
    return _received[0] if _received else None
