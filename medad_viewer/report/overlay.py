"""Overlay compositing for the PDF report and PNG exports, as the viewer shows it (numpy only, no Qt).

The colour scale follows the viewer (gui.slice_viewer): map values at or below `threshold` are transparent, colours
run threshold..vmax (default threshold + max(1, threshold)) through the overlay table of the colour map
(io.colormaps, the tables the viewer uses too), and the result is blended over the windowed slice at `opacity`.
"""

from __future__ import annotations

import numpy as np

from ..io.colormaps import COLORMAPS, DEFAULT_COLORMAP, OVERLAY_CMAP_START, overlay_lut

__all__ = ["COLORBAR_LABEL", "COLORMAPS", "DEFAULT_COLORMAP", "DEFAULT_OPACITY", "OVERLAY_CMAP_START", "blend",
           "colorbar_rgb", "colorize", "compose", "default_vmax", "overlay_lut"]

# Defaults of the viewer's overlay controls (gui.analysis_panel / gui.slice_viewer), so an export looks like the screen.
DEFAULT_OPACITY = 0.6
COLORBAR_LABEL = "anomaly (× normal p99)"


def default_vmax(threshold: float) -> float:
    """Top of the colour scale for a threshold (map units): a fixed scale per threshold, so a colour means the same
    on every slice."""
    return float(threshold) + max(1.0, float(threshold))


def colorize(amap: np.ndarray, vmin: float, vmax: float, cmap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """RGBA uint8 (rows, columns, 4) of `amap` scaled vmin..vmax through the overlay part of `cmap`; alpha 0 at or
    below vmin.

    NaN (unscored pixels) is transparent too.
    """
    a = np.asarray(amap, dtype=np.float32)
    vmax = max(float(vmax), float(vmin) + 1e-3)
    scaled = (a - np.float32(vmin)) * np.float32(255.0 / (vmax - float(vmin)))
    idx = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)
    out = np.empty(a.shape + (4,), dtype=np.uint8)
    out[..., :3] = overlay_lut(cmap)[idx]
    out[..., 3] = np.where(a > vmin, 255, 0).astype(np.uint8)  # NaN > vmin is False: transparent
    return out


def blend(gray_u8: np.ndarray, rgba: np.ndarray, opacity: float, threshold_mask: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8: `rgba` laid over the grey slice at `opacity` where its alpha (and `threshold_mask`, if given) allow."""
    g = np.asarray(gray_u8, dtype=np.uint8)
    if g.shape != rgba.shape[:2]:
        raise ValueError(f"slice {g.shape} and overlay {rgba.shape[:2]} differ in size")
    alpha = (rgba[..., 3].astype(np.float32) / 255.0) * float(np.clip(opacity, 0.0, 1.0))
    if threshold_mask is not None:
        alpha = alpha * np.asarray(threshold_mask, dtype=np.float32)
    base = np.repeat(g[..., None], 3, axis=2).astype(np.float32)
    out = base + (rgba[..., :3].astype(np.float32) - base) * alpha[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def compose(gray_u8: np.ndarray, amap: np.ndarray | None, *, threshold: float, vmax: float | None = None,
            opacity: float = DEFAULT_OPACITY, cmap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """The viewer's picture of one slice as RGB uint8: windowed slice with the thresholded anomaly overlay."""
    vmax = default_vmax(threshold) if vmax is None else vmax
    if amap is None:
        g = np.asarray(gray_u8, dtype=np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    return blend(gray_u8, colorize(amap, threshold, vmax, cmap), opacity)


def colorbar_rgb(length: int = 256, cmap: str = DEFAULT_COLORMAP, vertical: bool = False) -> np.ndarray:
    """A (1, length, 3) strip of the overlay colours, low to high (vertical: (length, 1, 3), high at the top)."""
    lut = overlay_lut(cmap)
    idx = np.clip(np.round(np.linspace(0, 255, max(int(length), 2))), 0, 255).astype(int)
    strip = lut[idx][None]
    return np.ascontiguousarray(strip[0, ::-1, None] if vertical else strip)
