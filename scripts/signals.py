"""Cancellation by signal: what CI runners send, turned into one clean interrupt.

GitHub cancels a step with SIGINT, SIGTERM 7.5 s later and a kill 2.5 s after that.
Long commands that deploy things (``bench``, ``github bench-run``) must tear down on
the first signal and must not be cut short by the next ones.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from scripts.log import log


@contextlib.contextmanager
def interrupt_on_terminate(what: str = "the benchmark") -> Iterator[None]:
    """The first SIGTERM or SIGINT raises KeyboardInterrupt (the caller's ``finally``
    tears down); later ones are ignored, so they cannot cut that teardown short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if fired.is_set():
            log.warning("signal %d: already stopping, the teardown goes on", signum)
            return
        fired.set()
        log.error("signal %d: cancelling %s (tearing down)", signum, what)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
