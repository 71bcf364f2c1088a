"""Display windows: CT presets, robust automatic windows, and mapping pixels to [0, 1] or uint8."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .series import Series


@dataclass(frozen=True)
class WindowPreset:
    name: str
    center: float
    width: float


CT_PRESETS: list[WindowPreset] = [
    WindowPreset("Brain", 40, 80),
    WindowPreset("Soft tissue", 40, 400),
    WindowPreset("Lung", -600, 1500),
    WindowPreset("Liver", 90, 150),
    WindowPreset("Bone", 480, 2500),
]

# Percentiles of a few million values are as good as of all of them, and much faster.
_MAX_SAMPLES = 2_000_000
_AUTO_SLICES = 5


def auto_window(
    pixels: np.ndarray,
    low_pct: float = 1.0,
    high_pct: float = 99.0,
    mask: np.ndarray | None = None,
) -> WindowPreset:
    """A window spanning the low..high percentiles of `pixels` (where `mask` is true), named 'Auto'."""
    values = np.asarray(pixels)
    if mask is not None:
        values = values[np.asarray(mask, dtype=bool)]
    values = values.ravel()
    if values.size > _MAX_SAMPLES:
        values = values[:: values.size // _MAX_SAMPLES + 1]
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return WindowPreset("Auto", 0.5, 1.0)
    lo, hi = np.percentile(values, [low_pct, high_pct])
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        # A flat image: any width shows it; 1 unit keeps integer images crisp.
        return WindowPreset("Auto", lo, 1.0)
    return WindowPreset("Auto", (lo + hi) / 2.0, hi - lo)


def auto_window_slices(series: Series) -> list[int]:
    """The slices the automatic window samples (read first when a series is shown before all its slices are)."""
    n = series.num_slices
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, _AUTO_SLICES))})


def series_auto_window(series: Series) -> WindowPreset:
    """Auto window over a few evenly spaced slices, ignoring background zeros (cached per series). While a series
    is still reading its slices, only those read so far are sampled, and the window is not kept."""
    cached = series._cache.get("auto_window")
    if cached is not None:
        return cached
    picks = auto_window_slices(series)
    read = [k for k in picks if series.is_loaded(k)]
    final = len(read) == len(picks)
    if not read:
        read = [k for k in range(series.num_slices) if series.is_loaded(k)][:1]
        if not read:
            return WindowPreset("Auto", 0.5, 1.0)
    picks = read
    vol = series.volume()
    per_slice = max(_MAX_SAMPLES // len(picks), 1)
    chunks = []
    for k in picks:
        plane = np.asarray(vol[k]).ravel()
        if plane.size > per_slice:
            plane = plane[:: plane.size // per_slice + 1]
        chunks.append(plane)
    values = np.concatenate(chunks)
    foreground = values[values != 0]
    # A slice set that is nearly all zero is better windowed on everything than on a few specks.
    window = auto_window(foreground if foreground.size >= 0.01 * values.size and foreground.size else values)
    if final:
        series._cache["auto_window"] = window
    return window


def presets_for(series: Series) -> list[WindowPreset]:
    """Windows to offer: CT presets (+ the file's window) for CT, else Auto (+ the file's window)."""
    presets = list(CT_PRESETS) if series.modality.upper() == "CT" else [series_auto_window(series)]
    if series.file_window is not None:
        presets.append(WindowPreset("File", float(series.file_window[0]), float(series.file_window[1])))
    return presets


def default_window(series: Series) -> WindowPreset:
    """CT: Soft tissue; other modalities: the file's window when present, else Auto."""
    if series.modality.upper() == "CT":
        return CT_PRESETS[1]
    if series.file_window is not None:
        return WindowPreset("File", float(series.file_window[0]), float(series.file_window[1]))
    return series_auto_window(series)


def apply_window(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map pixels linearly so center - width/2 -> 0 and center + width/2 -> 1, clipped; float32."""
    width = max(float(width), 1e-6)
    low = float(center) - width / 2.0
    # The subtraction makes a new array, so the caller's pixels are never changed in place.
    out = np.asarray(pixels, dtype=np.float32) - np.float32(low)
    out *= np.float32(1.0 / width)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def to_uint8(pixels: np.ndarray, center: float, width: float) -> np.ndarray:
    """The windowed image as uint8 0..255 for display."""
    out = apply_window(pixels, center, width)
    out *= 255.0
    out += 0.5
    return out.astype(np.uint8)
