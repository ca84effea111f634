"""parallel-ssh's ParallelSSHClient on the same sandbox hosts, for benchmarks/fanout.py's
comparison. parallel-ssh is not one of octoboot's dependencies: run this with a Python that
has it (`python -m venv /tmp/pssh && /tmp/pssh/bin/pip install parallel-ssh`):

    /tmp/pssh/bin/python benchmarks/fanout_pssh.py SANDBOX_DIR [COMMAND]

It reads the hosts' addresses and the client key from the sandbox folder (.sandbox).
"""

import json
import sys
import time
from pathlib import Path

from pssh.clients import ParallelSSHClient


def main() -> None:
    root = Path(sys.argv[1])
    command = sys.argv[2] if len(sys.argv) > 2 else "sleep 2"
    hosts = [h["address"] for h in json.loads((root / "state.json").read_text())["hosts"]]
    started = time.monotonic()
    client = ParallelSSHClient(hosts, user="root", pkey=str(root / "client_key"),
                               pool_size=len(hosts))  # fmt: skip
    output = client.run_command(command)
    client.join(output)
    failed = [o.host for o in output if o.exit_code != 0]
    print(f"parallel-ssh: {len(hosts)} hosts, {time.monotonic() - started:.2f} s, "
          f"{len(failed)} failed")  # fmt: skip


if __name__ == "__main__":
    main()
