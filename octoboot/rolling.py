"""Rolling runs: machines in batches (`--batch`), and a run that stops when too many fail
(`--max-fail`). The rules are Ansible's `serial` and `max_fail_percentage`:

- `--batch 3` runs 3 machines, then the next 3, ...; `--batch 30%` makes each batch 30 % of
  the selected machines, rounded down but at least one. A batch starts when the previous
  one has ended; inside a batch, `--parallel` and `--workers` work as without batches.
- `--max-fail N` (or `P%` of the batch) stops starting machines once more than that many of
  the current batch failed, were unreachable or timed out: more than, not as many as, so
  `--max-fail 0` stops at the first failure. Without `--batch` the batch is the whole run.
- With batches, a batch in which every machine failed stops the run even without
  `--max-fail` (Ansible does the same).

The machines not started then end `skipped`, with the reason, and the exit code says so.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from octoboot.errors import ConfigError
from octoboot.report import State

# The states that count against --max-fail.
FAILING = frozenset({State.FAILED, State.UNREACHABLE, State.TIMED_OUT})
_SHARE = re.compile(r"(\d+)(%?)")


@dataclass(frozen=True)
class Share:
    """A number of machines, or a percentage of some number of machines."""

    value: int
    percent: bool = False

    @classmethod
    def parse(cls, text: str | int, flag: str) -> Share:
        match = _SHARE.fullmatch(str(text).strip())
        if match is None:
            raise ConfigError(f"{flag} takes a number of machines or a percentage (N or P%), "
                              f"not {text!r}")  # fmt: skip
        value, percent = int(match[1]), bool(match[2])
        if percent and value > 100:
            raise ConfigError(f"{flag} takes a percentage of at most 100%, not {text}")
        return cls(value, percent)

    def of(self, total: int) -> int:
        """This share of `total` machines, rounded down."""
        return math.floor(self.value * total / 100) if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


def batch_sizes(total: int, batch: Share | None) -> list[int]:
    """How many machines each batch takes, in order: `batch` of the total, at least one; no
    batch (or 0, or more than the total) is one batch of all."""
    if total == 0:
        return []
    size = max(1, batch.of(total)) if batch else total
    if batch is None or batch.value == 0 or size >= total:
        return [total]
    return [size] * (total // size) + ([total % size] if total % size else [])


class Rollout:
    """Counts each batch's failures as its machines end, and says when to stop."""

    def __init__(self, max_fail: Share | None, *, batched: bool) -> None:
        self.max_fail = max_fail
        self.batched = batched
        self.stop_reason: str | None = None
        self._batch = self._size = self._ended = self._failed = 0

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def start_batch(self, number: int, size: int) -> None:
        self._batch, self._size, self._ended, self._failed = number, size, 0, 0

    def ended(self, state: State) -> None:
        """A machine of the current batch ended in `state` (skipped ones are not counted)."""
        if state == State.SKIPPED:
            return
        self._ended += 1
        self._failed += state in FAILING
        if self.stopped:
            return
        where = f"batch {self._batch} ({self._size} machines)" if self.batched else "this run"
        if self.max_fail is not None and self._failed > self.max_fail.of(self._size):
            self.stop_reason = (
                f"not started: {self._failed} machine(s) of {where} failed or were "
                f"unreachable, more than --max-fail {self.max_fail} allows"
            )
        elif self.batched and self._ended == self._size and self._failed == self._size:
            self.stop_reason = f"not started: every machine of {where} failed or was unreachable"
