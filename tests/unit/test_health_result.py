import pytest

from octoboot.health import HealthResult


@pytest.mark.parametrize(
    ("state", "health", "failed_itself"),
    [
        ("Success", "Healthy", False),
        ("Failed", "Unavailable", False),  # the machine's status is the task's reason
        ("Failed", "Unhealthy", False),
        ("Failed", "Healthy", True),  # e.g. Octopus restarted under the task
        ("Failed", "Unknown", True),
        ("TimedOut", "Healthy", True),
        ("Canceled", "Unknown", True),
    ],
)
def test_a_task_that_failed_on_its_own_is_told_from_an_unhealthy_machine(
    state, health, failed_itself
):
    check = HealthResult("ServerTasks-1", state, health, health == "Healthy", "", "the error")
    assert check.task_failed_itself is failed_itself
