"""What every export works from: a scoring run, optionally its loaded series and the reviewer's decisions, plus
the privacy rules (de-identified by default, pseudonymous study label) and the flagged-slice logic. No Qt."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ..engine.calibration import normal_z
from ..io.deid import deidentify, pseudonym
from ..io.series import Series
from ..review.measurements import ACQUIRED, Measured, Measurement, measure_on
from ..review.references import ReferenceSet, ReferenceSlice, resolve_series
from ..review.state import Decision, ReviewState, SliceReview
from .score_dir import ScoreRun, series_record

if TYPE_CHECKING:
    from ..review.results import ScoreResults

Progress = Callable[[float, str], None]

DISCLAIMER = ("Decision support only: the anomaly maps are not a diagnosis. "
              "Every finding must be checked by a qualified clinician.")

# Identifiers a report shows when the user asks for them (the others stay out of every export).
PATIENT_FIELDS = (("PatientName", "Patient name"), ("PatientID", "Patient ID"), ("PatientBirthDate", "Birth date"))
_NAME_KEYS = re.compile(r"(Name|Names)$")


class ReportError(Exception):
    """An export could not be made; the message is plain words for the user (no traceback needed)."""


class SourceUnavailable(ReportError):
    """The scored study is not where the run says (moved, deleted, unmounted) or no longer matches it."""


# ------------------------------------------------------------------------------------------------------ privacy
def format_identifier(key: str, value: Any) -> str:
    """DICOM values as people read them: 'DOE^JANE^Q' -> 'DOE, JANE Q', '19580314' -> '1958-03-14'."""
    text = str(value).strip()
    if key.endswith("Name") and "^" in text:
        parts = [p.strip() for p in text.split("^")]
        family, rest = parts[0], " ".join(p for p in parts[1:] if p)
        return f"{family}, {rest}" if rest else family
    if key.endswith("Date") and re.fullmatch(r"\d{8}", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


@dataclass
class Privacy:
    """De-identified unless `include_identifiers`; knows the series' identifying values so free text can be cleaned."""

    include_identifiers: bool
    label: str  # pseudonymous study label, e.g. 'Study-3F9A2C'
    identifiers: dict[str, Any] = field(default_factory=dict)

    def patient_lines(self) -> list[tuple[str, str]]:
        """(label, value) of the patient fields to print: empty when de-identified."""
        if not self.include_identifiers:
            return []
        out = []
        for key, title in PATIENT_FIELDS:
            value = self.identifiers.get(key)
            out.append((title, format_identifier(key, value) if value not in (None, "") else "not recorded"))
        return out

    def secrets(self) -> list[str]:
        """Identifying strings that must not leak into de-identified free text (names, IDs, dates, places)."""
        found: set[str] = set()
        for key, value in self.identifiers.items():
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                text = str(v).strip()
                # Short numbers (weight '79', flags '1') would mangle ordinary text; they identify nobody alone.
                if len(text) < 4 or (text.replace(".", "").isdigit() and len(text) < 6):
                    continue
                found.add(text)
                formatted = format_identifier(str(key), text)
                found.add(formatted)
                if _NAME_KEYS.search(str(key)):
                    found.update(p for p in re.split(r"[\^,\s]+", text) if len(p) >= 3)
        return sorted(found, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """`text` as it may appear in this export: unchanged when identifiers are included, else cleaned."""
        if self.include_identifiers or not text:
            return text
        for secret in self.secrets():
            text = re.sub(re.escape(secret), "[removed]", text, flags=re.IGNORECASE)
        return text


# ------------------------------------------------------------------------------------------------------ reviews
def reviews_for(review: ReviewState | Mapping[int, SliceReview] | None, series_uid: str) -> dict[int, SliceReview]:
    """Per-slice reviews of one series from a ReviewState, a {index: SliceReview} mapping, or None."""
    if review is None:
        return {}
    if isinstance(review, ReviewState):
        return {i: r for (_uid, i), r in review.items(series_uid)}
    return {int(i): r for i, r in review.items()}


def load_review_file(path: str | os.PathLike, series_uid: str) -> tuple[dict[int, SliceReview], str]:
    """Reviews of `series_uid` from a saved session (session.json) or a review-state JSON file.

    Returns (reviews, warning); the warning is '' unless the file holds no review of this series.
    Raises ReportError for a missing or unreadable file.
    """
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"review file not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"review file {p} could not be read ({exc})") from None
    if isinstance(d, dict) and isinstance(d.get("review"), dict):
        d = d["review"]  # a whole session file
    if not isinstance(d, dict) or not isinstance(d.get("reviews"), list):
        raise ReportError(f"{p} is not a review file (expected a session.json or a file with a 'reviews' list)")
    try:
        state = ReviewState.from_dict(d)
    except (KeyError, ValueError, TypeError) as exc:
        raise ReportError(f"review file {p} is damaged ({exc})") from None
    mine = reviews_for(state, series_uid)
    warning = "" if mine or not state.items() else f"{p.name} holds no review of the scored series; decisions left out"
    return mine, warning


# ----------------------------------------------------------------------------------------------- source series
def load_target_series(run: ScoreRun | Mapping, source: str | os.PathLike | None = None):
    """Load the scored series again from its source (or from `source`, where the study moved to).

    Raises SourceUnavailable with a plain message when it is gone or no longer matches the run.
    """
    from ..io import load_study

    target = (run.run if isinstance(run, ScoreRun) else run).get("target", {})
    path = os.fspath(source) if source else target.get("source", "")
    if not path:
        raise SourceUnavailable("the run does not say where its study came from; pass the study with --source PATH")
    if not os.path.exists(path):
        raise SourceUnavailable(f"the scored study is no longer at {path} (moved or deleted?); "
                                "pass its new location with --source PATH")
    study = load_study(path)
    if not study.series:
        why = "; ".join(e.message for e in study.errors[:3]) or "nothing could be loaded"
        raise SourceUnavailable(f"the study at {path} could not be loaded: {why}")
    shape = (target.get("num_slices"), target.get("rows"), target.get("columns"))

    def fits(s) -> bool:
        return None in shape or (s.num_slices, s.rows, s.columns) == shape

    # The series of the recorded shape with the run's uid (or an older path-based uid as an alias), else the one of
    # the same description, else the only one of that shape.
    scored = ReferenceSlice(path, str(target.get("uid") or ""), 0, description=str(target.get("description") or ""))
    series = resolve_series(scored, {path: study}, fits=fits)
    if series is not None:
        return series
    raise SourceUnavailable(f"the study at {path} no longer holds the scored series "
                            f"({shape[0]} slices of {shape[2]} x {shape[1]} pixels)")


# -------------------------------------------------------------------------------------------------- thresholds
def pixel_threshold(run: Mapping, threshold_pct: float) -> float:
    """Map value that `threshold_pct` % of normal pixels stay below, from the run's calibration (else pct/99)."""
    known = (run.get("calibration") or {}).get("pixel_value_at") or {}
    pts = sorted((float(k), float(v)) for k, v in known.items() if _finite(k) and _finite(v))
    for p, v in pts:
        if abs(p - threshold_pct) < 1e-9:
            return v
    if len(pts) >= 2 and pts[0][0] <= threshold_pct <= pts[-1][0]:
        return float(np.interp(threshold_pct, [p for p, _ in pts], [v for _, v in pts]))
    # Maps are scaled so 1 is the 99th percentile of normal pixels: the same fallback the viewer uses.
    return float(threshold_pct) / 99.0


def score_threshold(run: ScoreRun, threshold_pct: float) -> float | None:
    """The raw image score at `threshold_pct` (percentile of normal), for drawing the threshold on a score plot.

    The engine's percentile is a Gaussian fit of the normal scores: from the run's calibration when recorded, else
    recovered from the (score, percentile) pairs themselves by a straight-line fit of score against z.
    """
    z_thr = normal_z(threshold_pct)
    cal = run.run.get("calibration") or {}
    if _finite(cal.get("image_mean")) and _finite(cal.get("image_std")):
        return float(cal["image_mean"]) + float(cal["image_std"]) * z_thr
    s, p = np.asarray(run.scores, float), np.asarray(run.percentiles, float)
    ok = np.isfinite(s) & np.isfinite(p) & (p > 0.01) & (p < 99.99)  # saturated percentiles carry no z
    if ok.sum() >= 2 and np.ptp(p[ok]) > 0:
        z = np.array([normal_z(v) for v in p[ok]])
        slope, icpt = np.polyfit(z, s[ok], 1)
        if slope > 0:
            return float(icpt + slope * z_thr)
    return None


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------- the rows
@dataclass
class SliceRow:
    index: int
    position_mm: float
    score: float
    percentile: float
    review: SliceReview
    above_threshold: bool
    rank: int  # 1 = highest score of the run

    @property
    def number(self) -> int:
        """1-based slice number, as the viewer shows it."""
        return self.index + 1

    @property
    def confirmed(self) -> bool:
        return self.review.decision == Decision.CONFIRMED

    @property
    def flagged(self) -> bool:
        return self.above_threshold or self.confirmed

    @property
    def flagged_by(self) -> str:
        parts = (["score"] if self.above_threshold else []) + (["reviewer"] if self.confirmed else [])
        return " + ".join(parts)


@dataclass
class MeasurementRow:
    """One of the reviewer's measurements on the scored series, with its numbers (review/measurements.py)."""

    measurement: Measurement
    measured: Measured

    @property
    def number(self) -> int:
        """1-based slice number in the measurement's plane, as the viewer shows it."""
        return int(self.measurement.index) + 1

    @property
    def plane(self) -> str:
        return self.measurement.plane

    @property
    def kind(self) -> str:
        return "length" if self.measurement.kind == "length" else "ellipse ROI"


@dataclass
class ReportData:
    """One run ready to export: rows in slice order, the flagged ones, thresholds and privacy."""

    run: ScoreRun
    series: Series | None  # tables and volumes do without it
    reviews: dict[int, SliceReview]
    threshold_pct: float
    pixel_threshold: float
    rows: list[SliceRow]
    privacy: Privacy
    created: _dt.datetime
    warnings: list[str] = field(default_factory=list)
    # Slices are flagged when their score is at or above this percentile of normal slices; the heatmap colours pixels
    # from `threshold_pct` of normal pixels. The viewer keeps the two apart ("Flag at" and the overlay threshold);
    # None: the same as threshold_pct.
    flag_pct: float | None = None
    measurements: list[MeasurementRow] = field(default_factory=list)  # in the order the reviewer made them

    def __post_init__(self) -> None:
        if self.flag_pct is None:
            self.flag_pct = self.threshold_pct

    @classmethod
    def build(cls, run: ScoreRun, series: Series | None = None,
              review: ReviewState | Mapping[int, SliceReview] | None = None, *,
              threshold_pct: float | None = None, include_identifiers: bool = False,
              flag_pct: float | None = None, measurements: Sequence[Measurement] = ()) -> "ReportData":
        target = run.run.get("target") or {}
        if series is not None and not target:
            run.run["target"] = target = series_record(series)
        uid = str(target.get("uid") or (series.uid if series is not None else "unknown"))
        if threshold_pct is None:
            threshold_pct = float(run.run.get("threshold_percentile", 99.0))
        flag_pct = float(threshold_pct if flag_pct is None else flag_pct)
        reviews = reviews_for(review, uid)
        scores = np.asarray(run.scores, dtype=np.float64)
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
        ranks = np.empty(len(order), dtype=int)
        ranks[order] = np.arange(1, len(order) + 1)
        rows = []
        for k, i in enumerate(run.indices):
            pct = float(run.percentiles[k])
            rows.append(SliceRow(int(i), float(run.positions_mm[k]), float(scores[k]), pct,
                                 reviews.get(int(i), SliceReview()), bool(pct == pct and pct >= flag_pct),
                                 int(ranks[k])))
        rows.sort(key=lambda r: r.index)
        identifiers = dict(series.identifiers) if series is not None else {}
        privacy = Privacy(bool(include_identifiers), pseudonym(uid), identifiers)
        data = cls(run, series, reviews, float(threshold_pct), pixel_threshold(run.run, float(threshold_pct)),
                   rows, privacy, _dt.datetime.now().astimezone(), flag_pct=flag_pct)
        data.measurements = data.measure([m for m in measurements if m.series_uid == uid])
        return data

    def measure(self, measurements: Sequence[Measurement]) -> list[MeasurementRow]:
        """The numbers of measurements on the scored series (needs the series; none without it). Measurements on a
        reformatted plane are taken on that plane's view, the map cut from the scored slices (NaN where none)."""
        s = self.series
        if s is None or not measurements:
            return []
        out = []
        for m in measurements:
            try:
                plane_series, amap = self._plane_slice(m)
                if not 0 <= m.index < plane_series.num_slices:
                    continue
                out.append(MeasurementRow(m, measure_on(m, plane_series, amap)))
            except (ValueError, IndexError, ImportError):
                continue  # a measurement of a plane this series cannot show is left out, never fatal
        return out

    def _plane_slice(self, m: Measurement) -> tuple[Series, np.ndarray | None]:
        """The series of m's plane and the map on m's slice of it: a reformatted plane's is cut line by line from
        each scored slice's map (NaN on slices not scored), without a volume of maps."""
        s = self.series
        if m.plane == ACQUIRED:
            amap = self.map_of(m.index) if 0 <= m.index < s.num_slices else None
            if amap is not None and amap.shape != (s.rows, s.columns):
                amap = _resize(amap, s.rows, s.columns)
            return s, amap
        from ..io.planes import plane_view

        pv = plane_view(s, m.plane)
        if not len(self.run.indices) or not 0 <= m.index < pv.series.num_slices:
            return pv.series, None
        cut = np.full((s.num_slices, s.columns if pv.axes[0] == 1 else s.rows), np.nan, dtype=np.float32)
        for k, i in enumerate(np.asarray(self.run.indices, dtype=np.int64)):
            if 0 <= i < s.num_slices:
                mk = np.asarray(self.run.maps[k], dtype=np.float32)
                cut[i] = pv.line_of(mk if mk.shape == (s.rows, s.columns) else _resize(mk, s.rows, s.columns),
                                    m.index)
        return pv.series, np.ascontiguousarray(pv.orient(cut))

    # ------------------------------------------------------------------------------------------ convenience
    @property
    def target(self) -> dict:
        return self.run.run.get("target") or {}

    @property
    def flagged(self) -> list[SliceRow]:
        return [r for r in self.rows if r.flagged]

    def map_of(self, index: int) -> np.ndarray | None:
        where = np.nonzero(np.asarray(self.run.indices) == int(index))[0]
        return None if where.size == 0 else np.asarray(self.run.maps[int(where[0])], dtype=np.float32)

    def series_description(self) -> str:
        """The series description fit for this export: a file name (which may carry a patient's name) is replaced."""
        t = self.target
        desc = str(t.get("description") or "")
        source = str(t.get("source") or "")
        if self.privacy.include_identifiers:
            return desc
        file_names = {os.path.basename(source)} | {str(f) for f in self.privacy.identifiers.get("SourceFiles", [])}
        if desc and desc in file_names:
            fmt = self.series.metadata.get("format") if self.series is not None else None
            return f"{fmt or 'image'} file"
        return self.privacy.scrub(desc)

    def study_description(self) -> str:
        """StudyDescription counts as identifying (free text): shown only with identifiers included."""
        if not self.privacy.include_identifiers:
            return ""
        return str(self.privacy.identifiers.get("StudyDescription") or "")

    def note_of(self, row: SliceRow) -> str:
        return self.privacy.scrub(row.review.note)

    def run_metadata(self) -> dict:
        """The run's metadata as this export may show it: de-identified unless identifiers are included."""
        meta = copy.deepcopy(self.run.run)
        if self.privacy.include_identifiers:
            return meta
        t = meta.get("target") or {}
        meta["target"] = {"label": self.privacy.label, "description": self.series_description(),
                          **{k: t[k] for k in ("modality", "num_slices", "rows", "columns", "spacing", "origin",
                                               "direction") if k in t}}
        meta["references"] = [{"series": pseudonym(str(r.get("series_uid", "")), prefix="Series"),
                               "index": r.get("index")} for r in meta.get("references", []) if isinstance(r, dict)]
        if isinstance(meta.get("weights"), str) and os.sep in meta["weights"]:
            meta["weights"] = os.path.basename(meta["weights"])  # a local path shows whose machine it was
        # Belt and braces: no key that looks like a date, a UID or a patient field survives.
        return deidentify(meta)


# ------------------------------------------------------------------------------------------------ from the GUI
def run_from_results(results: ScoreResults, series: Series, detector: Mapping | None = None,
                     reference_set: ReferenceSet | None = None, settings: Mapping | None = None,
                     threshold_pct: float = 99.0) -> ScoreRun:
    """A ScoreRun from the viewer's in-memory ScoreResults (review.results), so the GUI exports like the CLI."""
    idx = np.array(sorted(results.results), dtype=np.int64)
    rows, cols = int(series.rows), int(series.columns)
    maps = np.zeros((len(idx), rows, cols), dtype=np.float32)
    for k, i in enumerate(idx):
        m = np.asarray(results.results[int(i)].map, dtype=np.float32)
        maps[k] = m if m.shape == (rows, cols) else _resize(m, rows, cols)
    det = dict(detector or results.detector or {})
    pcts = sorted({95.0, 99.0, 99.9, float(threshold_pct)})
    run = {
        "target": series_record(series),
        "method": det.get("method"), "backbone": det.get("backbone"), "weights": det.get("weights"),
        "pretrained": det.get("pretrained"), "device": det.get("device"),
        "references": [{"source": str(r.source), "series_uid": r.series_uid, "index": int(r.index)}
                       for r in (reference_set.normals() if reference_set is not None else [])],
        "reference_set_name": reference_set.name if reference_set is not None else None,
        "settings": dict(settings or det.get("settings") or {}),
        "timings": {"score_s": float(results.seconds or 0.0)},
        "software": det.get("software") or _software(),
        "threshold_percentile": float(threshold_pct),
        "calibration": {"pixel_value_at": {f"{p:g}": float(results.value_at(p)) for p in pcts}},
    }
    return ScoreRun(idx, np.array([series.slice_position(int(i)) for i in idx], dtype=np.float64),
                    np.array([results.results[int(i)].score for i in idx], dtype=np.float64),
                    np.array([results.results[int(i)].percentile for i in idx], dtype=np.float64), maps, run)


def _software() -> str:
    from .. import __version__

    return f"medad-viewer {__version__}"


def _resize(m: np.ndarray, rows: int, cols: int) -> np.ndarray:
    import cv2

    return cv2.resize(m, (cols, rows), interpolation=cv2.INTER_LINEAR)


def full_maps(run: ScoreRun, num_slices: int, rows: int, cols: int) -> np.ndarray:
    """(num_slices, rows, cols) float32 maps with zeros on slices that were not scored."""
    out = np.zeros((num_slices, rows, cols), dtype=np.float32)
    for k, i in enumerate(np.asarray(run.indices, dtype=np.int64)):
        if 0 <= i < num_slices:
            m = np.asarray(run.maps[k], dtype=np.float32)
            out[i] = m if m.shape == (rows, cols) else _resize(m, rows, cols)
    np.nan_to_num(out, copy=False, nan=0.0)
    return out
