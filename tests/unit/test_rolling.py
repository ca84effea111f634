"""--batch and --max-fail arithmetic (octoboot.rolling), after Ansible's serial and
max_fail_percentage."""

import pytest

from octoboot.errors import ConfigError
from octoboot.report import State
from octoboot.rolling import Rollout, Share, batch_sizes


def test_share_parses_counts_and_percentages():
    assert Share.parse("3", "--batch") == Share(3)
    assert Share.parse(" 30% ", "--batch") == Share(30, percent=True)
    assert str(Share(30, percent=True)) == "30%"
    for bad in ("-1", "1.5", "30 %", "x", "101%", ""):
        with pytest.raises(ConfigError, match="--batch"):
            Share.parse(bad, "--batch")


def test_batches_are_serial_sized_rounded_down_but_never_empty():
    assert batch_sizes(10, Share(3)) == [3, 3, 3, 1]
    assert batch_sizes(10, Share(30, percent=True)) == [3, 3, 3, 1]  # 3.0
    assert batch_sizes(10, Share(25, percent=True)) == [2, 2, 2, 2, 2]  # 2.5 -> 2
    assert batch_sizes(3, Share(10, percent=True)) == [1, 1, 1]  # 0.3 -> at least 1
    assert batch_sizes(10, None) == [10]
    assert batch_sizes(10, Share(0)) == [10]
    assert batch_sizes(10, Share(50)) == [10]
    assert batch_sizes(0, Share(3)) == []


def run(rollout: Rollout, sizes: list[int], states: list[State]) -> list[State | str]:
    """What happens to each machine: its state, or 'skipped' once the rollout stopped."""
    seen, queue = [], list(states)
    for number, size in enumerate(sizes, 1):
        rollout.start_batch(number, size)
        for _ in range(size):
            state = queue.pop(0)
            if rollout.stopped:
                seen.append("skipped")
                continue
            rollout.ended(state)
            seen.append(state)
    return seen


OK, BAD, DOWN = State.CHANGED, State.FAILED, State.UNREACHABLE


def test_max_fail_counts_failures_in_the_batch_and_stops_beyond_not_at_it():
    rollout = Rollout(Share(1), batched=True)
    assert run(rollout, [3, 3, 3], [BAD, OK, OK, OK, BAD, DOWN, OK, OK, OK]) == [
        BAD, OK, OK, OK, BAD, DOWN, "skipped", "skipped", "skipped",
    ]  # fmt: skip
    assert "2 machine(s) of batch 2 (3 machines)" in rollout.stop_reason
    assert "--max-fail 1" in rollout.stop_reason


def test_max_fail_percentage_is_of_the_batch_as_ansible():
    # 49% of 4 is 1.96: two failures are more, one is not (Ansible's own example).
    assert not _stops(Share(49, percent=True), batch=4, failures=1)
    assert _stops(Share(49, percent=True), batch=4, failures=2)
    assert not _stops(Share(50, percent=True), batch=4, failures=2)
    assert _stops(Share(0, percent=True), batch=4, failures=1)
    assert _stops(Share(0), batch=4, failures=1)


def _stops(max_fail: Share, batch: int, failures: int) -> bool:
    rollout = Rollout(max_fail, batched=False)
    rollout.start_batch(1, batch)
    for n in range(batch):
        rollout.ended(BAD if n < failures else OK)
    return rollout.stopped


def test_timeouts_count_skipped_do_not():
    rollout = Rollout(Share(1), batched=False)
    rollout.start_batch(1, 5)
    for state in (State.SKIPPED, State.SKIPPED, State.TIMED_OUT):
        rollout.ended(state)
    assert not rollout.stopped
    rollout.ended(State.FAILED)
    assert rollout.stopped and "this run" in rollout.stop_reason


def test_a_batch_that_failed_entirely_stops_a_batched_run_without_max_fail():
    rollout = Rollout(None, batched=True)
    assert run(rollout, [2, 2, 2], [OK, BAD, BAD, DOWN, OK, OK]) == [
        OK, BAD, BAD, DOWN, "skipped", "skipped",
    ]  # fmt: skip
    assert rollout.stop_reason == (
        "not started: every machine of batch 2 (2 machines) failed or was unreachable"
    )
    # one batch of all: there is nothing left to stop
    assert run(Rollout(None, batched=False), [2], [BAD, BAD]) == [BAD, BAD]
