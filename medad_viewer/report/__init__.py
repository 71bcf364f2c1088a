"""Exports: PDF heatmap report, CSV/JSON score tables, map and annotation volumes, view PNG.

Two ways in: from a scoring run folder (CLI: `ReportData.build(read_score_dir(...), series, review)`), or from the
viewer's File → Export actions, which call `export_*(context, path)` with a review.export.ExportContext.
Heavy modules (Qt, SimpleITK) load on first use, so importing this package stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..engine.jobs import CancelToken, Cancelled, no_progress
from .data import (DISCLAIMER, Privacy, ReportData, ReportError, SliceRow, SourceUnavailable, load_review_file,
                   load_target_series, pixel_threshold, reviews_for, run_from_results, score_threshold)
from .score_dir import ScoreRun, read_score_dir, series_record, write_score_dir

__all__ = [
    "CancelToken", "Cancelled", "DISCLAIMER", "Privacy", "ReportData", "ReportError", "ScoreRun", "SliceRow",
    "SourceUnavailable", "load_review_file", "load_target_series", "pixel_threshold", "read_score_dir",
    "reviews_for", "run_from_results", "score_threshold", "series_record", "write_score_dir",
    "write_pdf_report", "write_scores_csv", "write_scores_json", "write_map_volume", "write_annotation_volume",
    "render_view", "save_view_png",
    "export_pdf_report", "export_scores_csv", "export_scores_json", "export_map_volume",
    "export_annotation_volume", "export_view_png",
]


def write_pdf_report(data: ReportData, path: str | os.PathLike, options: Any = None, progress=no_progress,
                     cancel: CancelToken | None = None) -> Path:
    from .pdf import write_pdf_report as _w

    return _w(data, path, options, progress, cancel)


def write_scores_csv(data: ReportData, path: str | os.PathLike, progress=no_progress,
                     cancel: CancelToken | None = None) -> Path:
    from .tables import write_scores_csv as _w

    return _w(data, path, progress, cancel)


def write_scores_json(data: ReportData, path: str | os.PathLike, progress=no_progress,
                      cancel: CancelToken | None = None) -> Path:
    from .tables import write_scores_json as _w

    return _w(data, path, progress, cancel)


def write_map_volume(data: ReportData, path: str | os.PathLike, progress=no_progress,
                     cancel: CancelToken | None = None) -> Path:
    from .volumes import write_map_volume as _w

    return _w(data, path, progress, cancel)


def write_annotation_volume(data: ReportData, path: str | os.PathLike, progress=no_progress,
                            cancel: CancelToken | None = None) -> Path:
    from .volumes import write_annotation_volume as _w

    return _w(data, path, progress, cancel)


def render_view(*args, **kwargs):
    """See view_png.render_view: slice + overlay + colour bar as a QImage."""
    from .view_png import render_view as _r

    return _r(*args, **kwargs)


def save_view_png(*args, **kwargs) -> Path:
    """See view_png.save_view_png."""
    from .view_png import save_view_png as _s

    return _s(*args, **kwargs)


# ------------------------------------------------------------------------------------------ viewer export actions
def _data_from_context(ctx: Any, include_identifiers: bool = False, need_scores: bool = True,
                       threshold_pct: float | None = None, flag_pct: float | None = None) -> ReportData:
    """ReportData from the viewer's ExportContext (review.export): the open series, its scores, review, references.
    `threshold_pct` (heatmap, percentile of normal pixels) and `flag_pct` (slices, percentile of normal slices)
    override the context's; a context without its own flag_pct flags at threshold_pct."""
    results = getattr(ctx, "results", None)
    if need_scores and (results is None or not len(results)):
        raise ReportError("this series has no scores yet: press Adapt & score first")
    threshold = float(threshold_pct if threshold_pct is not None else getattr(ctx, "threshold_pct", 99.0) or 99.0)
    if results is None:
        from .score_dir import ScoreRun as _Run
        import numpy as np

        s = ctx.series
        run = _Run(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0),
                   np.zeros((0, s.rows, s.columns), np.float32), {"target": series_record(s)})
    else:
        run = run_from_results(results, ctx.series, getattr(ctx, "detector", None) or None,
                               getattr(ctx, "reference_set", None), threshold_pct=threshold)
    if flag_pct is None:
        flag_pct = getattr(ctx, "flag_pct", None)
    return ReportData.build(run, ctx.series, getattr(ctx, "review", None), threshold_pct=threshold,
                            include_identifiers=include_identifiers,
                            flag_pct=None if flag_pct is None else float(flag_pct))


def _pdf_options(ctx: Any, slices: str = "flagged"):
    from .pdf import PdfOptions

    o = PdfOptions(slices=slices)
    window = getattr(ctx, "window", None)
    if window is not None:
        o.window = (float(window[0]), float(window[1]))
        o.window_name = str(getattr(ctx, "window_name", "") or "")
    for attr, field in (("opacity", "opacity"), ("colormap", "cmap")):
        value = getattr(ctx, attr, None)
        if value is not None:
            setattr(o, field, value)
    return o


def export_pdf_report(ctx: Any, path: str, *, include_identifiers: bool = False, threshold_pct: float | None = None,
                      flag_pct: float | None = None, slices: str = "flagged", progress=no_progress,
                      cancel: CancelToken | None = None) -> Path:
    """File → Export → PDF heatmap report (de-identified unless `include_identifiers`). `threshold_pct`: heatmap
    threshold, percentile of normal pixels; `flag_pct`: slices at or above this percentile of normal slices are
    flagged (defaults: the context's); `slices`: "flagged" (default), "confirmed" or "all" (see pdf.SLICE_CHOICES)."""
    data = _data_from_context(ctx, include_identifiers, threshold_pct=threshold_pct, flag_pct=flag_pct)
    return write_pdf_report(data, path, _pdf_options(ctx, slices), progress, cancel)


def export_scores_csv(ctx: Any, path: str, *, include_identifiers: bool = False, progress=no_progress,
                      cancel: CancelToken | None = None) -> Path:
    return write_scores_csv(_data_from_context(ctx, include_identifiers), path, progress, cancel)


def export_scores_json(ctx: Any, path: str, *, include_identifiers: bool = False, progress=no_progress,
                       cancel: CancelToken | None = None) -> Path:
    return write_scores_json(_data_from_context(ctx, include_identifiers), path, progress, cancel)


def export_map_volume(ctx: Any, path: str, *, progress=no_progress, cancel: CancelToken | None = None) -> Path:
    return write_map_volume(_data_from_context(ctx), path, progress, cancel)


def export_annotation_volume(ctx: Any, path: str, *, progress=no_progress, cancel: CancelToken | None = None) -> Path:
    """The reviewer's annotations of the open series as a label volume (no scores needed)."""
    return write_annotation_volume(_data_from_context(ctx, need_scores=False), path, progress, cancel)


def export_view_png(ctx: Any, path: str, *, progress=no_progress, cancel: CancelToken | None = None) -> Path:
    """The current slice as shown: window, overlay (when scored), annotations and colour bar."""
    from ..io.windowing import default_window

    s = ctx.series
    i = int(getattr(ctx, "current_index", 0))
    window = getattr(ctx, "window", None)
    if window is None:
        wp = default_window(s)
        window = (wp.center, wp.width)
    results = getattr(ctx, "results", None)
    res = results.get(i) if results is not None else None
    threshold = float(getattr(ctx, "threshold_pct", 99.0) or 99.0)
    value = results.value_at(threshold) if results is not None else 1.0
    review = getattr(ctx, "review", None)
    anns = review.get(s.uid, i).annotations if review is not None else ()
    kwargs = {k: v for k, v in (("opacity", getattr(ctx, "opacity", None)), ("cmap", getattr(ctx, "colormap", None)))
              if v is not None}
    return save_view_png(path, s.slice(i), None if res is None else res.map, window, cancel, threshold=value,
                         spacing=s.spacing[:2], annotations=anns,
                         direction=s.direction if getattr(s, "is_volume", False) else None,
                         caption=f"Slice {i + 1} of {s.num_slices}", **kwargs)
