"""The synthetic field benchmark: held-out MNIST digits re-rendered the way users send them.

MNIST test accuracy says little about phone photos and canvas drawings, so each
digit is drawn again as one of the KINDS below (paper photos with uneven light,
chalk on a board, coloured ink, thin pens, fat markers, small digits on big
canvases, heavy JPEG, alpha-only canvas PNGs, EXIF-rotated photos, a sheet on a
desk, noise, faint pen, every accepted file format, and the failure categories of
real uploads: ruled lines, a shadow across the page, a small thin digit in a big
photo, tinted paper with a dull pen and a fold, blurry small crops) and scored end
to end: encoded bytes -> `service.preprocess` -> model. Deterministic for a seed;
numpy + Pillow only.

Run (in-process, or through a running service with --url; MNIST from --data-dir,
else $MNIST_DATA_DIR, as `training.data` resolves it)::

    python -m evaluation.field --model models/mnist-mlp/2/model.onnx --split test --n 1800
    python -m evaluation.field --url http://127.0.0.1:8000 --split val

Use `--split val` to choose between models and `--split test` only to report.
Programmatic use: `score(predict, render_field_set(images, labels))`, then
`dataclasses.asdict(report)` for a model card.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from evaluation.render import (
    CONTENT_TYPES,
    Colour,
    encode,
    fold_line,
    ink_on_paper,
    paper,
    pen_mask,
    pick,
    random_colour,
    ruled_lines,
    shadow,
)

PAPERS: tuple[Colour, ...] = ((250, 250, 245), (245, 238, 220), (225, 225, 225), (255, 255, 255))
PENS: tuple[Colour, ...] = ((20, 20, 25), (25, 40, 140), (150, 20, 25), (20, 90, 40), (60, 60, 60))
BOARDS: tuple[Colour, ...] = ((20, 20, 20), (25, 50, 35), (30, 30, 60), (0, 0, 0))
CHALKS: tuple[Colour, ...] = ((245, 245, 245), (250, 240, 150), (200, 230, 255))
RULINGS: tuple[Colour, ...] = ((120, 150, 210), (150, 150, 150), (90, 120, 200))
# Tinted papers and pens close to them: the low-contrast colour photos of issue 13
TINTED: tuple[Colour, ...] = ((215, 225, 150), (235, 215, 170), (200, 220, 225), (230, 200, 200))
DULL_PENS: tuple[Colour, ...] = ((40, 110, 110), (110, 100, 140), (120, 120, 120), (60, 90, 150))
# EXIF orientation -> how the upright picture is stored so that exif_transpose undoes it
_ORIENTATIONS = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
Range = tuple[float, float]


@dataclass(frozen=True)
class Recipe:
    """How one kind of upload is drawn: each range is sampled uniformly per digit."""

    canvas: Range  # page height in px (width up to a third more)
    fraction: Range  # digit size as a fraction of the page height
    papers: tuple[Colour, ...] = PAPERS  # empty: a random paper colour
    pens: tuple[Colour, ...] = PENS  # empty: a random pen colour readable on it
    light: Range = (0.0, 0.0)  # depth of the lighting gradient
    width: Range = (0.0, 0.0)  # > 0 marker (28-px units), < 0 fine pen (output px)
    strength: Range = (1.0, 1.0)  # ink opacity: < 1 is a faint pen or chalk
    noise: Range = (0.0, 0.0)  # sensor noise std, grey levels
    formats: tuple[str, ...] = ("PNG",)
    quality: Range = (90.0, 90.0)  # JPEG/WebP quality
    extra: str = ""  # "specks", "exif", "desk", "ruled", "shadow", "fold", "blur"
    min_contrast: int = 200  # summed |pen - paper| over RGB a random pen must reach


RECIPES: dict[str, Recipe] = {
    "mnist_png": Recipe((28, 28), (1, 1)),  # the raw digit: the no-op baseline
    "paper_photo": Recipe(
        (160, 900),
        (0.35, 0.8),
        pens=PENS[:2],
        light=(0.1, 0.45),
        noise=(1, 5),
        formats=("JPEG",),
        quality=(70, 95),
    ),
    "dark_board": Recipe(
        (100, 600),
        (0.4, 0.8),
        papers=BOARDS,
        pens=CHALKS,
        light=(0, 0.3),
        strength=(0.7, 1),
        noise=(3, 3),
        formats=("PNG", "JPEG"),
    ),
    "colour_ink": Recipe((64, 400), (0.4, 0.9), papers=(), pens=(), formats=("WEBP",)),
    "thin_pen": Recipe((200, 600), (0.5, 0.8), width=(-4, -1)),
    "thick_marker": Recipe((200, 600), (0.5, 0.8), width=(0.5, 1.2)),
    "small_on_canvas": Recipe((600, 1200), (0.08, 0.15), width=(0, 0.5)),
    "low_jpeg": Recipe((60, 300), (0.5, 0.9), light=(0, 0.3), formats=("JPEG",), quality=(10, 35)),
    "alpha_canvas": Recipe((140, 400), (0.5, 0.85), width=(0.3, 0.3)),
    "exif_rotated": Recipe(
        (200, 700),
        (0.4, 0.8),
        pens=PENS[:2],
        light=(0, 0.3),
        noise=(2, 2),
        formats=("JPEG",),
        quality=(88, 88),
        extra="exif",
    ),
    "paper_on_desk": Recipe(
        (200, 500),
        (0.4, 0.7),
        pens=PENS[:2],
        light=(0, 0.3),
        noise=(2, 2),
        formats=("JPEG",),
        quality=(85, 85),
        extra="desk",
    ),
    "noisy": Recipe((100, 400), (0.5, 0.85), noise=(8, 20), extra="specks"),
    "faint_pen": Recipe(
        (100, 500),
        (0.5, 0.85),
        pens=((90, 90, 100),),
        light=(0, 0.15),
        strength=(0.35, 0.6),
        noise=(1.5, 1.5),
        formats=("JPEG",),
        quality=(85, 85),
    ),
    "other_formats": Recipe((80, 300), (0.5, 0.9), formats=("GIF", "TIFF", "BMP", "WEBP")),
    # The failure categories of real uploads (issue 13): each is one thing real pages add
    "ruled_paper": Recipe(
        (200, 700),
        (0.4, 0.75),
        pens=PENS[:2],
        light=(0, 0.3),
        noise=(1, 3),
        formats=("JPEG",),
        quality=(80, 92),
        extra="ruled",
    ),
    "shadow": Recipe(
        (300, 900),
        (0.3, 0.7),
        pens=(*PENS[:2], (60, 60, 60)),
        light=(0, 0.2),
        noise=(1, 4),
        formats=("JPEG",),
        quality=(80, 92),
        extra="shadow",
    ),
    "small_in_photo": Recipe(
        (800, 1400),
        (0.1, 0.22),
        pens=PENS[:2],
        light=(0.1, 0.4),
        width=(-3, -1),
        noise=(2, 5),
        formats=("JPEG",),
        quality=(80, 92),
    ),
    "tinted_low_contrast": Recipe(
        (150, 600),
        (0.4, 0.8),
        papers=TINTED,
        pens=DULL_PENS,
        light=(0, 0.25),
        width=(0, 0.6),
        noise=(1, 3),
        formats=("JPEG",),
        quality=(80, 92),
        extra="fold",
        min_contrast=120,
    ),
    "blurry_small": Recipe(
        (40, 90),
        (0.6, 0.85),
        pens=PENS,
        noise=(1, 3),
        formats=("JPEG",),
        quality=(60, 85),
        extra="blur",
    ),
}
KINDS = tuple(RECIPES)


@dataclass(frozen=True)
class FieldSample:
    """One rendered upload: the encoded file, its true digit, how it was made."""

    data: bytes
    label: int
    kind: str
    content_type: str


@dataclass
class FieldReport:
    """End-to-end accuracy overall and per kind (a failed request counts as wrong)."""

    accuracy: float
    n: int
    per_kind: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        lines = [f"{'kind':<16} {'n':>5} {'accuracy':>9}"]
        lines += [
            f"{kind:<16} {self.counts[kind]:>5} {self.per_kind[kind]:>9.2%}"
            for kind in self.per_kind
        ]
        lines.append(f"{'overall':<16} {self.n:>5} {self.accuracy:>9.2%}")
        return "\n".join(lines)


def render_field_set(images: np.ndarray, labels: np.ndarray, *, seed: int = 0) -> list[FieldSample]:
    """Render every digit once, cycling through KINDS; same inputs + seed -> same bytes."""
    samples = []
    for index, (digit, label) in enumerate(zip(images, labels, strict=True)):
        rng = np.random.default_rng([seed, index])
        kind = KINDS[index % len(KINDS)]
        data, image_format = render(np.asarray(digit, dtype=np.uint8), kind, rng)
        samples.append(FieldSample(data, int(label), kind, CONTENT_TYPES[image_format]))
    return samples


def score(
    predict: Callable[[list[bytes]], np.ndarray], samples: Sequence[FieldSample]
) -> FieldReport:
    """Accuracy of `predict` (encoded files -> predicted digits, -1 for a rejected file)."""
    predicted = np.asarray(predict([s.data for s in samples]), dtype=np.int64)
    labels = np.array([s.label for s in samples], dtype=np.int64)
    kinds = np.array([s.kind for s in samples])
    correct = predicted == labels
    present = [k for k in KINDS if (kinds == k).any()]
    return FieldReport(
        accuracy=float(correct.mean()) if len(samples) else 0.0,
        n=len(samples),
        per_kind={k: float(correct[kinds == k].mean()) for k in present},
        counts={k: int((kinds == k).sum()) for k in present},
    )


# --- rendering -------------------------------------------------------------------------


def render(digit: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """One MNIST digit drawn as `kind` -> (encoded file, Pillow format name)."""
    recipe = RECIPES[kind]
    image_format = recipe.formats[int(rng.integers(len(recipe.formats)))]
    if kind == "mnist_png":
        return encode(Image.fromarray(digit), image_format), image_format
    height = int(rng.uniform(*recipe.canvas))
    width = height + int(rng.integers(0, height // 3 + 1))
    sheet = pick(rng, recipe.papers) if recipe.papers else random_colour(rng, 170, 256)
    pen = pick(rng, recipe.pens) if recipe.pens else random_colour(rng, 0, 256)
    while np.abs(np.subtract(pen, sheet)).sum() < recipe.min_contrast:  # readable on that paper
        pen = random_colour(rng, 0, 256)
    side = max(16, round(height * rng.uniform(*recipe.fraction)))
    mask = pen_mask(digit, side, rng, rng.uniform(*recipe.width))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    strength = rng.uniform(*recipe.strength)
    if kind == "alpha_canvas":  # a browser canvas: one pen colour, the digit only in alpha
        pen = pick(rng, ((0, 0, 0), (255, 255, 255), (30, 60, 200), (220, 30, 30)))
        rgba = np.zeros((height, width, 4), np.uint8)
        rgba[..., :3] = pen
        where = np.s_[top : top + side, left : left + side]
        rgba[where][..., 3] = np.round(mask / 255.0 * strength * 255)
        return encode(Image.fromarray(rgba), "PNG"), "PNG"
    page = paper((width, height), sheet, rng, rng.uniform(*recipe.light))
    ink_on_paper(page, mask, pen, (top, left), strength)
    if recipe.extra == "ruled":  # lines every ~third of the digit, one may cross it
        ruled_lines(page, rng, side * rng.uniform(0.3, 0.6), pick(rng, RULINGS))
    elif recipe.extra == "shadow":
        shadow(page, rng, rng.uniform(0.25, 0.55))
    elif recipe.extra == "fold":
        fold_line(page, rng)
    noise = rng.uniform(*recipe.noise)
    if noise:
        page += rng.normal(0.0, noise, page.shape).astype(np.float32)
    pixels = np.clip(page, 0, 255).astype(np.uint8)
    if recipe.extra == "specks":  # dust and pen dots: must not move the crop
        for _ in range(int(rng.integers(3, 12))):
            y, x = int(rng.integers(0, height - 3)), int(rng.integers(0, width - 3))
            pixels[y : y + 2, x : x + 2] = 30
    if recipe.extra == "desk":  # the sheet fills 55-85% of a photo of a dark desk
        grow = rng.uniform(1 / 0.85, 1 / 0.55, 2)
        desk = np.empty((round(height * grow[0]), round(width * grow[1]), 3), np.uint8)
        desk[...] = pick(rng, ((90, 70, 50), (60, 60, 65), (120, 95, 70), (30, 30, 30)))
        y = int(rng.integers(0, desk.shape[0] - height + 1))
        x = int(rng.integers(0, desk.shape[1] - width + 1))
        desk[y : y + height, x : x + width] = pixels
        pixels = desk
    image = Image.fromarray(pixels)
    if recipe.extra == "blur":  # an out-of-focus crop
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.6) * side / 40))
    options: dict[str, object] = {"quality": int(rng.uniform(*recipe.quality))}
    if recipe.extra == "exif":  # a phone photo: pixels stored sideways + the tag that fixes it
        orientation = int(rng.choice(list(_ORIENTATIONS)))
        image = image.transpose(_ORIENTATIONS[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    if image_format == "GIF":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    return encode(image, image_format, **options), image_format


# --- command line ----------------------------------------------------------------------


def onnx_predictor(model: Path) -> Callable[[list[bytes]], np.ndarray]:
    """In-process: service preprocessing + onnxruntime, -1 for a file the service rejects."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict(files: list[bytes]) -> np.ndarray:
        rows, ok = preprocess_files(files)
        probabilities = session.run(["probabilities"], {input_name: rows})[0]
        return np.where(ok, np.argmax(probabilities, axis=1), -1)

    return predict


def preprocess_files(files: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(rows float32 (n, 784), ok bool (n,)): each file through the service's preprocessing.

    A file the service refuses gets a zero row and ok False (score it as wrong).
    """
    from service.errors import ServiceError
    from service.preprocess import preprocess_image

    rows, ok = np.zeros((len(files), 784), dtype=np.float32), np.ones(len(files), bool)
    for i, data in enumerate(files):
        try:
            rows[i] = preprocess_image(data).reshape(-1)
        except ServiceError:
            ok[i] = False
    return rows, ok


def http_predictor(url: str) -> Callable[[list[bytes]], np.ndarray]:
    """Through the real endpoint: POST {url}/v1/predict with the file as multipart `file`."""
    import httpx

    from service.preprocess import sniff_image_format

    def predict(files: list[bytes]) -> np.ndarray:
        digits = []
        with httpx.Client(base_url=url, timeout=30.0) as client:
            for data in files:
                kind = sniff_image_format(data) or "application/octet-stream"
                answer = client.post("/v1/predict", files={"file": ("digit", data, kind)})
                digits.append(answer.json()["digit"] if answer.status_code == 200 else -1)
        return np.array(digits)

    return predict


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.field", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, help="ONNX file, scored in-process")
    parser.add_argument(
        "--url", help="score through a running service instead, e.g. http://127.0.0.1:8000"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST IDX folder")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--n", type=int, default=2000, help="digits to render (cycled over kinds)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if (args.model is None) == (args.url is None):
        parser.error("give exactly one of --model or --url")
    images, labels = held_out_digits(args.split, args.data_dir)
    images, labels = images[: args.n], labels[: args.n]
    samples = render_field_set(images, labels, seed=args.seed)
    predict = onnx_predictor(args.model) if args.model else http_predictor(args.url)
    started = time.perf_counter()
    report = score(predict, samples)
    seconds = time.perf_counter() - started
    print(f"field benchmark: {args.split} digits, seed {args.seed}, {args.model or args.url}")
    print(report.table())
    print(f"({report.n / seconds:.0f} files/s end to end)")
    if args.model:  # the model alone on the same digits: the gap is preprocessing's share
        print(
            f"same digits as clean MNIST pixels: {clean_accuracy(args.model, images, labels):.2%}"
        )
    return 0


def clean_accuracy(model: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the model on the digits' own 28x28 pixels (no rendering, no preprocessing)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rows = images.reshape(len(images), 784).astype(np.float32)
    probabilities = session.run(["probabilities"], {session.get_inputs()[0].name: rows})[0]
    return float((np.argmax(probabilities, axis=1) == labels).mean())


def held_out_digits(split: str, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST test digits, or the fixed validation digits carved from train (for model choice)."""
    from training.data import load_mnist, train_val_split

    if split == "test":
        return load_mnist("test", data_dir)
    images, labels = load_mnist("train", data_dir)
    _, val = train_val_split(len(images))
    return images[val], labels[val]


if __name__ == "__main__":
    raise SystemExit(main())
