"""What the server that forks pack workers loads before it forks them, when images get re-encoded.

Workers then start with OpenCV and numpy already loaded (about 0.2 s of CPU each otherwise).  numpy's
OpenBLAS would start a thread per core that wakes and spins beside the codec although packing does no linear
algebra, so the limit of one thread is set before numpy loads (unless the user set OPENBLAS_NUM_THREADS).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402,F401
import numpy  # noqa: E402,F401
