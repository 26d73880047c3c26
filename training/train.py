"""The training loop: one readable function from arrays and a TrainConfig to a model.

Run it through the CLI (see `python -m training --help`)::

    python -m training --data-dir ../shared/data/mnist --out models/mnist-mlp/1

or from Python::

    result = train(TrainConfig(epochs=5), train_images, train_labels, val_images, val_labels)

Each epoch: shuffle, augment each mini-batch on the fly, step the optimizer and
the LR schedule per batch, optionally update an EMA of the weights, then score
the validation split. Early stopping watches validation loss and the best
weights are restored at the end. Checkpoints carry their config.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch idiom)
from torch import nn
from tqdm import tqdm

from training.augment import AugmentConfig, augment
from training.model import MLP, ModelConfig
from training.strokes import StyleConfig, writer_styles


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None: off
    # European 1s, crossed 7s, open 4s drawn into MNIST digits (None: off)
    styles: StyleConfig | None = field(default_factory=StyleConfig)
    epochs: int = 30
    batch_size: int = 128
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 2e-3  # peak learning rate
    momentum: float = 0.9  # SGD momentum (AdamW uses its default betas)
    weight_decay: float = 1e-4  # L2 (decoupled for AdamW); not applied to biases/BN
    l1: float = 0.0  # optional L1 penalty on weight matrices
    label_smoothing: float = 0.0
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = 0.1  # fraction of steps spent warming up (onecycle and cosine)
    ema_decay: float = 0.0  # 0: off; else evaluate/export an EMA of the weights
    patience: int = 0  # early stopping after this many epochs without val-loss gain; 0: off
    seed: int = 0
    threads: int = 2
    # Wall-clock cap in seconds (None: off). The schedule then advances by
    # max(step fraction, time fraction), so on a machine too busy to finish
    # `epochs` in time the LR still anneals fully and the run ends on budget;
    # on a fast enough machine it changes nothing (and runs stay reproducible).
    time_budget: float | None = None
    # Last fraction of the run trained on half-strength augmentation: the heavy
    # distortions give robustness early, the tail re-centres on realistic digits.
    mild_tail: float = 0.0


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    model: nn.Module  # best weights restored, eval mode
    config: TrainConfig
    history: list[EpochLog]
    best_epoch: int
    seconds: float
    command: str = ""  # the command line that trained it (kept in the checkpoint)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in 0..1."""
    # A copy: arrays from load_mnist are read-only views of the file buffer.
    return torch.from_numpy(np.array(images, dtype=np.uint8)).float().div_(255.0).unsqueeze(1)


def lr_factor(config: TrainConfig, progress: float) -> float:
    """Multiplier on the peak LR at `progress` (0..1) of the run: linear warmup, cosine decay."""
    if config.schedule == "constant":
        return 1.0
    if progress < config.warmup:
        # one-cycle starts at lr/25 like torch's OneCycleLR; cosine starts near 0.
        start = 0.04 if config.schedule == "onecycle" else 0.0
        return start + (1.0 - start) * progress / config.warmup
    decay = min(1.0, (progress - config.warmup) / max(1e-9, 1.0 - config.warmup))
    floor = 1e-4 if config.schedule == "onecycle" else 0.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * decay))


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay only on weight matrices: decaying BN scales and biases just hurts.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 2000
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` in eval mode."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(labels), batch):
        logits = model(images[i : i + batch])
        y = labels[i : i + batch]
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    return loss_sum / len(labels), correct / len(labels)


def train(
    config: TrainConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> TrainResult:
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    gen = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()

    x_train, y_train = to_tensor(train_images), torch.from_numpy(train_labels.astype(np.int64))
    x_val, y_val = to_tensor(val_images), torch.from_numpy(val_labels.astype(np.int64))

    model = MLP(config.model)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    ema: torch.optim.swa_utils.AveragedModel | None = None
    if config.ema_decay > 0:
        # use_buffers=True averages BN running stats too, so the EMA model is usable as is.
        ema = torch.optim.swa_utils.AveragedModel(
            model,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(  # type: ignore[no-untyped-call]
                config.ema_decay
            ),
            use_buffers=True,
        )
    scored: nn.Module = ema.module if ema is not None else model
    log(f"model: {config.model} ({sum(p.numel() for p in model.parameters()):,} parameters)")

    history: list[EpochLog] = []
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(scored.state_dict())
    step, progress_done = 0, 0.0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=False,
            unit="batch",
        )
        for i in bar:
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            if config.styles is not None:
                xb = writer_styles(xb, yb, config.styles, gen)
            if config.augment is not None:
                strength = 0.5 if progress_done >= 1.0 - config.mild_tail else 1.0
                xb = augment(xb, config.augment.milder(strength), gen)
            progress_done = step / total_steps
            if config.time_budget:
                spent = (time.perf_counter() - started) / config.time_budget
                progress_done = max(progress_done, spent)
            if progress_done >= 1.0:
                break  # time budget used up (the LR has reached its floor)
            lr = config.lr * lr_factor(config, progress_done)
            for group in optimizer.param_groups:
                group["lr"] = lr

            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
            if config.l1 > 0:
                weights = (p for p in model.parameters() if p.ndim >= 2)
                loss = loss + config.l1 * sum(p.abs().sum() for p in weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1

            loss_sum += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
            if i % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")

        if seen == 0:
            break
        val_loss, val_acc = evaluate_loss(scored, x_val, y_val)
        entry = EpochLog(
            epoch,
            loss_sum / seen,
            correct / seen,
            val_loss,
            val_acc,
            lr,
            time.perf_counter() - epoch_start,
        )
        history.append(entry)
        log(
            f"epoch {epoch:3d} | train loss {entry.train_loss:.4f} acc {entry.train_acc:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f} | lr {lr:.2e} | {entry.seconds:.1f}s"
        )
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(scored.state_dict())
        elif config.patience and epoch - best_epoch >= config.patience:
            log(f"early stop: no val-loss gain for {config.patience} epochs")
            break
        if progress_done >= 1.0:
            log(f"time budget of {config.time_budget:.0f}s used: stopped after epoch {epoch}")
            break

    scored.load_state_dict(best_state)
    scored.eval()
    log(f"best epoch {best_epoch} (val loss {best_loss:.4f}); restored its weights")
    return TrainResult(scored, config, history, best_epoch, time.perf_counter() - started)


def save_checkpoint(path: Path, result: TrainResult) -> None:
    """Weights plus everything needed to rebuild and judge them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "config": asdict(result.config),
            "model": result.model.state_dict(),
            "history": [asdict(h) for h in result.history],
            "best_epoch": result.best_epoch,
            "seconds": result.seconds,
            "command": result.command,
        },
        path,
    )


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    raw = dict(raw)
    model = ModelConfig(
        **{
            **raw.pop("model"),
        }
    )
    model.hidden = tuple(model.hidden)
    aug_raw = raw.pop("augment")
    aug = None
    if aug_raw is not None:
        aug_raw["blur_sigma"] = tuple(aug_raw["blur_sigma"])
        aug = AugmentConfig(**aug_raw)
    styles_raw = raw.pop("styles", None)
    styles = None if styles_raw is None else StyleConfig(**styles_raw)
    return TrainConfig(model=model, augment=aug, styles=styles, **raw)


def load_result(path: Path) -> TrainResult:
    """A saved run back as a TrainResult: weights, config, history, time and command."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model, config = load_checkpoint(path)
    history = [EpochLog(**entry) for entry in blob["history"]]
    return TrainResult(
        model, config, history, blob["best_epoch"], blob["seconds"], blob.get("command", "")
    )


def load_checkpoint(path: Path) -> tuple[MLP, TrainConfig]:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    config = config_from_dict(blob["config"])
    model = MLP(config.model)
    model.load_state_dict(blob["model"])
    return model.eval(), config
