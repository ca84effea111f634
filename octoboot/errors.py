"""The exception tree. Every error octoboot expects derives from OctobootError.

An OctobootError's message is one line meant for the user: what is wrong and what to do.
Anything else that escapes is a bug and keeps its traceback.

    class                           exit  what
    OctobootError                   1     the root
    ├── ConfigError                 2     bad settings, inventory or flags: nothing touched
    │   ├── IdentityStoreError      2     the identity store cannot be used (identity)
    │   ├── NotOctopus              2     the URL answers, but not as Octopus does (octopus)
    │   └── OctopusAuthError        2     the API key was refused (octopus)
    ├── OctopusError                3     Octopus answered with an error, or not at all (octopus)
    │   ├── NotOctopus              2     (above: a ConfigError and an OctopusError)
    │   ├── OctopusAuthError        2     (above: a ConfigError and an OctopusError)
    │   ├── OctopusUnavailable      3     no answer, or 5xx, past the retry budget
    │   │   └── OctopusRateLimited  3     429 for longer than the machine's deadline allows
    │   └── OctopusValidationError  3     400/409: Octopus refused the request
    ├── CertificateError            1     a PFX that cannot be opened (certificates)
    ├── DamagedIdentity             1     one machine's PFX is damaged: it fails (identity)
    ├── StateWriteError             1     a state file could not be written whole (files)
    ├── StepFailed                  -     a step failed: that machine's row, not the run (pipeline)
    └── SandboxError                1     the sandbox could not be started or changed

In brackets: the module, where it is not this one. Outside the tree on purpose, because they
never reach the user as errors: the runner's signals `fleet.DeadlineExceeded`,
`fleet.Interrupted`, `fleet.FleetInterrupted` and `pipeline.Cancelled` (each becomes a
machine's state or the run's report), and the stand-ins' own errors under `sandbox/` (they
play other products). tests/unit/test_errors.py checks this drawing against the code.
"""


class OctobootError(Exception):
    """Root of every error octoboot raises on purpose."""

    exit_code = 1


class ConfigError(OctobootError):
    """Bad settings, inventory or flags: nothing was touched."""

    exit_code = 2


class SandboxError(OctobootError):
    """The local sandbox fleet could not be started, changed or stopped."""
