"""The folder a scoring run leaves behind: scores.csv, maps.npy and run.json, written atomically.

    scores.csv  slice_index, position_mm, raw_score, percentile   (one row per scored slice, in slice order)
    maps.npy    float32 (num_scored, rows, columns), rows in the order of scores.csv
    run.json    backbone, weights, method, device, references, target series (geometry, no identifiers), timings
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_bytes, atomic_write_json
from ..io.series import Series

def series_record(series: Series) -> dict:
    """What a run records of its target series: geometry and description, never identifying data.

    Geometry is the displayed array's (io reorients volumes to LPS); `file_direction`, present when io reoriented
    the file, is the direction of the file's own grid, so exported volumes can be written back on that grid.
    """
    rec = {"source": str(series.source), "uid": series.uid, "modality": series.modality,
           "description": series.description, "num_slices": int(series.num_slices), "rows": int(series.rows),
           "columns": int(series.columns), "spacing": [float(v) for v in series.spacing],
           "origin": [float(v) for v in series.origin], "direction": [float(v) for v in series.direction]}
    meta = series.metadata
    file_direction = meta.get("original_direction")
    if meta.get("reoriented") and file_direction is not None and len(file_direction) == 9:
        rec["file_direction"] = [float(v) for v in file_direction]
    return rec


@dataclass
class ScoreRun:
    indices: np.ndarray  # (N,) slice indices
    positions_mm: np.ndarray  # (N,)
    scores: np.ndarray  # (N,) raw image scores
    percentiles: np.ndarray  # (N,) percentile of normal
    maps: np.ndarray  # (N, rows, columns) float32
    run: dict

    @classmethod
    def of(cls, records, positions_mm, run: dict) -> "ScoreRun":
        """From slice records (engine.records.SliceScore, in the order to write) and their positions."""
        return cls(np.array([r.index for r in records]), np.array(positions_mm, dtype=np.float64),
                   np.array([r.score for r in records]), np.array([r.percentile for r in records]),
                   np.stack([r.map for r in records]).astype(np.float32), run)


def run_record(detector, target: Series, references: list[dict], timings: dict) -> dict:
    """run.json's content for a series scored by a fitted detector (engine.detector.AnomalyDetector): the detector's
    description and settings, the target (never identifying data), the references, the normal calibration, the
    adaptation report and the timings. Written by `score` and by `batch`."""
    cal = detector.calibration
    rep = detector.adapt_report
    return {**detector.describe(), "target": series_record(target), "references": references,
            "threshold_percentile": 99.0,
            "calibration": None if cal is None else {
                "pixel_value_at": {str(p): cal.pixel_value_at(p) for p in (90, 95, 99, 99.9)},
                "image_mean": cal.image_mean, "image_std": cal.image_std,
                # the whole normal pixel scale (engine.calibration.QUANTILES), so the window can open these scores
                "pixel_quantiles": [float(v) for v in cal.pixel_quantiles]},
            "adapt_report": None if rep is None else {"steps": rep.steps, "best_step": rep.best_step,
                                                      "stopped_because": rep.stopped_because},
            "timings": timings}


def write_score_dir(out_dir: str | Path, run: ScoreRun) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["slice_index", "position_mm", "raw_score", "percentile"])
    for i, p, s, q in zip(run.indices, run.positions_mm, run.scores, run.percentiles):
        w.writerow([int(i), f"{float(p):.3f}", f"{float(s):.6f}", f"{float(q):.2f}"])
    npy = io.BytesIO()
    np.save(npy, np.ascontiguousarray(run.maps, dtype=np.float32))
    atomic_write_bytes(out / "maps.npy", npy.getvalue())
    atomic_write_bytes(out / "scores.csv", buf.getvalue().encode())
    # run.json last: its presence marks a complete folder.
    atomic_write_json(out / "run.json", run.run)
    return out


def read_score_dir(path: str | Path) -> ScoreRun:
    root = Path(path)
    if not (root / "run.json").is_file():
        raise FileNotFoundError(f"{root} is not a finished scoring run (no run.json)")
    run = json.loads((root / "run.json").read_text())
    rows = list(csv.DictReader((root / "scores.csv").read_text().splitlines()))
    maps = np.load(root / "maps.npy")
    if maps.shape[0] != len(rows):
        raise ValueError(f"{root}: maps.npy holds {maps.shape[0]} maps for {len(rows)} rows of scores.csv")
    return ScoreRun(np.array([int(r["slice_index"]) for r in rows]),
                    np.array([float(r["position_mm"]) for r in rows]),
                    np.array([float(r["raw_score"]) for r in rows]),
                    np.array([float(r["percentile"]) for r in rows]), maps, run)

