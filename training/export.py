"""Export a trained MLP (or ensemble) to ONNX, check it, and write the model card.

    python -m training --data-dir ../shared/data/mnist --out models/mnist-mlp/1

runs this at the end of training; from Python::

    onnx_path = export_onnx(model, version_dir / "model.onnx")
    max_diff = check_parity(model, onnx_path, sample_pixels)   # raises above 1e-4

The graph is the serving contract: input `pixels` FP32 [batch, 784] raw 0..255
(white digit on black), outputs `probabilities` (softmax) and `logits`, both
FP32 [batch, 10]; the softmax divides the logits by the calibration temperature
fitted on validation data (1.0 when none). Before export, eval-mode BatchNorm is folded into the
preceding Linear and the /255 + mean/std standardisation into the first Linear,
so the graph is a plain Gemm/activation chain: exact same math, fewer ops.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from training.model import MLP, MNIST_MEAN, MNIST_STD, Ensemble, ServingGraph

INPUT_NAME = "pixels"
OUTPUT_NAMES = ("probabilities", "logits")
PARITY_TOLERANCE = 1e-4
OPSET = 18


def fold_mlp(mlp: MLP) -> nn.Sequential:
    """An inference-only copy of `mlp` taking RAW 0..255 pixels, with BN and scaling folded."""
    layers: list[nn.Module] = []
    pending: nn.Linear | None = None
    for layer in mlp.layers:
        if isinstance(layer, nn.Linear):
            pending = copy.deepcopy(layer)
            if pending.bias is None:
                pending.bias = nn.Parameter(torch.zeros(pending.out_features))
            layers.append(pending)
        elif isinstance(layer, nn.BatchNorm1d):
            assert pending is not None and pending.bias is not None
            var = layer.running_var
            mean = layer.running_mean
            assert var is not None and mean is not None
            scale = layer.weight / torch.sqrt(var + layer.eps)
            with torch.no_grad():
                pending.weight.mul_(scale.unsqueeze(1))
                pending.bias.copy_((pending.bias - mean) * scale + layer.bias)
        elif isinstance(layer, nn.Dropout):
            continue  # identity at inference
        else:
            layers.append(copy.deepcopy(layer))
    first = layers[0]
    assert isinstance(first, nn.Linear) and first.bias is not None
    # x01 = raw / 255, z = (x01 - mean) / std, so
    # W z + b = (W / (255 std)) raw + (b - W 1 mean / std)
    with torch.no_grad():
        first.bias.sub_(first.weight.sum(dim=1) * (MNIST_MEAN / MNIST_STD))
        first.weight.div_(255.0 * MNIST_STD)
    return nn.Sequential(*layers).eval()


class RawEnsemble(nn.Module):
    """Mean logits of folded members (each takes raw pixels)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor = self.members[0](pixels)
        for member in self.members[1:]:
            total = total + member(pixels)
        return total * (1.0 / len(self.members))


class RawServingGraph(nn.Module):
    """Raw pixels -> (softmax(logits / temperature), logits): calibration lives in the graph."""

    def __init__(self, net: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.inverse_temperature = 1.0 / temperature

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(pixels)
        return torch.softmax(logits * self.inverse_temperature, dim=-1), logits


def serving_module(model: nn.Module, temperature: float = 1.0) -> nn.Module:
    """The folded module that is exported (raw pixels in, (probabilities, logits) out)."""
    if isinstance(model, MLP):
        return RawServingGraph(fold_mlp(model), temperature).eval()
    if isinstance(model, Ensemble):
        members = [fold_mlp(m) for m in model.members if isinstance(m, MLP)]
        if len(members) != len(model.members):
            raise TypeError("ensemble members must be MLPs")
        return RawServingGraph(RawEnsemble(members), temperature).eval()
    raise TypeError(f"cannot export {type(model).__name__}")


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Silence a chatty library logger (export/quantize narrate at WARNING level) for a block."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def export_onnx(model: nn.Module, path: Path, temperature: float = 1.0) -> Path:
    """Write the serving graph of `model` to `path` and validate it with onnx.checker.

    `temperature` (fitted on validation data, see `training.calibrate`) divides the
    logits inside the graph's softmax; the `logits` output stays unscaled.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    module = serving_module(model, temperature)
    example = torch.zeros(2, 784)
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), _quiet("torch.onnx"):
        # The exporter narrates its progress through warnings and logs ("torchvision is
        # not installed"); none of it affects the graph, which onnx.checker then validates.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"pixels": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return path


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(
    path: Path, pixels: np.ndarray, batch: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits) of raw 0..255 pixels (N, 784) or (N, 28, 28) through ORT."""
    sess = session(path, threads=2)
    flat = pixels.reshape(len(pixels), 784).astype(np.float32)
    probs, logits = [], []
    for i in range(0, len(flat), batch):
        p, lg = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: flat[i : i + batch]})
        probs.append(p)
        logits.append(lg)
    return np.concatenate(probs), np.concatenate(logits)


@torch.no_grad()
def check_parity(
    model: nn.Module, path: Path, pixels: np.ndarray, temperature: float = 1.0
) -> float:
    """Max |ORT - torch| over probabilities and logits; raises above PARITY_TOLERANCE.

    The reference is the UNFOLDED torch model fed pixels/255, so the check also
    covers the BN and scaling folds.
    """
    model.eval()
    raw = torch.from_numpy(pixels.reshape(len(pixels), 784).astype(np.float32))
    probs_t, logits_t = ServingGraph(model, temperature)(raw)
    probs_o, logits_o = onnx_predict(path, pixels)
    diff = max(
        float(np.abs(probs_o - probs_t.numpy()).max()),
        float(np.abs(logits_o - logits_t.numpy()).max()),
    )
    if diff > PARITY_TOLERANCE:
        raise AssertionError(
            f"ONNX/torch parity failed: max abs diff {diff:.2e} > {PARITY_TOLERANCE}"
        )
    return diff


def quantize_int8(fp32_path: Path, int8_path: Path) -> Path:
    """Dynamic int8 quantization (weights int8, activations quantized per batch at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # "Please consider to run pre-processing" is logged on the root logger: advice, not error.
    with warnings.catch_warnings(), _quiet(""):
        warnings.simplefilter("ignore")
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    onnx.checker.check_model(onnx.load(str(int8_path)), full_check=True)
    return int8_path
