"""gRPC inference messages <-> the protocol-neutral request of `service.api.tensors`.

`ModelInfer` carries an input's values either typed (`contents`: `fp32_contents`,
`uint_contents`, `bytes_contents`) or raw (`raw_input_contents`, one entry per
input, which tritonclient.grpc sends by default). Both become the same
`InputTensor` the HTTP routes build, so validation, batching and prediction
are shared. The answer is raw (`raw_output_contents`) when the request was,
typed otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.api.tensors import (
    DIGIT,
    OUTPUT_TYPES,
    PROBABILITIES,
    InferenceRequest,
    InputTensor,
    RequestedOutput,
    check_outputs,
    input_specs,
    output_arrays,
    output_specs,
    raw_bytes,
)
from service.errors import BadRequest
from service.grpc.protocol import grpc_predict_v2_pb2 as pb
from service.model_card import ModelCard
from service.predictor import Predictions


def _parameter(value: pb.InferParameter) -> Any:
    choice = value.WhichOneof("parameter_choice")
    return getattr(value, choice) if choice else None


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> InputTensor:
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    contents = tensor.contents
    if datatype == "BYTES":
        return InputTensor(name, datatype, shape, elements=list(contents.bytes_contents))
    if datatype == "FP32":
        values = contents.fp32_contents
        array = np.fromiter(values, dtype=np.float32, count=len(values))
    elif datatype == "UINT8":
        wide = np.fromiter(contents.uint_contents, np.uint32, count=len(contents.uint_contents))
        if wide.size and wide.max() > 255:
            raise BadRequest(f"input '{name}' is UINT8: values must be 0..255")
        array = wide.astype(np.uint8)
    else:  # refused by the datatype check, which names what to send
        array = np.empty(0, dtype=np.float32)
    return InputTensor(name, datatype, shape, array=array)


def inference_request(request: pb.ModelInferRequest) -> InferenceRequest:
    """A `ModelInferRequest` -> `InferenceRequest`, or a `BadRequest` naming the problem."""
    inputs = request.inputs
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs; "
            "send one per input, in order"
        )
    if len(inputs) != 1:
        raise BadRequest(f"send exactly one input tensor, one of {['pixels', 'image_u8', 'image']}")
    (tensor,) = inputs
    if raw:
        if tensor.HasField("contents"):
            raise BadRequest(f"input '{tensor.name}' has both contents and raw_input_contents")
        value = InputTensor(tensor.name, tensor.datatype, list(tensor.shape), raw=raw[0])
    else:
        value = _typed_values(tensor)
    names = [output.name for output in request.outputs] or list(OUTPUT_TYPES)
    for output in request.outputs:
        if "classification" in output.parameters:
            raise BadRequest(
                f"output '{output.name}': the classification extension is not supported; "
                "ask for the 'digit' and 'probabilities' outputs instead"
            )
    check_outputs(names)
    parameters = {key: _parameter(item) for key, item in request.parameters.items()}
    timeout = parameters.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0
    ):
        raise BadRequest("request parameter 'timeout' must be a positive number of microseconds")
    return InferenceRequest(
        input=value,
        outputs=[RequestedOutput(name, binary=bool(raw)) for name in names],
        id=request.id or None,
        timeout_s=timeout / 1e6 if timeout else None,
        parameters=parameters,
    )


def infer_response(
    inference: InferenceRequest, result: Predictions, model_name: str, version: str
) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=version, id=inference.id or ""
    )
    raw = any(output.binary for output in inference.outputs)
    arrays = output_arrays([output.name for output in inference.outputs], result)
    for name, datatype, array in arrays:
        tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
        if raw:
            response.raw_output_contents.append(raw_bytes(array, datatype))
        elif name == PROBABILITIES:
            tensor.contents.fp32_contents.extend(array.reshape(-1).tolist())
        elif name == DIGIT:
            tensor.contents.int64_contents.extend(array.reshape(-1).tolist())
    return response


def model_metadata(
    card: ModelCard, model_name: str, versions: list[str]
) -> pb.ModelMetadataResponse:
    """The same inputs and outputs as the HTTP metadata (gRPC's has no parameters field:
    the pixel scale, 0..255, is in the HTTP metadata and the README)."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=model_name,
        versions=versions,
        platform="onnxruntime_onnx",
        inputs=[
            tensor(name=name, datatype=spec["datatype"], shape=spec["shape"])
            for name, spec in input_specs(card).items()
        ],
        outputs=[
            tensor(name=name, datatype=spec["datatype"], shape=spec["shape"])
            for name, spec in output_specs(card).items()
        ],
    )
