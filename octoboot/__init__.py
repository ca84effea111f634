"""octoboot: turn a list of machines into ready Octopus Deploy deployment targets."""
