"""The tests' no-network guard holds in this process and in every process a test starts."""

import socket
import subprocess
import sys

import pytest

_TRY = """
import socket, sys
for attempt in (lambda: socket.getaddrinfo("example.com", 80),
                lambda: socket.create_connection(("10.1.2.3", 80), timeout=1)):
    try:
        attempt()
    except OSError as error:
        print(error)
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen()
socket.create_connection(sock.getsockname(), timeout=1).close()  # Loopback still works.
print("loopback ok")
"""


def test_subprocesses_cannot_resolve_or_connect_outside():
    result = subprocess.run([sys.executable, "-c", _TRY], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Tests may not use the network (tried to reach example.com).",
        "Tests may not use the network (tried to reach 10.1.2.3).",
        "loopback ok",
    ]


def test_this_process_cannot_either():
    with pytest.raises(OSError, match="tried to reach example.org"):
        socket.getaddrinfo("example.org", 443)
