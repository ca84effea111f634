"""parallel-ssh's ParallelSSHClient on the sandbox hosts, for benchmarks/fanout.py's
comparison. parallel-ssh is not one of octoboot's dependencies: run this with the Python of
the benchmarks' own venv (benchmarks/requirements.txt):

    .venv-bench/bin/python benchmarks/fanout_pssh.py SANDBOX_DIR COMMAND

It reads the hosts' addresses and the client key from the sandbox folder (.sandbox).
"""

import json
import sys
from pathlib import Path

from pssh.clients import ParallelSSHClient


def main() -> None:
    root, command = Path(sys.argv[1]), sys.argv[2]
    hosts = [h["address"] for h in json.loads((root / "state.json").read_text())["hosts"]]
    client = ParallelSSHClient(hosts, user="root", pkey=str(root / "client_key"),
                               pool_size=len(hosts))  # fmt: skip
    output = client.run_command(command)
    client.join(output)
    for host_output in output:  # read first: a host's exit code may be None until then
        for line in host_output.stdout or ():
            print(f"{host_output.host}: {line}")
    failed = [o for o in output if o.exit_code != 0]
    for host_output in failed:
        print(f"{host_output.host} failed: exit {host_output.exit_code} {host_output.exception!r}")
    print(f"parallel-ssh: {len(hosts)} hosts, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
