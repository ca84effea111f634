"""The exception tree. Every error octoboot expects derives from OctobootError.

An OctobootError's message is one line meant for the user: what is wrong and what to do.
Anything else that escapes is a bug and keeps its traceback.
"""


class OctobootError(Exception):
    """Root of every error octoboot raises on purpose."""

    exit_code = 1


class ConfigError(OctobootError):
    """Bad settings, inventory or flags: nothing was touched."""

    exit_code = 2


class SandboxError(OctobootError):
    """The local sandbox fleet could not be started, changed or stopped."""
