"""The Open Inference Protocol's gRPC messages, generated from `grpc_predict_v2.proto`
(see NOTICE) and committed, so serving needs no build step and no grpcio-tools.
After editing the .proto, regenerate from the repository root:

    python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. \\
        service/grpc/protocol/grpc_predict_v2.proto

`tests/service/test_grpc_stubs.py` checks that the committed files match that output.
"""

PROTO = "service/grpc/protocol/grpc_predict_v2.proto"
