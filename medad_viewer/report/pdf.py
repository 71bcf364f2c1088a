"""The PDF heatmap report: cover, score plot and flagged-slice table, one page per flagged slice.

Made with Qt's own PDF writer (QPdfWriter + QPainter): PySide6 is already a dependency, so no extra package; text
stays vector and searchable, fonts are embedded, and it paints without a display (offscreen), in a worker thread.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PySide6.QtCore import QMarginsF, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPageSize, QPainter, QPainterPath, QPdfWriter, QPen

from .. import __version__
from ..engine.jobs import CancelToken, no_progress
from ..io.deid import pseudonym
from ..io.imaging import fit_size
from ..io.windowing import default_window, to_uint8
from ..review.measurements import ACQUIRED, EllipseROI, label, map_text, values_text
from ..review.references import ReferenceSlice, resolve_series
from ..review.state import Decision
from ..io.atomic import atomic_output
from .data import DISCLAIMER, MeasurementRow, Progress, ReportData, ReportError, SliceRow, score_threshold
from .overlay import COLORBAR_LABEL, DEFAULT_COLORMAP, DEFAULT_OPACITY, compose, default_vmax
from .painting import (draw_annotations, draw_colorbar, slice_to_rect, draw_image, draw_orientation, ensure_qt_app, fmt_tick, font,
                       nice_ticks, qimage_gray, qimage_rgb)

RES = 300  # device units per inch
MM = RES / 25.4
PAGE_W, PAGE_H = 210.0, 297.0  # A4, mm
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 16.0, 12.0, 12.0
HEADER_H, FOOTER_H = 9.0, 13.0

INK = QColor(28, 28, 28)
MUTED = QColor(100, 104, 110)
ACCENT = QColor(24, 72, 120)
RULE = QColor(190, 196, 204)
TINT = QColor(238, 242, 247)
FLAG = QColor(200, 40, 30)
MEASURE = QColor(255, 214, 10)  # the viewer's measurement yellow
NORMAL_PT = QColor(60, 110, 170)

METHOD_WORDS = {
    "adapted": "adapted (adapters and heads trained on the normal references, fused with a memory bank)",
    "memory": "memory bank (training-free nearest-neighbour comparison with the normal references)",
    "zero": "zero-shot (text prompts, no references)",
}
DECISION_WORDS = {Decision.UNREVIEWED: "not reviewed", Decision.CONFIRMED: "confirmed", Decision.DISMISSED: "dismissed"}


@dataclass
class PdfOptions:
    """How the report looks. The window defaults to the viewer's default for the series (io.default_window)."""

    title: str = "Anomaly detection report"
    window: tuple[float, float] | None = None  # (center, width) in modality units
    window_name: str = ""
    opacity: float = DEFAULT_OPACITY
    cmap: str = DEFAULT_COLORMAP
    vmax: float | None = None  # top of the colour scale; None: the viewer's threshold + max(1, threshold)
    max_slice_pages: int = 100  # most anomalous first beyond this; every flagged slice stays in the table
    max_thumbnails: int = 8
    slices: str = "flagged"  # which slices get a table row and a page: one of SLICE_CHOICES


# PdfOptions.slices: (table title, what an empty table says)
SLICE_CHOICES = {
    "flagged": ("Flagged slices", "No slice reached the threshold, and none was confirmed."),
    "confirmed": ("Confirmed slices", "The reviewer confirmed no slice."),
    "all": ("All scored slices", "No slice was scored."),
}


def listed_rows(data: ReportData, slices: str = "flagged") -> list[SliceRow]:
    """The rows the report lists for PdfOptions.slices: flagged (above the threshold or confirmed), confirmed only,
    or every scored slice."""
    if slices == "flagged":
        return data.flagged
    if slices == "confirmed":
        return [r for r in data.rows if r.confirmed]
    if slices == "all":
        return list(data.rows)
    raise ReportError(f"unknown slice choice {slices!r}: use one of {', '.join(SLICE_CHOICES)}")


def mm(v: float) -> float:
    return v * MM


def _fm(f: QFont, p: QPainter) -> QFontMetricsF:
    return QFontMetricsF(f, p.device())


def _pct(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    if v >= 99.995:
        return ">99.99"
    return f"{v:.2f}" if v >= 99 else f"{v:.1f}"


def _ordinal_pct(v: float) -> str:
    return f"{v:g}th percentile"


class _Page:
    """Drawing helpers in mm on one painter; text wraps and returns the y below it."""

    def __init__(self, p: QPainter):
        self.p = p

    def text(self, x: float, y: float, w: float, text: str, f: QFont, color: QColor = INK,
             align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft, wrap: bool = True) -> float:
        flags = align | Qt.AlignmentFlag.AlignTop | (Qt.TextFlag.TextWordWrap if wrap else Qt.TextFlag.TextSingleLine)
        fm = _fm(f, self.p)
        rect = fm.boundingRect(QRectF(0, 0, mm(w), 1e6), int(flags), text) if text else QRectF(0, 0, 0, fm.height())
        h = max(rect.height(), fm.height())
        self.p.setFont(f)
        self.p.setPen(color)
        self.p.drawText(QRectF(mm(x), mm(y), mm(w), h + 2), int(flags), text)
        return y + h / MM

    def elide(self, text: str, f: QFont, w: float) -> str:
        return _fm(f, self.p).elidedText(" ".join(text.split()), Qt.TextElideMode.ElideRight, mm(w))

    def rule(self, x0: float, x1: float, y: float, color: QColor = RULE, width: float = 0.25) -> None:
        self.p.setPen(QPen(color, mm(width)))
        self.p.drawLine(QPointF(mm(x0), mm(y)), QPointF(mm(x1), mm(y)))

    def box(self, x: float, y: float, w: float, h: float, fill: QColor, border: QColor | None = None) -> None:
        self.p.setPen(QPen(border, mm(0.25)) if border is not None else Qt.PenStyle.NoPen)
        self.p.setBrush(fill)
        self.p.drawRect(QRectF(mm(x), mm(y), mm(w), mm(h)))
        self.p.setBrush(Qt.BrushStyle.NoBrush)

    def heading(self, x: float, y: float, w: float, text: str) -> float:
        y = self.text(x, y, w, text, font(11.5, bold=True), ACCENT)
        self.rule(x, x + w, y + 0.8, ACCENT, 0.35)
        return y + 2.6

    def key_values(self, x: float, y: float, w: float, items: Sequence[tuple[str, str]], key_w: float = 38.0,
                   size: float = 9.0, gap: float = 1.1) -> float:
        kf, vf = font(size, bold=True), font(size)
        for key, value in items:
            y_key = self.text(x, y, key_w - 2, key, kf, MUTED)
            y_val = self.text(x + key_w, y, w - key_w, value or "—", vf)
            y = max(y_key, y_val) + gap
        return y


class _Report:
    def __init__(self, data: ReportData, opts: PdfOptions):
        if data.series is None:
            raise ReportError("the PDF report needs the scored images: load the study (or pass --source PATH)")
        self.d = data
        self.o = opts
        self.series = data.series
        if opts.window is not None:
            self.window = (float(opts.window[0]), float(opts.window[1]))
            self.window_name = opts.window_name
        else:
            wp = default_window(self.series)
            self.window, self.window_name = (float(wp.center), float(wp.width)), wp.name
        self.units = self.series.units
        # Plain images (PNG, JPEG, ...) record no pixel size, and only volumes have a patient orientation worth
        # labelling (a radiograph is a projection): no scale bar, mm² or R/L letters that would only look exact.
        self.spacing_known = self.series.spacing_known
        self.oriented = self.series.is_volume
        self.flagged = data.flagged
        self.listed = listed_rows(data, opts.slices)
        self.list_title, self.list_empty = SLICE_CHOICES[opts.slices]
        by_score = sorted(self.listed, key=lambda r: (-np.nan_to_num(r.score, nan=-np.inf), r.index))
        keep = {r.index for r in by_score[: max(int(opts.max_slice_pages), 0)]}
        self.paged = [r for r in self.listed if r.index in keep]
        self.x0, self.x1 = MARGIN_X, PAGE_W - MARGIN_X
        self.width = self.x1 - self.x0
        self.top = MARGIN_TOP + HEADER_H
        self.bottom = PAGE_H - MARGIN_BOTTOM - FOOTER_H
        self.row_h = 5.6
        # The summary page holds the plot, then the table; longer tables continue on pages of their own.
        self.first_rows = int((self.bottom - (self.top + 118.0)) // self.row_h)
        self.more_rows = int((self.bottom - (self.top + 14.0)) // self.row_h)
        n = max(len(self.listed), 1)
        extra = max(0, math.ceil((n - self.first_rows) / self.more_rows))
        self.summary_pages = 1 + extra
        # The reviewer's measurements: a table on pages of their own, after the summary.
        self.measure_rows = int((self.bottom - (self.top + 24.0)) // self.row_h)
        self.measure_pages = math.ceil(len(data.measurements) / self.measure_rows) if data.measurements else 0
        first_slice_page = 2 + self.summary_pages + self.measure_pages
        self.page_of = {r.index: first_slice_page + k for k, r in enumerate(self.paged)}
        self.total_pages = 1 + self.summary_pages + self.measure_pages + len(self.paged)
        # Measurement numbers (M1, M2, ...) on the slice pages, for measurements in the acquired plane
        self.measure_no = {id(mr): k + 1 for k, mr in enumerate(data.measurements)}
        self.page_no = 0
        self.score_thr = score_threshold(data.run, data.flag_pct)

    def _threshold_words(self) -> str:
        d = self.d
        pixels = f"{_ordinal_pct(d.threshold_pct)} of normal (map value {d.pixel_threshold:.2f})"
        if abs(d.flag_pct - d.threshold_pct) < 1e-9:
            return pixels
        return f"slices flagged at the {_ordinal_pct(d.flag_pct)} of normal; heatmap from the {pixels}"

    # ------------------------------------------------------------------------------------------------- frame
    def _who(self) -> str:
        priv = self.d.privacy
        if priv.include_identifiers:
            ids = priv.patient_lines()
            return " · ".join(v for _k, v in ids[:2] if v != "not recorded") or priv.label
        return priv.label

    def frame(self, pg: _Page) -> None:
        self.page_no += 1
        small = font(7.5)
        pg.text(self.x0, MARGIN_TOP, self.width * 0.6, f"MedAD Viewer · {self.o.title}", small, MUTED, wrap=False)
        pg.text(self.x0 + self.width * 0.4, MARGIN_TOP, self.width * 0.6,
                f"{self._who()} · {self.d.target.get('modality', '')}", small, MUTED, Qt.AlignmentFlag.AlignRight,
                wrap=False)
        pg.rule(self.x0, self.x1, MARGIN_TOP + 4.2)
        fy = PAGE_H - MARGIN_BOTTOM - FOOTER_H + 3.0
        pg.rule(self.x0, self.x1, fy)
        y = pg.text(self.x0, fy + 1.2, self.width - 24, DISCLAIMER, font(7.5, bold=True), INK)
        pg.text(self.x1 - 24, fy + 1.2, 24, f"Page {self.page_no} of {self.total_pages}", font(7.5), INK,
                Qt.AlignmentFlag.AlignRight)
        created = self.d.created.strftime("%Y-%m-%d %H:%M")
        pg.text(self.x0, y + 0.4, self.width, f"Created {created} · scored with {self.d.run.run.get('software') or 'n/a'}"
                f" · report by medad-viewer {__version__}", font(6.5), MUTED, wrap=False)

    # ------------------------------------------------------------------------------------------------- cover
    def cover(self, pg: _Page, progress: Progress, cancel: CancelToken | None) -> None:
        d, run = self.d, self.d.run.run
        t = d.target
        x, w = self.x0, self.width
        y = self.top + 2
        y = pg.text(x, y, w * 0.7, self.o.title, font(20, bold=True), ACCENT)
        pg.text(x + w * 0.55, y - 6.5, w * 0.45, d.created.strftime("%d %B %Y, %H:%M"), font(9), MUTED,
                Qt.AlignmentFlag.AlignRight)
        y = pg.text(x, y + 0.5, w, "Few-shot anomaly maps from MedAD Viewer", font(9.5), MUTED) + 4

        # At a glance
        n_scored, n_total = len(d.rows), int(t.get("num_slices") or len(d.rows))
        top = min(d.rows, key=lambda r: r.rank) if d.rows else None
        confirmed = sum(r.confirmed for r in d.rows)
        dismissed = sum(r.review.decision == Decision.DISMISSED for r in d.rows)
        lines = [f"{len(self.flagged)} of {n_scored} scored slices flagged "
                 f"(score at or above the {_ordinal_pct(d.flag_pct)} of normal, or confirmed by the reviewer)."]
        if top is not None:
            lines.append(f"Highest score: slice {top.number} ({_pct(top.percentile)}th percentile of normal).")
        if d.reviews:
            lines.append(f"Review: {confirmed} confirmed, {dismissed} dismissed.")
        glance_f = font(10)
        text = "\n".join(lines)
        h = _fm(glance_f, pg.p).boundingRect(QRectF(0, 0, mm(w - 8), 1e6), int(Qt.TextFlag.TextWordWrap),
                                             text).height() / MM
        pg.box(x, y, w, h + 6, TINT)
        pg.box(x, y, 1.2, h + 6, ACCENT)
        pg.text(x + 5, y + 3, w - 8, text, glance_f)
        y += h + 6 + 5

        # Patient / study
        priv = d.privacy
        if priv.include_identifiers:
            y = pg.heading(x, y, w, "Patient")
            items = priv.patient_lines()
            study_date = priv.identifiers.get("StudyDate")
            if study_date:
                from .data import format_identifier
                items.append(("Study date", format_identifier("StudyDate", study_date)))
            if d.study_description():
                items.append(("Study", d.study_description()))
            items.append(("Source", str(t.get("source", ""))))
        else:
            y = pg.heading(x, y, w, "Study")
            items = [("Study label", f"{priv.label} (pseudonymous)"),
                     ("Patient details", "not included: de-identified report")]
        y = pg.key_values(x, y, w, items) + 3

        y = pg.heading(x, y, w, "Series")
        sp = t.get("spacing") or [1, 1, 1]
        items = [("Modality", str(t.get("modality", ""))),
                 ("Series", d.series_description()),
                 ("Slices", f"{n_total} slices of {t.get('columns')} × {t.get('rows')} pixels; {n_scored} scored"),
                 ("Voxel size", (f"{sp[0]:.2f} × {sp[1]:.2f} mm in plane"
                                 + (f", {sp[2]:.2f} mm between slices" if n_total > 1 else ""))
                  if self.spacing_known else "not recorded (plain image file)")]
        y = pg.key_values(x, y, w, items) + 3

        y = pg.heading(x, y, w, "Method")
        method = str(run.get("method") or "")
        weights = run.get("weights")
        if isinstance(weights, str) and not priv.include_identifiers and os.sep in weights:
            weights = os.path.basename(weights)
        pretrained = run.get("pretrained")
        timings = run.get("timings") or {}
        tline = ", ".join(f"{_timing_label(k)} {float(v):.{1 if v >= 0.1 else 3}f} s"
                          for k, v in timings.items() if isinstance(v, (int, float)) and math.isfinite(float(v)))
        items = [("Method", METHOD_WORDS.get(method, method or "not recorded")),
                 ("Backbone", str(run.get("backbone") or "not recorded")),
                 ("Weights", (str(weights) if weights else "default") +
                  ("" if pretrained is None else (" (pretrained)" if pretrained else " (not pretrained)"))),
                 ("Device", str(run.get("device") or "not recorded")),
                 ("Threshold", self._threshold_words()),
                 ("Timings", tline or "not recorded"),
                 ("Software", str(run.get("software") or "not recorded"))]
        y = pg.key_values(x, y, w, items) + 3

        y = pg.heading(x, y, w, "Reference set")
        refs = [r for r in run.get("references") or [] if isinstance(r, dict)]
        name = priv.scrub(str(run.get("reference_set_name") or ""))
        count = f"{len(refs)} normal reference slice{'s' if len(refs) != 1 else ''}"
        y = pg.text(x, y, w, f"{name}: {count}" if name else count[0].upper() + count[1:], font(9))
        y = self.thumbnails(pg, x, y + 1.5, w, refs, progress, cancel) + 3

        settings = dict(run.get("settings") or {})
        if method and method != "adapted":
            settings.pop("adapt", None)  # training settings of a method that trains nothing would mislead
        y = pg.heading(x, y, w, "Adaptation settings" if method in ("adapted", "") else "Detector settings")
        self.settings_grid(pg, x, y, w, settings)

    def thumbnails(self, pg: _Page, x: float, y: float, w: float, refs: list[dict], progress: Progress,
                   cancel: CancelToken | None) -> float:
        if not refs:
            return pg.text(x, y, w, "No reference slices recorded.", font(8.5), MUTED)
        n = min(len(refs), self.o.max_thumbnails)
        gap = 2.5
        size = min(20.0, (w - gap * (n - 1)) / max(n, 1))
        studies: dict[str, Any] = {}
        cap_f = font(6.5)
        for k, ref in enumerate(refs[:n]):
            if cancel is not None:
                cancel.raise_if_cancelled()
            progress(0.02 + 0.1 * k / n, "Loading the reference thumbnails")
            rx = x + k * (size + gap)
            img = self._reference_image(ref, studies)
            pg.box(rx, y, size, size, QColor(0, 0, 0) if img is not None else QColor(230, 230, 230))
            if img is not None:
                h, wd = img.shape
                s = min(size / wd, size / h)
                iw, ih = wd * s, h * s
                draw_image(pg.p, QRectF(mm(rx + (size - iw) / 2), mm(y + (size - ih) / 2), mm(iw), mm(ih)),
                           qimage_gray(img), min_dpi=150)
            else:
                pg.text(rx, y + size / 2 - 2, size, "not available", cap_f, MUTED, Qt.AlignmentFlag.AlignHCenter)
            same = str(ref.get("series_uid")) == str(self.d.target.get("uid"))
            where = "" if same else pseudonym(str(ref.get("series_uid", "")), prefix="Series") + "\n"
            if self.d.privacy.include_identifiers and not same:
                where = os.path.basename(str(ref.get("source", ""))) + "\n"
            pg.text(rx - 1, y + size + 0.6, size + 2, f"{where}slice {int(ref.get('index', 0)) + 1}", cap_f, MUTED,
                    Qt.AlignmentFlag.AlignHCenter)
        y_end = y + size + 7
        if len(refs) > n:
            y_end = pg.text(x, y_end, w, f"… and {len(refs) - n} more.", font(8), MUTED)
        return y_end

    def _reference_image(self, ref: dict, studies: dict) -> np.ndarray | None:
        """Windowed uint8 thumbnail of a reference slice, or None when its study cannot be read any more."""
        try:
            idx = int(ref.get("index", -1))
            series = None
            if str(ref.get("series_uid")) == str(self.series.uid):
                series = self.series
            elif ref.get("source"):
                from ..io import load_study

                src = str(ref["source"])
                series = resolve_series(ReferenceSlice(src, str(ref.get("series_uid", "")), idx), studies,
                                        load_study if os.path.exists(src) else None)
            if series is None:
                return None
            if not 0 <= idx < series.num_slices:
                return None
            wp = default_window(series)
            g = to_uint8(series.slice(idx), wp.center, wp.width)
            sx, sy = series.spacing[0], series.spacing[1]
            # Square pixels and a small size: the thumbnail is for recognising the anatomy, not reading.
            h, w = g.shape
            nh, nw = fit_size(h * sy / min(sx, sy), w * sx / min(sx, sy), 256.0)
            return cv2.resize(g, (nw, nh), interpolation=cv2.INTER_AREA)
        except Exception:  # noqa: BLE001 - a reference that cannot be shown must not stop the report
            return None

    def settings_grid(self, pg: _Page, x: float, y: float, w: float, settings: dict) -> float:
        flat: list[tuple[str, str]] = []
        for k, v in settings.items():
            if isinstance(v, dict):
                flat += [(f"{k}.{kk}", _fmt_setting(vv)) for kk, vv in v.items()]
            else:
                flat.append((k, _fmt_setting(v)))
        if not flat:
            return pg.text(x, y, w, "Not recorded.", font(8.5), MUTED)
        cols = 3
        per = math.ceil(len(flat) / cols)
        cw = w / cols
        f = font(7)
        fb = font(7, bold=True)
        line = _fm(f, pg.p).height() / MM + 0.35
        room = max(int((self.bottom - y - 1) // line), 1)
        if per > room:  # never run into the footer: the rest is in run.json
            per = room
        end = y
        for c in range(cols):
            yy = y
            for key, val in flat[c * per:(c + 1) * per]:
                pg.text(x + c * cw, yy, cw * 0.55, pg.elide(key, fb, cw * 0.55 - 1), fb, MUTED, wrap=False)
                pg.text(x + c * cw + cw * 0.55, yy, cw * 0.45, pg.elide(val, f, cw * 0.45 - 1.5), f, wrap=False)
                yy += line
            end = max(end, yy)
        return end

    # ----------------------------------------------------------------------------------------------- summary
    def summary(self, pg: _Page, page_in_summary: int) -> None:
        d = self.d
        x, w = self.x0, self.width
        y = self.top + 2
        per_first, per_more = self.first_rows, self.more_rows
        if page_in_summary == 0:
            y = pg.heading(x, y, w, "Scores across the series")
            plot_h = 78.0
            self.plot(pg, QRectF(mm(x), mm(y), mm(w), mm(plot_h)))
            y += plot_h + 2
            thr = (f"score {self.score_thr:.4g}" if self.score_thr is not None else "")
            cap = (f"Each point is one slice's anomaly score (higher = less like the normal references). "
                   f"Dashed line: the {_ordinal_pct(d.flag_pct)} of normal{f' ({thr})' if thr else ''}. "
                   f"Red points are flagged; a ring marks a slice the reviewer confirmed.")
            y = pg.text(x, y, w, cap, font(8), MUTED) + 4
            rows = self.listed[:per_first]
            title = f"{self.list_title} ({len(self.listed)})"
        else:
            start = per_first + (page_in_summary - 1) * per_more
            rows = self.listed[start:start + per_more]
            title = f"{self.list_title} (continued)"
        y = pg.heading(x, y, w, title)
        if page_in_summary == 0:
            which = {"flagged": f"Score at or above the {_ordinal_pct(d.flag_pct)} of normal, or confirmed by "
                              "the reviewer. ",
                     "confirmed": "Slices the reviewer confirmed. ",
                     "all": f"Every scored slice; flagged: score at or above the {_ordinal_pct(d.flag_pct)} of "
                            "normal, or confirmed by the reviewer. "}[self.o.slices]
            expl = (f"{which}"
                    "Percentile: the score's percentile among normal slices. Slice numbers count from 1, as in the "
                    "viewer.")
            if len(self.paged) < len(self.listed):
                kind = {"flagged": "flagged", "confirmed": "confirmed", "all": "scored"}[self.o.slices]
                expl += f" Pages are given to the {len(self.paged)} highest-scoring {kind} slices."
            y = pg.text(x, y, w, expl, font(8), MUTED) + 1.5
        self.table(pg, x, y, w, rows)

    def _header_row(self, pg: _Page, x: float, y: float, w: float, cols: list) -> tuple[list, float]:
        """A table's tinted header row; `cols` (name, width or 0 for the rest, alignment) with the rest's width
        filled in, and the y below the header."""
        fixed = sum(c[1] for c in cols)
        cols = [(n, cw if cw else w - fixed, a) for n, cw, a in cols]
        hf = font(7.5, bold=True)
        pg.box(x, y, w, self.row_h, TINT)
        cx = x
        for name, cw, align in cols:
            pg.text(cx + 1.2, y + 1.3, cw - 2.4, name, hf, ACCENT, align, wrap=False)
            cx += cw
        return cols, y + self.row_h

    def table(self, pg: _Page, x: float, y: float, w: float, rows: list[SliceRow]) -> float:
        cols = [("Slice", 13, Qt.AlignmentFlag.AlignRight), ("Position (mm)", 24, Qt.AlignmentFlag.AlignRight),
                ("Score", 20, Qt.AlignmentFlag.AlignRight), ("Percentile", 20, Qt.AlignmentFlag.AlignRight),
                ("Flagged by", 31, Qt.AlignmentFlag.AlignLeft), ("Review", 22, Qt.AlignmentFlag.AlignLeft),
                ("Note", 0, Qt.AlignmentFlag.AlignLeft), ("Page", 11, Qt.AlignmentFlag.AlignRight)]
        cols, y = self._header_row(pg, x, y, w, cols)
        f, rh = font(8.5), self.row_h
        if not rows:
            return pg.text(x + 1.2, y + 1.3, w, self.list_empty, f, MUTED)
        for k, r in enumerate(rows):
            if k % 2 == 1:
                pg.box(x, y, w, rh, QColor(248, 249, 251))
            cells = [str(r.number), f"{r.position_mm:.1f}", f"{r.score:.4f}", _pct(r.percentile), r.flagged_by or "—",
                     DECISION_WORDS[r.review.decision], self.d.note_of(r),
                     str(self.page_of[r.index]) if r.index in self.page_of else "—"]
            flag = "Percentile" if r.above_threshold else None
            y = self._table_row(pg, x, y, cols, cells, bold="Slice", flagged=flag)
        pg.rule(x, x + w, y)
        return y

    # ----------------------------------------------------------------------------------------- measurements
    def measurements_page(self, pg: _Page, page_in_list: int) -> None:
        d = self.d
        x, w = self.x0, self.width
        y = self.top + 2
        n = len(d.measurements)
        start = page_in_list * self.measure_rows
        rows = d.measurements[start:start + self.measure_rows]
        y = pg.heading(x, y, w, f"Measurements ({n})" if page_in_list == 0 else "Measurements (continued)")
        if page_in_list == 0:
            units = self.units or "modality units"
            expl = (f"Lengths and elliptical regions of interest drawn by the reviewer. Inside an ellipse: the pixels "
                    f"whose centre lies in it; mean ± SD (population SD), minimum and maximum of the raw values in "
                    f"{units}; map: mean and maximum of the anomaly map (1 = the 99th percentile of normal pixels), "
                    f"when the slice was scored. Slice numbers count from 1 in the measurement's plane; M-numbers "
                    f"mark them on the slice pages.")
            if not self.spacing_known:
                expl += " The image file records no pixel size: sizes are in pixels."
            y = pg.text(x, y, w, expl, font(8), MUTED) + 1.5
        self.measure_table(pg, x, y, w, rows, start)

    def measure_table(self, pg: _Page, x: float, y: float, w: float, rows: list[MeasurementRow],
                      start: int) -> float:
        cols = [("#", 10, Qt.AlignmentFlag.AlignLeft), ("Slice", 12, Qt.AlignmentFlag.AlignRight),
                ("Plane", 19, Qt.AlignmentFlag.AlignLeft), ("Kind", 22, Qt.AlignmentFlag.AlignLeft),
                ("Length / area", 27, Qt.AlignmentFlag.AlignRight), ("Mean ± SD", 31, Qt.AlignmentFlag.AlignRight),
                ("Min / max", 27, Qt.AlignmentFlag.AlignRight), ("Map mean / max", 0, Qt.AlignmentFlag.AlignRight)]
        cols, y = self._header_row(pg, x, y, w, cols)
        rh = self.row_h
        for k, mr in enumerate(rows):
            if k % 2 == 1:
                pg.box(x, y, w, rh, QColor(248, 249, 251))
            r = mr.measured
            mapped = map_text(r)
            cells = [f"M{start + k + 1}", str(mr.number), mr.plane, mr.kind, self._size(r),
                     values_text(r) if r.kind == "roi" else "—",
                     f"{_raw(r.min, r.units)} / {_raw(r.max, r.units)}" if r.min is not None else "—",
                     mapped[len("map "):].replace("max ", "") if mapped else ("—" if r.kind == "length"
                                                                            else "not scored")]
            y = self._table_row(pg, x, y, cols, cells, bold="#")
        pg.rule(x, x + w, y)
        return y

    def _table_row(self, pg: _Page, x: float, y: float, cols: list, cells: list[str], bold: str,
                   flagged: str | None = None) -> float:
        """One row of a table under `_header_row`'s columns: the `bold` column in bold, the `flagged` one in the flag
        colour; returns the next row's top."""
        cx = x
        for (name, cw, align), text in zip(cols, cells):
            cf = font(8.5, bold=(name == bold))
            pg.text(cx + 1.2, y + 1.2, cw - 2.4, pg.elide(text, cf, cw - 2.4), cf, FLAG if name == flagged else INK,
                    align, wrap=False)
            cx += cw
        return y + self.row_h

    def _size(self, r) -> str:
        if r.kind == "length":
            return f"{r.length_mm:.1f} {'mm' if self.spacing_known else 'px'}"
        if not self.spacing_known:
            return f"{r.area_mm2:.0f} px²"
        return f"{r.area_mm2:.1f} mm²" if r.area_mm2 < 1000 else f"{r.area_mm2 / 100.0:.2f} cm²"

    def draw_measurements(self, p: QPainter, rect: QRectF, shape: tuple[int, int], index: int,
                          offset: tuple[float, float] = (0.0, 0.0)) -> None:
        """The measurements of acquired slice `index` over its picture, in the viewer's yellow, each with its
        M-number from the table."""
        here = [mr for mr in self.d.measurements if mr.plane == ACQUIRED and mr.measurement.index == index]
        if not here:
            return
        to_rect = slice_to_rect(rect, shape, offset)
        p.save()
        p.setClipRect(rect)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setFont(font(7, bold=True))
        for mr in here:
            m = mr.measurement
            path = QPainterPath()
            if isinstance(m, EllipseROI):
                path.addEllipse(QPointF(m.cx, m.cy), m.rx, m.ry)
                tag_at = QPointF(m.cx + m.rx * 0.72, m.cy - m.ry * 0.72)
            else:
                path.moveTo(QPointF(*m.p0))
                path.lineTo(QPointF(*m.p1))
                tag_at = QPointF(*max((m.p0, m.p1), key=lambda q: q[0]))
            p.setPen(QPen(MEASURE, mm(0.4)))
            p.drawPath(to_rect.map(path))
            at = to_rect.map(tag_at)
            tag = f"M{self.measure_no[id(mr)]}"
            box = QRectF(at.x() + mm(0.6), at.y() - mm(3.4), mm(2.2) * len(tag), mm(3.2))
            p.fillRect(box, QColor(0, 0, 0, 170))
            p.setPen(MEASURE)
            p.drawText(box, int(Qt.AlignmentFlag.AlignCenter), tag)
        p.restore()

    def plot(self, pg: _Page, rect: QRectF) -> None:
        """Score (or, without a calibration to convert the threshold, percentile) against slice number."""
        p, d = pg.p, self.d
        use_score = self.score_thr is not None
        xs = np.array([r.number for r in d.rows], dtype=float)
        ys = np.array([r.score if use_score else r.percentile for r in d.rows], dtype=float)
        thr = self.score_thr if use_score else d.flag_pct
        n_total = int(d.target.get("num_slices") or (xs.max() if xs.size else 1))
        finite = ys[np.isfinite(ys)]
        lo = min(float(finite.min()) if finite.size else 0.0, thr)
        hi = max(float(finite.max()) if finite.size else 1.0, thr)
        if not use_score:
            lo, hi = 0.0, 100.0
        pad = (hi - lo) * 0.08 or 1.0
        lo, hi = lo - pad, hi + pad
        tick_f = font(7.5)
        fm = _fm(tick_f, p)
        yticks = nice_ticks(lo, hi, 7)
        left = max(fm.horizontalAdvance(fmt_tick(t)) for t in yticks) + mm(9)
        area = QRectF(rect.left() + left, rect.top() + mm(2), rect.width() - left - mm(2), rect.height() - mm(12))
        x_lo, x_hi = 0.5, n_total + 0.5

        def px(v: float) -> float:
            return area.left() + (v - x_lo) / (x_hi - x_lo) * area.width()

        def py(v: float) -> float:
            return area.bottom() - (v - lo) / (hi - lo) * area.height()

        p.save()
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setFont(tick_f)
        grid = QPen(QColor(228, 231, 235), mm(0.2))
        axis = QPen(INK, mm(0.3))
        for t in yticks:
            p.setPen(grid)
            p.drawLine(QPointF(area.left(), py(t)), QPointF(area.right(), py(t)))
            p.setPen(INK)
            p.drawText(QRectF(rect.left(), py(t) - fm.height() / 2, left - mm(2), fm.height()),
                       int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), fmt_tick(t))
        xticks = [t for t in nice_ticks(1, n_total, 10) if float(t).is_integer()] or [1]
        for t in xticks:
            p.setPen(axis)
            p.drawLine(QPointF(px(t), area.bottom()), QPointF(px(t), area.bottom() + mm(1.2)))
            p.drawText(QRectF(px(t) - mm(8), area.bottom() + mm(1.5), mm(16), fm.height()),
                       int(Qt.AlignmentFlag.AlignHCenter), f"{int(t)}")
        p.setPen(axis)
        p.drawLine(area.bottomLeft(), area.bottomRight())
        p.drawLine(area.bottomLeft(), area.topLeft())
        lab_f = font(8)
        p.setFont(lab_f)
        p.drawText(QRectF(area.left(), rect.bottom() - _fm(lab_f, p).height(), area.width(), _fm(lab_f, p).height()),
                   int(Qt.AlignmentFlag.AlignHCenter), "Slice")
        p.save()
        p.translate(rect.left() + _fm(lab_f, p).height() * 0.1, area.center().y())
        p.rotate(-90)
        p.drawText(QRectF(-area.height() / 2, 0, area.height(), _fm(lab_f, p).height()),
                   int(Qt.AlignmentFlag.AlignHCenter), "Anomaly score" if use_score else "Percentile of normal")
        p.restore()

        # Threshold line
        p.setPen(QPen(FLAG, mm(0.35), Qt.PenStyle.DashLine))
        p.drawLine(QPointF(area.left(), py(thr)), QPointF(area.right(), py(thr)))
        p.setFont(font(7))
        p.drawText(QRectF(area.left() + mm(1), py(thr) - mm(4), area.width() - mm(2), mm(3.5)),
                   int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom),
                   f"{_ordinal_pct(d.flag_pct)} of normal")

        # Series line, broken where slices were not scored
        p.setPen(QPen(NORMAL_PT, mm(0.3)))
        path = QPainterPath()
        prev = None
        for r, yv in zip(d.rows, ys):
            if not math.isfinite(yv):
                prev = None
                continue
            pt = QPointF(px(r.number), py(yv))
            if prev is not None and r.number == prev + 1:
                path.lineTo(pt)
            else:
                path.moveTo(pt)
            prev = r.number
        p.drawPath(path)
        small = n_total > 150
        rad = mm(0.55 if small else 0.9)
        for r, yv in zip(d.rows, ys):
            if not math.isfinite(yv):
                continue
            c = QPointF(px(r.number), py(yv))
            if r.above_threshold:
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(FLAG)
                p.drawEllipse(c, rad * 1.5, rad * 1.5)
            else:
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(NORMAL_PT)
                p.drawEllipse(c, rad, rad)
            if r.confirmed:
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.setPen(QPen(INK, mm(0.3)))
                p.drawEllipse(c, rad * 2.6, rad * 2.6)
        # Flagged slice numbers next to their points (when few enough to read)
        flagged = [r for r in self.flagged]
        if 0 < len(flagged) <= 25:
            p.setFont(font(6.5))
            p.setPen(FLAG)
            for r in flagged:
                yv = r.score if use_score else r.percentile
                if math.isfinite(yv):
                    p.drawText(QRectF(px(r.number) + rad * 2.8, py(yv) - mm(3.9), mm(10), mm(3)),
                               int(Qt.AlignmentFlag.AlignLeft), str(r.number))
        p.restore()

    # ---------------------------------------------------------------------------------------------- slice page
    def slice_page(self, pg: _Page, r: SliceRow) -> None:
        d, s = self.d, self.series
        x, w = self.x0, self.width
        y = self.top + 2
        n_total = int(d.target.get("num_slices") or s.num_slices)
        pg.text(x, y, w * 0.6, f"Slice {r.number} of {n_total}", font(15, bold=True), ACCENT)
        badge = f"{_pct(r.percentile)}th percentile of normal" if math.isfinite(r.percentile) else "percentile n/a"
        pg.text(x + w * 0.45, y + 1.2, w * 0.55, badge, font(11, bold=True),
                FLAG if r.above_threshold else INK, Qt.AlignmentFlag.AlignRight)
        y += 8.2
        where = f"Position {r.position_mm:.1f} mm · " if n_total > 1 else ""
        y = pg.text(x, y, w, f"{where}score {r.score:.4f} · rank {r.rank} of {len(d.rows)} scored "
                    f"slice{'s' if len(d.rows) != 1 else ''} · "
                    f"{f'flagged by {r.flagged_by}' if r.flagged_by else 'not flagged'}", font(9), MUTED) + 3

        pixels = s.slice(r.index)
        gray = to_uint8(pixels, *self.window)
        amap = d.map_of(r.index)
        if amap is not None and amap.shape != gray.shape:
            amap = cv2.resize(amap, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
        thr = d.pixel_threshold
        vmax = max(default_vmax(thr) if self.o.vmax is None else self.o.vmax, thr + 1e-3)
        over = compose(gray, amap, threshold=thr, vmax=vmax, opacity=self.o.opacity, cmap=self.o.cmap)

        gap = 5.0
        cell_w = (w - gap) / 2
        sx, sy = float(s.spacing[0]) or 1.0, float(s.spacing[1]) or 1.0
        phys_w, phys_h = s.columns * sx, s.rows * sy
        scale = min(cell_w / phys_w, 112.0 / phys_h)
        iw, ih = phys_w * scale, phys_h * scale
        cap_f = font(8.5, bold=True)
        wname = f", {self.window_name}" if self.window_name else ""
        units = f" {self.units}" if self.units else ""
        captions = (f"Slice · window W {self.window[1]:.0f} / L {self.window[0]:.0f}{units}{wname}",
                    f"Anomaly overlay · {self.o.cmap}, opacity {self.o.opacity * 100:.0f} %")
        rects = []
        for k, (img, cap) in enumerate(((qimage_gray(gray), captions[0]), (qimage_rgb(over), captions[1]))):
            cx = x + k * (cell_w + gap) + (cell_w - iw) / 2
            pg.text(cx, y, iw, cap, cap_f, INK, wrap=False)
            rect = QRectF(mm(cx), mm(y + 5), mm(iw), mm(ih))
            pg.box(cx, y + 5, iw, ih, QColor(0, 0, 0))
            draw_image(pg.p, rect, img, min_dpi=150)
            draw_annotations(pg.p, rect, gray.shape, r.review.annotations, outline_width=mm(0.45))
            self.draw_measurements(pg.p, rect, gray.shape, r.index)
            if self.oriented:
                draw_orientation(pg.p, rect, s.direction, font(8, bold=True))
            rects.append(rect)
        if self.spacing_known:
            self.scale_bar(pg, rects[0], phys_w / iw)
        y += 5 + ih + 3

        # Colour bar under the overlay, with its scale
        bar_x = x + cell_w + gap + (cell_w - iw) / 2
        bar = QRectF(mm(bar_x + iw * 0.08), mm(y), mm(iw * 0.84), mm(3.2))
        y_bar = draw_colorbar(pg.p, bar, self.o.cmap, thr, vmax, COLORBAR_LABEL, font(7.5), font(7.5), INK,
                              mm(0.2)) / MM
        left_note = ("Map values are in units of the references' normal spread: 0 is typical, 1 the 99th "
                     "percentile of normal pixels. Pixels below the threshold are not coloured.")
        y_note = pg.text(x + (cell_w - iw) / 2, y, iw, left_note, font(7.5), MUTED)
        y = max(y_bar, y_note) + 4

        # Details
        y = pg.heading(x, y, w, "Details")
        here = [mr for mr in d.measurements if mr.plane == ACQUIRED and mr.measurement.index == r.index]
        rev = r.review
        n_ann = len(rev.annotations)
        area = ""
        peak = ""
        if amap is not None:
            n_above = int(np.count_nonzero(amap > thr))
            if not n_above:
                area = "no pixel above the threshold"
            elif self.spacing_known:
                area = f"{n_above * sx * sy / 100.0:.1f} cm² above the threshold"
            else:
                area = f"{n_above} pixels above the threshold"
            peak = f"peak {float(np.nanmax(amap)):.2f} × normal p99"
        reasons = []
        if r.above_threshold:
            reasons.append(f"score at or above the {_ordinal_pct(d.flag_pct)} of normal")
        if r.confirmed:
            reasons.append("confirmed by the reviewer")
        items = [("Score", f"{r.score:.4f} ({_pct(r.percentile)}th percentile of normal; rank {r.rank} of "
                           f"{len(d.rows)})"),
                 ("Flagged because", "; ".join(reasons)),
                 ("Anomaly map", ", ".join(v for v in (peak, area) if v) or "not available"),
                 ("Review decision", DECISION_WORDS[rev.decision]),
                 ("Reviewer's note", d.note_of(r) or "none"),
                 ("Annotations", f"{n_ann} drawn by the reviewer (cyan outlines)" if n_ann else "none"),
                 *([("Measurements", "; ".join(
                     f"M{self.measure_no[id(mr)]} {mr.kind} {label(mr.measured, mm=self.spacing_known)}"
                     for mr in here))] if here else []),
                 ("Window", f"W {self.window[1]:.0f} / L {self.window[0]:.0f}{units}{wname}"),
                 ("Overlay", f"{self.o.cmap}; map values from {thr:.2f} (the {_ordinal_pct(d.threshold_pct)} "
                             f"of normal pixels) to {vmax:.2f} coloured, higher values in the brightest colour; "
                             f"opacity {self.o.opacity * 100:.0f} %")]
        y = pg.key_values(x, y, w, items, key_w=34) + 3
        self.close_up(pg, y, r, gray, over, amap, rects, (iw, ih, cell_w, gap))

    def close_up(self, pg: _Page, y: float, r: SliceRow, gray: np.ndarray, over: np.ndarray,
                 amap: np.ndarray | None, rects: list[QRectF], dims: tuple[float, float, float, float]) -> None:
        """Both pictures again, enlarged around the strongest response (or the reviewer's drawing), when the page
        has room: at print size a small finding in a 512-pixel slice is only a few millimetres across."""
        s, x = self.series, self.x0
        iw, ih, cell_w, gap = dims
        room = self.bottom - y - 10.0
        if room < 40.0:
            return
        rows, cols = gray.shape
        centre = None
        if amap is not None and np.isfinite(amap).any() and float(np.nanmax(amap)) > self.d.pixel_threshold:
            k = int(np.nanargmax(amap))
            centre = (k % cols + 0.5, k // cols + 0.5)
        elif r.review.annotations:
            a = r.review.annotations[0]
            pts = [(a.cx, a.cy)] if getattr(a, "kind", "") == "ellipse" else list(getattr(a, "points", []))
            if pts:
                centre = (float(np.mean([q[0] for q in pts])), float(np.mean([q[1] for q in pts])))
        if centre is None:
            return
        zoom = 2.5
        box_w = iw
        box_h = min(room - 5.0, ih)
        sx = float(s.spacing[0]) or 1.0
        page_per_px_x, page_per_px_y = iw / cols, ih / rows  # page mm per pixel in the main pictures
        cw_px = min(box_w / (page_per_px_x * zoom), cols)
        ch_px = min(box_h / (page_per_px_y * zoom), rows)
        x0 = int(np.clip(round(centre[0] - cw_px / 2), 0, max(cols - cw_px, 0)))
        y0 = int(np.clip(round(centre[1] - ch_px / 2), 0, max(rows - ch_px, 0)))
        x1, y1 = min(cols, x0 + int(round(cw_px))), min(rows, y0 + int(round(ch_px)))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return
        box_w, box_h = (x1 - x0) * page_per_px_x * zoom, (y1 - y0) * page_per_px_y * zoom
        y = pg.heading(x, y, self.width, f"Close-up ({zoom:g}×) around the strongest response")
        for k, (img, rect) in enumerate(((qimage_gray(np.ascontiguousarray(gray[y0:y1, x0:x1])), rects[0]),
                                         (qimage_rgb(np.ascontiguousarray(over[y0:y1, x0:x1])), rects[1]))):
            cx = x + k * (cell_w + gap) + (cell_w - box_w) / 2
            crop_rect = QRectF(mm(cx), mm(y), mm(box_w), mm(box_h))
            draw_image(pg.p, crop_rect, img, min_dpi=150)
            draw_annotations(pg.p, crop_rect, (y1 - y0, x1 - x0), r.review.annotations, outline_width=mm(0.45),
                             offset=(x0, y0))
            self.draw_measurements(pg.p, crop_rect, (y1 - y0, x1 - x0), r.index, offset=(x0, y0))
            # Where the close-up lies in the full picture above.
            fx, fy = rect.width() / cols, rect.height() / rows
            pg.p.setPen(QPen(QColor(255, 255, 255, 220), mm(0.3), Qt.PenStyle.DashLine))
            pg.p.setBrush(Qt.BrushStyle.NoBrush)
            pg.p.drawRect(QRectF(rect.left() + x0 * fx, rect.top() + y0 * fy, (x1 - x0) * fx, (y1 - y0) * fy))
        length = (x1 - x0) * sx
        if self.spacing_known:
            self.scale_bar(pg, QRectF(mm(x + (cell_w - box_w) / 2), mm(y), mm(box_w), mm(box_h)), length / box_w)

    def scale_bar(self, pg: _Page, rect: QRectF, mm_per_page_mm: float) -> None:
        """A white scale bar in the lower right of the image: physical length of a round number of mm."""
        target = rect.width() / MM * 0.22 * mm_per_page_mm
        length = next((v for v in (100, 50, 20, 10, 5, 2, 1) if v <= target), 1)
        bar = length / mm_per_page_mm * MM
        p = pg.p
        p.save()
        y = rect.bottom() - mm(3)
        x1 = rect.right() - mm(3)
        x0 = x1 - bar
        for color, wdt in ((QColor(0, 0, 0, 200), mm(0.9)), (QColor(255, 255, 255), mm(0.45))):
            p.setPen(QPen(color, wdt, Qt.PenStyle.SolidLine, Qt.PenCapStyle.FlatCap))
            p.drawLine(QPointF(x0, y), QPointF(x1, y))
            p.drawLine(QPointF(x0, y - mm(1)), QPointF(x0, y + mm(0.3)))
            p.drawLine(QPointF(x1, y - mm(1)), QPointF(x1, y + mm(0.3)))
        p.setFont(font(7, bold=True))
        p.setPen(QColor(255, 255, 255))
        p.drawText(QRectF(x0 - mm(5), y - mm(4.6), bar + mm(10), mm(3.4)),
                   int(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom), f"{length} mm")
        p.restore()

    # -------------------------------------------------------------------------------------------------- write
    def write(self, path: str, progress: Progress, cancel: CancelToken | None) -> None:
        writer = QPdfWriter(path)
        writer.setResolution(RES)
        writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
        writer.setPageMargins(QMarginsF(0, 0, 0, 0))
        # Metadata travels with the file wherever it is shared: the pseudonymous label only, in every mode.
        writer.setTitle(f"{self.o.title} · {self.d.privacy.label}")
        writer.setCreator(f"MedAD Viewer {__version__}")
        p = QPainter()
        if not p.begin(writer):
            raise ReportError(f"could not write {Path(path).name} (is the folder writable?)")
        try:
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
            pg = _Page(p)
            progress(0.0, "Report: cover page")
            self.frame(pg)
            self.cover(pg, progress, cancel)
            for k in range(self.summary_pages):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                writer.newPage()
                self.frame(pg)
                self.summary(pg, k)
            for k in range(self.measure_pages):
                writer.newPage()
                self.frame(pg)
                self.measurements_page(pg, k)
            progress(0.2, "Report: summary")
            for k, r in enumerate(self.paged):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                progress(0.2 + 0.78 * k / max(len(self.paged), 1), f"Report: slice {r.number}")
                writer.newPage()
                self.frame(pg)
                self.slice_page(pg, r)
        finally:
            p.end()
        progress(1.0, "Report written")


def _raw(v: float, units: str) -> str:
    """A raw value as the table shows it: whole HU for CT, three digits otherwise."""
    return f"{v:.0f}" if units == "HU" or abs(v) >= 100 else f"{v:.3g}"


def _timing_label(key: str) -> str:
    """'fit_s' -> 'fit', 'score_s_per_slice' -> 'score per slice'."""
    return re.sub(r"_s($|_)", r"\1", key).replace("_", " ")


def _fmt_setting(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt_setting(x) for x in v) if v else "—"
    if v is None:
        return "auto"
    return str(v)


def write_pdf_report(data: ReportData, path: str | os.PathLike, options: PdfOptions | None = None,
                     progress: Progress = no_progress, cancel: CancelToken | None = None) -> Path:
    """Write the PDF report of `data` (needs `data.series`) to `path`; nothing is left at `path` if it fails or is
    cancelled (raises engine.jobs.Cancelled)."""
    ensure_qt_app()
    report = _Report(data, options or PdfOptions())
    with atomic_output(path, cancel) as tmp:
        report.write(tmp, progress, cancel)
    return Path(path)


def page_count(data: ReportData, options: PdfOptions | None = None) -> int:
    """How many pages `write_pdf_report` makes for `data` (cover + summary + one per paged flagged slice)."""
    return _Report(data, options or PdfOptions()).total_pages
