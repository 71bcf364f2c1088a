"""The viewer's state, Qt-free: the open study and series, the slice shown, windows, references, the review, scores
and maps, the scoring lifecycle, and when the session is saved. The window (`gui/main_window.py`) forwards gestures
here and redraws on the events this model emits; nothing in it needs a QApplication, so every behaviour can be tested
alone (tests/test_viewer_model.py).

Events (`subscribe(fn)`, `fn(event, payload)`):
  "study"        a study was opened (payload: the load job's dict)
  "series"       another series is shown (payload: the Series)
  "slice"        another slice is shown (payload: its index)
  "window"       the display window of the series changed (payload: (centre, width, name))
  "references"   the reference set changed
  "review"       a slice's review changed (payload: (series uid, index))
  "scores"       the scores of a series were replaced (payload: series uid)
  "slice-score"  one slice was scored (payload: SliceResult)
  "scoring"      the scoring run changed state (payload: ScoringRun)
  "save-due"     a save should follow in `payload` seconds (the window starts its timer; tests call save())
  "save-problem" a save failed or went to a spare folder (payload: message), or all is saved again (None)
  "say"          a hint for the user (payload: text)
  "display"      inversion, flips or cine changed (payload: Display)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..io.windowing import default_window
from .references import ReferenceSet, ReferenceSlice
from .results import ScoreResults, SliceResult
from .scoring import FIT_END
from .session import SaveFailed, Session, SessionStore
from .state import Decision, annotations_mask, next_flagged

Listener = Callable[[str, Any], None]

# The life of one Adapt & score run.
QUEUED, ADAPTING, SCORING, DONE, CANCELLED, FAILED = "queued", "adapting", "scoring", "done", "cancelled", "failed"


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


@dataclass
class Display:
    """How the slice is shown, beyond its window: grey scale inverted, flipped left-right or up-down, and cine."""

    inverted: bool = False
    flip_h: bool = False
    flip_v: bool = False
    cine: bool = False
    cine_fps: float = 10.0


CINE_FPS_RANGE = (1.0, 40.0)


@dataclass
class ScoringRun:
    """One Adapt & score run: its state, the slices scored so far, and what to restore if it yields nothing."""

    series_uid: str
    num_slices: int
    started: float
    state: str = QUEUED
    results: ScoreResults | None = None
    previous: ScoreResults | None = None  # the scores it replaces: back if the run fails or ends before a slice
    score_started: float | None = None
    message: str = ""
    outcome: Any = None

    @property
    def running(self) -> bool:
        return self.state in (QUEUED, ADAPTING, SCORING)


class ViewerModel:
    AUTOSAVE_DELAY_S = 0.6

    def __init__(self, clock: Callable[[], float] = time.monotonic, seconds_per_slice: float = 0.5):
        self.clock = clock
        self.study: Any = None
        self.study_path: str | None = None
        self.store: SessionStore | None = None
        self.session = Session("")
        self.series: Any = None
        self.series_row = -1
        self.index = 0
        self.results: dict[str, ScoreResults] = {}
        self.windows: dict[str, tuple[float, float, str]] = {}
        self.detector_info: dict | None = None
        self.studies: dict[str, Any] = {}  # loaded studies by path: the open one and reference sources
        self.run: ScoringRun | None = None
        self.seconds_per_slice = seconds_per_slice  # the last measured scoring pace (the app keeps it in settings)
        self.unsaved_scores: set[str] = set()  # series whose scores a save could not write (kept in memory)
        self.save_problem: str | None = None
        self.display = Display()
        self._pending_reference_set: ReferenceSet | None = None
        self._pending_slice: int | None = None
        self._load_request = 0
        self._save_due: float | None = None
        self._listeners: list[Listener] = []
        self.session.review.subscribe(self._review_changed)

    # ------------------------------------------------------------------------------------------------ events
    def subscribe(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _emit(self, event: str, payload: Any = None) -> None:
        for fn in list(self._listeners):
            fn(event, payload)

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
        """Show what the load job read (see gui/jobs.load_study_job). False, and nothing changes, when a later
        open has been asked for since."""
        if not self.is_current(token):
            return False
        study, path = payload["study"], payload["path"]
        if self.study_path is not None:
            self.studies.pop(self.study_path, None)
        self.study, self.study_path, self.store = study, path, payload["store"]
        self.studies[path] = study
        self.results = dict(payload["scores"])
        self.detector_info = None
        self.windows = {}
        old_refs = self.session.reference_set
        self.session.review.unsubscribe(self._review_changed)
        saved = payload["session"]
        self.session = saved if saved is not None else Session(path)
        self.session.study_path = path
        self.session.review.subscribe(self._review_changed)
        if not self.session.reference_set.references:
            # References carry over to a study without its own: pick normals in one study, score the next.
            if self._pending_reference_set is not None:
                self.session.reference_set = self._pending_reference_set
            elif old_refs.references:
                self.session.reference_set = old_refs
        self._pending_reference_set = None
        for uid, w in self.session.view.get("windows", {}).items():
            self.windows[uid] = (float(w[0]), float(w[1]), str(w[2]) if len(w) > 2 else "")
        self.series, self.series_row = None, -1
        self._pending_slice = self.session.slice_index if saved is not None else None
        self._emit("study", payload)
        return True

    def saved_series_row(self) -> int:
        """The series the saved session was on (0 when none)."""
        if self.study is None or not self.session.series_uid:
            return 0
        return next((i for i, s in enumerate(self.study.series) if s.uid == self.session.series_uid), 0)

    def missing_reference_sources(self) -> list[str]:
        """Studies the references come from that are not loaded yet (and still exist)."""
        missing = sorted({r.source for r in self.session.reference_set if r.source not in self.studies})
        return [m for m in missing if os.path.exists(m)]

    def add_studies(self, studies: dict[str, Any]) -> None:
        self.studies.update(studies)
        self._emit("references")

    # ----------------------------------------------------------------------------------------- series, slices
    def select_series(self, row: int) -> bool:
        if self.study is None or not 0 <= row < len(self.study.series) or row == self.series_row:
            return False
        self.series_row = row
        s = self.series = self.study.series[row]
        self.session.series_uid = s.uid
        if s.uid not in self.windows:
            w = default_window(s)
            self.windows[s.uid] = (w.center, w.width, w.name)
        res = self.results.get(s.uid)
        self.detector_info = (res.detector or None) if res is not None and len(res) else None
        start = self._pending_slice if self._pending_slice is not None else s.num_slices // 2
        self._pending_slice = None
        self.index = -1
        self._emit("series", s)
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
        if changed:
            self.session.slice_index = index
            self.schedule_save()
        self._emit("slice", index)
        return index

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
    def toggle(self, what: str) -> None:
        """Toggle "inverted", "flip_h", "flip_v" or "cine" (cine only with a series of more than one slice)."""
        if what == "cine" and (self.series is None or self.series.num_slices < 2):
            self.display.cine = False
        else:
            setattr(self.display, what, not getattr(self.display, what))
        self._emit("display", self.display)

    def reset_view(self) -> None:
        """Back to the plain view: not inverted, not flipped, cine stopped (the window also fits the image)."""
        self.display = Display(cine_fps=self.display.cine_fps)
        self._emit("display", self.display)

    def cine_speed(self, factor: float) -> float:
        lo, hi = CINE_FPS_RANGE
        self.display.cine_fps = float(min(max(self.display.cine_fps * factor, lo), hi))
        self._emit("display", self.display)
        return self.display.cine_fps

    def cine_step(self) -> int:
        """The next slice of the cine loop (after the last comes the first)."""
        if self.series is None:
            return -1
        return self.show_slice((self.index + 1) % self.series.num_slices)

    # ------------------------------------------------------------------------------------------------ windows
    def window(self) -> tuple[float, float, str]:
        return self.windows[self.series.uid]

    def set_window(self, c: float, w: float, name: str = "", *, shown: bool = False) -> None:
        """The display window of the series shown; `shown`: the viewer already shows it (a mouse drag), so no
        "window" event."""
        if self.series is None:
            return
        self.windows[self.series.uid] = (float(c), float(w), name)
        self.session.view["windows"] = {uid: list(v) for uid, v in self.windows.items()}
        self.schedule_save()
        if not shown:
            self._emit("window", self.windows[self.series.uid])

    def set_view(self, key: str, value: Any) -> None:
        """A view setting kept with the session (overlay state, the ranking's flag percentile)."""
        self.session.view[key] = value
        self.schedule_save()

    # ------------------------------------------------------------------------------------------------ references
    def add_reference(self, kind: str = "normal") -> str:
        """Add the slice shown as a reference; returns a message for the user ("" when nothing happened)."""
        s = self.series
        if s is None or self.study_path is None:
            return ""
        rs = self.session.reference_set
        mask = None
        if kind == "abnormal":
            anns = self.session.review.get(s.uid, self.index).annotations
            if not anns:
                self._emit("say", "To add a known abnormal example, first draw the finding on this slice with the "
                                  "Ellipse or Brush tool (Review panel); the drawing becomes its mask.")
                return ""
            mask = annotations_mask(anns, (s.rows, s.columns))
        if rs.modality and rs.modality != s.modality:
            self._emit("say", f"Note: the references so far are {rs.modality}; this slice is {s.modality}. Mixing "
                              "modalities usually hurts the detector.")
        if not rs.modality:
            rs.modality = s.modality
        rs.add(ReferenceSlice(self.study_path, s.uid, self.index, kind, mask, s.description))
        self._references_changed()
        what = "a normal reference" if kind == "normal" else "an abnormal example"
        return f"Slice {self.index + 1} added as {what} ({len(rs.normals())} normal references)"

    def remove_reference(self, pos: int) -> str:
        rs = self.session.reference_set
        if not 0 <= pos < len(rs):
            return ""
        r = rs.remove(pos)
        if not rs.references:
            rs.modality = ""
        self._references_changed()
        return f"Removed reference slice {r.index + 1}"

    def set_reference_set(self, rs: ReferenceSet) -> None:
        self.session.reference_set = rs
        self._references_changed()

    def _references_changed(self) -> None:
        self._emit("references")
        self.save()

    def reference_series(self, r: ReferenceSlice) -> Any:
        """The loaded series a reference slice is from, or None (its study is not loaded)."""
        from .references import resolve_series

        return resolve_series(r, self.studies)

    # ------------------------------------------------------------------------------------------------ review
    def _here(self) -> tuple[str, int] | None:
        return (self.series.uid, self.index) if self.series is not None else None

    def set_decision(self, decision: Decision) -> None:
        if (k := self._here()) is not None:
            self.session.review.set_decision(*k, decision)

    def set_note(self, text: str) -> None:
        if (k := self._here()) is not None:
            self.session.review.set_note(*k, text)

    def add_annotation(self, shape) -> None:
        if (k := self._here()) is not None:
            self.session.review.add_annotation(*k, shape)

    def clear_annotations(self) -> None:
        if (k := self._here()) is not None:
            self.session.review.clear_annotations(*k)

    def undo(self) -> None:
        self._show_touched(self.session.review.undo())

    def redo(self) -> None:
        self._show_touched(self.session.review.redo())

    def _show_touched(self, key) -> None:
        """Show the slice an undo or redo changed."""
        if key is None or self.series is None:
            return
        uid, index = key
        if uid != self.series.uid:
            row = self.row_of(uid)
            if row is None:
                return
            self.select_series(row)
        if index != self.index:
            self.show_slice(index)

    def _review_changed(self, key) -> None:
        self._emit("review", key)
        # Notes are saved after a pause in typing; decisions and drawings at once.
        if self.session.review.undo_label() == "Edit note":
            self.schedule_save()
        else:
            self.save()

    # ------------------------------------------------------------------------------------------------ saving
    def schedule_save(self) -> None:
        """Save within the autosave delay of the first unsaved change: later changes do not postpone it, so steady
        typing or scrolling still reaches the disk every AUTOSAVE_DELAY_S (what a crash can lose is bounded)."""
        if self.store is not None and self._save_due is None:
            self._save_due = self.clock() + self.AUTOSAVE_DELAY_S
            self._emit("save-due", self.AUTOSAVE_DELAY_S)

    @property
    def save_pending(self) -> bool:
        return self._save_due is not None

    def save(self) -> bool:
        """Save the session, and any scores an earlier save could not write. A failure is said once, in plain
        words; everything stays in memory and the next save tries again. True when all is on disk."""
        self._save_due = None
        if self.store is None:
            return True
        try:
            self.store.save(self.session)
            for uid in sorted(self.unsaved_scores):
                res = self.results.get(uid)
                if res is not None and len(res):
                    self.store.save_scores(res)
                self.unsaved_scores.discard(uid)
        except OSError as exc:
            self._problem(str(exc) if isinstance(exc, SaveFailed) else
                          f"The review session could not be saved ({exc.strerror or exc}).")
            return False
        self._problem(self.store.notice)
        return True

    def scores_not_saved(self, message: str) -> None:
        """The scoring job could not write its scores: they stay in memory and go with the next save."""
        if self.run is not None and self.run.results is not None:
            self.unsaved_scores.add(self.run.results.series_uid)
        self._problem(message)

    def _problem(self, message: str | None) -> None:
        if message != self.save_problem:
            self.save_problem = message
            self._emit("save-problem", message)

    # ------------------------------------------------------------------------------------------------ scoring
    def start_scoring(self, method: str) -> ScoringRun | str:
        """Begin an Adapt & score run of the series shown; a message instead when it cannot start."""
        if self.run is not None and self.run.running:
            return ""
        s = self.series
        if s is None:
            return "Open a study first (File → Open folder… or Open file…)."
        rs = self.session.reference_set
        if method != "zero" and not rs.normals():
            return "Add at least one normal reference slice first: browse to a slice with normal anatomy and press R."
        self.save()
        run = ScoringRun(s.uid, s.num_slices, self.clock(), previous=self.results.pop(s.uid, None))
        run.results = self.results[s.uid] = ScoreResults(s.uid, s.num_slices)
        self.run = run
        self._emit("scores", s.uid)
        self._set_state(ADAPTING)
        return run

    def _set_state(self, state: str, message: str = "") -> None:
        if self.run is not None:
            self.run.state, self.run.message = state, message
            self._emit("scoring", self.run)

    def job_partial(self, item: tuple[str, Any]) -> None:
        """What the job reports on its way: ("detector", info), ("slice", SliceResult), ("save-error", message)."""
        kind, payload = item
        run = self.run
        if kind == "save-error":
            self.scores_not_saved(payload)
            return
        if run is None or run.results is None:
            return
        if kind == "detector":
            run.score_started = self.clock()
            run.results.detector = payload
            self.detector_info = payload
            self._set_state(SCORING)
            return
        r: SliceResult = run.results.put(payload)
        self._emit("slice-score", r)

    def job_finished(self, outcome) -> None:
        run = self.run
        res = outcome.results
        self.results[res.series_uid] = res
        self.detector_info = outcome.detector
        self.session.scores_summary[res.series_uid] = {
            "detector": outcome.detector, "scored": len(res), "total": res.num_slices, "complete": res.complete,
            "top": [r.index for r in res.ranked()[:5]], "fit_seconds": round(outcome.fit_seconds, 1),
            "score_seconds": round(outcome.score_seconds, 1), "from_cache": outcome.from_cache}
        if len(res) and outcome.score_seconds > 0:
            self.seconds_per_slice = outcome.score_seconds / len(res)
        if run is not None:
            run.results, run.previous, run.outcome = res, None, outcome
        self._emit("scores", res.series_uid)
        self._set_state(DONE)

    def _restore_previous(self) -> None:
        run = self.run
        if run is not None and run.previous is not None and (run.results is None or not len(run.results)):
            self.results[run.previous.series_uid] = run.previous
            self._emit("scores", run.previous.series_uid)
        if run is not None:
            run.previous = None

    def job_failed(self, message: str) -> None:
        self._restore_previous()
        self._set_state(FAILED, message)

    def job_cancelled(self) -> None:
        """Slices already scored are kept; with none, the previous scores come back."""
        self._restore_previous()
        self._set_state(CANCELLED)

    def time_remaining(self, fraction: float, now: float | None = None) -> float | None:
        """Adaptation and scoring run at very different paces, so each stage is extrapolated on its own: scoring
        from the slices done so far, adaptation from its progress plus scoring at the last measured pace."""
        run = self.run
        if run is None or not run.running:
            return None
        now = self.clock() if now is None else now
        total = run.num_slices
        if run.score_started is not None and run.results is not None:
            done = len(run.results)
            if done == 0:
                return None
            per_slice = (now - run.score_started) / done
            self.seconds_per_slice = per_slice
            return per_slice * (total - done)
        elapsed = now - run.started
        fit_fraction = fraction / FIT_END
        if fit_fraction < 0.03 or elapsed < 3:
            return None
        fit_left = elapsed * (1.0 - fit_fraction) / fit_fraction
        return fit_left + self.seconds_per_slice * total

    def probe(self, row: int, column: int) -> Probe | None:
        """The data probe at (row, column) of the slice shown; None outside it."""
        s = self.series
        if s is None or self.index < 0 or not (0 <= row < s.rows and 0 <= column < s.columns):
            return None
        value = float(s.volume()[self.index, row, column])
        units = "HU" if s.modality.upper() == "CT" else ""
        res, r = self.current_result()
        m = pct = None
        if r is not None:
            key = (s.uid, self.index, id(r))
            if self._probe_map[0] != key:  # the full-size map of the slice shown, made once, not per mouse move
                self._probe_map = (key, r.map)
            m = float(self._probe_map[1][row, column])
            pct = float(res.pixel_percentile(m))
        return Probe(int(column), int(row), self.index, s.voxel_position(self.index, row, column), value, units,
                     m, pct)

    _probe_map: tuple = (None, None)

    def current_result(self) -> tuple[ScoreResults | None, SliceResult | None]:
        """The scores of the series shown and the result of the slice shown (either may be None)."""
        res = self.results.get(self.series.uid) if self.series is not None else None
        return res, (res.get(self.index) if res is not None else None)
