"""The local sandbox: a fleet of sshd hosts, the Octopus API stand-in, the Tentacle stand-in."""
