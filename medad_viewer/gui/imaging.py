"""Small image helpers for thumbnails: numpy only, safe to call from the worker thread."""

from __future__ import annotations

import cv2
import numpy as np

from ..io.windowing import to_uint8


def thumbnail(pixels: np.ndarray, window: tuple[float, float], size: int = 64) -> np.ndarray:
    """A square uint8 thumbnail: windowed, aspect kept, padded with black."""
    img = to_uint8(pixels, window[0], window[1])
    h, w = img.shape
    scale = size / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((size, size), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top: top + nh, left: left + nw] = small
    return out
