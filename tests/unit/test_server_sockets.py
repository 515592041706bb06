"""The listening socket of every MDM server must make accepted connections TCP_NODELAY."""

from __future__ import annotations

import socket

from starlette.applications import Starlette

from mdm.servers.run import build_server


def test_listening_socket_is_declared_tcp() -> None:
    # asyncio only sets TCP_NODELAY on sockets accepted from an IPPROTO_TCP listener; with
    # proto 0 every small response waited ~40 ms for the client's delayed ACK.
    _server, sock = build_server(Starlette())
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()

