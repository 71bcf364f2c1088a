"""Exports: PDF heatmap report, CSV/JSON score tables, map and annotation volumes, view PNG, DICOM SEG and
parametric map.

Two ways in: from a scoring run folder (CLI: `ReportData.build(read_score_dir(...), series, review)`), or from the
viewer's File → Export actions, which call `export_*(context, path)` with a review.export.ExportContext.
Heavy modules (QtGui, SimpleITK) load on first use, so importing this package stays cheap: the writers below are
the functions of their modules themselves, imported when first asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.jobs import CancelToken, Cancelled, no_progress
from .data import (DISCLAIMER, Privacy, ReportData, ReportError, SliceRow, SourceUnavailable, load_review_file,
                   load_target_series, pixel_threshold, reviews_for, run_from_results, score_threshold)
from .score_dir import ScoreRun, read_score_dir, series_record, write_score_dir

if TYPE_CHECKING:
    from ..review.export import ExportContext
    from .pdf import PdfOptions, write_pdf_report
    from .tables import write_scores_csv, write_scores_json
    from .view_png import render_view, save_view_png
    from .volumes import write_annotation_volume, write_map_volume
    from .dicom_objects import write_dicom_pmap, write_dicom_seg

__all__ = [
    "CancelToken", "Cancelled", "DISCLAIMER", "Privacy", "ReportData", "ReportError", "ScoreRun", "SliceRow",
    "SourceUnavailable", "load_review_file", "load_target_series", "pixel_threshold", "read_score_dir",
    "reviews_for", "run_from_results", "score_threshold", "series_record", "write_score_dir",
    "write_pdf_report", "write_scores_csv", "write_scores_json", "write_map_volume", "write_annotation_volume",
    "render_view", "save_view_png", "write_dicom_seg", "write_dicom_pmap",
    "export_pdf_report", "export_scores_csv", "export_scores_json", "export_map_volume",
    "export_annotation_volume", "export_view_png", "export_dicom_seg", "export_dicom_pmap",
]

# Functions of the heavy modules, by the module that has them.
_LAZY = {"write_pdf_report": "pdf", "write_scores_csv": "tables", "write_scores_json": "tables",
         "write_map_volume": "volumes", "write_annotation_volume": "volumes", "render_view": "view_png",
         "save_view_png": "view_png", "write_dicom_seg": "dicom_objects", "write_dicom_pmap": "dicom_objects"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# ------------------------------------------------------------------------------------------ viewer export actions
def _data_from_context(ctx: ExportContext, include_identifiers: bool = False, need_scores: bool = True,
                       threshold_pct: float | None = None, flag_pct: float | None = None) -> ReportData:
    """ReportData from the viewer's ExportContext (review.export): the open series, its scores, review, references.
    `threshold_pct` (heatmap, percentile of normal pixels) and `flag_pct` (slices, percentile of normal slices)
    override the context's; a context without its own flag_pct flags at threshold_pct."""
    results = ctx.results
    if need_scores and (results is None or not len(results)):
        raise ReportError("this series has no scores yet: press Adapt & score first")
    threshold = float(threshold_pct if threshold_pct is not None else ctx.threshold_pct or 99.0)
    if results is None:
        import numpy as np

        s = ctx.series
        run = ScoreRun(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0),
                       np.zeros((0, s.rows, s.columns), np.float32), {"target": series_record(s)})
    else:
        run = run_from_results(results, ctx.series, ctx.detector or None, ctx.reference_set, threshold_pct=threshold)
    if flag_pct is None:
        flag_pct = ctx.flag_pct
    return ReportData.build(run, ctx.series, ctx.review, threshold_pct=threshold,
                            include_identifiers=include_identifiers,
                            flag_pct=None if flag_pct is None else float(flag_pct), measurements=ctx.measurements)


def _pdf_options(ctx: ExportContext, slices: str = "flagged") -> PdfOptions:
    from .pdf import PdfOptions

    o = PdfOptions(slices=slices)
    if ctx.window is not None:
        o.window = (float(ctx.window[0]), float(ctx.window[1]))
        o.window_name = str(ctx.window_name or "")
    if ctx.opacity is not None:
        o.opacity = ctx.opacity
    if ctx.colormap is not None:
        o.cmap = ctx.colormap
    return o


def export_pdf_report(ctx: ExportContext, path: str, *, include_identifiers: bool = False,
                      threshold_pct: float | None = None, flag_pct: float | None = None, slices: str = "flagged",
                      progress=no_progress, cancel: CancelToken | None = None) -> Path:
    """File → Export → PDF heatmap report (de-identified unless `include_identifiers`). `threshold_pct`: heatmap
    threshold, percentile of normal pixels; `flag_pct`: slices at or above this percentile of normal slices are
    flagged (defaults: the context's); `slices`: "flagged" (default), "confirmed" or "all" (see pdf.SLICE_CHOICES)."""
    from .pdf import write_pdf_report

    data = _data_from_context(ctx, include_identifiers, threshold_pct=threshold_pct, flag_pct=flag_pct)
    return write_pdf_report(data, path, _pdf_options(ctx, slices), progress, cancel)


def export_scores_csv(ctx: ExportContext, path: str, *, include_identifiers: bool = False, progress=no_progress,
                      cancel: CancelToken | None = None) -> Path:
    from .tables import write_scores_csv

    return write_scores_csv(_data_from_context(ctx, include_identifiers), path, progress, cancel)


def export_scores_json(ctx: ExportContext, path: str, *, include_identifiers: bool = False, progress=no_progress,
                       cancel: CancelToken | None = None) -> Path:
    from .tables import write_scores_json

    return write_scores_json(_data_from_context(ctx, include_identifiers), path, progress, cancel)


def export_map_volume(ctx: ExportContext, path: str, *, progress=no_progress,
                      cancel: CancelToken | None = None) -> Path:
    from .volumes import write_map_volume

    return write_map_volume(_data_from_context(ctx), path, progress, cancel)


def export_annotation_volume(ctx: ExportContext, path: str, *, progress=no_progress,
                             cancel: CancelToken | None = None) -> Path:
    """The reviewer's annotations of the open series as a label volume (no scores needed)."""
    from .volumes import write_annotation_volume

    return write_annotation_volume(_data_from_context(ctx, need_scores=False), path, progress, cancel)


def export_dicom_seg(ctx: ExportContext, path: str, *, include_identifiers: bool = False,
                     threshold_pct: float | None = None, progress=no_progress,
                     cancel: CancelToken | None = None) -> Path:
    """File → Export → DICOM Segmentation: the map above the overlay's threshold (AUTOMATIC segment) and the
    confirmed findings' annotations (MANUAL), referencing the open DICOM series; de-identified unless
    `include_identifiers` (the source UIDs are kept either way). A series not loaded from DICOM files raises
    dicom_objects.NotDicomSeries (a ValueError) with a plain message."""
    from .dicom_objects import require_dicom, write_dicom_seg

    require_dicom(ctx.series)
    data = _data_from_context(ctx, include_identifiers, threshold_pct=threshold_pct)
    return write_dicom_seg(data, path, progress, cancel)


def export_dicom_pmap(ctx: ExportContext, path: str, *, include_identifiers: bool = False, progress=no_progress,
                      cancel: CancelToken | None = None) -> Path:
    """File → Export → DICOM parametric map: the anomaly maps of the scored slices, referencing the open DICOM
    series (same privacy rule and errors as export_dicom_seg)."""
    from .dicom_objects import require_dicom, write_dicom_pmap

    require_dicom(ctx.series)
    return write_dicom_pmap(_data_from_context(ctx, include_identifiers), path, progress, cancel)


def export_view_png(ctx: ExportContext, path: str, *, progress=no_progress, cancel: CancelToken | None = None) -> Path:
    """The current slice as shown: window, overlay (when scored), annotations and colour bar."""
    from ..io.windowing import default_window
    from .view_png import save_view_png

    s = ctx.series
    i = int(ctx.current_index)
    window = ctx.window
    if window is None:
        wp = default_window(s)
        window = (wp.center, wp.width)
    results = ctx.results
    res = results.get(i) if results is not None else None
    value = results.value_at(float(ctx.threshold_pct or 99.0)) if results is not None else 1.0
    anns = ctx.review.get(s.uid, i).annotations if ctx.review is not None else ()
    kwargs = {k: v for k, v in (("opacity", ctx.opacity), ("cmap", ctx.colormap)) if v is not None}
    return save_view_png(path, s.slice(i), None if res is None else res.map, window, cancel, threshold=value,
                         spacing=s.spacing[:2], annotations=anns, direction=s.direction if s.is_volume else None,
                         caption=f"Slice {i + 1} of {s.num_slices}", **kwargs)
