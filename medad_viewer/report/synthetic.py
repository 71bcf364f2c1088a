"""Plausible scoring runs without the engine (Gaussian-blob maps on chosen slices), for tests, demos and screenshots."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..engine.calibration import normal_percentile
from .score_dir import ScoreRun, series_record


def synthetic_run(series, hot: Sequence[int] = (), *, references: Sequence[tuple[str, str, int]] = (),
                  scored: Sequence[int] | None = None, seed: int = 0, method: str = "memory") -> ScoreRun:
    """A ScoreRun of `series` whose slices in `hot` carry a Gaussian blob (map peak ~2.5, percentile > 99.9) and
    whose other slices look normal (maps ~0.2-0.6, percentiles 5-95). `references` are (source, series_uid, index)."""
    rng = np.random.default_rng(seed)
    idx = np.array(sorted(range(series.num_slices) if scored is None else scored), dtype=np.int64)
    rows, cols = series.rows, series.columns
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    maps = np.zeros((len(idx), rows, cols), dtype=np.float32)
    scores = np.zeros(len(idx))
    pcts = np.zeros(len(idx))
    mean, std = 0.30, 0.04
    hot_set = {int(h) for h in hot}
    for k, i in enumerate(idx):
        # Low smooth background noise: what a normal slice's map looks like.
        noise = rng.normal(0.3, 0.12, size=(max(rows // 16, 2), max(cols // 16, 2))).astype(np.float32)
        m = np.clip(cv2.resize(noise, (cols, rows), interpolation=cv2.INTER_CUBIC), 0, None)
        if int(i) in hot_set:
            cy, cx = rows * (0.4 + 0.2 * rng.random()), cols * (0.35 + 0.3 * rng.random())
            r = 0.06 * min(rows, cols)
            m += 2.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            z = 3.6 + rng.random()
        else:
            z = rng.normal(0.0, 0.8)
            z = float(np.clip(z, -1.6, 1.6))
        maps[k] = m
        scores[k] = mean + std * z
        pcts[k] = normal_percentile(z)
    positions = np.array([series.slice_position(int(i)) for i in idx])
    run = {
        "target": series_record(series),
        "method": method, "backbone": "efficientnet-lite2", "weights": "efficientnet-lite2 (ImageNet)",
        "pretrained": True, "device": "cpu",
        "references": [{"source": s, "series_uid": u, "index": int(j)} for s, u, j in references],
        "reference_set_name": "Normal slices",
        "settings": {"method": method, "backbone": "efficientnet-lite2", "input_size": None, "metric": "cosine",
                     "aggregate_kernel": 3, "bank_flip": True, "smoothing_sigma": 4.0,
                     "image_score": "local_max", "scoring_region": "anatomy", "adapt": {"max_steps": 300, "lr": 0.001, "time_budget_s": 90.0}},
        "timings": {"fit_s": 4.2, "score_s": 3.1},
        "software": "medad-viewer 0.1.0",
        "threshold_percentile": 99.0,
        "calibration": {"pixel_value_at": {"95": 0.62, "99": 1.0, "99.9": 1.45},
                        "image_mean": mean, "image_std": std},
    }
    return ScoreRun(idx, positions, scores, pcts, maps, run)
