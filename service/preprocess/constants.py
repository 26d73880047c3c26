"""The numbers the preprocessing is tuned by: MNIST's geometry, working sizes, thresholds.

Kept together (not with their stages) because several stages share them and
because they are the knobs to look at first when an upload is misread. They were
chosen on the field benchmark's validation renders and half of the real-world
set's sources, then checked on the other half.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

DEFAULT_MAX_PIXELS = 40_000_000
SIZE = 28  # output field, as MNIST
BOX = 20  # the longer side of the digit inside the field, as MNIST

# Working sizes. Decisions about paper, ink and where the digit is need few pixels;
# the digit itself is cut from the larger work image so thin strokes survive.
WORK = 250  # decode/work resolution: JPEGs decode at 1/2..1/8 scale to at least this
ANALYSIS = 96  # about this many px on the longer side for finding the ink
DETAIL = 96  # the digit's crop is reduced to at most about this before shaping

# Ink and blank. Blank means "no stroke found in the ink mask", never a global contrast.
NOISE_SIGMAS = 4.0  # a pixel is ink candidate this many noise sigmas above the paper
MIN_STEP = 6.0  # ...and at least this many grey levels (flat synthetic images have no noise)
INK_FRACTION = 0.12  # ...and this fraction of the strongest ink (JPEG blocks on flat paper)
STRONG_FRACTION = 0.45  # a stroke must reach this fraction of the digit's ink level somewhere
MIN_DIGIT = 0.04  # the digit's box spans at least this fraction of the image's longer side
SPECK_FRACTION = 0.03  # parts with less ink than this fraction of the digit's are specks
JOIN_DISTANCE = 0.3  # parts within this fraction of the digit's size belong to it
OFF_PAGE = 0.4  # paper this much darker than the page's typical light is a desk, not page
LINE_LENGTH = 0.6  # straight runs this fraction of the image across are ruled or fold lines

# Stroke widths in px at the 20 px scale. MNIST's 10th-90th percentiles are 1.35-2.55
# (median 1.8); strokes outside THIN..THICK are brought to STROKE_WIDTH.
THIN_STROKE = 1.3
THICK_STROKE = 3.2
STROKE_WIDTH = 2.0

FloatImage = npt.NDArray[np.float32]
