"""Why is this hot?, without Qt: which fitted detector explains the series shown (the last run's, kept in its
outcome, or its adaptation from the cache), and the job that explains one clicked point (engine.explain on the
acquired slice) with the crops of the query patch and of the matched reference patch, in modality units, for the
panel (gui/why_panel.py) to show at the viewer's window; and the panel's texts, in plain words.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .adaptation_cache import AdaptationCache
from .references import ReferenceSlice

Box = tuple[float, float, float, float]  # (row0, column0, row1, column1), ends exclusive

CONTEXT_PATCHES = 5  # a crop spans this many patches, the patch outlined in its middle
MIN_CROP_PX = 24

SCORE_FIRST = "Score the series first (Adapt & score): this slice has no anomaly map yet."
NOT_AVAILABLE = ("The detector of this run is not available (scored by an earlier version, or its cached "
                 "adaptation was removed): press Adapt & score again to explain its map.")
REFERENCES_CHANGED = ("The reference slices changed since this series was scored: press Adapt & score again to "
                      "explain its map.")


@dataclass
class Crop:
    """A square piece of a slice around a patch: `pixels` in modality units (NaN outside the slice), `box` the patch
    within it; `flipped`: shown mirrored left-right (a match in a reference's mirrored copy, as the bank saw it)."""

    pixels: np.ndarray
    box: Box
    origin: tuple[int, int]  # the crop's (row, column) in the slice
    flipped: bool = False


def crop_around(pixels: np.ndarray, box: Box, flipped: bool = False) -> Crop:
    """The crop of CONTEXT_PATCHES patches around `box` (a patch in `pixels`' coordinates)."""
    y0, x0, y1, x1 = box
    side = int(round(max(y1 - y0, x1 - x0, 1.0) * CONTEXT_PATCHES))
    side = max(side, MIN_CROP_PX)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    top, left = int(round(cy - side / 2.0)), int(round(cx - side / 2.0))
    h, w = pixels.shape
    out = np.full((side, side), np.nan, np.float32)
    r0, r1 = max(top, 0), min(top + side, h)
    c0, c1 = max(left, 0), min(left + side, w)
    if r1 > r0 and c1 > c0:
        out[r0 - top: r1 - top, c0 - left: c1 - left] = pixels[r0:r1, c0:c1]
    inner = (y0 - top, x0 - left, y1 - top, x1 - left)
    if flipped:
        out = np.ascontiguousarray(out[:, ::-1])
        inner = (inner[0], side - inner[3], inner[2], side - inner[1])
    return Crop(out, inner, (top, left), flipped)


@dataclass
class WhyRequest:
    """One click, resolved on the UI thread: the acquired voxel, the detector (or where to load it) and the series
    of its references."""

    series: Any  # the acquired Series scored
    index: int
    row: int
    column: int
    normals: list[ReferenceSlice]
    reference_series: list[Any]  # per normal reference, its loaded Series or None
    detector: Any = None  # the fitted detector, when the last run kept it
    adaptation_key: str = ""  # else: its entry in the adaptation cache
    device: str = "cpu"


@dataclass
class WhyAnswer:
    series_uid: str
    index: int
    row: int
    column: int
    explanation: Any = None  # engine.explain.Explanation
    query: Crop | None = None
    reference: ReferenceSlice | None = None
    reference_description: str = ""
    reference_crop: Crop | None = None
    reference_box: Box | None = None  # the matched patch in its reference slice's pixels
    message: str = ""  # what could not be shown, in plain words
    seconds: float = 0.0

    @property
    def reference_slice_number(self) -> int | None:
        """The matched reference slice, numbered from 1 as the viewer numbers slices."""
        return None if self.reference is None else self.reference.index + 1


class WhyExplainer:
    """Finds the detector that made the map shown, and explains points with it. Holds the detector it loaded from
    the cache (one at a time) and each series' intensity normaliser, so later clicks cost one slice's features."""

    def __init__(self, cache: AdaptationCache | None = None):
        self.cache = cache
        self._loaded: tuple[str, Any] | None = None
        self._normalizers: dict[str, Any] = {}
        # per detector (while it lives), per series uid: the volume's axis angle
        self._angles: weakref.WeakKeyDictionary[Any, dict[str, float | None]] = weakref.WeakKeyDictionary()

    def request(self, model, row: int, column: int, plane: str | None = None) -> WhyRequest | str:
        """A click at (row, column) of the main view's slice (of `plane`, the model's by default) -> a request, or
        the reason it cannot be explained."""
        s = model.series
        if s is None:
            return "Open a study first."
        if not getattr(s, "complete", True):
            return "The series is still loading: click again once every slice is read."
        index, r, c = int(model.index), int(row), int(column)
        if hasattr(model, "plane_view"):  # a reformatted plane: the acquired voxel under the click
            pv = model.plane_view(plane)
            k = model.view_index(plane)
            index, r, c = (int(v) for v in pv.from_plane(k, r, c))
        if not (0 <= index < s.num_slices and 0 <= r < s.rows and 0 <= c < s.columns):
            return "Click a point of the image."
        res = model.results.get(s.uid)
        if res is None or res.get(index) is None:
            return SCORE_FIRST
        run = model.run
        outcome = getattr(run, "outcome", None) if run is not None and run.series_uid == s.uid else None
        info = res.detector or {}
        det, normals = None, None
        key = info.get("adaptation_key", "")
        if outcome is not None and getattr(outcome, "fitted", None) is not None and outcome.results is res:
            det, normals, key = outcome.fitted, list(outcome.normals), outcome.adaptation_key
        elif not key:
            return NOT_AVAILABLE
        elif info.get("reference_set_hash") != model.session.reference_set.content_hash():
            return REFERENCES_CHANGED
        else:
            normals = model.session.reference_set.normals()
        if det is None and (self._loaded is None or self._loaded[0] != key):
            cache = self.cache or AdaptationCache()
            if not cache.has(key):
                return NOT_AVAILABLE
        if det is None and self._loaded is not None and self._loaded[0] == key:
            det = self._loaded[1]
        refs = [model.references.series_of(n) for n in normals]
        return WhyRequest(s, index, r, c, normals, refs, det, key, str(info.get("device") or "cpu"))

    def detector(self, req: WhyRequest) -> Any:
        """The request's detector: kept by the run, or loaded from the cache (once; seconds)."""
        if req.detector is not None:
            return req.detector
        if self._loaded is not None and self._loaded[0] == req.adaptation_key:
            return self._loaded[1]
        cache = self.cache or AdaptationCache()
        det = cache.load(req.adaptation_key, device=req.device)
        if det is None and req.device != "cpu":
            det = cache.load(req.adaptation_key, device="cpu")
        if det is not None:
            self._loaded = (req.adaptation_key, det)
        return det

    def normalizer(self, series) -> Callable[[np.ndarray], np.ndarray]:
        """The series' intensity mapping, as scoring used it (engine.series_scores.score_series)."""
        from ..engine.preprocess import normalizer_for_series

        norm = self._normalizers.get(series.uid)
        if norm is None:
            norm = self._normalizers[series.uid] = normalizer_for_series(series)
        return norm

    def midline_angle(self, det, series) -> float | None:
        """The volume's symmetry-axis angle, as scoring gave its slices (engine.series_scores.volume_midline_angle:
        the same slices read the same way give the same angle)."""
        from ..engine.series_scores import volume_midline_angle

        angles = self._angles.setdefault(det, {})
        if series.uid not in angles:
            angles[series.uid] = volume_midline_angle(det, series, self.normalizer(series))
        return angles[series.uid]

    def explain(self, req: WhyRequest) -> WhyAnswer:
        """Off the UI thread: features of one slice, one nearest-entry search, two crops."""
        import time

        from ..engine.explain import explain_point

        t0 = time.monotonic()
        s = req.series
        ans = WhyAnswer(s.uid, req.index, req.row, req.column)
        det = self.detector(req)
        if det is None:
            ans.message = NOT_AVAILABLE
            return ans
        raw = np.asarray(s.slice(req.index), dtype=np.float32)
        e = ans.explanation = explain_point(det, self.normalizer(s)(raw), req.row, req.column,
                                            self.midline_angle(det, s))
        ans.query = crop_around(raw, e.box)
        ans.message = e.missing
        if e.reference is not None:
            if not 0 <= e.reference < len(req.normals):
                ans.message = ans.message or NOT_AVAILABLE
            else:
                ref = ans.reference = req.normals[e.reference]
                ans.reference_description = ref.description
                rs = req.reference_series[e.reference]
                if rs is None:
                    ans.message = ans.message or (f"The study of reference slice {ref.index + 1} is not loaded "
                                                  f"({ref.source}): its patch cannot be shown.")
                else:
                    ans.reference_description = rs.description or ref.description
                    box = ans.reference_box = e.reference_box((rs.rows, rs.columns))
                    if box is not None and 0 <= ref.index < rs.num_slices:
                        ref_raw = np.asarray(rs.slice(ref.index), dtype=np.float32)
                        ans.reference_crop = crop_around(ref_raw, box, flipped=e.mirrored)
        ans.seconds = time.monotonic() - t0
        return ans


# ---------------------------------------------------------------------------------------------------------- texts
@dataclass
class WhyTexts:
    query: str = ""
    reference: str = ""
    distance: str = ""
    components: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, value, weight, share
    message: str = ""


COMPONENT_NAMES = {"bank": "Memory bank (nearest normal patch)", "head": "Learned head", "text": "Text prompts"}


def _span(a: float, b: float) -> str:
    return f"{int(a) + 1}–{max(int(np.ceil(b)), int(a) + 1)}"


def describe(ans: WhyAnswer) -> WhyTexts:
    """The panel's captions and sentences for an answer."""
    t = WhyTexts(message=ans.message)
    e = ans.explanation
    if e is None:
        return t
    y0, x0, y1, x1 = e.box
    t.query = f"Here: slice {ans.index + 1}, rows {_span(y0, y1)}, columns {_span(x0, x1)}"
    if ans.reference is not None:
        where = ""
        if ans.reference_box is not None:
            ry0, rx0, ry1, rx1 = ans.reference_box
            where = f", rows {_span(ry0, ry1)}, columns {_span(rx0, rx1)}"
        series = f" of '{ans.reference_description}'" if ans.reference_description else ""
        mirrored = (" — its mirrored copy (left-right), shown flipped as it was matched" if e.mirrored
                    else "")
        t.reference = f"Nearest normal patch: reference slice {ans.reference.index + 1}{series}{where}{mirrored}"
    if e.distance is not None:
        b = e.bank
        metric = "1 − cosine similarity" if e.metric == "cosine" else "Euclidean"
        spread = e.distance_in_spread
        if spread is None:
            judged = ""
        elif spread > 1.0:
            judged = f": beyond the normal 99th percentile ({spread:.1f} × the normal spread)"
        elif spread > 0.0:
            judged = ": within the normal range, above the normal median"
        else:
            judged = ": as close as normal patches usually are"
        if e.joined_distance is None:
            t.distance = (f"Distance to it {e.distance:.3f} ({metric}); normal patches lie {b.normal_median:.3f} "
                          f"(median) to {b.normal_median + b.normal_spread:.3f} (99th percentile) from theirs{judged}.")
        else:
            t.distance = (f"Distance to it {e.distance:.3f} ({metric}); to the same place of this slice's own "
                          f"mirror image {e.mirror_distance:.3f}; together {e.joined_distance:.3f}, where normal "
                          f"patches lie {b.normal_median:.3f} (median) to {b.normal_median + b.normal_spread:.3f} "
                          f"(99th percentile){judged}.")
    pct = "" if e.map_percentile is None else f", hotter than {e.map_percentile:.1f}% of normal pixels"
    t.distance += ("\n" if t.distance else "") + f"Map value here {e.map_value:.2f} (1 = normal 99th percentile){pct}."
    if e.brightness_kept is not None and e.brightness_kept < 0.995:
        t.distance += (f" The map keeps {e.brightness_kept:.0%} of the distance here: this FLAIR pixel is not "
                       "brighter than most of the brain around it (lesions are).")
    if not e.inside_region:
        t.distance += " This point is outside the scored region."
    for comp in e.components:
        t.components.append((COMPONENT_NAMES.get(comp.name, comp.name), f"{comp.value:.2f}", f"{comp.weight:.2f}",
                             f"{comp.contribution:+.2f}"))
    return t

