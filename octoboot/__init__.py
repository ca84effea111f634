"""octoboot: turn a list of machines into ready Octopus Deploy deployment targets."""

__version__ = "0.1.0"
