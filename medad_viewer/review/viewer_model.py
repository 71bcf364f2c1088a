"""The viewer's state, Qt-free: the open study and series, the slice shown, references, the review and the maps,
composed with small models that keep their own state and events: `display` (review/display.py: windows, flips,
cine), `saving` (review/saving.py: when the session is saved), `scoring` (review/runs.py: Adapt & score runs
and the scores of each series), `review` (review/review_model.py: decisions, notes, drawings and measurements
under one undo history) and `references` (review/references_model.py: the slices picked as references). The window (`gui/main_window.py`) forwards gestures here and redraws on the events;
nothing in it needs a QApplication, so every behaviour can be tested alone (tests/test_viewer_model.py).

Events: `model.events.<name>.connect(fn)`; each emits one typed event of review/events.py: study (StudyOpened),
study_changed, loading, loaded, series, slice, plane, layout, crosshair, say.

Loading: a large DICOM series is shown before all its slices are read (io/fill.py, gui/background_jobs.load_study_job).
`show_slice` of a slice not read yet asks for it first (Series.request) and the window shows a placeholder; the
"slice" event comes again when it arrives. Adapt & score started meanwhile waits for the whole series in its job
(review/score_job.py; `loading_reason` says so beforehand).

Planes: every volume can be shown axial, coronal or sagittal (io/planes.py reformats without copying). `index` is
always the slice of the acquired series (the review, references and scores are per acquired slice); the crosshair
`(index, *crosshair)` is the voxel every plane passes through, so scrolling a reformatted plane moves the crosshair
and the acquired slice follows it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..io.planes import PLANES, PlaneView, acquired_plane, available_planes, plane_view
from .display import DisplayModel
from .references import ReferenceSet
from ..engine.records import SliceScore
from .events import (CrosshairMoved, EmitterGroup, LayoutChanged, Loaded, LoadingProgress,
                     PlaneChanged, Said, SeriesShown, SliceShown, StudyChanged,
                     StudyOpened)
from .results import ScoreResults
from .runs import ScoringModel, ScoringRun
from .references_model import ReferencesModel
from .review_model import ReviewModel
from .saving import SavingModel
from .session import Session
from .state import annotations_mask, next_flagged

# The life of one Adapt & score run.


@dataclass(frozen=True)
class Probe:
    """What lies under the cursor: the voxel, its patient position, its value, and the anomaly map there."""

    column: int
    row: int
    index: int
    position_mm: tuple[float, float, float]  # LPS
    value: float  # modality units (HU for CT)
    units: str
    map_value: float | None = None  # the anomaly map (1 ~ the normal 99th percentile), when the slice is scored
    map_percentile: float | None = None  # ... as a percentile of normal pixels


LAYOUTS = ("1x1", "1x3")


@dataclass(frozen=True)
class PlaneMap:
    """The anomaly map of one slice of a plane at the plane's pixel size (NaN where no slice was scored), and
    whether part of it was interpolated between scored slices (a reformat across a partly scored series)."""

    values: np.ndarray
    interpolated: bool


class ViewerModel:
    # The scoring model's state, read here for convenience (the window, the planes, the probe).
    results = property(lambda self: self.scoring.results)
    run = property(lambda self: self.scoring.run)
    detector_info = property(lambda self: self.scoring.detector_info)

    def __init__(self, clock: Callable[[], float] = time.monotonic, seconds_per_slice: float = 0.5):
        self.clock = clock
        self.study: Any = None
        self.study_path: str | None = None
        self.session = Session("")
        self.series: Any = None
        self.series_row = -1
        self.index = 0
        self.studies: dict[str, Any] = {}  # loaded studies by path: the open one and reference sources
        self.display = DisplayModel(lambda: self.series, self.set_view)
        self.plane = "axial"
        self.layout = "1x1"
        self.crosshair: tuple[int, int] = (0, 0)  # (row, column) of the acquired slice `index`
        self._pending_reference_set: ReferenceSet | None = None
        self._pending_slice: int | None = None
        self._load_request = 0
        self._shown_request = 0  # the request whose study is shown (its slices may still be arriving)
        self.loading: tuple[int, int] | None = None  # (slices read, in all) while the open study is still reading
        self.saving = SavingModel(clock, lambda: self.session, lambda uid: self.results.get(uid))
        self.scoring = ScoringModel(clock, lambda: self.session, self.save, self.saving.scores_not_saved,
                                    seconds_per_slice)
        self.events = EmitterGroup(
            study=StudyOpened, study_changed=StudyChanged, loading=LoadingProgress, loaded=Loaded,
            series=SeriesShown, slice=SliceShown, plane=PlaneChanged, layout=LayoutChanged, crosshair=CrosshairMoved,
            say=Said)
        self.review = ReviewModel(self)
        self.references = ReferencesModel(self)
        self.review.attach(self.session)

    # ------------------------------------------------------------------------------------------------ events
    def say(self, text: str) -> None:
        self.events.say.emit(Said(text))

    # ------------------------------------------------------------------------------------------------ opening
    def begin_load(self, reference_set: ReferenceSet | None = None) -> int:
        """A new study is being opened: the session so far is saved, and only this request's result will count
        (an older load still running is stale). Returns the request's token for `load_finished`."""
        self.save()
        self._load_request += 1
        self._pending_reference_set = reference_set
        return self._load_request

    def is_current(self, token: int) -> bool:
        return token == self._load_request

    def load_finished(self, token: int, payload: dict) -> bool:
        """Show what the load job read (see gui/background_jobs.load_study_job). False, and nothing changes, when a later
        open has been asked for since."""
        if not self.is_current(token):
            return False
        study, path = payload["study"], payload["path"]
        self._shown_request = token
        fill = getattr(study, "pending", None)
        self.loading = (fill.done_count(), fill.total) if fill is not None else None
        if self.study_path is not None:
            self.studies.pop(self.study_path, None)
        self.study, self.study_path, self.saving.store = study, path, payload["store"]
        self.studies[path] = study
        self.scoring.replace_all(payload["scores"])
        old_refs = self.session.reference_set
        saved = payload["session"]
        self.session = saved if saved is not None else Session(path)
        self.session.study_path = path
        self.review.attach(self.session)
        if not self.session.reference_set.references:
            # References carry over to a study without its own: pick normals in one study, score the next.
            if self._pending_reference_set is not None:
                self.session.reference_set = self._pending_reference_set
            elif old_refs.references:
                self.session.reference_set = old_refs
        self._pending_reference_set = None
        self.display.restore(self.session.view.get("windows", {}))
        self.series, self.series_row = None, -1
        self._pending_slice = self.session.slice_index if saved is not None else None
        self.events.study.emit(StudyOpened(payload))
        return True

    def shows(self, token: int) -> bool:
        """Whether the study of load request `token` is the one shown."""
        return token == self._shown_request and self.study is not None

    def load_progress(self, token: int, done: int, total: int) -> None:
        """More slices of the study shown were read: a slice shown as "loading" is drawn once it is there."""
        if not self.shows(token) or self.loading is None:
            return
        self.loading = (int(done), int(total))
        self.events.loading.emit(LoadingProgress(*self.loading))
        s = self.series
        if s is not None and self.index >= 0 and self._waiting_for == (s, self.index) and s.is_loaded(self.index):
            self._waiting_for = None
            self.events.slice.emit(SliceShown(self.index))

    _waiting_for: tuple | None = None  # (series, index) shown as "loading"

    def load_complete(self, token: int) -> bool:
        """Every slice of the study shown is read: its series are made complete (a slice that could not be read keeps
        its number, empty, with a warning; a series with none readable is dropped). False when that study is no
        longer shown."""
        if not self.shows(token):
            return False
        fill = getattr(self.study, "pending", None)
        if fill is None or fill.finished:
            return False
        from ..io.fill import apply_changes

        warned = {s: len(s.warnings) for s in self.study.series}
        changes, errors = fill.finish()
        self.study.pending = None
        self.loading = None
        if changes or errors or any(len(s.warnings) != n for s, n in warned.items()):
            shown, index = self.series, self.index
            self.study.series = apply_changes(self.study.series, changes)
            self.study.errors.extend(errors)
            self.studies[self.study_path] = self.study
            for old, new in changes.items():
                res = self.results.get(old.uid)
                if res is not None and (new is None or res.num_slices != new.num_slices):
                    self.results.pop(old.uid, None)  # scores of the slices as they were counted before
            self.events.study_changed.emit(StudyChanged(self.study))
            if shown in changes:
                self.series, self.series_row = None, -1
                new = changes[shown]
                row = self.study.series.index(new) if new is not None else 0
                if self.study.series:
                    self._pending_slice = min(index, self.study.series[row].num_slices - 1)
                    self.select_series(row)
            elif shown is not None:
                self.series_row = self.study.series.index(shown)
        self.events.loaded.emit(Loaded())
        if self.series is not None and self.index >= 0:
            self._waiting_for = None
            self.events.slice.emit(SliceShown(self.index))
        return True

    def saved_series_row(self) -> int:
        """The series the saved session was on (0 when none)."""
        if self.study is None or not self.session.series_uid:
            return 0
        return next((i for i, s in enumerate(self.study.series) if s.uid == self.session.series_uid), 0)

    # ----------------------------------------------------------------------------------------- series, slices
    def select_series(self, row: int) -> bool:
        if self.study is None or not 0 <= row < len(self.study.series) or row == self.series_row:
            return False
        self.series_row = row
        s = self.series = self.study.series[row]
        self.session.series_uid = s.uid
        self.display.ensure_window(s)
        self.scoring.show(s.uid)
        start = self._pending_slice if self._pending_slice is not None else s.num_slices // 2
        self._pending_slice = None
        self.index = -1
        self.crosshair = (s.rows // 2, s.columns // 2)
        saved = self.session.view.get("plane")
        self.plane = saved if saved in available_planes(s) else acquired_plane(s)
        if self.session.view.get("layout") in LAYOUTS:
            self.layout = self.session.view["layout"]
        self.events.series.emit(SeriesShown(s))
        self.show_slice(start)
        return True

    def show_slice(self, index: int) -> int:
        """Show slice `index` (clamped to the series); returns the index shown, -1 with no series."""
        s = self.series
        if s is None:
            return -1
        index = int(min(max(index, 0), s.num_slices - 1))
        changed = index != self.index
        self.index = index
        if s.is_loaded(index):
            self._waiting_for = None
        else:
            s.request(index)  # read next; "slice" comes again when it is there (load_progress)
            self._waiting_for = (s, index)
        if changed:
            self.session.slice_index = index
            self.saving.schedule()
        self.events.slice.emit(SliceShown(index))
        if changed:
            self.events.crosshair.emit(CrosshairMoved(index, *self.crosshair))
        return index

    def step_series(self, step: int) -> bool:
        """The previous (-1) or next (+1) series of the study (PgUp / PgDn)."""
        if self.study is None or not self.study.series:
            return False
        return self.select_series(min(max(self.series_row + step, 0), len(self.study.series) - 1))

    # ------------------------------------------------------------------------------------------------ planes
    def planes(self) -> tuple[str, ...]:
        """The planes the series shown can be viewed in (one for a single image)."""
        return available_planes(self.series) if self.series is not None else ()

    def acquired_plane(self) -> str:
        return acquired_plane(self.series) if self.series is not None else "axial"

    def plane_view(self, plane: str | None = None) -> PlaneView:
        return plane_view(self.series, plane or self.plane)

    def view_series(self, plane: str | None = None):
        """The series the `plane` view (the main view's plane by default) shows: the acquired one or a reformat."""
        return self.plane_view(plane).series

    def view_index(self, plane: str | None = None) -> int:
        """The slice of the `plane` view that passes through the crosshair."""
        return self.plane_view(plane).to_plane(self.index, *self.crosshair)[0]

    def view_point(self, plane: str | None = None) -> tuple[int, int, int]:
        """The crosshair as (slice, row, column) of the `plane` view."""
        return self.plane_view(plane).to_plane(self.index, *self.crosshair)

    def set_plane(self, plane: str) -> str:
        """Show `plane` in the main view; a message when the series cannot be reformatted ("" when done)."""
        if self.series is None:
            return ""
        if plane not in PLANES:
            raise ValueError(f"unknown plane {plane!r}")
        if plane not in self.planes():
            return ("This series is a single image (or a stack of separate images): it can only be shown in its own "
                    "plane.")
        if plane != self.plane:
            self.plane = plane
            self.set_view("plane", plane)
            self.events.plane.emit(PlaneChanged(plane))
        return ""

    def set_layout(self, layout: str) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}")
        if layout != self.layout:
            self.layout = layout
            self.set_view("layout", layout)
            self.events.layout.emit(LayoutChanged(layout))

    def show_plane_slice(self, plane: str, index: int) -> int:
        """Show slice `index` of `plane` (clamped): the crosshair moves there; returns the index shown."""
        if self.series is None:
            return -1
        pv = self.plane_view(plane)
        n = pv.series.num_slices
        k, r, c = self.view_point(plane)
        index = int(min(max(index, 0), n - 1))
        if index != k:
            self.set_crosshair(plane, index, r, c)
        return index

    def set_crosshair(self, plane: str, index: int, row: int, column: int) -> None:
        """The crosshair to voxel (index, row, column) of `plane` (a Shift+move there): every plane follows."""
        if self.series is None:
            return
        pv = self.plane_view(plane)
        ps = pv.series
        index = int(min(max(index, 0), ps.num_slices - 1))
        row = int(min(max(row, 0), ps.rows - 1))
        column = int(min(max(column, 0), ps.columns - 1))
        k, r, c = pv.from_plane(index, row, column)
        moved = (r, c) != self.crosshair
        self.crosshair = (r, c)
        if k != self.index:
            self.show_slice(k)  # emits "crosshair" too
        elif moved:
            self.events.crosshair.emit(CrosshairMoved(self.index, r, c))

    def plane_map(self, plane: str | None = None, index: int | None = None) -> PlaneMap | None:
        """The anomaly map of slice `index` (the crosshair's by default) of `plane`, at that plane's pixel size;
        None when nothing of the series is scored. A reformatted plane is cut from each scored slice's compact map
        (one line of each: no map volume is kept), and lines of slices not scored between two that are, are
        interpolated linearly between them."""
        res = self.results.get(self.series.uid) if self.series is not None else None
        if res is None or not len(res):
            return None
        pv = self.plane_view(plane)
        index = self.view_index(plane) if index is None else index
        if pv.is_acquired:
            r = res.get(index)
            return None if r is None else PlaneMap(r.map, False)
        s = self.series
        shape = next(iter(res.results.values())).compact.shape
        scored = {k: r.compact for k, r in res.results.items() if r.compact.shape == shape}
        cut = np.full((s.num_slices, shape[1] if pv.axes[0] == 1 else shape[0]), np.nan, dtype=np.float32)
        for k, compact in scored.items():
            cut[k] = pv.line_of(compact, index)
        done = np.zeros(s.num_slices, dtype=bool)
        done[list(scored)] = True
        have = np.flatnonzero(done)
        gaps = np.flatnonzero(~done)
        gaps = gaps[(gaps > have[0]) & (gaps < have[-1])] if len(have) else gaps[:0]
        for g in gaps:
            pos = np.searchsorted(have, g)
            lo, hi = have[pos - 1], have[pos]
            t = (g - lo) / (hi - lo)
            cut[g] = (1 - t) * cut[lo] + t * cut[hi]
        values = pv.orient(cut)
        ps = pv.series
        if values.shape != (ps.rows, ps.columns):
            import cv2

            valid = np.isfinite(values)
            size = (ps.columns, ps.rows)
            # cv2 lets a NaN reach neighbours it gives no weight: resize the values and where they exist apart
            values = cv2.resize(np.where(valid, values, 0).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
            values[cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) == 0] = np.nan
        return PlaneMap(np.ascontiguousarray(values), bool(len(gaps)))

    def plane_annotations(self, plane: str | None = None, index: int | None = None) -> np.ndarray | None:
        """The drawn annotations cut by slice `index` of a reformatted `plane`, as a mask (None when there are none
        or `plane` is the acquired one, where the shapes themselves are drawn)."""
        pv = self.plane_view(plane)
        if pv.is_acquired or self.series is None:
            return None
        s = self.series
        index = self.view_index(plane) if index is None else index
        items = [(i, rev.annotations) for (uid, i), rev in self.session.review.items(s.uid) if rev.annotations]
        if not items:
            return None
        cut = np.zeros((s.num_slices, s.columns if pv.axes[0] == 1 else s.rows), dtype=bool)
        for i, anns in items:
            cut[i] = pv.line_of(annotations_mask(anns, (s.rows, s.columns)), index)
        out = pv.orient(cut)
        return np.ascontiguousarray(out) if out.any() else None

    def row_of(self, series_uid: str) -> int | None:
        if self.study is None:
            return None
        return next((i for i, s in enumerate(self.study.series) if s.uid == series_uid), None)

    def flagged(self, step: int, pct: float) -> int | None | str:
        """The next (step +1) or previous (-1) slice at or above `pct`; "no-scores" when there are none."""
        res = self.results.get(self.series.uid) if self.series is not None else None
        if res is None or not len(res):
            return "no-scores"
        return next_flagged(res.percentiles(), pct, self.index, step)

    # ------------------------------------------------------------------------------------------------ display
    def cine_step(self) -> int:
        """The next slice of the cine loop (after the last comes the first)."""
        if self.series is None:
            return -1
        pv = self.plane_view()
        if not pv.is_acquired:  # cine runs through the main view's plane
            return self.show_plane_slice(self.plane, (self.view_index() + 1) % pv.series.num_slices)
        return self.show_slice((self.index + 1) % self.series.num_slices)

    # ------------------------------------------------------------------------------------------------ view
    def set_view(self, key: str, value: Any) -> None:
        """A view setting kept with the session (overlay state, the ranking's flag percentile)."""
        self.session.view[key] = value
        self.saving.schedule()

    # ------------------------------------------------------------------------------------------------ saving
    def save(self) -> bool:
        return self.saving.save()

    # ------------------------------------------------------------------------------------------------ scoring
    def start_scoring(self, method: str) -> ScoringRun | str:
        """Begin an Adapt & score run of the series shown (`scoring.start`)."""
        return self.scoring.start(self.series, self.session.reference_set, method)

    @property
    def complete(self) -> bool:
        """Every slice of the open study is read (scoring, exports and explanations need the whole series)."""
        return self.study is None or getattr(self.study, "pending", None) is None

    def loading_reason(self) -> str:
        """Why Adapt & score would wait, while the open study is still reading its slices ("" when it is not)."""
        if self.complete:
            return ""
        done, total = self.loading or (0, 0)
        return (f"The series is still loading ({done} of {total} slices read): Adapt & score waits for every slice "
                "before it scores.")

    def probe(self, row: int, column: int, plane: str | None = None) -> Probe | None:
        """The data probe at (row, column) of the slice the `plane` view shows (the main view's by default); None
        outside it. Voxel indices are those of the acquired series (the file's), whatever the plane."""
        s = self.series
        if s is None or self.index < 0:
            return None
        pv = self.plane_view(plane)
        ps = pv.series
        if not (0 <= row < ps.rows and 0 <= column < ps.columns):
            return None
        k_view = self.view_index(plane)
        k, r0, c0 = pv.from_plane(k_view, row, column)
        if not s.is_loaded(k):
            return None  # not read yet: no value to show
        value = float(s.volume()[k, r0, c0])
        units = s.units
        res = self.results.get(s.uid)
        m = pct = None
        if res is not None and len(res):
            key = (s.uid, pv.plane, k_view, id(res), len(res))
            if self._probe_map[0] != key:  # the full-size map of the slice shown, made once, not per mouse move
                pm = self.plane_map(plane, k_view)
                self._probe_map = (key, None if pm is None else pm.values)
            amap = self._probe_map[1]
            if amap is not None and np.isfinite(amap[row, column]):
                m = float(amap[row, column])
                pct = float(res.pixel_percentile(m))
        return Probe(int(c0), int(r0), int(k), ps.voxel_position(k_view, row, column), value, units, m, pct)

    _probe_map: tuple = (None, None)

    def current_result(self) -> tuple[ScoreResults | None, SliceScore | None]:
        """The scores of the series shown and the result of the slice shown (either may be None)."""
        res = self.results.get(self.series.uid) if self.series is not None else None
        return res, (res.get(self.index) if res is not None else None)
