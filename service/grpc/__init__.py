"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), beside HTTP.

`protocol/` holds the .proto and its generated stubs; `codec` converts
messages to the protocol-neutral requests of `service.api.tensors`;
`servicer` answers the calls; `health` is `grpc.health.v1`; `server` starts
and stops it in the app lifespan.
"""
