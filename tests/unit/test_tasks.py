"""tasks.py: every fleet task in the Invoke collection takes the shared flags, with the one
help text of FLEET_HELP, the same default and the same short flag."""

from __future__ import annotations

import copy

import tasks

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
