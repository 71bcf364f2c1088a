"""Turn raw scores into "percentile of normal", so a threshold means the same across backbones and studies.

The normal distribution comes from the references themselves, leave-one-out: each reference (and its augmented
copies) is scored against a memory bank built without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_QUANTILES = np.linspace(0.0, 1.0, 1001)


@dataclass
class NormalCalibration:
    pixel_quantiles: np.ndarray  # (1001,) values of normal in-body pixels at quantiles 0, 0.1%, ..., 100%
    image_mean: float
    image_std: float
    image_scores: np.ndarray  # the leave-one-out image scores themselves (for the record)

    @classmethod
    def from_normal(cls, pixel_values: np.ndarray, image_scores: np.ndarray) -> "NormalCalibration":
        pv = np.asarray(pixel_values, dtype=np.float64).ravel()
        if pv.size == 0:
            pv = np.zeros(1)
        q = np.quantile(pv, _QUANTILES)
        s = np.asarray(image_scores, dtype=np.float64).ravel()
        mean = float(s.mean()) if s.size else 0.0
        # A handful of references gives a noisy spread: floor it so one lucky pick can't make everything "abnormal".
        std = float(s.std(ddof=1)) if s.size > 1 else 0.0
        std = max(std, 0.05 * abs(mean), 1e-6)
        return cls(q.astype(np.float64), mean, std, s)

    def image_percentile(self, score: float | np.ndarray) -> np.ndarray | float:
        """Percentile of a normal image's score (Gaussian fit of the leave-one-out scores), 0..100."""
        z = (np.asarray(score, dtype=np.float64) - self.image_mean) / self.image_std
        pct = 50.0 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
        return float(pct) if np.ndim(pct) == 0 else pct

    def pixel_percentile(self, values: np.ndarray) -> np.ndarray:
        """Percentile of normal in-body pixels, 0..100, for each value of a map."""
        q = self.pixel_quantiles
        # np.interp needs strictly increasing xp for a meaningful inverse; ties collapse to their first quantile.
        xp, idx = np.unique(q, return_index=True)
        fp = _QUANTILES[idx] * 100.0
        return np.interp(np.asarray(values, dtype=np.float64), xp, fp, left=0.0, right=100.0).astype(np.float32)

    def pixel_value_at(self, percentile: float) -> float:
        """The map value that the given percentile of normal pixels stays below (for thresholds)."""
        return float(np.interp(percentile / 100.0, _QUANTILES, self.pixel_quantiles))

    def state(self) -> dict[str, np.ndarray]:
        return {"calibration.pixel_quantiles": self.pixel_quantiles,
                "calibration.image_scores": self.image_scores,
                "calibration.image_stats": np.array([self.image_mean, self.image_std])}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "NormalCalibration":
        stats = np.asarray(state["calibration.image_stats"], dtype=np.float64)
        return cls(np.asarray(state["calibration.pixel_quantiles"], dtype=np.float64), float(stats[0]),
                   float(stats[1]), np.asarray(state["calibration.image_scores"], dtype=np.float64))
