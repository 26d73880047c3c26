"""Load a model from the repository, check it against its card, and run it.

Knows nothing of batching or HTTP: `OnnxModel.predict` takes a float32 array of
shape (rows, 784) and returns probabilities (rows, 10). onnxruntime's `run` is
thread-safe, so the batcher calls it from a worker thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import SAFE_NAME
from service.errors import ModelLoadError
from service.model_card import ModelCard, read_card, sha256_of
from service.versions import VersionPolicy, version_folders

PIXELS = 28 * 28
NUM_CLASSES = 10
PROBABILITIES_OUTPUT = "probabilities"
BASE_VARIANT = "base"  # names the card's main `file`, overriding its serving_variant


def list_versions(repository: Path, name: str) -> list[int]:
    """Integer versions of `name` that have a card, oldest first."""
    return sorted(version_folders(repository, name))


def resolve_version_dir(repository: Path, name: str, version: int | None) -> Path:
    """The folder of one model version, guaranteed to lie inside the repository."""
    if not SAFE_NAME.fullmatch(name):
        raise ModelLoadError(f"model name {name!r} is not a plain name")
    root = repository.resolve()
    if version is None:
        versions = list_versions(root, name)
        if not versions:
            raise ModelLoadError(f"no versions of model {name!r} found under {root}/{name}/")
        version = versions[-1]
    version_dir = (root / name / str(version)).resolve()
    if not version_dir.is_relative_to(root):
        raise ModelLoadError(f"model path {version_dir} escapes the repository {root}")
    if not (version_dir / "model.json").is_file():
        raise ModelLoadError(f"model card missing: {version_dir / 'model.json'}")
    return version_dir


def selected_folders(repository: Path, name: str, policy: VersionPolicy) -> dict[int, Path]:
    """The folder of every version the policy picks among those present (none: an error)."""
    resolve_version_dir(repository, name, None)  # a plain name with at least one version
    present = list_versions(repository.resolve(), name)
    chosen = policy.select(present)
    if not chosen:
        listed = ", ".join(map(str, present))
        raise ModelLoadError(
            f"no version of model {name!r} matches the version policy {policy} (present: {listed})"
        )
    return {version: resolve_version_dir(repository, name, version) for version in chosen}


@dataclass(frozen=True)
class LoadedModelInfo:
    name: str
    version: int
    variant: str
    sha256: str
    path: Path
    card: ModelCard
    load_seconds: float


@dataclass(frozen=True)
class VerifiedFiles:
    card: ModelCard
    path: Path  # the ONNX file to load
    variant: str
    sha256: str


def read_checked_card(version_dir: Path) -> ModelCard:
    """The card of a version folder; it must name the folder's model and version, or
    answers would be labelled with a version that is not the one served."""
    try:
        card = read_card(version_dir)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"unreadable model card {version_dir / 'model.json'}: {error}"
        ) from error
    if version_dir.name.isdigit() and card.version != int(version_dir.name):
        raise ModelLoadError(
            f"{version_dir / 'model.json'} says version {card.version} but lies in folder "
            f"{version_dir.name}: a copied folder needs its card's version updated"
        )
    if version_dir.name.isdigit() and card.name != version_dir.parent.name:
        raise ModelLoadError(
            f"{version_dir / 'model.json'} names model {card.name!r}, "
            f"not {version_dir.parent.name!r}"
        )
    return card


def served_file(card: ModelCard, version_dir: Path, variant: str | None) -> tuple[Path, str, str]:
    """(file, its sha256 per the card, variant name) to serve: `variant`, else the card's
    serving_variant; cheap (no file is read)."""
    file_name, expected_sha = card.file, card.sha256
    if variant is None:
        variant = card.serving_variant
    elif variant == BASE_VARIANT:
        variant = None
    if variant is not None:
        if variant not in card.variants:
            known = ", ".join(sorted(card.variants)) or "none"
            raise ModelLoadError(
                f"variant {variant!r} not in {version_dir}/model.json (has: {known})"
            )
        file_name, expected_sha = card.variants[variant].file, card.variants[variant].sha256
    return version_dir / file_name, expected_sha, variant or BASE_VARIANT


def verify_model_files(version_dir: Path, variant: str | None = None) -> VerifiedFiles:
    """Read the card, pick the file (`variant`, else the card's serving_variant) and
    check its sha256 against the card: cheap enough for a fail-fast check at start."""
    card = read_checked_card(version_dir)
    path, expected_sha, variant_name = served_file(card, version_dir, variant)
    if not path.is_file():
        raise ModelLoadError(f"model file missing: {path}")
    actual_sha = sha256_of(path)
    if actual_sha != expected_sha:
        raise ModelLoadError(
            f"model file {path} does not match its card: sha256 {actual_sha[:12]}… "
            f"!= {expected_sha[:12]}… (corrupt or replaced file)"
        )
    return VerifiedFiles(card, path, variant_name, actual_sha)


def build_session(
    path: Path, *, intra_op_threads: int = 1, inter_op_threads: int = 1
) -> ort.InferenceSession:
    """The one way this project builds an onnxruntime session (service, training, benchmarks).

    Thread counts are deliberate: ORT's default (all cores, spinning) fights the
    event loop and other workers for the same cores; over-threading made ORT 2-3x
    slower inside Triton. Spinning is off so an idle worker costs no CPU.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """One onnxruntime session plus the card it was checked against."""

    def __init__(
        self,
        version_dir: Path,
        *,
        variant: str | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        started = time.perf_counter()
        files = verify_model_files(version_dir, variant)
        card, path = files.card, files.path

        try:
            self.session = build_session(
                path, intra_op_threads=intra_op_threads, inter_op_threads=inter_op_threads
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"onnxruntime cannot load {path}: {error}") from error

        self._check_signature(path, card)
        self.input_name = card.inputs[0].name
        self.info = LoadedModelInfo(
            name=card.name,
            version=card.version,
            variant=files.variant,
            sha256=files.sha256,
            path=path,
            card=card,
            load_seconds=time.perf_counter() - started,
        )

    def _check_signature(self, path: Path, card: ModelCard) -> None:
        graph_inputs = {i.name: i for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        if len(card.inputs) != 1 or card.inputs[0].name not in graph_inputs:
            raise ModelLoadError(
                f"{path}: card inputs {[i.name for i in card.inputs]} != graph {list(graph_inputs)}"
            )
        graph_input = graph_inputs[card.inputs[0].name]
        if graph_input.type != "tensor(float)" or list(graph_input.shape[1:]) != [PIXELS]:
            raise ModelLoadError(
                f"{path}: input must be float32 [batch, {PIXELS}], graph has "
                f"{graph_input.type} {graph_input.shape}"
            )
        missing = {o.name for o in card.outputs} - graph_outputs
        if missing or PROBABILITIES_OUTPUT not in graph_outputs:
            raise ModelLoadError(
                f"{path}: outputs {sorted(missing or {PROBABILITIES_OUTPUT})} missing"
            )
        if len(card.classes) != NUM_CLASSES:
            raise ModelLoadError(f"{path}: card lists {len(card.classes)} classes, expected 10")

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """(rows, 784) float32 raw intensities -> (rows, 10) float32 probabilities."""
        (probabilities,) = self.session.run([PROBABILITIES_OUTPUT], {self.input_name: pixels})
        return np.asarray(probabilities, dtype=np.float32)

    def warm_up(self, max_batch_size: int) -> None:
        """Run once at the sizes the batcher will use, so the first user is not slow."""
        for rows in {1, max_batch_size}:
            result = self.predict(np.zeros((rows, PIXELS), dtype=np.float32))
            if result.shape != (rows, NUM_CLASSES) or not np.all(np.isfinite(result)):
                raise ModelLoadError(f"warm-up inference returned {result.shape}, not ({rows}, 10)")
