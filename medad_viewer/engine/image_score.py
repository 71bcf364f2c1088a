"""Stage 5 of the detector, the image score: one number per slice from its fused map (stage 4, `maps`), for ranking
slices; the calibration stage (`calibration`) turns it into a percentile of normal."""

from __future__ import annotations

import cv2
import numpy as np

from .foreground import region_box


def image_scores(maps: np.ndarray, regions: np.ndarray, how: str = "local_max", window_px: float = 13.0,
                 contrast: float = 1.0, top: float = 0.01) -> list[float]:
    """Per slice of (B, S, S) `maps` and bool `regions`: the largest mean of the map over a fixed window of about
    `window_px` pixels (made odd) inside the region ("local_max"), or its largest pixel ("max"), less `contrast`
    times the slice's median inside the region when positive. A fixed window, not a share of the body: the score
    must not grow with anatomy. A slice with an empty region scores 0."""
    out = []
    win = int(round(window_px)) | 1
    lam = float(contrast)
    for m, r in zip(maps, regions):
        if not r.any():
            out.append(0.0)
            continue
        if how == "top":  # the mean of the highest `top` share of the region's pixels (AnomalyDINO: 1 %)
            v = m[r]
            n = max(1, int(round(top * v.size)))
            best = float(np.partition(v, v.size - n)[v.size - n:].mean())
            out.append(best - lam * max(float(np.median(v)), 0.0) if lam else best)
            continue
        if how == "mean":
            out.append(float(m[r].mean()))
            continue
        if how == "max" or win <= 1:
            top = float(m[r].max())
        else:
            box = region_box(r, 0)  # the same windows as on the whole image: they read zeros outside r
            rb = r[box]
            rf = rb.astype(np.float32)
            num = cv2.blur(m[box] * rf, (win, win), borderType=cv2.BORDER_CONSTANT)
            den = cv2.blur(rf, (win, win), borderType=cv2.BORDER_CONSTANT)
            top = float(np.where(rb, num / np.maximum(den, 1e-6), -np.inf).max())
        out.append(top - lam * max(float(np.median(m[r])), 0.0) if lam else top)
    return out
