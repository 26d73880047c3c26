"""An answer leaves in one write (head and body together), and nothing is ever held back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from evaluation.live_server import live_server
from evaluation.samples import SEVEN_PNG
from service.server import OneWrite
from tests.reliability.support import raw_connection, read_raw_response


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def one_write(transport: FakeTransport, cycle: Any) -> Any:
    return OneWrite(transport, cycle)  # type: ignore[arg-type]


def test_head_and_body_go_out_in_one_write() -> None:
    transport, cycle = FakeTransport(), SimpleNamespace(response_started=True)
    wrapped = one_write(transport, cycle)
    wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert transport.writes == []  # the head waits for the body
    wrapped.write(b"{}")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    wrapped.write(b"more")  # later chunks of a streamed body pass straight through
    assert transport.writes[-1] == b"more"
    assert not wrapped.is_closing()  # everything else is the transport's


def test_a_100_continue_before_the_answer_is_not_held() -> None:
    transport, cycle = FakeTransport(), SimpleNamespace(response_started=False)
    wrapped = one_write(transport, cycle)
    wrapped.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_close_after_a_head_sends_the_head_first() -> None:
    transport, cycle = FakeTransport(), SimpleNamespace(response_started=True)
    wrapped = one_write(transport, cycle)
    wrapped.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    wrapped.close()  # the app failed after starting its answer
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    assert transport.closed


def test_real_answers_head_expect_continue_and_keep_alive(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        sock = raw_connection(server.url)
        with sock:
            sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            # An answer without a body (to HEAD: here 405, /healthz is GET only) is not held
            assert head.startswith(b"HTTP/1.1 405") and head.endswith(b"\r\n\r\n")
            sock.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(SEVEN_PNG)
            )
            assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"  # not held back
            sock.sendall(SEVEN_PNG)
            status, _, body = read_raw_response(sock)
            assert status == 200 and b'"digit":7' in body
            sock.sendall(  # the same connection, kept alive: a plain request
                b"POST /v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n"
                b"Content-Length: %d\r\n\r\n" % len(SEVEN_PNG) + SEVEN_PNG
            )
            status, headers, body = read_raw_response(sock)
            assert status == 200 and int(headers["content-length"]) == len(body)
