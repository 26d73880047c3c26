"""The numbers the preprocessing is tuned by: MNIST's geometry and the thresholds.

Kept together (not with their stages) because several stages share them and
because they are the knobs to look at first when an upload is misread.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

DEFAULT_MAX_PIXELS = 40_000_000
SIZE = 28  # output field, as MNIST
BOX = 20  # the longer side of the digit inside the field, as MNIST
WORK = 512  # decode/work resolution: enough for a digit 1/25 of the photo, fast
MIN_CONTRAST = 12.0  # ink must stand this many grey levels above the background
FLOOR_FRACTION = 0.06  # ink fainter than this fraction is JPEG ringing/texture: dropped
SPECK_FRACTION = 0.08  # separate blobs with less ink than this are specks, not digit
# Stroke widths in px at the 20 px scale. MNIST's 10th-90th percentiles are 1.35-2.55
# (median 1.8); strokes outside THIN..THICK are brought to STROKE_WIDTH.
THIN_STROKE = 1.3
THICK_STROKE = 3.2
STROKE_WIDTH = 2.0

FloatImage = npt.NDArray[np.float32]
