"""The MLP, built from a typed config, and the wrappers that shape it for export.

    from training.model import ModelConfig, MLP
    net = MLP(ModelConfig(hidden=(1024, 1024), activation="relu", dropout=0.2))
    logits = net(images_0_to_1.view(-1, 784))

`MLP` takes pixels scaled to 0..1 (white digit on black, MNIST convention) and
standardises them itself, so the only scaling an exported graph adds is /255.
`Ensemble` averages the logits of several MLPs so a committee is still one graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "leaky_relu", "gelu", "tanh", "sigmoid"]

# Mean/std of MNIST training pixels on the 0..1 scale.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
N_PIXELS = 28 * 28
N_CLASSES = 10


@dataclass
class ModelConfig:
    hidden: tuple[int, ...] = (1024, 1024)
    activation: Activation = "relu"
    dropout: float = 0.2  # after each hidden activation
    input_dropout: float = 0.0  # on pixels; a cheap extra regulariser for wide nets
    batchnorm: bool = True  # Linear -> BN -> act; folded away by ONNX constant folding


def make_activation(name: Activation) -> nn.Module:
    activations: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
    }
    if name not in activations:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(activations)}")
    return activations[name]()


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        if config.input_dropout > 0:
            layers.append(nn.Dropout(config.input_dropout))
        width = N_PIXELS
        for size in config.hidden:
            # A bias before BN is redundant (BN's shift replaces it).
            layers.append(nn.Linear(width, size, bias=not config.batchnorm))
            if config.batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(make_activation(config.activation))
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = size
        layers.append(nn.Linear(width, N_CLASSES))
        self.layers = nn.Sequential(*layers)

    def forward(self, pixels01: torch.Tensor) -> torch.Tensor:
        """Logits (B, 10) from pixels (B, 784) or (B, 1, 28, 28) in 0..1."""
        x = (pixels01.reshape(-1, N_PIXELS) - MNIST_MEAN) / MNIST_STD
        out: torch.Tensor = self.layers(x)
        return out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Ensemble(nn.Module):
    """Average of member logits: one graph, one ORT call, however many members."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, pixels01: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(pixels01) for m in self.members])
        return logits.mean(dim=0)


class ServingGraph(nn.Module):
    """What ships: raw 0..255 pixels (B, 784) in, (probabilities, logits) out."""

    def __init__(self, net: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.temperature = temperature

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(pixels * (1.0 / 255.0))
        return torch.softmax(logits / self.temperature, dim=-1), logits
