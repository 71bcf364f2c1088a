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
from ..engine.records import SliceScore
from ..io.atomic import atomic_write_npz


@dataclass
class ScoreResults:
    series_uid: str
    num_slices: int
    detector: dict = field(default_factory=dict)  # AnomalyDetector.describe(), for the record and the status bar
    pixel_quantiles: np.ndarray | None = None
    results: dict[int, SliceScore] = field(default_factory=dict)  # each compact
    complete: bool = False
    seconds: float = 0.0

    def add(self, index: int, score: float, percentile: float, amap: np.ndarray) -> SliceScore:
        return self.put(SliceScore(index, score, percentile, amap))

    def put(self, r: SliceScore) -> SliceScore:
        """Keep `r` in its compact form and give back what is kept: `r` itself when it is compact already (results
        shared between the job and the window cost their memory once)."""
        r = r.compacted()
        self.results[r.index] = r
        return r

    def __len__(self) -> int:
        return len(self.results)

    def get(self, index: int) -> SliceScore | None:
        return self.results.get(int(index))

    def ranked(self) -> list[SliceScore]:
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
                    out.put(SliceScore(int(i), float(s), float(p), np.array(m), shape))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read saved scores {Path(path).name}: {exc}") from exc
        return out
