"""Build hook: put the served model into the package, so `pip install .` carries it.

Everything else about the package is declared in pyproject.toml. For each model
in `models/`, the newest version's card (`model.json`) and the one ONNX file the
card serves (its `serving_variant`, else its `file`) are copied to
`service/model_repository/<name>/<version>/` in the build; the other variant
files and the training reports stay out (the fp32 file is 4x the int8 one).
`service.packaged` finds them there when no repository is given.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODELS = Path(__file__).resolve().parent / "models"
TARGET = Path("service") / "model_repository"


def served_files(models: Path) -> list[Path]:
    """The newest version's card and served ONNX file, per model."""
    files: list[Path] = []
    for model_dir in sorted(p for p in models.iterdir() if p.is_dir()):
        versions = sorted(
            (int(p.name), p)
            for p in model_dir.iterdir()
            if p.name.isdigit() and (p / "model.json").is_file()
        )
        if not versions:
            continue
        version_dir = versions[-1][1]
        card = json.loads((version_dir / "model.json").read_text())
        variant = card.get("serving_variant")
        onnx = card["variants"][variant]["file"] if variant else card["file"]
        files += [version_dir / "model.json", version_dir / onnx]
    return files


class BuildWithModel(build_py):
    def run(self) -> None:
        super().run()
        if not MODELS.is_dir():  # e.g. a dependency-only build in the Dockerfile
            self.warn("no models/ folder: the package carries no model")
            return
        files = served_files(MODELS)
        if not files:
            raise SystemExit(f"no model version with a model.json under {MODELS}")
        for source in files:
            target = Path(self.build_lib) / TARGET / source.relative_to(MODELS)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


setup(cmdclass={"build_py": BuildWithModel})
