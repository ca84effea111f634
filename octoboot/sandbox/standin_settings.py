"""How close to a real Octopus Server and Tentacle the sandbox's stand-ins behave.

The defaults are the real products' (sources in docs/design.md): a real server runs at
most 5 tasks at once, a Health task takes seconds, the API is rate-limited per user from
2026.3 on, and every Tentacle command starts a .NET program. Tests that measure something
else lower them; `inv sandbox.up` and the benchmarks keep them.

The sandbox's own defaults live here too, without its machinery (control imports tarfile,
tabulate and the hosts'), so that `inv` reads them for its help at every start for free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from octoboot.errors import SandboxError

# `inv sandbox.up`'s: how many hosts, and how long a Tentacle install takes on each.
DEFAULT_HOSTS = 5
DEFAULT_INSTALL_SECONDS = 3.0


@dataclass(frozen=True)
class StandInSettings:
    # The ones the Octopus stand-in takes (on its command line); the rest are the hosts'.
    OCTOPUS_FIELDS: ClassVar = (
        "task_cap", "health_seconds", "health_seconds_per_machine", "rate_limit", "rate_burst",
    )  # fmt: skip

    # Tasks the Octopus stand-in runs at once; more wait `Queued` (the server's task cap).
    task_cap: int = 5
    # Seconds one Health task takes, and how much longer per machine beyond the first.
    health_seconds: float = 3.0
    health_seconds_per_machine: float = 0.02
    # API requests per minute per API key (a token bucket), and its burst; 0: no limit.
    rate_limit: int = 200
    rate_burst: int = 200
    # Seconds every Tentacle stand-in command sleeps before it starts (a .NET start-up).
    tentacle_startup_seconds: float = 0.5

    def __post_init__(self) -> None:
        if self.task_cap < 1:
            raise SandboxError(f"the task cap must be at least 1, not {self.task_cap}")
        for field in fields(self):
            value = getattr(self, field.name)
            if value < 0:
                raise SandboxError(f"{field.name.replace('_', ' ')} must not be negative")
        if self.rate_limit and self.rate_burst < 1:
            raise SandboxError("a rate limit needs a burst of at least 1 request")

    def health_task_seconds(self, machines: int) -> float:
        """How long a Health task covering this many machines takes at least."""
        return self.health_seconds + self.health_seconds_per_machine * max(0, machines - 1)

    def describe(self) -> list[str]:
        """One line per limit, for `inv sandbox.show`."""
        rate = (
            f"{self.rate_limit} requests/min per API key, burst {self.rate_burst} "
            "(429 + Retry-After beyond)"
            if self.rate_limit
            else "off"
        )
        return [
            f"task cap {self.task_cap} (more tasks wait Queued)",
            f"Health task {self.health_seconds:g} s "
            f"+ {self.health_seconds_per_machine:g} s per machine beyond the first",
            f"API rate limit {rate}",
            f"Tentacle command start-up {self.tentacle_startup_seconds:g} s",
        ]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> StandInSettings:
        """Settings a sandbox saved (an older sandbox's missing keys take the defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})
