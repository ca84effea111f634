"""The stand-ins' limits (octoboot.sandbox.standin_settings): the real products' defaults,
and one line each for `inv sandbox.show`."""

import pytest

from octoboot.errors import SandboxError
from octoboot.sandbox.standin_settings import StandInSettings


def test_the_defaults_are_the_real_products():
    real = StandInSettings()
    # Octopus Server's default task cap, Health tasks of seconds, the 2026.3 rate limit on
    # by default, and a .NET start-up for every Tentacle command (docs/design.md).
    assert real.task_cap == 5
    assert real.health_task_seconds(1) == 3.0
    assert real.health_task_seconds(51) == pytest.approx(4.0)
    assert (real.rate_limit, real.rate_burst) == (200, 200)  # a minute's worth at once
    assert real.tentacle_startup_seconds == 0.5


def test_show_names_every_limit_with_its_value():
    lines = StandInSettings(
        task_cap=7, health_seconds=2.5, rate_limit=120, rate_burst=30, tentacle_startup_seconds=1.5
    ).describe()
    assert lines == [
        "task cap 7 (more tasks wait Queued)",
        "Health task 2.5 s + 0.02 s per machine beyond the first",
        "API rate limit 120 requests/min per API key, burst 30 (429 + Retry-After beyond)",
        "Tentacle command start-up 1.5 s",
    ]
    assert "API rate limit off" in StandInSettings(rate_limit=0).describe()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"task_cap": 0}, "the task cap must be at least 1, not 0"),
        ({"health_seconds": -1}, "health seconds must not be negative"),
        ({"tentacle_startup_seconds": -0.5}, "tentacle startup seconds must not be negative"),
        ({"rate_limit": 60, "rate_burst": 0}, "a rate limit needs a burst of at least 1 request"),
    ],
)
def test_limits_out_of_range_are_refused_in_one_line(values, message):
    with pytest.raises(SandboxError, match=f"^{message}$"):
        StandInSettings(**values)


def test_a_sandbox_saved_before_a_limit_existed_takes_its_default():
    saved = {"task_cap": 3, "health_seconds": 1.0, "no_longer_known": True}
    assert StandInSettings.from_json(saved) == StandInSettings(task_cap=3, health_seconds=1.0)
    assert StandInSettings.from_json(StandInSettings(rate_limit=0).to_json()) == StandInSettings(
        rate_limit=0
    )
