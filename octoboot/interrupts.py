"""Stopping a run from outside: Ctrl-C (SIGINT) and SIGTERM (a cancelled CI job) alike.

Python turns SIGINT into KeyboardInterrupt. Inside `sigterm_interrupts()`, SIGTERM raises
Terminated, a KeyboardInterrupt, so every path that handles Ctrl-C handles it too: machines
in flight are stopped and their remote commands ended, the report and the last-run record are
written. Only the exit code tells them apart: 128 + the signal's number (130, 143).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived."""


def signal_of(interrupt: BaseException | None) -> signal.Signals:
    """The signal that stopped the run, from the KeyboardInterrupt it became."""
    return signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises Terminated in the main thread while this lasts. Only the first one does:
    the run is stopping already, and a second must not cut the report short."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a library caller keeps its own
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
