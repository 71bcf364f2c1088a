"""Thumbnails for the study browser, the ranking and the reference tray: numpy and OpenCV (io.imaging.letterbox),
no Qt, safe to call from the worker thread."""

from __future__ import annotations

import numpy as np

from ..io.imaging import letterbox
from ..io.windowing import to_uint8


def thumbnail(pixels: np.ndarray, window: tuple[float, float], size: int = 64) -> np.ndarray:
    """A square uint8 thumbnail: windowed, aspect kept, padded with black."""
    return letterbox(to_uint8(pixels, window[0], window[1]), size)
