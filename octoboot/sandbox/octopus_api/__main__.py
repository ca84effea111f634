"""The stand-in as a process: serves until SIGTERM or SIGINT.

    python -m octoboot.sandbox.octopus_api --state DIR --listen HOST:PORT [--environment NAME ...]
        [--task-cap N] [--health-seconds S] [--health-seconds-per-machine S]
        [--rate-limit PER_MINUTE] [--rate-burst N]
        [--polling-port PORT] [--worker-pool NAME ...] [--dynamic-worker-pool NAME ...]

The API key comes from OCTOPUS_STANDIN_API_KEY or --api-key-file, never from the command line.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from octoboot.errors import SandboxError
from octoboot.sandbox.octopus_api import API_KEY_ENV, polling
from octoboot.sandbox.octopus_api.health import DEFAULT_CONNECT_TIMEOUT
from octoboot.sandbox.octopus_api.server import OctopusStandIn
from octoboot.sandbox.octopus_api.state import DYNAMIC_POOL, STATIC_POOL
from octoboot.sandbox.standin_settings import StandInSettings


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SandboxError(f"--listen wants HOST:PORT, not '{text}'")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m octoboot.sandbox.octopus_api",
        description="Serve a local stand-in for the Octopus Deploy REST API.",
    )
    parser.add_argument("--state", type=Path, required=True, help="directory for state and cert")
    parser.add_argument("--listen", required=True, help="HOST:PORT (port 0 picks a free one)")
    parser.add_argument(
        "--environment", action="append", default=[], help="environment to create if missing"
    )
    parser.add_argument(
        "--api-key-file", type=Path, help=f"file holding the API key (else ${API_KEY_ENV})"
    )
    defaults = StandInSettings()
    for name in StandInSettings.OCTOPUS_FIELDS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(getattr(defaults, name)),
            default=getattr(defaults, name),
        )
    parser.add_argument(
        "--polling-port", type=int,
        help=f"port of the polling endpoint, on the --listen host (default "
        f"{polling.DEFAULT_PORT}, or a free one when --listen picks a free one)",
    )  # fmt: skip
    parser.add_argument(
        "--polling-queue-timeout", type=float, default=polling.DEFAULT_QUEUE_TIMEOUT,
        help="seconds a request waits for a polling Tentacle to collect it (Halibut: 120)",
    )  # fmt: skip
    parser.add_argument(
        "--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT,
        help="seconds a health check waits to reach a listening Tentacle (Halibut: 60)",
    )  # fmt: skip
    parser.add_argument(
        "--worker-pool", action="append", default=[], help="static worker pool to create"
    )
    parser.add_argument(
        "--dynamic-worker-pool", action="append", default=[],
        help="dynamic worker pool to create (it takes no workers)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.api_key_file:
            api_key = args.api_key_file.read_text(encoding="utf-8").strip()
        else:
            api_key = os.environ.get(API_KEY_ENV, "").strip()
        if not api_key:
            raise SandboxError(f"no API key: set {API_KEY_ENV} or pass --api-key-file")
        host, port = _parse_listen(args.listen)
        if args.polling_port is None:
            args.polling_port = polling.DEFAULT_PORT if port else 0
        # Block the stop signals before any thread starts, so only sigwait below receives them.
        stop_signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        settings = StandInSettings.from_json(vars(args))
        pools = [(name, STATIC_POOL) for name in args.worker_pool]
        pools += [(name, DYNAMIC_POOL) for name in args.dynamic_worker_pool]
        standin = OctopusStandIn(
            args.state,
            api_key,
            args.environment,
            host,
            port,
            settings=settings,
            worker_pools=pools,
            polling_port=args.polling_port,
            polling_queue_timeout=args.polling_queue_timeout,
            connect_timeout=args.connect_timeout,
        )
        with standin:
            print(f"listening on {standin.url}", flush=True)
            print(f"polling endpoint on port {standin.polling_port}", flush=True)
            signal.sigwait(stop_signals)
    except (SandboxError, OSError) as exc:
        print(f"octopus stand-in: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
