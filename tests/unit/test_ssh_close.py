"""ssh.close ends the TCP stream at once, even while paramiko's thread is blocked reading it."""

import socket
import threading

import paramiko
from fabric import Connection

from octoboot import ssh


def test_close_wakes_the_reader_blocked_on_the_socket_and_the_peer_sees_the_end():
    ours, peer = socket.socketpair()
    peer.settimeout(10)  # bounds the test if the end never comes; not a measure of speed
    conn = Connection("sbx01")
    conn.transport = paramiko.Transport(ours)  # its socket, as a connected transport has it
    got: list[bytes] = []
    # As paramiko's transport thread: blocked in recv until the stream ends.
    reader = threading.Thread(target=lambda: got.append(ours.recv(1)), daemon=True)
    reader.start()
    try:
        ssh.close(conn)
        assert peer.recv(1) == b""  # the host sees the session end now
        reader.join(10)
        assert not reader.is_alive() and got == [b""]
    finally:
        ours.close()
        peer.close()
