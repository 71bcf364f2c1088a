"""The current view as a picture: windowed slice + anomaly overlay + colour bar (+ annotations), as QImage or PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QImage, QPainter

from ..engine.jobs import CancelToken
from ..io.windowing import to_uint8
from ..io.atomic import atomic_output
from .data import ReportError
from .overlay import COLORBAR_LABEL, DEFAULT_COLORMAP, DEFAULT_OPACITY, compose, default_vmax
from .painting import (draw_annotations, draw_colorbar, draw_orientation, ensure_qt_app, font, qimage_rgb)

BACKGROUND = QColor(12, 12, 12)
TEXT = QColor(235, 235, 235)


def render_view(gray: np.ndarray, amap: np.ndarray | None, window: tuple[float, float] | None = None, *,
                opacity: float = DEFAULT_OPACITY, threshold: float = 1.0, cmap: str = DEFAULT_COLORMAP,
                vmax: float | None = None, spacing: tuple[float, float] = (1.0, 1.0), annotations: Sequence = (),
                direction: Sequence[float] | None = None, caption: str = "", min_width: int = 512) -> QImage:
    """The view as the viewer shows it: `gray` windowed (center, width) — or already uint8 when `window` is None —
    with the overlay of `amap` (values ≤ `threshold` transparent, colours threshold..vmax), the reviewer's
    annotations, orientation letters and a colour bar with its scale below. Pixels are made square from `spacing`
    (x, y mm) and small slices enlarged to `min_width` so the text stays legible. `vmax` defaults to the viewer's
    threshold + max(1, threshold)."""
    ensure_qt_app()
    vmax = default_vmax(threshold) if vmax is None else float(vmax)
    if window is None:
        g8 = np.asarray(gray, dtype=np.uint8)
    else:
        g8 = to_uint8(gray, window[0], window[1])
    if amap is not None and np.asarray(amap).shape != g8.shape:
        raise ValueError(f"map {np.asarray(amap).shape} and slice {g8.shape} differ in size")
    rgb = compose(g8, amap, threshold=threshold, vmax=vmax, opacity=opacity, cmap=cmap)
    rows, cols = g8.shape
    sx, sy = (float(spacing[0]) or 1.0), (float(spacing[1]) or 1.0)
    w_px, h_px = cols * sx / min(sx, sy), rows * sy / min(sx, sy)
    scale = max(1.0, min_width / w_px)
    w, h = int(round(w_px * scale)), int(round(h_px * scale))
    pic = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR) if (w, h) != (cols, rows) else rgb

    pad = max(8, w // 64)
    bar_h = max(10, w // 40)
    base_pt = max(9.0, w / 46.0) * 0.75  # QImage is 96 dpi: points are 4/3 pixels
    tick_f, label_f = font(base_pt), font(base_pt)
    footer = pad + bar_h + int(3.2 * base_pt * 96 / 72) + pad if amap is not None else 0
    cap_h = int(1.8 * base_pt * 96 / 72) if caption else 0
    out = QImage(w, h + footer + cap_h, QImage.Format.Format_RGB888)
    out.fill(BACKGROUND)
    p = QPainter(out)
    try:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        img_rect = QRectF(0, cap_h, w, h)
        p.drawImage(img_rect, qimage_rgb(pic))
        draw_annotations(p, img_rect, (rows, cols), annotations, outline_width=max(1.5, w / 400))
        if direction is not None:
            draw_orientation(p, img_rect, direction, font(base_pt * 1.2, bold=True))
        if window is not None:
            p.setPen(TEXT)
            p.setFont(font(base_pt))
            p.drawText(img_rect.adjusted(pad, pad, -pad, -pad), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom,
                       f"W {window[1]:.0f}  L {window[0]:.0f}")
        if caption:
            p.setPen(TEXT)
            p.setFont(font(base_pt * 1.1))
            p.drawText(QRectF(pad, 0, w - 2 * pad, cap_h), Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft,
                       caption)
        if amap is not None:
            bar = QRectF(w * 0.15, cap_h + h + pad, w * 0.7, bar_h)
            draw_colorbar(p, bar, cmap, float(threshold), max(float(vmax), float(threshold) + 1e-3),
                          f"{COLORBAR_LABEL} · opacity {opacity * 100:.0f} %", label_f, tick_f, TEXT)
    finally:
        p.end()
    return out


def save_view_png(path: str | os.PathLike, gray: np.ndarray, amap: np.ndarray | None,
                  window: tuple[float, float] | None = None, cancel: CancelToken | None = None, **kwargs) -> Path:
    """`render_view(...)` written as a PNG, atomically. Keyword arguments as for render_view."""
    img = render_view(gray, amap, window, **kwargs)
    with atomic_output(path, cancel) as tmp:
        if not img.save(tmp, "PNG"):
            raise ReportError(f"could not write {Path(path).name}")
    return Path(path)
