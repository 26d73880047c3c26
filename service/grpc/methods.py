"""The service's six methods by name, with their message types: how the server
registers `inference.GRPCInferenceService` and how a Python caller gets a stub.

Written here rather than generated (`--grpc_python_out`) because the messages
live in their own protobuf package (see `protocol/grpc_predict_v2.proto`),
while the service must keep the protocol's name on the wire.
"""

from __future__ import annotations

from typing import Any

import grpc

from service.grpc.protocol import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
METHODS: dict[str, tuple[Any, Any]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
}


def add_to_server(servicer: object, server: grpc.aio.Server) -> None:
    """Serve `servicer`'s methods (named as in METHODS) as inference.GRPCInferenceService."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
        for name, (request, response) in METHODS.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


class InferenceStub:
    """A client stub: `InferenceStub(channel).ModelInfer(request, timeout=...)`, and the
    other methods likewise (sync or `grpc.aio` channel)."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        for name, (request, response) in METHODS.items():
            setattr(
                self,
                name,
                channel.unary_unary(
                    f"/{SERVICE}/{name}",
                    request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString,
                ),
            )

    def __getattr__(self, name: str) -> Any:  # for type checkers: methods set above
        raise AttributeError(name)
