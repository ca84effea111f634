"""A controlled failure: the way a Tentacle command says "your input, not my bug"."""


class ControlledFailure(Exception):
    """Bad input or a refused request: the message alone goes to stderr and the exit code is 1.

    Anything else that escapes a command is "unexpected": a row of `=` and the exception, exit 100.
    """
