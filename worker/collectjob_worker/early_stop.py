"""Stop signals that arrive while the worker is still starting: exit at once.

In a container the worker is PID 1, and the kernel does not deliver a signal to a PID
namespace's init unless it has a handler for it: with the default action, SIGTERM is dropped.
run_supervised installs the real handler only once the worker has imported its libraries,
read its checkpoint and opened its source and sink. A suspension that landed in that window
was first lost (the worker processed its whole job until the kubelet killed it), then
latched and honoured only once the start-up was over: with 21 workers starting at once on
two cores that took longer than the 30 s grace period, and a worker suspended right after
its start was SIGKILLed without a line in its log (tests/bench/test_plugin_bulk.py).

The entry point (__main__) therefore installs this handler before anything heavy is
imported, and until the worker takes over (`take_over`, called by run_supervised and
idle_until_stopped once their own handlers are in place) a stop ends the process at once,
with exit code 0 (contract.EXIT_OK). That is safe because a starting worker has written
nothing: it claims the sink at its first part and takes the checkpoint over inside the
pipeline, and every write it makes is atomic anyway (the kill -9 tests). After the take-over
the handler only records a signal, for the caller to honour.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_EXIT_OK = 0
"""contract.EXIT_OK, not imported: the contract pulls in pydantic, and this module is
imported before anything heavy."""
_received: list[int] = []
_starting = True


def _on_stop(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if _starting:
        name = signal.Signals(signum).name
        os.write(2, f"{name} while starting: exiting before any work, nothing written\n".encode())
        os._exit(_EXIT_OK)


def install() -> None:
    """From now on SIGTERM and SIGINT end a starting worker at once."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _on_stop)


def take_over() -> int | None:
    """The caller handles stops from now on (its handlers are installed): this handler, if
    restored later, only records. Returns a stop recorded meanwhile, or None."""
    global _starting
    _starting = False
    return _received[0] if _received else None
