"""A stand-in for the Linux Tentacle command line (`/opt/octopus/tentacle/Tentacle`).

The real Tentacle cannot be downloaded here, so the sandbox installs this instead, packed by
`octoboot.sandbox.archive` like the real tar.gz. It keeps real configuration on the host's disk,
follows the real option grammar, messages and exit codes, registers over the Octopus REST API,
and its service presents the instance's certificate over TLS.
"""
