"""Exact CPU of every task that exits on this machine, from the kernel's taskstats.

The kernel sends a listener registered for a set of CPUs one record per task (thread) that
exits on them, over generic netlink (Documentation/accounting/taskstats.rst). The record's
`cpu_run_virtual_total` is the task's whole time on a CPU in ns (`se.sum_exec_runtime`, the
same clock as /proc/<pid>/schedstat), so even a process that lives a millisecond is counted
to the nanosecond: no sampling, nothing unseen. Root only (CAP_NET_ADMIN to register).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from dataclasses import dataclass

_GENL_ID_CTRL = 0x10
_CTRL_CMD_GETFAMILY, _CTRL_ATTR_FAMILY_ID, _CTRL_ATTR_FAMILY_NAME = 3, 1, 2
_TASKSTATS_CMD_GET, _TASKSTATS_CMD_ATTR_REGISTER_CPUMASK = 1, 3
_TYPE_PID, _TYPE_STATS, _TYPE_AGGR_PID = 1, 3, 4
_NLM_F_REQUEST = 1
# struct taskstats (linux/taskstats.h): the fields read here sit at fixed offsets since
# version 1 of the structure.
_RUN_VIRTUAL_TOTAL, _COMM, _PPID = 72, 80, 132


@dataclass(frozen=True)
class Exit:
    pid: int  # the task's id (a thread's own), in the initial PID namespace
    ppid: int  # its process's parent
    comm: str
    ns: int  # time on a CPU over its whole life


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
        self._send(self._family, _TASKSTATS_CMD_GET, _attr(_TASKSTATS_CMD_ATTR_REGISTER_CPUMASK,
                                                           cpus))  # fmt: skip
        self._sock.settimeout(0.1)  # the reader looks at _stop this often
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, family: int, command: int, attrs: bytes) -> None:
        body = struct.pack("BBH", command, 1, 0) + attrs
        self._sock.send(struct.pack("IHHII", 16 + len(body), family, _NLM_F_REQUEST, 1, 0) + body)

    def _request(self, family: int, command: int, attrs: bytes) -> bytes:
        self._send(family, command, attrs)
        reply = self._sock.recv(65536)
        if struct.unpack_from("H", reply, 4)[0] == 2:  # NLMSG_ERROR
            raise OSError(-struct.unpack_from("i", reply, 16)[0], "taskstats: netlink refused")
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
                self.lost += exc.errno == 105
                continue
            at = 0
            while at + 20 <= len(data):
                length = struct.unpack_from("I", data, at)[0]
                aggregate = _attrs(data[at + 20 : at + length]).get(_TYPE_AGGR_PID)
                if aggregate is not None:
                    self._record(_attrs(aggregate))
                at += max((length + 3) & ~3, 16)

    def _record(self, attrs: dict[int, bytes]) -> None:
        stats = attrs[_TYPE_STATS]
        self.exits.append(
            Exit(
                pid=struct.unpack("I", attrs[_TYPE_PID][:4])[0],
                ppid=struct.unpack_from("I", stats, _PPID)[0],
                comm=stats[_COMM : _COMM + 32].split(b"\0")[0].decode(errors="replace"),
                ns=struct.unpack_from("Q", stats, _RUN_VIRTUAL_TOTAL)[0],
            )
        )
