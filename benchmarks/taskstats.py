"""Exact CPU of every task that exits on this machine, from the kernel's taskstats.

The kernel sends a listener registered for a set of CPUs one record per task (thread) that
exits on them, over generic netlink (Documentation/accounting/taskstats.rst). The record's
`cpu_run_virtual_total` is the task's whole time on a CPU in ns (`se.sum_exec_runtime`, the
same clock as /proc/<pid>/schedstat), so even a process that lives a millisecond is counted
to the nanosecond: no sampling, nothing unseen. Root only (CAP_NET_ADMIN to register).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

_GENL_ID_CTRL = 0x10
_CTRL_CMD_GETFAMILY, _CTRL_ATTR_FAMILY_ID, _CTRL_ATTR_FAMILY_NAME = 3, 1, 2
_TASKSTATS_CMD_GET, _TASKSTATS_CMD_ATTR_REGISTER_CPUMASK = 1, 3
_TYPE_PID, _TYPE_STATS, _TYPE_AGGR_PID = 1, 3, 4
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_NLMSG_ERROR = 2
# struct taskstats (linux/taskstats.h), at fixed offsets: version, run time, command and
# parent since version 1, the 64-bit start time since 10, the thread group since 12.
_VERSION, _RUN_VIRTUAL_TOTAL, _COMM, _PPID, _BTIME64, _TGID = 0, 72, 80, 132, 344, 368


@dataclass(frozen=True)
class Exit:
    pid: int  # the task's id (a thread's own), in the initial PID namespace
    tgid: int  # its process (a thread group): pid for a process's main thread
    ppid: int  # its process's parent
    comm: str
    ns: int  # time on a CPU over its whole life
    started: int  # when it started, in whole seconds since the epoch (0: not told)


def _attrs(data: bytes) -> dict[int, bytes]:
    found, at = {}, 0
    while at + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, at)
        if length < 4:
            break
        found[kind & 0x3FFF] = data[at + 4 : at + length]
        at += (length + 3) & ~3
    return found


def _attr(kind: int, value: bytes) -> bytes:
    packed = struct.pack("HH", 4 + len(value), kind) + value
    return packed + b"\0" * (-len(packed) % 4)


class Exits:
    """Collects the exit record of every task until stopped (a context manager)."""

    def __init__(self) -> None:
        self.exits: list[Exit] = []
        self.lost = 0  # records the kernel dropped (the socket's buffer was full)
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 16)  # NETLINK_GENERIC
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self._sock.bind((0, 0))
        family = _attrs(self._request(_GENL_ID_CTRL, _CTRL_CMD_GETFAMILY,
                                      _attr(_CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0")))  # fmt: skip
        self._family = struct.unpack("H", family[_CTRL_ATTR_FAMILY_ID][:2])[0]
        cpus = f"0-{(os.cpu_count() or 1) - 1}\0".encode()
        # Acknowledged, so that a refusal (no CAP_NET_ADMIN) is an error, not no records.
        self._request(self._family, _TASKSTATS_CMD_GET,
                      _attr(_TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, cpus), ack=True)  # fmt: skip
        self._sock.settimeout(0.1)  # the reader looks at _stop this often
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _request(self, family: int, command: int, attrs: bytes, *, ack: bool = False) -> bytes:
        body = struct.pack("BBH", command, 1, 0) + attrs
        flags = _NLM_F_REQUEST | (_NLM_F_ACK if ack else 0)
        self._sock.send(struct.pack("IHHII", 16 + len(body), family, flags, 1, 0) + body)
        reply = self._sock.recv(65536)
        if struct.unpack_from("H", reply, 4)[0] == _NLMSG_ERROR:  # an error, or code 0: the ack
            code = -struct.unpack_from("i", reply, 16)[0]
            if code:
                raise OSError(code, f"taskstats: netlink refused: {os.strerror(code)}")
        return reply[20:]

    def __enter__(self) -> Exits:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop = True
        self._thread.join()
        self._sock.close()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError as exc:  # ENOBUFS: records were dropped; the socket goes on
                self.lost += exc.errno == errno.ENOBUFS
                continue
            at = 0
            while at + 20 <= len(data):
                length = struct.unpack_from("I", data, at)[0]
                aggregate = _attrs(data[at + 20 : at + length]).get(_TYPE_AGGR_PID)
                if aggregate is not None:
                    self._record(_attrs(aggregate))
                at += max((length + 3) & ~3, 16)

    def drain(self, within: float = 5.0) -> None:
        """Wait, at most `within` seconds, until the records of the tasks that ended before
        now have come in: a process that starts and ends now is recorded after them."""
        seen, lost = len(self.exits), self.lost
        marker = subprocess.Popen(["true"])
        marker.wait()
        deadline = time.monotonic() + within
        while not any(e.pid == marker.pid for e in self.exits[seen:]):
            if self.lost > lost:  # the marker's record may be among those dropped
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"taskstats: no record of a process ended {within:g} s ago")
            time.sleep(0.01)

    def _record(self, attrs: dict[int, bytes]) -> None:
        stats = attrs[_TYPE_STATS]
        version = struct.unpack_from("H", stats, _VERSION)[0]
        pid = struct.unpack("I", attrs[_TYPE_PID][:4])[0]
        self.exits.append(
            Exit(
                pid=pid,
                tgid=struct.unpack_from("I", stats, _TGID)[0] if version >= 12 else pid,
                ppid=struct.unpack_from("I", stats, _PPID)[0],
                comm=stats[_COMM : _COMM + 32].split(b"\0")[0].decode(errors="replace"),
                ns=struct.unpack_from("Q", stats, _RUN_VIRTUAL_TOTAL)[0],
                started=struct.unpack_from("Q", stats, _BTIME64)[0] if version >= 10 else 0,
            )
        )
