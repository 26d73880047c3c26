"""Turn an uploaded image into the 28x28 white-on-black digit the model was trained on.

Users send phone photos and canvas drawings, not MNIST, so we redo what MNIST's
creators did to their scans, robustly: decode (EXIF orientation, alpha), divide
out uneven light and shadows, find the ink by its colour distance from the
paper (any colour, either polarity), threshold relative to the paper's noise,
drop ruled lines, keep the digit's connected parts (not the page edge, the
shadow's rim or specks), cut it from a sharper copy, stretch it to full
contrast, even the stroke width, scale the longer side to 20 px and centre the
centre of mass in a 28x28 field.

Every failure is a typed `ServiceError` with a message that tells the person
what to send instead. Image dimensions are checked from the header before any
pixel is decoded, so a decompression bomb costs microseconds, not gigabytes.
Blank means "no stroke found in the ink mask", never a low global contrast.

Speed: a 28x28 image that is already MNIST-style takes a fast path (decode +
~10 µs of checks, returned bit for bit). Decisions about ink and the digit's
place are made on ~96 px and JPEGs decode at 1/2..1/8 scale, so a phone photo
costs less than a plain decode-and-resize of it; a canvas PNG still costs about
twice its decoding. Measure with `python -m benchmarks.preprocess_bench`. The
output is a fixed point: sent back as a PNG it returns by the fast path.

The package, one stage per module, in the order an upload goes through them:

- `formats`: supported formats and magic-byte sniffing (415 vs 422)
- `decode`: header size check (decompression bombs), decoding at work
  resolution, EXIF orientation, 16-bit/float modes, alpha flattening
- `pipeline`: the entry points below, the MNIST-style fast path, typed errors
- `normalize`: the full path, stage by stage, and the blank verdict
- `ink`: light, paper and ink colour, noise: the ink signal (flat canvases: a short cut)
- `mask`: the noise-relative threshold and ruled/fold line removal
- `components`: the digit's connected parts; page edges, shadows and specks left out
- `shape`: cut from the sharp copy, stretch, even the stroke width, scale, centre of mass
- `constants`: MNIST's geometry, working sizes and the tuned thresholds
"""

from service.preprocess.constants import BOX, DEFAULT_MAX_PIXELS, SIZE, FloatImage
from service.preprocess.formats import SUPPORTED_MEDIA_TYPES, sniff_image_format
from service.preprocess.pipeline import is_mnist_style, preprocess_image, preprocess_pixels

__all__ = [
    "BOX",
    "DEFAULT_MAX_PIXELS",
    "SIZE",
    "SUPPORTED_MEDIA_TYPES",
    "FloatImage",
    "is_mnist_style",
    "preprocess_image",
    "preprocess_pixels",
    "sniff_image_format",
]
