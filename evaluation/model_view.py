"""Check `/v1/preprocess` on the real handwriting set: its PNG, posted back to
`/v1/predict`, must give the same digit as the original file.

    python -m evaluation.model_view [--set data/real] [--model-repository models]

Runs the real app in process (its lifespan, model and batcher; no server, no
network). Prints the counts and every image whose digit changed; exits 1 if any
did, or if the two endpoints refused an image differently. The synthetic upload
kinds are checked by `tests/service/test_model_view.py`; the real set is not
redistributed (`python -m evaluation.realset build`), so this is a command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from evaluation.realset.dataset import DEFAULT_FOLDER, load_real_set
from service.app import create_app
from service.config import Settings

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.model_view", description=__doc__)
    parser.add_argument("--set", type=Path, default=DEFAULT_FOLDER, help="a built real set")
    parser.add_argument("--model-repository", type=Path, default=REPO / "models")
    args = parser.parse_args(argv)

    digits = load_real_set(args.set)
    settings = Settings(model_repository=args.model_repository, access_log=False)
    same, changed, refused, mismatched = 0, [], 0, []
    with TestClient(create_app(settings)) as client:
        for digit in digits:
            upload = {"file": (digit.path.name, digit.read_bytes())}
            original = client.post("/v1/predict", files=upload)
            view = client.post("/v1/preprocess", files=upload)
            if original.status_code != 200 or view.status_code != 200:
                refused += 1
                if original.status_code != view.status_code:
                    mismatched.append(f"{digit.id}: {original.status_code} vs {view.status_code}")
                continue
            again = client.post("/v1/predict", files={"file": ("seen.png", view.content)})
            before, after = original.json()["digit"], again.json()["digit"]
            if before == after:
                same += 1
            else:
                changed.append(f"{digit.id}: {before} -> {after}")
    print(
        f"{len(digits)} real images: {same} give the same digit from their model view, "
        f"{len(changed)} a different one; {refused} refused by /v1/predict "
        f"({len(mismatched)} refused differently by /v1/preprocess)"
    )
    for line in changed + mismatched:
        print(f"  {line}")
    return 1 if changed or mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
