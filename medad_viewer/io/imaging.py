"""Fitting pictures into a square for thumbnails (the study browser, the ranking, the reference tray, the report's
reference thumbnails): numpy and OpenCV only, no Qt, safe in a worker thread."""

from __future__ import annotations

import cv2
import numpy as np


def fit_size(height: float, width: float, size: float) -> tuple[int, int]:
    """(rows, columns) of a `height` x `width` picture scaled, aspect kept, so its long side is `size` (at least 1)."""
    scale = size / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def letterbox(img: np.ndarray, size: int, interpolation: int | None = None) -> np.ndarray:
    """`img` (rows x columns, optionally x channels) fitted into a `size` x `size` array of its dtype, aspect kept,
    centred, padded with zeros (black). `interpolation`: an OpenCV flag; by default area averaging when shrinking and
    bilinear when enlarging (cv2.INTER_NEAREST for masks and labels)."""
    h, w = img.shape[:2]
    nh, nw = fit_size(h, w, size)
    if interpolation is None:
        interpolation = cv2.INTER_AREA if size < max(h, w) else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), interpolation=interpolation)
    out = np.zeros((size, size) + img.shape[2:], img.dtype)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top: top + nh, left: left + nw] = small.reshape((nh, nw) + img.shape[2:])
    return out
