"""The listening socket's side of the drain: stop queueing, answer the queue, close.

`stop_queueing` attaches a classic BPF filter that drops new SYNs: a connection queued
before it can still be accepted and served; one attempted after it is not
queued (nothing to accept), and is refused once the socket closes, never
accepted by the kernel and then reset.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import select
import socket
import sys

import pytest
import uvloop

from service.server import Acceptor, stop_queueing

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux filter")


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


def connect_nonblocking(address: tuple[str, int]) -> socket.socket:
    client = socket.socket()
    client.setblocking(False)
    assert client.connect_ex(address) in (0, errno.EINPROGRESS)
    return client


@linux_only
def test_filtered_listener_keeps_its_queue_and_queues_nothing_new() -> None:
    server = listener()
    address = server.getsockname()
    before = socket.create_connection(address, timeout=5)  # queued before the filter
    assert stop_queueing(server)
    after = connect_nonblocking(address)  # its SYN meets the filter
    server.setblocking(False)
    accepted, _ = server.accept()  # the queued one is still there...
    with pytest.raises(BlockingIOError):
        server.accept()  # ...and nothing else was queued
    before.sendall(b"ping")
    assert accepted.recv(4) == b"ping"
    accepted.close()
    server.close()
    # Once the socket is closed, the kernel's SYN retry is refused: a clean refusal.
    _, writable, _ = select.select([], [after], [], 10)
    assert writable, "the late connect never finished"
    assert after.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    before.close()
    after.close()


def test_without_the_option_it_reports_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoFilter:
        def setsockopt(self, *args: object) -> None:
            raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    assert stop_queueing(NoFilter()) is False  # type: ignore[arg-type]
    monkeypatch.setattr(sys, "platform", "darwin")
    with listener() as sock:
        assert stop_queueing(sock) is False


def test_acceptor_accepts_every_queued_connection() -> None:
    """Every queued connection is accepted, non-blocking and with TCP_NODELAY (set by
    uvloop, the worker's loop: an answer is not held back by Nagle's algorithm)."""

    class Kept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.fd = transport.get_extra_info("socket").fileno()

    async def scenario() -> list[tuple[bool, int]]:
        server = listener()
        address = server.getsockname()
        clients = [socket.create_connection(address, timeout=5) for _ in range(5)]
        made: list[Kept] = []
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.Protocol:
            made.append(Kept())
            return made[-1]

        acceptor = Acceptor(server, protocol, loop, 16)
        assert acceptor.accept(limit=None)  # True: the queue is empty now
        while acceptor.pending:
            await asyncio.wait(list(acceptor.pending))
        options = []
        for kept in made:
            accepted = socket.socket(fileno=kept.fd)
            try:
                blocking = bool(fcntl.fcntl(kept.fd, fcntl.F_GETFL) & os.O_NONBLOCK)
                options.append(
                    (blocking, accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                )
            finally:
                accepted.detach()  # the transport owns the descriptor
        for client in clients:
            client.close()
        server.close()
        return options

    options = uvloop.run(scenario())
    assert len(options) == 5
    assert all(non_blocking and nodelay for non_blocking, nodelay in options), options
