"""Retry-After parsing and the per-machine API budget (octoboot.ratelimit)."""

import contextlib
import threading
import time
from datetime import UTC, datetime

from octoboot.ratelimit import ApiGate, api_budget, current_budget, retry_after_seconds

NOW = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)


def test_retry_after_in_seconds():
    assert retry_after_seconds("120", NOW) == 120.0
    assert retry_after_seconds(" 0 ", NOW) == 0.0


def test_retry_after_as_an_http_date_counts_from_now():
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:30 GMT", NOW) == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2026 07:27:00 GMT", NOW) == 0.0  # past: go now


def test_retry_after_that_is_neither_is_none():
    for value in (None, "", "soon", "-5", "1.5", "²", "21 Oct 2026 07:28:30"):
        assert retry_after_seconds(value, NOW) is None, value


def test_a_budget_belongs_to_its_thread_and_block():
    assert current_budget() is None
    seen = []
    with api_budget(time.monotonic() + 10) as budget:
        assert current_budget() is budget
        other = threading.Thread(target=lambda: seen.append(current_budget()))
        other.start()
        other.join()
    assert seen == [None]
    assert current_budget() is None


@contextlib.contextmanager
def gate_held(gate):
    """The gate's one ordinary turn taken by another thread until the block ends."""
    inside, release = threading.Event(), threading.Event()

    def hold():
        with gate.turn():
            inside.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    inside.wait(5)
    try:
        yield release
    finally:
        release.set()
        holder.join()


def test_waiting_for_the_gate_counts_as_waiting_for_the_api():
    gate = ApiGate(limit=1)
    with gate_held(gate) as release:
        threading.Timer(0.1, release.set).start()
        with api_budget(time.monotonic() + 10) as budget, gate.turn():
            pass
    assert budget.waited >= 0.08


def test_an_urgent_call_does_not_queue_behind_the_others():
    # The health coordinator's poll, that every machine of a task waits on, gets its turn
    # while the ordinary turns are all taken; a second ordinary call waits.
    gate, ordinary_in = ApiGate(limit=1), threading.Event()

    def ordinary():
        with api_budget(time.monotonic() + 10), gate.turn():
            ordinary_in.set()

    with gate_held(gate):
        with api_budget(time.monotonic() + 10, urgent=True) as urgent, gate.turn():
            pass
        assert urgent.waited == 0.0
        waiter = threading.Thread(target=ordinary)
        waiter.start()
        assert not ordinary_in.wait(0.2)  # still held by the first ordinary call
    waiter.join(5)
    assert ordinary_in.is_set()
