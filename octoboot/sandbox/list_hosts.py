"""The sandbox's hosts as an inventory source prints them: a JSON list of machines.

    python octoboot/sandbox/list_hosts.py SANDBOX_DIR
    [{"name": "sbx01", "address": "10.77.3.11"}, ...]

The example of `[source] command` that `inv sandbox.up --inventory-command` writes into
machines/sandbox.toml: what a script asking a cloud API for its instances would print (their
names and addresses), read here from the sandbox's state.json. Standard library only, run as
a script, so it works from the inventory's folder without octoboot being importable there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: list_hosts.py SANDBOX_DIR", file=sys.stderr)
        return 2
    state = Path(argv[0]) / "state.json"
    try:
        hosts = json.loads(state.read_text())["hosts"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"no sandbox state in {state}: {exc} (is the sandbox up?)", file=sys.stderr)
        return 1
    print(json.dumps([{"name": h["name"], "address": h["address"]} for h in hosts]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
