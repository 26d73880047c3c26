"""Start the HTTP server: uvicorn, configured and subclassed here and nowhere else.

- `GuardedHttpToolsProtocol`: uvicorn's HTTP protocol with deadlines for slow
  clients (the request head within `header_timeout_s` of the connection or of
  the previous answer, the body within `body_timeout_s` of the head; a late
  body gets a 408), the `ConnectionGuard` the app uses to drop the work of
  clients that have gone, and load shedding from the request head: a request
  the worker has no room for, running or in line (`service.shedding`), the
  first request of a connection past `max_connections` open ones, and every
  request once draining is answered 429/503 with prepared bytes before its body
  is read and before any ASGI code runs.
- `MnistServer`: the shutdown sequence on SIGTERM (`drain`), written once.
- `Acceptor`, `stop_queueing`: the listening socket, accepted from and closed safely.
- `build_server`, `serve_worker`: one worker's app and server; the process serving them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.admission import PROBE_PATHS
from service.api.answers import raw_error
from service.api.asgi import ADMITTED_AT_HEAD, CONNECTION_GUARD
from service.config import Settings
from service.errors import RequestTimeout, ServiceError, ShuttingDown, TooManyRequests
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.shedding import LoadShedder, Turn, Waiting

log = logging.getLogger("service.server")
SIGNALS = (signal.SIGTERM, signal.SIGINT)
STARTUP_FAILURE = 3  # uvicorn's exit code when the lifespan (model load) fails
_PROBES = frozenset(path.encode() for path in PROBE_PATHS)
UNMATCHED = "unmatched"  # the route label of requests answered before routing
UVICORN_SHUTDOWN_S = 2  # uvicorn's own shutdown, after the drain


class Refusal:
    """One refusal, its bytes prepared once: for a connection kept open, and with `close`."""

    def __init__(self, error: ServiceError, *, close: bool) -> None:
        self.error = error
        self.close = close  # always close the connection after it
        self.keep_bytes = raw_error(error, close=False)
        self.close_bytes = raw_error(error, close=True)


class Refusals:
    def __init__(self) -> None:
        self.busy = Refusal(TooManyRequests(), close=False)
        self.draining = Refusal(ShuttingDown(), close=True)
        self.connections = Refusal(
            ShuttingDown("too many connections; retry in a second"), close=True
        )


class OneWrite:
    """The transport as one answer's cycle sees it: the head waits for the body.

    uvicorn writes an answer's status line and headers, then its body, with two
    `write` calls, and uvloop makes each a send syscall at once. A prediction is
    a few hundred bytes: one syscall for both saves ~25 µs per request on this
    machine (docs/benchmarks.md). Only the answer's head is held (not a
    `100 Continue`, written before the answer starts), until the first body
    write (uvicorn makes one for every answer but to HEAD, even an empty one)
    or close.
    """

    def __init__(self, transport: asyncio.Transport, cycle: Any) -> None:
        self.transport = transport
        self.cycle = cycle
        self.head: bytes | None = None
        self.started = False

    def write(self, data: bytes) -> None:
        if not self.started and self.cycle.response_started:
            # Let go of the cycle (it holds us): no reference cycle per request for
            # the garbage collector to find (docs/reliability.md, "Pauses").
            self.started, self.head, self.cycle = True, data, None
            return
        if self.head is not None:
            data, self.head = self.head + data, None
        self.transport.write(data)

    def close(self) -> None:  # an app that failed after its head: send what was held
        if self.head is not None:
            head, self.head = self.head, None
            self.transport.write(head)
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self.transport, name)


class ReleaseSlot:
    """The app, giving the request's shedder slot back once it has answered.

    One per server, not a closure per request: a closure stored on the request's
    cycle would hold the cycle that holds it, a reference cycle per request that
    only the garbage collector frees (docs/reliability.md, "Pauses")."""

    def __init__(self, app: Any, shedder: LoadShedder) -> None:
        self.app = app
        self.shedder = shedder

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.shedder.finished()


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus what our protocol needs: deadlines, the shedder, the drain state."""

    def __init__(
        self,
        app: Any,
        *,
        settings: Settings,
        lifecycle: Lifecycle,
        shedder: LoadShedder,
        metrics: ServiceMetrics | None,
        **options: Any,
    ) -> None:
        super().__init__(app, **options)
        self.header_timeout_s = settings.header_timeout_s
        self.body_timeout_s = settings.body_timeout_s
        self.max_connections = settings.max_connections
        self.lifecycle = lifecycle
        self.shedder = shedder
        self.metrics = metrics
        self.refusals = Refusals()
        self.releasing_app: ReleaseSlot | None = None

    def load(self) -> None:
        super().load()
        self.releasing_app = ReleaseSlot(self.loaded_app, self.shedder)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Deadlines, shedding at the request head, and the app's `ConnectionGuard`."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        assert isinstance(config, ServerConfig)
        self.header_timeout_s = config.header_timeout_s
        self.body_timeout_s = config.body_timeout_s
        self.body_timed_out = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline_at = 0.0
        self._expired: Any = None
        self.gate = config
        self.shed: Refusal | None = None  # the refusal already written for this request
        self.shed_close = False
        self.parked = False
        self.requests_begun = 0
        self._holds_slot = False
        self.admitted = False  # this request took one of the shedder's slots (or waits for one)
        self.in_line = False  # this request waits in the shedder's line for a slot
        self._waiting: tuple[Any, Any] | None = None  # its cycle and app, not started yet
        self._peeker: socket.socket | None = None  # the connection's socket, for `peek`

    # -- ConnectionGuard and Parkable --------------------------------------------
    def client_gone(self) -> bool:
        return self.transport.is_closing()

    def peek(self) -> Waiting:
        """What this parked connection holds, without reading it (`service.shedding`).

        A parked connection is not read, so the loop never sees its client leave;
        after a spike thousands of them would each hold a turn for a loop pass."""
        if self.transport.is_closing():
            return Waiting.GONE
        if self._peeker is None:  # made once per connection: a socket object costs ~9 µs
            fd = self.transport.get_extra_info("socket").fileno()
            self._peeker = socket.socket(fileno=fd)  # no dup: detached, never closed here
        try:
            hung_up = self._peeker.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return Waiting.IDLE  # alive, nothing sent yet
        except OSError:
            hung_up = True  # reset
        # A request is buffered, but did its client close after it? (A load generator
        # that stops, a client that gave up.) Its turn would run work nobody reads,
        # and after a spike thousands of such turns kept refusing newcomers for ~1 s.
        hung_up = hung_up or _peer_closed(self._peeker)
        if hung_up:
            self.transport.close()
            return Waiting.GONE
        return Waiting.REQUEST

    def start(self) -> None:
        """The request that waited in line has its slot: run it."""
        self._left_the_line()
        waiting, self._waiting = self._waiting, None
        assert waiting is not None, "a request in line has its cycle (no upgrades: ws='none')"
        cycle, app = waiting
        super()._start_asgi_task(cycle, app)

    def resume(self) -> None:
        """Our turn (or the drain): read the next request, which usually waits buffered."""
        self.parked = False
        if not self.transport.is_closing():
            self._arm(self.header_timeout_s, self._head_too_slow)
            self.flow.resume_reading()

    # -- deadlines ------------------------------------------------------------
    # One timer per connection, moved only when a deadline comes earlier: arming
    # happens twice per request, and a fresh loop timer each time cost ~8% of the
    # CPU of a refusal under overload (py-spy, docs/reliability.md).
    def _arm(self, seconds: float, expired: Any) -> None:
        self._deadline_at = self.loop.time() + seconds
        self._expired = expired
        if self._timer is not None and self._timer_at <= self._deadline_at:
            return  # it fires first and re-arms itself for what is left
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = self._deadline_at
        self._timer = self.loop.call_at(self._timer_at, self._deadline_passed)

    def _disarm(self) -> None:
        self._expired = None

    def _deadline_passed(self) -> None:
        self._timer = None
        if self._expired is None:
            return
        if self._deadline_at > self.loop.time():
            self._timer_at = self._deadline_at
            self._timer = self.loop.call_at(self._timer_at, self._deadline_passed)
            return
        expired, self._expired = self._expired, None
        expired()

    def _head_too_slow(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        self.body_timed_out = True
        if self.transport.is_closing():
            return
        if self.shed is None and self.cycle is not None and not self.cycle.response_started:
            error = RequestTimeout(
                f"the request body did not arrive within {self.body_timeout_s:g} s"
            )
            self.transport.write(raw_error(error))
        self.transport.close()

    # -- shedding at the request head -------------------------------------------
    def _refusal(self) -> Refusal | None:
        """Why this request is answered now without the app, or None to run it."""
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind an answer in progress: the app's admission decides
        gate = self.gate
        if self.url.partition(b"?")[0].rstrip(b"/") in _PROBES:
            gate.shedder.forget(self)  # a slot kept for this connection goes to the next
            return None  # probes are how operators see an overloaded or draining process
        if gate.lifecycle.draining:
            return gate.refusals.draining
        # Over the limit only a new connection is turned away (its first request): were
        # it any request, one client reconnecting at the limit would push out others,
        # each of which reconnects in turn (thousands of 503s a second at 4,096).
        if self.requests_begun == 1 and len(self.connections) > gate.max_connections:
            return gate.refusals.connections
        turn = gate.shedder.admit(self)
        if turn is Turn.REFUSE:
            return gate.refusals.busy
        self._holds_slot = self.admitted = True
        self.in_line = turn is Turn.WAIT
        if self.in_line and gate.metrics is not None:
            gate.metrics.http_waiting.inc()
        return None

    def _left_the_line(self) -> None:
        """Its slot came, or its client left: it no longer waits."""
        if self.in_line:
            self.in_line = False
            if self.gate.metrics is not None:
                self.gate.metrics.http_waiting.dec()

    def _refuse(self, refusal: Refusal) -> None:
        """Answer with prepared bytes; the body that follows is read and dropped."""
        close = (
            refusal.close
            or self.expect_100_continue  # the client waits before sending its body: close
            or self.parser.get_http_version() != "1.1"
            or not self.parser.should_keep_alive()
        )
        self.transport.write(refusal.close_bytes if close else refusal.keep_bytes)
        self.shed, self.shed_close = refusal, close
        metrics = self.gate.metrics
        if metrics is not None:
            error = refusal.error
            metrics.rejected(error.reason)
            method = self.parser.get_method().decode("ascii", "replace")
            metrics.request_done(UNMATCHED, method, error.status_code, 0.0)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._holds_slot:  # the slot is given back when the app is done with the request
            self._holds_slot = False
            app = self.gate.releasing_app
            if self.in_line:  # its body is read into the cycle meanwhile; `start` runs it
                self._waiting = (cycle, app)
                return
        super()._start_asgi_task(cycle, app)

    # -- uvicorn's callbacks -------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, self._head_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.requests_begun += 1
        self.body_timed_out = False
        self.shed = None
        self.admitted = False
        self._arm(self.header_timeout_s, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout_s, self._body_too_slow)
        refusal = self._refusal()
        if refusal is not None:
            self._refuse(refusal)
            return
        super().on_headers_complete()
        extensions: dict[str, object] = {CONNECTION_GUARD: self}
        if self.admitted:
            extensions[ADMITTED_AT_HEAD] = True
        self.scope["extensions"] = extensions  # type: ignore[typeddict-item]
        if self.scope["method"] != "HEAD":  # (an answer to HEAD has no body to wait for)
            self.cycle.transport = OneWrite(self.transport, self.cycle)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if self.shed is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        if self.shed is None:
            super().on_message_complete()
            return
        # A refused request, read to its end: close, or wait for a turn without reading.
        if self.shed_close:
            self.transport.close()
        elif self.shed is self.gate.refusals.busy and not self.parked:
            self._park()
        else:
            self._arm(self.header_timeout_s, self._head_too_slow)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Answered while others wait for a turn: go behind them, unread, without a 429.
        if (
            self.admitted
            and not self.parked
            and not self.pipeline
            and not self.transport.is_closing()
            and self.gate.shedder.others_waiting()
        ):
            if self.timeout_keep_alive_task is not None:  # waiting in line is not idling
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None
            self._park()

    def _park(self) -> None:
        """Stop reading until the shedder gives this connection its turn (`resume`)."""
        self.parked = True
        self.flow.pause_reading()
        self.gate.shedder.park(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._peeker is not None:
            self._peeker.detach()  # the transport owns (and has closed) the descriptor
            self._peeker = None
        super().connection_lost(exc)
        self._left_the_line()
        self.gate.shedder.forget(self)

    def last_answer_closes(self) -> None:
        """Draining: the answer in progress will carry `Connection: close`."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False

    def idle(self) -> bool:
        """No request in progress: closing now cuts nothing (but one that never began waits)."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline


_TCP_ESTABLISHED = 1  # the first byte of Linux's struct tcp_info is the TCP state


def _peer_closed(sock: socket.socket) -> bool:
    """The client sent its FIN (half-closed, or gone), whatever data it left buffered.

    uvicorn closes a connection at the client's FIN too, so no answer could reach it.
    Linux only (TCP_INFO); elsewhere False, and such a turn is merely wasted."""
    if not hasattr(socket, "TCP_INFO"):
        return False
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _TCP_ESTABLISHED
    except OSError:
        return True


# -- the listening socket's side of the drain -------------------------------------------
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux <asm-generic/socket.h>
# A classic BPF program, run by the kernel on each packet for the listening socket,
# which starts at the TCP header: drop a connection's first SYN (SYN without ACK),
# pass everything else. Dropping every packet (`ret #0` alone) also dropped the last
# ACK of handshakes under way when it was attached: their clients, connected as far
# as they knew, wrote a request and were reset when the socket closed (1 request
# lost in 6 runs of `python -m benchmarks.drain --clients 128`, docs/reliability.md).
_TCP_FLAGS, _SYN, _ACK = 13, 0x02, 0x10
_NEW_CONNECTIONS_DROPPED = [  # struct sock_filter: code, jt, jf, k
    (0x30, 0, 0, _TCP_FLAGS),  # ldb [13]: the flags byte
    (0x54, 0, 0, _SYN | _ACK),  # and #0x12
    (0x15, 0, 1, _SYN),  # jeq #0x02: a first SYN -> the next instruction, else skip it
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole packet
]


def stop_queueing(sock: socket.socket) -> bool:
    """Attach a classic BPF filter that drops new connections' SYNs: the kernel
    starts no new connection on `sock`.

    A SYN that arrives afterwards is dropped (its client retries it), so once the
    socket closes that client is refused cleanly instead of being accepted by the
    kernel and then reset after it wrote its request. Handshakes under way still
    complete and connections already queued stay queued: both can still be
    accepted. False where the option is unavailable (not Linux): the caller
    closes after answering the queue, with a small race.
    """
    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(
        b"".join(struct.pack("HBBI", *instruction) for instruction in _NEW_CONNECTIONS_DROPPED)
    )
    fprog = struct.pack("HL", len(_NEW_CONNECTIONS_DROPPED), ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as error:
        log.warning("cannot attach the SYN filter", extra={"error": str(error)})
        return False
    return True


class Acceptor:
    """Accepts the connections the kernel queued on a listening socket, all of them.

    uvicorn hands the socket to uvloop, which under load accepted about one
    connection per event-loop turn: at 1,024 connections ~380 waited in the
    kernel's queue and drained at ~10/s, so their first answers took up to 9 s
    (wrk counted timeouts; docs/reliability.md). Here every readiness event
    accepts up to `BATCH` connections, and the drain can empty the queue exactly.
    """

    BATCH = 1024  # per event: a storm of connects still leaves room for requests

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Any,
        loop: asyncio.AbstractEventLoop,
        backlog: int,
    ) -> None:
        self.sock = sock
        self.protocol_factory = protocol_factory
        self.loop = loop
        self.accepting = False
        self.pending: set[asyncio.Task[Any]] = set()  # accepted, protocol not made yet
        sock.setblocking(False)
        sock.listen(backlog)

    def start(self) -> None:
        self.loop.add_reader(self.sock.fileno(), self.accept, self.BATCH)
        self.accepting = True

    def stop(self) -> None:
        if self.accepting:
            self.loop.remove_reader(self.sock.fileno())
            self.accepting = False

    def accept(self, limit: int | None = None) -> bool:
        """Accept up to `limit` queued connections (None: all); True once the queue is empty."""
        count = 0
        while limit is None or count < limit:
            try:
                connection, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return True
            except ConnectionAbortedError:
                continue
            except OSError as error:  # out of file descriptors: retry in a moment
                log.warning("accept failed", extra={"error": str(error)})
                self.stop()
                self.loop.call_later(0.1, self.start)
                return False
            count += 1  # (uvloop makes it non-blocking and sets TCP_NODELAY itself)
            task = self.loop.create_task(
                self.loop.connect_accepted_socket(self.protocol_factory, connection)
            )
            self.pending.add(task)
            task.add_done_callback(self._connected)
        return False

    def _connected(self, task: asyncio.Task[Any]) -> None:
        self.pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("connection failed at once", extra={"error": str(task.exception())})


class MnistServer(uvicorn.Server):
    POLL_S = 0.005  # waiting for connections to send their request: no event for it

    def __init__(
        self,
        config: ServerConfig,
        *,
        lifecycle: Lifecycle,
        shedder: LoadShedder,
        settings: Settings,
        stop_requested: Callable[[], bool] | None = None,
        handlers_ready: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.stop_requested = stop_requested
        self.handlers_ready = handlers_ready
        # A supervised worker (it reports its handlers) watches its parent.
        self.supervisor_pid = os.getppid() if handlers_ready is not None else None
        self._absorb_signal = False
        self.lifecycle = lifecycle
        self.shedder = shedder
        self.settings = settings
        self.acceptors: list[Acceptor] = []
        self._drain: asyncio.Task[None] | None = None
        self.clean = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup, with our `Acceptor` on each socket instead of uvloop's server."""
        assert sockets, "serve_worker always passes the bound sockets"
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            raise SystemExit(STARTUP_FAILURE)
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        loop = asyncio.get_running_loop()
        self.servers = []
        self.acceptors = [Acceptor(s, create_protocol, loop, config.backlog) for s in sockets]
        for acceptor in self.acceptors:
            acceptor.start()
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for acceptor in self.acceptors:  # before uvicorn closes the sockets
            acceptor.stop()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            # A signal that came before our handlers existed was recorded (by `main`,
            # or by the supervisor, which signals a worker only once it says it can
            # take one): it drains now.
            if self.handlers_ready is not None:
                self.handlers_ready()
            requested = self.stop_requested is not None and self.stop_requested()
            if requested and not self.lifecycle.draining:
                self.lifecycle.begin_drain()
                # The signal forwarded with the event may still arrive: the same stop.
                self._absorb_signal = True
            yield

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: drain first; a second signal stops at once.

        A signal handler may only set flags: the protocol and readiness see
        `draining` at once, and the next tick of uvicorn's main loop (every
        0.1 s) starts the drain itself."""
        if self._absorb_signal:
            self._absorb_signal = False
            return
        if self.lifecycle.draining:
            self.force_exit = True
            self.should_exit = True
            return
        self.lifecycle.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        orphaned = self.supervisor_pid is not None and os.getppid() != self.supervisor_pid
        if orphaned and not self.lifecycle.draining:
            # The supervisor died without forwarding a signal (SIGKILL, OOM): drain
            # rather than serve on, orphaned, holding the port.
            log.warning("supervisor gone; draining")
            self.lifecycle.begin_drain()
        if self.lifecycle.draining and self._drain is None and not self.should_exit:
            self._drain = asyncio.create_task(self.drain())
        return await super().on_tick(counter)

    async def drain(self) -> None:
        """The shutdown sequence, in order. Each step's why:

        1. readiness off, new requests 503 + `Connection: close` (done by the signal):
           load balancers stop sending, clients go elsewhere; answers already being
           worked on will close their connection too;
        2. the drain delay: the listener stays open while load balancers notice;
        3. stop queueing connections (a filter drops new SYNs): nobody new can be
           accepted by the kernel and then cut off when the socket closes;
        4. answer the queue: connections the kernel already accepted are accepted
           and answered 503, and so are handshakes that complete meanwhile (the
           accept loop runs on until the close);
        5. finish in-flight work (and let connections that just arrived send their
           request and get its answer);
        6. close: uvicorn closes the listener, then the idle connections (only
           between requests), and the lifespan drains the batchers.
        Steps 2-5 share `shutdown_grace_s`.
        """
        started = time.monotonic()
        settings = self.settings
        deadline = started + settings.shutdown_grace_s
        log.info("draining", extra={"accepted": self.lifecycle.accepted})
        self.shedder.drain()  # 1.
        for connection in list(self.server_state.connections):
            if isinstance(connection, GuardedHttpToolsProtocol):
                connection.last_answer_closes()
        await asyncio.sleep(min(settings.drain_delay_s, settings.shutdown_grace_s))  # 2.
        filtered = all([stop_queueing(a.sock) for a in self.acceptors])  # 3.
        for acceptor in self.acceptors:  # 4. (their requests get the drain's 503)
            acceptor.accept(limit=None)  # and it goes on accepting until `shutdown`
        idle = await self._finish_in_flight(deadline)  # 5.
        self.clean = idle
        log.info(
            "drained",
            extra={
                "idle": idle,
                "filtered": filtered,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        self.should_exit = True  # 6. uvicorn's shutdown

    async def _finish_in_flight(self, deadline: float) -> bool:
        """Admitted requests answered, and every connection either closed or between
        requests after at least one (a fresh one is given time to send its request)."""
        idle = await self.lifecycle.wait_idle(max(0.0, deadline - time.monotonic()))
        fresh_until = min(deadline, time.monotonic() + self.settings.header_timeout_s)
        while time.monotonic() < fresh_until:
            waiting = [
                c
                for c in self.server_state.connections
                if isinstance(c, GuardedHttpToolsProtocol)
                and not c.transport.is_closing()
                and (c.requests_begun == 0 or not c.idle())
            ]
            if not waiting and not any(a.pending for a in self.acceptors):
                break
            await asyncio.sleep(self.POLL_S)
        return idle


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is loaded so a taken port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({error.strerror}); choose another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def build_server(
    settings: Settings,
    stop: Any | None = None,
    armed: Any | None = None,
) -> MnistServer:
    """One worker's app and server, configured; `run(sockets=...)` serves it.

    `stop`: an event set by a signal that came before the server's handlers existed
    (`main`'s, or the supervisor's). `armed`: an event this worker sets once it has
    its handlers; until then the supervisor does not signal it."""
    from service.app import create_app

    lifecycle = Lifecycle()
    shedder = LoadShedder(settings.max_concurrent_requests, settings.max_waiting_requests)
    app = create_app(settings, lifecycle=lifecycle)
    config = ServerConfig(
        app,
        settings=settings,
        lifecycle=lifecycle,
        shedder=shedder,
        metrics=app.metrics,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        log_config=None,
        # The kernel's accept queue holds a burst of new connections until the loop
        # accepts them; a shorter one drops SYNs, and clients wait a second to retry.
        backlog=settings.max_connections,
        # After our drain (which had `shutdown_grace_s`) only idle connections are left:
        # uvicorn closes them; tasks still running then are cancelled. Keeps SIGKILL away.
        timeout_graceful_shutdown=UVICORN_SHUTDOWN_S,
        timeout_keep_alive=5,
        # No WebSocket endpoints: an `Upgrade: websocket` request is an ordinary request
        # (a 404 or 405). Handed to uvicorn's WebSocket protocol instead, it never gave
        # back the slot it was admitted with, and 64 of them locked the worker out.
        ws="none",
    )
    return MnistServer(
        config,
        lifecycle=lifecycle,
        shedder=shedder,
        settings=settings,
        stop_requested=stop.is_set if stop is not None else None,
        handlers_ready=armed.set if armed is not None else None,
    )


def serve_worker(
    settings: Settings,
    sockets: list[socket.socket],
    stop: Any | None = None,
    armed: Any | None = None,
) -> None:
    """One worker process: serve `build_server`'s server on `sockets` until a signal
    drains it. Exits 0 after a clean drain, 1 when in-flight work outlasted the grace
    period."""
    from service.logs import configure_logging

    configure_logging(settings.log_level)
    server = build_server(settings, stop, armed)
    server.run(sockets=sockets)
    if not server.clean:
        raise SystemExit(1)
