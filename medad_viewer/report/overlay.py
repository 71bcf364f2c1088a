"""Colour maps and overlay compositing shared by the viewer, the PDF report and PNG exports (numpy only, no widgets).

The colour scale follows the viewer (gui.slice_viewer / main_window): map values at or below `threshold` are
transparent, colours run threshold..vmax (default threshold + max(1, threshold)) through the upper three quarters
of the colour map, and the result is blended over the windowed slice at `opacity`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DEFAULT_COLORMAP = "inferno"
COLORMAPS = ("inferno", "viridis", "magma", "plasma", "cividis", "turbo")
# Defaults of the viewer's overlay controls (gui.panels / gui.slice_viewer), so an export looks like the screen.
DEFAULT_OPACITY = 0.6
# The darkest quarter of maps like inferno is near-black, invisible over a grey slice: overlays use the rest.
OVERLAY_CMAP_START = 0.25
COLORBAR_LABEL = "anomaly (× normal p99)"


@lru_cache(maxsize=None)
def colormap_lut(name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """(256, 3) uint8 lookup table of a named colour map, as pyqtgraph (and so the viewer) draws it."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colour map {name!r} (choose one of {', '.join(COLORMAPS)})")
    # pyqtgraph ships the perceptually uniform maps as data files: the same table the viewer uses, no matplotlib.
    from pyqtgraph import colormap

    lut = np.asarray(colormap.get(name).getLookupTable(0.0, 1.0, 256, alpha=False), dtype=np.uint8)
    lut.flags.writeable = False
    return lut


@lru_cache(maxsize=None)
def overlay_lut(name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """(256, 3) uint8: the part of the colour map overlays use (OVERLAY_CMAP_START..1), as the viewer draws it."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colour map {name!r} (choose one of {', '.join(COLORMAPS)})")
    from pyqtgraph import colormap

    lut = np.asarray(colormap.get(name).getLookupTable(OVERLAY_CMAP_START, 1.0, 256, alpha=False), dtype=np.uint8)
    lut.flags.writeable = False
    return lut


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
