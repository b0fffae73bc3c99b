"""OpenCV and numpy for processes that pack: import ``cv2`` from here rather than directly.

The server that forks pack workers imports this once when images get re-encoded, so workers start with
OpenCV and numpy already loaded (about 0.2 s of CPU each otherwise).  numpy's OpenBLAS would start a thread
per core that wakes and spins beside the codec although packing does no linear algebra, so this limits it to
one thread before numpy loads (unless the user set OPENBLAS_NUM_THREADS).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402,F401
import numpy  # noqa: E402,F401
