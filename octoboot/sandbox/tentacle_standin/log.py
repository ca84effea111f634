"""Console and log-file output, split the way Tentacle's NLog configuration splits it.

Info and Warn go to stdout, Error to stderr, message text only; everything also goes to the
instance's `Logs/OctopusTentacle.txt` once the instance is known. Commands whose output is data
(show-thumbprint, list-instances, version) switch the console off, so only errors reach it.
Command lines are never logged, so no secret given as an option reaches the file.
"""

from __future__ import annotations

import _thread
import os
import sys
import time

LOG_FILE_NAME = "OctopusTentacle.txt"
# Each line as logging's Formatter("%(asctime)s %(process)7d %(thread)15d %(levelname)5s
# %(message)s") wrote it; written directly, because importing logging was a tenth of a
# short command's CPU (every Tentacle command is a new process).
_LEVELS = {"debug": "DEBUG", "info": "INFO", "warn": "WARNING", "error": "ERROR"}


class Log:
    def __init__(self, *, console: bool = True) -> None:
        self.console = console
        self._files: list[str] = []
        self._lock = _thread.allocate_lock()  # the service logs from several threads

    def write_to(self, home_dir: str) -> None:
        """Also append everything to <home>/Logs/OctopusTentacle.txt."""
        logs = os.path.join(home_dir, "Logs")
        os.makedirs(logs, exist_ok=True)
        file = os.path.join(logs, LOG_FILE_NAME)
        open(file, "a").close()  # there from now on, as a FileHandler made it
        self._files.append(file)

    def _file(self, level: str, message: str) -> None:
        if not self._files:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        millis = int((now - int(now)) * 1000)
        line = (
            f"{stamp},{millis:03d} {os.getpid():7d} {_thread.get_ident():15d} "
            f"{_LEVELS[level]:>5s}  {message}\n"
        )
        with self._lock:
            for path in self._files:
                with open(path, "a", encoding="utf-8") as out:
                    out.write(line)

    def verbose(self, message: str) -> None:
        self._file("debug", message)

    def info(self, message: str) -> None:
        self._file("info", message)
        if self.console:
            print(message, flush=True)

    def warn(self, message: str) -> None:
        self._file("warn", message)
        if self.console:
            print(message, flush=True)

    def error(self, message: str) -> None:
        self._file("error", message)
        print(message, file=sys.stderr, flush=True)
