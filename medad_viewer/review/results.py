"""Scores of one series, kept so reopening a study shows the last heatmaps without rescoring.

Holds what the viewer needs after the detector is gone: per-slice score, percentile and map, plus the normal pixel
quantiles, so a threshold in "percentile of normal" still converts to a map value.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.calibration import QUANTILES, quantile_percentile, quantile_value
from ..io.atomic import atomic_write_npz


# Maps are kept at most this many pixels on a side, as float16. The detector computes them at its input size
# (260 px for EfficientNet-Lite2) and smooths them, so this loses nothing visible, and a 1,000-slice 512 x 512 series
# holds 128 MB of maps instead of 1 GB: the maps never cost more than the series itself.
MAP_SIDE = 256


def compact_map(amap: np.ndarray, side: int = MAP_SIDE) -> np.ndarray:
    """`amap` shrunk (area average) to at most `side` pixels on its long side, as float16."""
    import cv2

    amap = np.asarray(amap, dtype=np.float32)
    h, w = amap.shape
    if max(h, w) > side:
        scale = side / max(h, w)
        amap = cv2.resize(amap, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return amap.astype(np.float16)


class SliceResult:
    """One slice's score, percentile and map. The map is stored compact (see MAP_SIDE) and given back at the slice's
    full size, float32, each time `map` is read."""

    __slots__ = ("index", "score", "percentile", "shape", "compact")

    def __init__(self, index: int, score: float, percentile: float, amap: np.ndarray,
                 shape: tuple[int, int] | None = None):
        self.index, self.score, self.percentile = int(index), float(score), float(percentile)
        amap = np.asarray(amap)
        self.shape = tuple(int(v) for v in (shape or amap.shape))
        self.compact = amap if amap.dtype == np.float16 and shape is not None else compact_map(amap)

    @property
    def map(self) -> np.ndarray:
        """(rows, columns) float32; 0 = typical normal, 1 ~ 99th percentile of normal pixels."""
        m = self.compact.astype(np.float32)
        if m.shape != self.shape:
            import cv2
            m = cv2.resize(m, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_LINEAR)
        return m

    def __repr__(self) -> str:
        return f"SliceResult({self.index}, score={self.score:.3f}, percentile={self.percentile:.1f})"


@dataclass
class ScoreResults:
    series_uid: str
    num_slices: int
    detector: dict = field(default_factory=dict)  # AnomalyDetector.describe(), for the record and the status bar
    pixel_quantiles: np.ndarray | None = None
    results: dict[int, SliceResult] = field(default_factory=dict)
    complete: bool = False
    seconds: float = 0.0

    def add(self, index: int, score: float, percentile: float, amap: np.ndarray) -> SliceResult:
        return self.put(SliceResult(index, score, percentile, amap))

    def put(self, r: SliceResult) -> SliceResult:
        """Keep `r` itself (results shared between the job and the window cost their memory once)."""
        self.results[r.index] = r
        return r

    def __len__(self) -> int:
        return len(self.results)

    def get(self, index: int) -> SliceResult | None:
        return self.results.get(int(index))

    def ranked(self) -> list[SliceResult]:
        """Most anomalous first; ties keep slice order."""
        return sorted(self.results.values(), key=lambda r: (-r.score, r.index))

    def percentiles(self) -> dict[int, float]:
        return {i: r.percentile for i, r in self.results.items()}

    def scores(self) -> dict[int, float]:
        return {i: r.score for i, r in self.results.items()}

    # --------------------------------------------------------------------------------------------- calibration
    def _calibrated(self) -> bool:
        return self.pixel_quantiles is not None and len(self.pixel_quantiles) == len(QUANTILES)

    def value_at(self, percentile: float) -> float:
        """Map value that `percentile` % of normal in-body pixels stay below; 1.0 stands for p99 when unknown."""
        if not self._calibrated():
            return float(percentile) / 99.0
        return quantile_value(self.pixel_quantiles, percentile)

    def pixel_percentile(self, value: float | np.ndarray) -> np.ndarray | float:
        """Percentile of normal in-body pixels of a map value (or array), 0..100; value x 99 when unknown."""
        if not self._calibrated():
            out = np.clip(np.asarray(value, dtype=np.float64) * 99.0, 0.0, 100.0)
        else:
            out = quantile_percentile(self.pixel_quantiles, value)
        return float(out) if np.ndim(out) == 0 else out

    # ------------------------------------------------------------------------------------------------ save/load
    def save(self, path: str | os.PathLike) -> Path:
        """Compressed .npz; maps as float16 (plenty for display, half the size)."""
        idx = np.array(sorted(self.results), dtype=np.int32)
        maps = (np.stack([self.results[i].compact for i in idx]) if idx.size else np.zeros((0, 1, 1), np.float16))
        shape = list(self.results[int(idx[0])].shape) if idx.size else None
        meta = {"series_uid": self.series_uid, "num_slices": self.num_slices, "detector": self.detector,
                "complete": self.complete, "seconds": self.seconds, "map_shape": shape}
        arrays = {"indices": idx, "scores": np.array([self.results[i].score for i in idx], np.float64),
                  "percentiles": np.array([self.results[i].percentile for i in idx], np.float64),
                  "maps": maps, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        if self.pixel_quantiles is not None:
            arrays["pixel_quantiles"] = np.asarray(self.pixel_quantiles, np.float64)
        return atomic_write_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScoreResults":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                out = cls(meta["series_uid"], int(meta["num_slices"]), meta.get("detector", {}),
                          np.array(z["pixel_quantiles"]) if "pixel_quantiles" in z else None,
                          complete=bool(meta.get("complete")), seconds=float(meta.get("seconds", 0.0)))
                shape = tuple(meta["map_shape"]) if meta.get("map_shape") else None  # None: saved full size
                for i, s, p, m in zip(z["indices"], z["scores"], z["percentiles"], z["maps"]):
                    out.put(SliceResult(int(i), float(s), float(p), np.array(m), shape))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read saved scores {Path(path).name}: {exc}") from exc
        return out
