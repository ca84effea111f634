"""tasks.py: every fleet task in the Invoke collection takes the shared flags, with the one
help text of FLEET_HELP, the same default and the same short flag; a wrong number on a flag
is one line from the real command line."""

from __future__ import annotations

import copy
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tasks
from octoboot.flags import number
from octoboot.sandbox.control import Sandbox
from octoboot.sandbox.standin_settings import DEFAULT_HOSTS, DEFAULT_INSTALL_SECONDS

# status only reads and exec is the change itself: neither has a dry run.
WITHOUT_DRY_RUN = {"status", "exec"}
# status gathers its table concurrently unless told --no-parallel.
PARALLEL_BY_DEFAULT = {"status"}


def arguments(task) -> dict:
    # get_arguments hands each help text over once (Invoke pops it): work on a copy.
    clone = copy.copy(task)
    clone.help = dict(task.help)
    return {arg.attr_name or arg.name: arg for arg in clone.get_arguments()}


def fleet_tasks() -> dict:
    return {
        name: tasks.ns[name]
        for name in tasks.ns.task_names
        if isinstance(tasks.ns[name], tasks.FleetTask)
    }


def test_the_fleet_tasks_are_the_ones_that_run_pipelines():
    assert set(fleet_tasks()) == {"bootstrap", "install", "register", "deregister", "status",
                                  "exec", "prune"}  # fmt: skip


def test_every_fleet_task_has_the_shared_flags_with_the_same_help_default_and_short_flag():
    reference = arguments(tasks.ns["bootstrap"])
    for name, task in fleet_tasks().items():
        args = arguments(task)
        shared = [f for f in tasks.FLEET_HELP if not (f == "dry_run" and name in WITHOUT_DRY_RUN)]
        missing = [flag for flag in shared if flag not in args]
        assert not missing, f"{name} lacks {missing}"
        for flag in shared:
            arg, same = args[flag], reference[flag]
            assert arg.help == tasks.FLEET_HELP[flag], (name, flag)
            assert arg.names == same.names, (name, flag)  # -e is --env everywhere
            expected = True if flag == "parallel" and name in PARALLEL_BY_DEFAULT else same.default
            assert arg.default == expected, (name, flag)
        assert args["host"].kind is list and args["limit"].kind is list
        if name in WITHOUT_DRY_RUN:
            assert "dry_run" not in args, name


def test_every_flag_of_every_task_has_help():
    for name in tasks.ns.task_names:
        for flag, arg in arguments(tasks.ns[name]).items():
            assert arg.help, f"{name} --{flag} has no help"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["sandbox.fault", "sbx01", "--install-seconds", "abc"],
         "--install-seconds takes a number, not 'abc'"),
        (["sandbox.fault", "sbx01", "--install-seconds", "-1"],
         "--install-seconds must be at least 0, not -1"),
        (["sandbox.up", "--hosts", "abc"], "--hosts takes a number, not 'abc'"),
        (["sandbox.up", "--hosts", "2.5"], "--hosts takes a number, not '2.5'"),
        (["sandbox.up", "--install-seconds", "inf"], "--install-seconds takes a finite number"),
        (["sandbox.up", "--ssh-only", "x"], "--ssh-only takes a number, not 'x'"),
        (["sandbox.up", "--task-cap", "x"], "--task-cap takes a number, not 'x'"),
        (["sandbox.up", "--health-seconds", "nan"], "--health-seconds takes a finite number"),
    ],
)  # fmt: skip
def test_a_wrong_number_is_one_line_and_exit_2_before_the_sandbox_is_touched(
    tmp_path, flags, message
):
    root = tmp_path / "sandbox"
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(Path(tasks.__file__).parent),
         *flags],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
        env={**os.environ, "OCTOBOOT_SANDBOX_DIR": str(root)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"octoboot: {message}"), done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert not root.exists()


def test_sandbox_up_defaults_are_the_sandbox_s_own():
    args = arguments(tasks.ns["sandbox.up"])
    up = inspect.signature(Sandbox.up).parameters
    for flag, kind, default in [("hosts", int, DEFAULT_HOSTS),
                                ("install_seconds", float, DEFAULT_INSTALL_SECONDS)]:  # fmt: skip
        assert number(args[flag].default, flag, kind) == default == up[flag].default
        assert args[flag].help.endswith(f"(default {default:g})")
