"""Start and stop the gRPC server inside a worker's app lifespan, on its event loop.

`grpc.aio` runs on the worker's own asyncio loop, so its calls reach the SAME
registry, predictors and batchers as HTTP. With `--workers N` every worker
binds the gRPC port with SO_REUSEPORT (grpc's default on Linux; set
explicitly here) and the kernel spreads connections across them. Stopped at
lifespan shutdown, after the HTTP drain (which also waited for every counted
gRPC call), with a short grace for calls still finishing.
"""

from __future__ import annotations

import logging
import socket

import grpc
from grpc_health.v1 import health_pb2_grpc

from service.config import Settings
from service.grpc.health import LifecycleHealth
from service.grpc.methods import add_to_server
from service.grpc.servicer import InferenceServicer
from service.lifecycle import Lifecycle

log = logging.getLogger("service.grpc")


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_port_free(host: str, port: int) -> None:
    """Fail fast, before any worker starts, when another process holds the gRPC port.

    Bound here WITHOUT SO_REUSEPORT: the workers' own SO_REUSEPORT binds would
    otherwise silently share the port with another server started the same way."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(
                f"cannot serve gRPC on {host}:{port} ({error.strerror}); "
                "choose another --grpc-port (0 turns gRPC off)"
            ) from None


async def start_grpc(
    settings: Settings, servicer: InferenceServicer, lifecycle: Lifecycle
) -> grpc.aio.Server | None:
    """The started server, or None when `grpc_port` is 0. Raises OSError if the port
    cannot be bound."""
    if settings.grpc_port == 0:
        return None
    limit = settings.grpc_max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    add_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(LifecycleHealth(lifecycle), server)
    address = grpc_address(settings.grpc_host or "127.0.0.1", settings.grpc_port)
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:  # grpc says "Failed to bind to address ..."
        raise OSError(
            f"cannot serve gRPC on {address}: {error}; choose another --grpc-port"
        ) from None
    await server.start()
    log.info("grpc serving", extra={"address": address})
    return server


async def stop_grpc(server: grpc.aio.Server | None, grace_s: float) -> None:
    if server is not None:
        await server.stop(grace_s)
        log.info("grpc stopped")
