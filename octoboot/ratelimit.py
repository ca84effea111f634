"""Living with an Octopus that limits its API: 429 + Retry-After, and few calls at once.

Octopus Server 2026.3 rate-limits API keys with a token bucket and answers a request beyond
it with 429 and `Retry-After`; the request was not processed, so it is safe to send again,
whatever its method (OctopusDeploy/Issues#10155, docs "Rate Limiting"). The C# client waits
for `Retry-After` and retries (Issues#10202). octoboot does the same, but bounds the waiting
by the deadline of the machine the call is for, not by a count: each machine's thread runs
under an `ApiBudget` (its deadline, and how long it has waited for the API so far, which
the report shows). Calls per Octopus are also bounded (`MAX_CONCURRENT_CALLS`), so a
hundred machines reaching `register` together queue on the controller, not on the server;
the health coordinator's calls, which every machine in a Health task waits on, have one
turn of their own beside those and never queue behind them.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

# How long to wait after a 429 that has no usable Retry-After (the C# client's default).
DEFAULT_RETRY_AFTER = 2.0
# API calls in flight at once, per Octopus.
MAX_CONCURRENT_CALLS = 8


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds ("120") or an HTTP date
    ("Wed, 21 Oct 2026 07:28:00 GMT", counted from `now`; a past date is 0). None when
    absent or not one of those (the caller then uses DEFAULT_RETRY_AFTER)."""
    text = (value or "").strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT; a date without a zone is not one
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class ApiBudget:
    """What one machine may spend waiting for the API: until its deadline (monotonic)."""

    deadline: float
    waited: float = 0.0
    # Calls that many machines wait on (the health coordinator's, one at a time): they
    # have a turn of their own rather than queueing behind a hundred registrations.
    urgent: bool = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


_budget: ContextVar[ApiBudget | None] = ContextVar("octoboot_api_budget", default=None)


@contextmanager
def api_budget(deadline: float, *, urgent: bool = False) -> Iterator[ApiBudget]:
    """API calls made in this thread, inside the block, wait at most until `deadline`;
    urgent ones do not wait for the calls of others (ApiGate)."""
    budget = ApiBudget(deadline, urgent=urgent)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def current_budget() -> ApiBudget | None:
    return _budget.get()


class ApiGate:
    """At most `limit` calls at once, and one urgent call besides (api_budget(urgent=True));
    the time a call waits for its turn counts as waiting for the API."""

    def __init__(self, limit: int = MAX_CONCURRENT_CALLS) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        self._urgent = threading.BoundedSemaphore(1)

    @contextmanager
    def turn(self) -> Iterator[None]:
        budget = _budget.get()
        slots = self._urgent if budget is not None and budget.urgent else self._slots
        if not slots.acquire(blocking=False):
            started = time.monotonic()
            slots.acquire()
            waited(time.monotonic() - started)
        try:
            yield
        finally:
            slots.release()


def waited(seconds: float) -> None:
    """Count seconds spent waiting for the API against this thread's budget, if any."""
    budget = _budget.get()
    if budget is not None:
        budget.waited += seconds
