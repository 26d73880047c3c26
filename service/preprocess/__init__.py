"""Turn an uploaded image into the 28x28 white-on-black digit the model was trained on.

Users send phone photos and canvas drawings, not MNIST, so we redo what MNIST's
creators did to their scans, robustly: decode, apply EXIF orientation, flatten
alpha, find the ink (any colour, either polarity, under uneven light), stretch
it to full contrast, crop to it, scale the longer side to 20 px with
anti-aliasing and centre the centre of mass in a 28x28 field.

Every failure is a typed `ServiceError` with a message that tells the person
what to send instead. Image dimensions are checked from the header before any
pixel is decoded, so a decompression bomb costs microseconds, not gigabytes.

Speed: a 28x28 image that is already MNIST-style takes a fast path (decode +
~10 µs of checks, returned bit for bit); anything else costs a few hundred µs
(small files) to ~15 ms (a 12 MP photo: libjpeg decodes it at 1/8 scale).
Measure with `python -m benchmarks.preprocess_bench`.

The package, one stage per module, in the order an upload goes through them:

- `formats`: supported formats and magic-byte sniffing (415 vs 422)
- `decode`: header size check (decompression bombs), decoding at work
  resolution, EXIF orientation, 16-bit/float modes, alpha flattening
- `pipeline`: the entry points below, the MNIST-style fast path, typed errors
- `normalize`: the full path: robust ink/background levels, blank check, contrast
- `ink`: the ink signal: colour and polarity, sheet on a desk, uneven lighting
- `shape`: crop to the digit, even the stroke width, scale to 20 px, centre of mass
- `constants`: MNIST's geometry and the tuned thresholds
"""

from service.preprocess.constants import (
    BOX,
    DEFAULT_MAX_PIXELS,
    FLOOR_FRACTION,
    MIN_CONTRAST,
    SIZE,
    SPECK_FRACTION,
    STROKE_WIDTH,
    THICK_STROKE,
    THIN_STROKE,
    WORK,
    FloatImage,
)
from service.preprocess.formats import SUPPORTED_MEDIA_TYPES, sniff_image_format
from service.preprocess.pipeline import preprocess_image, preprocess_pixels

__all__ = [
    "BOX",
    "DEFAULT_MAX_PIXELS",
    "FLOOR_FRACTION",
    "MIN_CONTRAST",
    "SIZE",
    "SPECK_FRACTION",
    "STROKE_WIDTH",
    "SUPPORTED_MEDIA_TYPES",
    "THICK_STROKE",
    "THIN_STROKE",
    "WORK",
    "FloatImage",
    "preprocess_image",
    "preprocess_pixels",
    "sniff_image_format",
]
