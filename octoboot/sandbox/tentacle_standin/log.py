"""Console and log-file output, split the way Tentacle's NLog configuration splits it.

Info and Warn go to stdout, Error to stderr, message text only; everything also goes to the
instance's `Logs/OctopusTentacle.txt` once the instance is known. Commands whose output is data
(show-thumbprint, list-instances, version) switch the console off, so only errors reach it.
Command lines are never logged, so no secret given as an option reaches the file.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOG_FILE_NAME = "OctopusTentacle.txt"
_FORMAT = "%(asctime)s %(process)7d %(thread)15d %(levelname)5s  %(message)s"


class Log:
    def __init__(self, *, console: bool = True) -> None:
        self.console = console
        self._file = logging.getLogger("tentacle_standin")
        self._file.setLevel(logging.DEBUG)
        self._file.propagate = False
        if not self._file.handlers:  # keep logging's last-resort handler off the console
            self._file.addHandler(logging.NullHandler())

    def write_to(self, home_dir: Path) -> None:
        """Also append everything to <home>/Logs/OctopusTentacle.txt."""
        logs = home_dir / "Logs"
        logs.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logs / LOG_FILE_NAME, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FORMAT))
        self._file.addHandler(handler)

    def verbose(self, message: str) -> None:
        self._file.debug(message)

    def info(self, message: str) -> None:
        self._file.info(message)
        if self.console:
            print(message, flush=True)

    def warn(self, message: str) -> None:
        self._file.warning(message)
        if self.console:
            print(message, flush=True)

    def error(self, message: str) -> None:
        self._file.error(message)
        print(message, file=sys.stderr, flush=True)
