import pytest

from octoboot.health import HealthResult


@pytest.mark.parametrize(
    ("state", "health", "own_check_ok", "failed_itself"),
    [
        ("Success", "Healthy", True, False),
        ("Failed", "Unavailable", False, False),  # the machine's status is the task's reason
        ("Failed", "Unhealthy", False, False),
        ("Failed", "Healthy", False, True),  # e.g. Octopus restarted under the task
        ("Failed", "Unknown", False, True),
        ("TimedOut", "Healthy", False, True),
        ("Canceled", "Unknown", False, True),
        # a shared task that another machine failed: this one's own check succeeded
        ("Failed", "Healthy", True, False),
    ],
)
def test_a_task_that_failed_on_its_own_is_told_from_an_unhealthy_machine(
    state, health, own_check_ok, failed_itself
):
    check = HealthResult("ServerTasks-1", state, health, own_check_ok, "", "the error")
    assert check.task_failed_itself is failed_itself
