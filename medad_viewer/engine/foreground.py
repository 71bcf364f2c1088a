"""Body / foreground masks for windowed 2D slices: the anatomy without air, CT table or X-ray borders.

Pure numpy + OpenCV; no Qt. Used to place synthetic anomalies and to ignore background in score maps.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["body_mask", "body_mask_volume", "fill_holes"]

# Below this robust dynamic range the slice is treated as empty (constant or numerically flat).
_MIN_RANGE = 1e-4


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the background regions of a bool mask that do not touch the image border."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    # Pad so that the flood fill from one corner reaches every border-connected background pixel.
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    ff_mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes


def _ellipse(radius: int) -> np.ndarray:
    size = 2 * radius + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def body_mask(img: np.ndarray, min_component_frac: float = 0.01, threshold: float | None = None) -> np.ndarray:
    """Boolean mask of the patient's body in a 2D slice windowed to [0, 1].

    Thresholds at half the Otsu level (low enough to keep dark anatomy such as X-ray lung fields and
    MR skull), fills holes (CT lungs, MR skull), opens to detach thin structures (CT table, blankets,
    text markers), keeps components above ``min_component_frac`` of the image area (the largest is
    always kept), then fills holes again and closes slightly to smooth the outline.
    ``threshold`` overrides the automatic level (same [0, 1] units as ``img``).
    """
    a = np.asarray(img, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"body_mask expects a 2D slice, got shape {a.shape}")
    h, w = a.shape
    empty = np.zeros((h, w), dtype=bool)
    if a.size == 0:
        return empty
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < _MIN_RANGE:
        return empty

    # Otsu on 8 bits over the actual range: cheap and good enough for a two-class split.
    u8 = ((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if threshold is None:
        otsu, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        # Otsu splits bright tissue from everything else; half of it still sits well above air /
        # MR background noise but keeps dark tissue (lungs on X-ray, fat, bone on MR) in the body.
        level = max(1.0, 0.5 * otsu)
    else:
        level = (float(threshold) - lo) * 255.0 / (hi - lo)
    fg = u8 > level
    if not fg.any():
        return empty

    # Filling first makes the body a solid blob so the opening cannot eat thin body walls or the
    # MR scalp ring, while it still removes thin unenclosed things like the table or blanket folds.
    radius = max(1, int(round(min(h, w) / 64)))
    # A closing first bridges small gaps in the outline (thin skin over fat in a narrow CT window,
    # MR scalp with signal drop-out) so the hole filling sees a closed body.
    fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_CLOSE, _ellipse(radius)).astype(bool)
    fg = fill_holes(fg)
    opened = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, _ellipse(radius))

    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:
        return empty
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = np.argsort(areas)[::-1]
    min_area = min_component_frac * h * w
    keep = [int(order[0]) + 1] + [int(i) + 1 for i in order[1:] if areas[i] >= min_area]
    lut = np.zeros(n, np.uint8)
    lut[keep] = 1
    mask = lut[labels]

    close_r = max(1, radius // 2)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _ellipse(close_r))
    return fill_holes(mask.astype(bool))


def body_mask_volume(vol: np.ndarray, **kwargs) -> np.ndarray:
    """Slice-wise ``body_mask`` over a (Z, H, W) volume windowed to [0, 1]."""
    v = np.asarray(vol)
    if v.ndim != 3:
        raise ValueError(f"body_mask_volume expects (Z, H, W), got shape {v.shape}")
    out = np.zeros(v.shape, dtype=bool)
    for z in range(v.shape[0]):
        out[z] = body_mask(v[z], **kwargs)
    return out
