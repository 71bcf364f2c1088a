"""Turn raw scores into "percentile of normal", so a threshold means the same across backbones and studies.

The normal distribution comes from the references themselves, leave-one-out: each reference (and its augmented
copies) is scored against a memory bank built without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

QUANTILES = np.linspace(0.0, 1.0, 1001)  # the grid of NormalCalibration.pixel_quantiles (and of saved scores)


def normal_percentile(z: float | np.ndarray) -> np.ndarray | float:
    """100 * the standard normal CDF at `z`: the percentile a Gaussian fit gives (float for a scalar)."""
    pct = 50.0 * (1.0 + np.vectorize(math.erf)(np.asarray(z, dtype=np.float64) / math.sqrt(2.0)))
    return float(pct) if np.ndim(pct) == 0 else pct


def normal_z(percentile: float) -> float:
    """The inverse: z at which the standard normal CDF is `percentile` / 100 (kept inside (0, 100) exclusive)."""
    return NormalDist().inv_cdf(min(max(float(percentile) / 100.0, 1e-9), 1.0 - 1e-9))


def quantile_value(pixel_quantiles: np.ndarray, percentile: float) -> float:
    """The map value that `percentile` % of normal pixels stay below, from their quantiles on the QUANTILES grid."""
    return float(np.interp(percentile / 100.0, QUANTILES, pixel_quantiles))


def quantile_percentile(pixel_quantiles: np.ndarray, values: float | np.ndarray) -> np.ndarray:
    """Percentile of normal pixels (0..100, float64) of each value, from their quantiles on the QUANTILES grid."""
    # np.interp needs strictly increasing xp for a meaningful inverse; ties collapse to their first quantile.
    xp, idx = np.unique(pixel_quantiles, return_index=True)
    return np.interp(np.asarray(values, dtype=np.float64), xp, QUANTILES[idx] * 100.0, left=0.0, right=100.0)


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
        q = np.quantile(pv, QUANTILES)
        s = np.asarray(image_scores, dtype=np.float64).ravel()
        mean = float(s.mean()) if s.size else 0.0
        # A handful of references gives a noisy spread: floor it so one lucky pick can't make everything "abnormal".
        std = float(s.std(ddof=1)) if s.size > 1 else 0.0
        std = max(std, 0.05 * abs(mean), 1e-6)
        return cls(q.astype(np.float64), mean, std, s)

    def image_percentile(self, score: float | np.ndarray) -> np.ndarray | float:
        """Percentile of a normal image's score (Gaussian fit of the leave-one-out scores), 0..100."""
        return normal_percentile((np.asarray(score, dtype=np.float64) - self.image_mean) / self.image_std)

    def pixel_percentile(self, values: np.ndarray) -> np.ndarray:
        """Percentile of normal in-body pixels, 0..100, for each value of a map."""
        return quantile_percentile(self.pixel_quantiles, values).astype(np.float32)

    def pixel_value_at(self, percentile: float) -> float:
        """The map value that the given percentile of normal pixels stays below (for thresholds)."""
        return quantile_value(self.pixel_quantiles, percentile)

    def state(self) -> dict[str, np.ndarray]:
        return {"calibration.pixel_quantiles": self.pixel_quantiles,
                "calibration.image_scores": self.image_scores,
                "calibration.image_stats": np.array([self.image_mean, self.image_std])}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "NormalCalibration":
        stats = np.asarray(state["calibration.image_stats"], dtype=np.float64)
        return cls(np.asarray(state["calibration.pixel_quantiles"], dtype=np.float64), float(stats[0]),
                   float(stats[1]), np.asarray(state["calibration.image_scores"], dtype=np.float64))
