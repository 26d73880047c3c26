"""Where the model repository is when none is given: `./models`, else the packaged one.

`pip install .` puts the served model file and its card inside the package
(`service/model_repository/<name>/<version>/`, copied there by `setup.py` at
build time), so `mnist-serve` works from any directory. A source checkout has
no such folder; there the checkout's own `models/` is the packaged repository.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGED_FOLDER = "model_repository"
CHECKOUT_MODELS = Path(__file__).resolve().parents[1] / "models"


def packaged_repository() -> Path:
    """The model repository installed with the package (or the checkout's models/)."""
    installed = Path(str(resources.files("service").joinpath(PACKAGED_FOLDER)))
    return installed if installed.is_dir() else CHECKOUT_MODELS


def default_model_repository() -> Path:
    """`./models` when the current directory has one, else the packaged repository."""
    local = Path("models")
    return local if local.is_dir() else packaged_repository()


FIX = (
    "pass --model-repository DIR or set MNIST_MODEL_REPOSITORY=DIR "
    "(a folder holding <model-name>/<version>/model.json)"
)


def repository_problem(repository: Path, name: str) -> str | None:
    """Why `repository` cannot serve model `name` (naming the flag and variable that fix
    it), or None when it holds at least one version of it."""
    root = repository.resolve()
    if not root.exists():
        return f"the model repository {root} does not exist; {FIX}"
    if not root.is_dir():
        return f"the model repository {root} is not a folder; {FIX}"
    model_dir = root / name
    versions = [
        child
        for child in (model_dir.iterdir() if model_dir.is_dir() else ())
        if child.name.isdigit() and (child / "model.json").is_file()
    ]
    if versions:
        return None
    others = sorted(child.name for child in root.iterdir() if child.is_dir() and child.name != name)
    hint = (
        f"; it has {', '.join(others)}: choose one with --model-name / MNIST_MODEL_NAME"
        if others
        else ""
    )
    return (
        f"the model repository {root} holds no versions of model '{name}' "
        f"(no {model_dir}/<version>/model.json){hint}; {FIX}"
    )
