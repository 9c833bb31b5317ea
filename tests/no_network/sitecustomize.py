"""No network for the tests and every process they start: only loopback connects and resolves.

tests/conftest.py puts this directory first on PYTHONPATH, so Python imports it at start-up in
the test process and in every subprocess (the commands the tests run). A connection to, or a
DNS look-up of, anything but this machine fails at once with an OSError naming the host.
"""

import ipaddress
import socket

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str) or host in _LOCAL_NAMES:
        return host in _LOCAL_NAMES
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # A host name other than localhost.
        return False


def _refuse(host: object) -> None:
    raise OSError(f"Tests may not use the network (tried to reach {host}).")


_connect, _connect_ex, _getaddrinfo = (
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo,
)  # fmt: skip


def _guarded_connect(self: socket.socket, address: object) -> None:
    if isinstance(address, tuple) and not _is_loopback(address[0]):
        _refuse(address[0])
    return _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if isinstance(address, tuple) and not _is_loopback(address[0]):
        _refuse(address[0])
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
    if host is not None and not _is_loopback(host):
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo
