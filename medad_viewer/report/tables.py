"""Per-slice score tables as CSV and JSON, with the run's metadata; de-identified unless asked otherwise."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from ..engine.jobs import CancelToken, no_progress
from ..io.atomic import atomic_output, json_default
from .data import DISCLAIMER, Progress, ReportData, format_identifier

FORMAT = "medad-viewer-scores/1"
CSV_COLUMNS = ["slice_index", "slice_number", "position_mm", "score", "percentile", "above_threshold",
               "flagged", "decision", "annotations", "note"]


def _num(v: float, digits: int) -> str:
    return "" if not np.isfinite(v) else f"{v:.{digits}f}"


def scores_json(data: ReportData) -> dict:
    """The JSON document: header, the run's metadata (de-identified by default), and one entry per scored slice."""
    doc: dict = {
        "format": FORMAT,
        "created": data.created.isoformat(timespec="seconds"),
        "study": data.privacy.label,
        "deidentified": not data.privacy.include_identifiers,
        "threshold_percentile": data.threshold_pct,
        "flag_percentile": data.flag_pct,
        "pixel_threshold": data.pixel_threshold,
        "note": "slice_index counts from 0; slice_number from 1, as the viewer and the PDF report show slices. "
                + DISCLAIMER,
    }
    if data.privacy.include_identifiers:
        doc["patient"] = {key: format_identifier(key, data.privacy.identifiers.get(key) or "")
                          for key in ("PatientName", "PatientID", "PatientBirthDate")}
    doc["run"] = data.run_metadata()
    doc["slices"] = [{
        "slice_index": r.index, "slice_number": r.number, "position_mm": _finite_or_none(r.position_mm),
        "score": _finite_or_none(r.score), "percentile": _finite_or_none(r.percentile),
        "above_threshold": r.above_threshold, "flagged": r.flagged, "decision": r.review.decision.value,
        "note": data.note_of(r), "annotations": [a.to_dict() for a in r.review.annotations],
    } for r in data.rows]
    # The reviewer's lengths and ellipse ROIs: where (slice_index in `plane`, pixel coordinates), and their numbers
    # (length_mm or area_mm2; raw values in `units`; the map's, null when the slice was not scored).
    doc["measurements"] = [{
        **{k: v for k, v in mr.measurement.to_dict().items() if k not in ("series_uid", "index")},
        "slice_index": mr.measurement.index, "slice_number": mr.number,
        **{k: getattr(mr.measured, k) for k in ("length_mm", "area_mm2", "pixels", "mean", "sd", "min", "max",
                                                 "map_mean", "map_sd", "map_max", "units")},
    } for mr in data.measurements]
    return doc


def scores_csv(data: ReportData) -> str:
    """CSV text: '#' comment lines with the run's metadata, then one row per scored slice (read with comment='#')."""
    meta = data.run_metadata()
    buf = io.StringIO()
    header = [
        ("study", data.privacy.label),
        *[(k.lower().replace(" ", "_"), v) for k, v in data.privacy.patient_lines()],
        ("modality", (meta.get("target") or {}).get("modality", "")),
        ("series", data.series_description()),
        ("method", meta.get("method", "")), ("backbone", meta.get("backbone", "")),
        ("weights", meta.get("weights", "")), ("device", meta.get("device", "")),
        ("reference_set", meta.get("reference_set_name") or ""),
        ("threshold_percentile", f"{data.threshold_pct:g}"), ("flag_percentile", f"{data.flag_pct:g}"),
        ("pixel_threshold", f"{data.pixel_threshold:.4f}"),
        ("software", meta.get("software", "")), ("created", data.created.isoformat(timespec="seconds")),
        ("note", DISCLAIMER),
    ]
    for key, value in header:
        # One line each: a newline in a value would start a data row.
        buf.write(f"# {key}: {' '.join(str(value if value is not None else '').split())}\n")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in data.rows:
        w.writerow([r.index, r.number, _num(r.position_mm, 3), _num(r.score, 6), _num(r.percentile, 2),
                    int(r.above_threshold), int(r.flagged), r.review.decision.value, len(r.review.annotations),
                    data.note_of(r)])
    return buf.getvalue()


def write_scores_csv(data: ReportData, path: str | os.PathLike, progress: Progress = no_progress,
                     cancel: CancelToken | None = None) -> Path:
    progress(0.0, "Writing the score table (CSV)")
    text = scores_csv(data)
    with atomic_output(path, cancel) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    progress(1.0, "Score table written")
    return Path(path)


def write_scores_json(data: ReportData, path: str | os.PathLike, progress: Progress = no_progress,
                      cancel: CancelToken | None = None) -> Path:
    progress(0.0, "Writing the score table (JSON)")
    # NaN/inf are not JSON (strict parsers reject the file): they become null.
    text = json.dumps(_finite(scores_json(data)), indent=2, ensure_ascii=False, default=json_default, allow_nan=False)
    with atomic_output(path, cancel) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")
    progress(1.0, "Score table written")
    return Path(path)


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _finite(o):
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    return o

