"""The committed gRPC message module is exactly what grpcio-tools makes from the .proto."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from grpc_tools import protoc

from service.grpc.protocol import PROTO

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi")


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    (tmp_path / PROTO).parent.mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    code = protoc.main(
        ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         str(tmp_path / PROTO)]
    )  # fmt: skip
    assert code == 0
    folder = Path(PROTO).parent
    for name in GENERATED:
        fresh = (tmp_path / folder / name).read_text()
        committed = (ROOT / folder / name).read_text()
        if fresh != committed:
            pytest.fail(
                f"{folder / name} is stale: regenerate it (service/grpc/protocol/__init__.py)"
            )
