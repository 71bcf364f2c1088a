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

from ..io.atomic import atomic_write_npz

_QUANTILES = np.linspace(0.0, 1.0, 1001)  # the grid of engine.calibration.NormalCalibration.pixel_quantiles


@dataclass
class SliceResult:
    index: int
    score: float
    percentile: float
    map: np.ndarray  # (rows, columns) float32; 0 = typical normal, 1 ~ 99th percentile of normal pixels


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
        r = SliceResult(int(index), float(score), float(percentile), np.asarray(amap, dtype=np.float32))
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
    def value_at(self, percentile: float) -> float:
        """Map value that `percentile` % of normal in-body pixels stay below; 1.0 stands for p99 when unknown."""
        if self.pixel_quantiles is None or len(self.pixel_quantiles) != len(_QUANTILES):
            return float(percentile) / 99.0
        return float(np.interp(percentile / 100.0, _QUANTILES, self.pixel_quantiles))

    def pixel_percentile(self, value: float | np.ndarray) -> np.ndarray | float:
        if self.pixel_quantiles is None or len(self.pixel_quantiles) != len(_QUANTILES):
            out = np.clip(np.asarray(value, dtype=np.float64) * 99.0, 0.0, 100.0)
        else:
            xp, idx = np.unique(self.pixel_quantiles, return_index=True)
            out = np.interp(np.asarray(value, dtype=np.float64), xp, _QUANTILES[idx] * 100.0, left=0.0, right=100.0)
        return float(out) if np.ndim(out) == 0 else out

    # ------------------------------------------------------------------------------------------------ save/load
    def save(self, path: str | os.PathLike) -> Path:
        """Compressed .npz; maps as float16 (plenty for display, half the size)."""
        idx = np.array(sorted(self.results), dtype=np.int32)
        maps = (np.stack([self.results[i].map for i in idx]).astype(np.float16) if idx.size
                else np.zeros((0, 1, 1), np.float16))
        meta = {"series_uid": self.series_uid, "num_slices": self.num_slices, "detector": self.detector,
                "complete": self.complete, "seconds": self.seconds}
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
                for i, s, p, m in zip(z["indices"], z["scores"], z["percentiles"], z["maps"]):
                    out.add(int(i), float(s), float(p), m.astype(np.float32))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read saved scores {Path(path).name}: {exc}") from exc
        return out
