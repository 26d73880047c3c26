"""The real-world evaluation set: handwritten digits that people photographed,
scanned or drew, taken from public repositories (never MNIST or other datasets).

Only our metadata is committed (`provenance.csv`: repository, commit, path, crop,
label checked by eye, style, sha256, licence); the images are rebuilt from
repository snapshots into the git-ignored `data/real/`. See README.md here.

    python -m evaluation.realset build      # snapshots -> data/real/
    python -m evaluation.realset evaluate --model models/mnist-mlp/1

Modules, one concept each: `provenance` (the table), `build` (snapshots ->
files), `dataset` (a built folder and its loader), `scoring` (asking a model),
`report` (accuracy tables).
"""

from evaluation.realset.dataset import RealDigit, RealSetMissing, load_real_set
from evaluation.realset.provenance import STYLES, ProvenanceRow, read_provenance

__all__ = [
    "STYLES",
    "ProvenanceRow",
    "RealDigit",
    "RealSetMissing",
    "load_real_set",
    "read_provenance",
]
