"""training.model and the export-time folds (BN and pixel scaling into Linear layers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.export import fold_mlp, serving_module
from training.model import MLP, Ensemble, ModelConfig, ServingGraph


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "tanh", "sigmoid"])
@pytest.mark.parametrize("batchnorm", [True, False])
def test_config_builds_the_described_network(activation: str, batchnorm: bool) -> None:
    config = ModelConfig(hidden=(32, 16), activation=activation, dropout=0.1, batchnorm=batchnorm)  # type: ignore[arg-type]
    net = MLP(config).eval()
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 16), (16, 10)]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in net.modules()) == (2 if batchnorm else 0)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 2


def test_unknown_activation_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown activation"):
        MLP(ModelConfig(activation="swish"))  # type: ignore[arg-type]


def _trained_looking(config: ModelConfig, seed: int = 0) -> MLP:
    """An MLP whose BN running stats are not the defaults, so folding has work to do."""
    torch.manual_seed(seed)
    net = MLP(config)
    net.train()
    with torch.no_grad():
        for _ in range(5):
            net(torch.rand(64, 784) * 0.7)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.mark.parametrize("batchnorm", [True, False])
def test_folded_network_takes_raw_pixels_and_matches(batchnorm: bool) -> None:
    net = _trained_looking(ModelConfig(hidden=(64, 32), batchnorm=batchnorm))
    raw = torch.randint(0, 256, (100, 784)).float()
    folded = fold_mlp(net)
    assert not any(isinstance(m, nn.BatchNorm1d | nn.Dropout) for m in folded.modules())
    torch.testing.assert_close(folded(raw), net(raw / 255.0), atol=1e-4, rtol=1e-4)


def test_ensemble_graph_averages_member_logits() -> None:
    members = [_trained_looking(ModelConfig(hidden=(32,)), seed=s) for s in range(3)]
    ensemble = Ensemble(list(members)).eval()
    raw = torch.randint(0, 256, (20, 784)).float()
    expected = torch.stack([m(raw / 255.0) for m in members]).mean(0)
    probs, logits = serving_module(ensemble)(raw)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(probs.sum(1), torch.ones(20))
    ref_probs, _ = ServingGraph(ensemble)(raw)
    torch.testing.assert_close(probs, ref_probs, atol=1e-5, rtol=1e-4)
