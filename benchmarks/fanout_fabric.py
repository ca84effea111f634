"""Fabric's own ThreadingGroup on the sandbox hosts, for benchmarks/fanout.py's comparison:
a thread per host, the sandbox's ssh_config, fresh connections.

    .venv/bin/python benchmarks/fanout_fabric.py SANDBOX_DIR COMMAND
"""

import json
import sys
from pathlib import Path

import paramiko
from fabric import Config, ThreadingGroup


def main() -> None:
    root, command = Path(sys.argv[1]), sys.argv[2]
    config = Config(ssh_config=paramiko.SSHConfig.from_path(str(root / "ssh_config")))
    config.run.in_stream = False
    hosts = [h["name"] for h in json.loads((root / "state.json").read_text())["hosts"]]
    group = ThreadingGroup(*hosts, config=config)
    try:
        results = group.run(command, hide=True, warn=True)
    finally:
        group.close()
    failed = [c.host for c, r in results.items() if isinstance(r, Exception) or r.exited]
    for cxn, result in sorted(results.items(), key=lambda item: item[0].host):
        if not isinstance(result, Exception):
            for line in result.stdout.splitlines():
                print(f"{cxn.host}: {line}")
    print(f"fabric: {len(hosts)} hosts, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
