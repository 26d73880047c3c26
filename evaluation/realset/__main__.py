"""`python -m evaluation.realset build|evaluate|counts`: rebuild the real set from
repository snapshots, score a model or a running service on it, or count it.

    python -m evaluation.realset build [--mirror-dir /work/.mirror] [--out data/real]
    python -m evaluation.realset evaluate --model models/mnist-mlp/1 [--set data/real]
    python -m evaluation.realset evaluate --url http://127.0.0.1:8000 [--json out.json]
    python -m evaluation.realset counts
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from evaluation.realset.build import build_set
from evaluation.realset.dataset import DEFAULT_FOLDER, RealSetMissing, load_real_set
from evaluation.realset.provenance import TABLE, ProvenanceError, read_provenance
from service.errors import ModelLoadError

DEFAULT_MIRROR = Path("/work/.mirror")


def _build(args: argparse.Namespace) -> int:
    rows = read_provenance(args.table)
    report = build_set(rows, args.mirror_dir, args.out, progress=sys.stderr.isatty())
    print(f"built {len(report.built)}/{len(rows)} digits into {args.out}")
    if report.shrunk:
        print(f"shrunk to the build's MAX_SIDE: {', '.join(report.shrunk)}")
    if report.problems:
        print(f"could not rebuild {len(report.problems)}:", file=sys.stderr)
        for row, why in report.problems:
            print(f"  {row.id} {row.repository}:{row.path}: {why}", file=sys.stderr)
        return 1
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import httpx

    from evaluation.realset.report import format_report, summarise
    from evaluation.realset.scoring import in_process, over_http, score

    digits = load_real_set(args.set)
    if not digits:
        print(f"{args.set} holds no digits", file=sys.stderr)
        return 1
    progress = sys.stderr.isatty()
    if args.url:
        with httpx.Client(timeout=args.timeout) as client:
            results = score(digits, over_http(args.url, client), progress=progress)
        answered_by = f"{args.url.rstrip('/')}/v1/predict"
    else:
        results = score(digits, in_process(args.model), progress=progress)
        answered_by = f"{args.model} (in process)"
    summary = summarise(results, answered_by=answered_by)
    print(format_report(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


def _counts(args: argparse.Namespace) -> int:
    rows = read_provenance(args.table)
    print(f"{len(rows)} digits from {len({r.repository for r in rows})} repositories")
    for title, counter in (
        ("style", Counter(r.style for r in rows)),
        ("digit", Counter(str(r.label) for r in rows)),
        ("licence", Counter(r.licence for r in rows)),
    ):
        print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in sorted(counter.items())))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.realset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--table", type=Path, default=TABLE, help="provenance table (CSV)")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="rebuild the images from repository snapshots")
    build.add_argument(
        "--mirror-dir",
        type=Path,
        default=DEFAULT_MIRROR,
        help="folder holding <owner>+<name>/repo snapshots",
    )
    build.add_argument("--out", type=Path, default=DEFAULT_FOLDER, help="output folder")
    build.set_defaults(run=_build)

    evaluate = commands.add_parser("evaluate", help="score a model or a running service")
    target = evaluate.add_mutually_exclusive_group()
    target.add_argument("--url", help="base URL of a running service (POST /v1/predict)")
    target.add_argument(
        "--model",
        type=Path,
        default=Path("models/mnist-mlp/1"),
        help="model version folder, run in process (default)",
    )
    evaluate.add_argument("--set", type=Path, default=DEFAULT_FOLDER, help="built real set")
    evaluate.add_argument("--json", type=Path, help="also write the report as JSON here")
    evaluate.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    evaluate.set_defaults(run=_evaluate)

    counts = commands.add_parser("counts", help="count the table by style, digit, licence")
    counts.set_defaults(run=_counts)

    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except (ProvenanceError, RealSetMissing, ModelLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
