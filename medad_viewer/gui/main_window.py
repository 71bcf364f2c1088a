"""MainWindow: study browser, slice viewer, ranking, reference tray and review around the Qt-free viewer model
(`review/viewer.py`). The window forwards gestures to the model and redraws on the model's events; long work runs
in the one background worker (gui/worker.py) through the jobs of gui/jobs.py. Menus and keys: gui/actions.py;
File → Export: gui/export_controller.py; the reference tray: gui/references_controller.py; measuring: gui/measure_controller.py."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer, Signal
from PySide6.QtWidgets import QMainWindow, QMessageBox, QWidget

from ..paths import DEMO_REFERENCES, DEMO_STUDY
from ..review.references import ReferenceSet
from ..review.viewer import ViewerModel
from .actions import build_actions
from .chrome import ChromeMixin
from .display_controller import DisplayController
from .export_controller import ExportController
from .measure_controller import MeasureController
from .jobs import device_guess, device_probe_job, freeze_heap, load_study_job
from .references_controller import ReferencesController
from .review_controller import ReviewController
from .scoring_controller import ScoringController
from .settings import AppSettings
from .slice_info_controller import SliceInfoController, probe_html
from .study_browser import pixmap_from_gray
from .why_panel import attach_why_panel
from .worker import Worker


def _model_field(name: str) -> property:
    """The window shows the model's state; scripts and tests read it through the window as before."""
    return property(lambda self: getattr(self.model, name), lambda self, v: setattr(self.model, name, v))


class MainWindow(ChromeMixin, QMainWindow):
    studyOpened = Signal(str)
    sliceShown = Signal(int)
    scoringFinished = Signal(object)
    scoringFailed = Signal(str)
    scoringCancelled = Signal()
    CLOSE_WAIT_S = 0.5

    study = _model_field("study")
    study_path = _model_field("study_path")
    store = property(lambda self: self.model.saving.store)
    job = property(lambda self: self.scoring.job)  # the Adapt & score job while it runs
    session = _model_field("session")
    series = _model_field("series")
    index = _model_field("index")
    results = property(lambda self: self.model.scoring.results)
    detector_info = property(lambda self: self.model.scoring.detector_info)

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("MedAD Viewer")
        self.setAcceptDrops(True)
        self.app_settings = AppSettings(settings)
        self.model = ViewerModel(seconds_per_slice=self.app_settings.seconds_per_slice())
        self._loaders: list[Worker] = []
        self._study_loader: Worker | None = None  # the one study load whose result will be shown
        self._message_box: QMessageBox | None = None

        self._build_widgets()
        self.slice_info = SliceInfoController(self)
        self.display = DisplayController(self)
        self.review = ReviewController(self)
        build_actions(self)
        self.why = attach_why_panel(self, self.act_why)  # the "Why is this hot?" dock (View menu, Y)
        self._build_status_bar()
        self.scoring = ScoringController(self)
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.timeout.connect(self.save_session)
        self._mem_timer = QTimer(self)
        self._mem_timer.setInterval(2000)
        self._mem_timer.timeout.connect(self._update_memory)
        self._mem_timer.start()
        self._connect_model()
        self.references = ReferencesController(self)
        self.exports = ExportController(self)
        self.measure = MeasureController(self)
        self.viewer.probe_text = lambda row, column: probe_html(self.model.probe(row, column))
        self._update_memory()
        self._probe_device()
        QTimer.singleShot(0, freeze_heap)  # what start-up made need not be scanned by the collector again
        self.references.refresh()
        self.review_panel.setEnabled(False)
        self.resize(1500, 940)

    # ============================================================================================ model events
    def _connect_model(self) -> None:
        """The window's handlers of the model's typed events (review/events.py)."""
        ev = self.model.events
        ev.study.connect(lambda e: self._study_shown(e.load))
        ev.series.connect(lambda e: self._series_shown(e.series))
        ev.slice.connect(lambda e: self._slice_shown(e.index))
        saving = self.model.saving.events
        saving.due.connect(lambda e: self._save_timer.isActive() or self._save_timer.start(int(e.delay_s * 1000)))
        saving.problem.connect(lambda e: self._save_problem(e.message))
        ev.say.connect(lambda e: self._say(e.text))
        ev.loading.connect(lambda e: self._loading_progress((e.done, e.total)))
        ev.loaded.connect(lambda _e: self._loading_done(None))
        ev.study_changed.connect(lambda e: self._study_changed(e.study))

    # ============================================================================================ status bar
    def _probe_device(self) -> None:
        """The status bar's device. Before the first Adapt & score torch is not imported (the window starts without
        it: issue 20), so the device is told from what the machine has; the first job says what it really uses."""
        preference = self.app_settings.get("device")
        if "torch" not in sys.modules:
            self.device_label.setText(f"Device: {device_guess(preference)}")
            return
        w = Worker(device_probe_job(preference), "device-probe", self)
        w.finished.connect(lambda text: self.device_label.setText(f"Device: {text}"))
        w.failed.connect(lambda msg: self.device_label.setText(f"Device: ⚠ {msg}"))
        self._start_loader(w)

    # ============================================================================================ opening
    def open_demo(self) -> None:
        self.open_path(str(DEMO_STUDY), reference_set=DEMO_REFERENCES)

    def open_path(self, path: str, reference_set: str | os.PathLike | None = None) -> None:
        """Open a study in the background. `reference_set`: a set file loaded into the tray unless the study's
        saved session already has references. The latest request wins: an older load still running is cancelled,
        and its result dropped if it comes."""
        path = str(Path(path).expanduser().resolve())
        if self.scoring.running:
            self.scoring.cancel()  # scoring belongs to the open series; the job saves the slices it finished
        pending = None
        if reference_set is not None:
            try:
                pending = ReferenceSet.load(reference_set)
            except ValueError as exc:
                self.browser.errors.add_messages([str(exc)])
        token = self.model.begin_load(pending)
        self.browser.set_loading(path)
        self.statusBar().showMessage(f"Loading {path} …")
        if self._study_loader is not None:
            self._study_loader.cancel()
        # A study shown while its slices are still read (the load job goes on filling them in) keeps filling until
        # this one is shown: if this open fails, the study on screen still completes.
        w = self._study_loader = Worker(load_study_job(path), "load-study", self)
        w.partial.connect(lambda item: self._load_partial(w, token, item))
        w.finished.connect(lambda payload: self._load_finished(w, token, payload))
        w.failed.connect(lambda msg: self._load_failed(w, token, path, msg))
        w.done.connect(lambda: setattr(self, "_study_loader", None) if w is self._study_loader else None)
        self._start_loader(w)

    _filler: Worker | None = None  # the load job still reading the slices of the study shown

    def _load_partial(self, w: Worker, token: int, item: tuple) -> None:
        kind, payload = item
        if kind == "study":
            if self.model.load_finished(token, payload):
                # shown: from now on this job only fills in the slices (a later open does not cancel it until that
                # study is shown)
                self._filler = w
                if self._study_loader is w:
                    self._study_loader = None
                self.scoring.update_run_state()
        elif kind == "slices":
            self.model.load_progress(token, *payload)

    def _load_finished(self, w: Worker, token: int, payload: dict) -> None:
        if payload.get("complete"):
            self.model.load_complete(token)
        elif self.model.load_finished(token, payload):
            self.scoring.update_run_state()
        if self._filler is w:
            self._filler = None

    def _load_failed(self, w: Worker, token: int, path: str, msg: str) -> None:
        if self.model.is_current(token) and not self.model.shows(token):
            self._study_failed(path, msg)
        elif self.model.shows(token):  # the rest of the slices could not be read
            self.browser.errors.add_messages([f"{path}: reading the slices stopped: {msg}"])
        if self._filler is w:
            self._filler = None

    @property
    def settled(self) -> bool:
        """The device probe has finished: the window is as a user finds it. (At start-up there is none: the device is
        told without importing torch, which the first Adapt & score imports.)"""
        return not any(w.name == "device-probe" for w in self._loaders)

    def _start_loader(self, w: Worker) -> None:
        self._loaders.append(w)
        w.thread_finished.connect(lambda w=w: self._loaders.remove(w) if w in self._loaders else None)
        w.start()

    def _study_failed(self, path: str, msg: str) -> None:
        self.browser.study_label.setText(f"<b>{path}</b><br>Could not be opened")
        self.browser.errors.add_messages([msg])
        self.statusBar().showMessage(f"Could not open {path}", 8000)

    def _study_shown(self, payload: dict) -> None:
        study, path = payload["study"], payload["path"]
        # The study shown before this one may still be filling in its slices: no longer needed.
        if self._filler is not None and self._filler is not self._study_loader:
            self._filler.cancel()
            self._filler = None
        self.browser.errors.clear()
        self.browser.errors.add_messages([e.full for e in study.errors] + list(payload.get("notes") or []))
        if "overlay" in self.session.view:
            self.analysis.restore_overlay_state(self.session.view["overlay"])
        entries = [{"pixmap": pixmap_from_gray(t), "modality": s.modality, "description": s.description,
                    "num_slices": s.num_slices, "rows": s.rows, "columns": s.columns, "warnings": s.warnings}
                   for s, t in zip(study.series, payload["thumbs"])]
        row = self.model.saved_series_row()
        self.browser.set_study(path, entries, row if entries else None)
        self.setWindowTitle(f"MedAD Viewer — {Path(path).name}")
        self.app_settings.add_recent(path)
        if study.series:
            self.select_series(row)
            restored = " — previous review session restored" if payload["session"] is not None else ""
            self.statusBar().showMessage(f"Opened {Path(path).name}: {len(study.series)} series{restored}", 8000)
        else:
            self.viewer.clear()
            self.viewer.placeholder.setText(f"No images could be read from\n{path}\n\nSupported: "
                                            "DICOM, NIfTI, NRRD, MetaImage, PNG, JPEG, TIFF, BMP.")
            self.ranking.set_series(0, None)
            if not study.errors:
                self.browser.errors.add_messages([f"{path}: no images found (empty folder?)"])
            self.statusBar().showMessage(f"No images in {path}", 8000)
        self.references.refresh()
        self.references.load_sources()
        self.studyOpened.emit(path)

    # ============================================================================================ loading
    def _loading_progress(self, progress: tuple[int, int]) -> None:
        done, total = progress
        self.statusBar().showMessage(f"Reading slices: {done} / {total}", 2000)
        self.scoring.update_run_state()
        if (self.model.layout == "1x3" or not self.planes.main_is_acquired()) and time.monotonic() - self._planes_drawn > 0.5:
            # the reformatted views show the slices read so far: redrawn twice a second while the rest arrive
            self._planes_drawn = time.monotonic()
            self.planes.draw_sides(force=True)
            if not self.planes.main_is_acquired():
                self.planes.draw(self.viewer)

    _planes_drawn = 0.0

    def _loading_done(self, _payload=None) -> None:
        self.statusBar().showMessage("All slices read", 3000)
        self.scoring.update_run_state()
        self.references.refresh()
        if self.series is not None:
            self.planes.draw_sides(force=True)
            if not self.planes.main_is_acquired():
                self.planes.draw(self.viewer)

    def _study_changed(self, study) -> None:
        """Once every slice was read: some could not be (their warnings), or a series had none readable (dropped).
        The list of series is drawn anew."""
        from .imaging import thumbnail
        from ..io.windowing import default_window

        entries = []
        for s in study.series:
            w = default_window(s)
            pm = pixmap_from_gray(thumbnail(s.slice(s.num_slices // 2), (w.center, w.width), 64))
            entries.append({"pixmap": pm, "modality": s.modality, "description": s.description,
                            "num_slices": s.num_slices, "rows": s.rows, "columns": s.columns, "warnings": s.warnings})
        self.browser.set_study(self.study_path, entries, max(self.model.series_row, 0) if entries else None)
        self.browser.errors.clear()
        self.browser.errors.add_messages([e.full for e in study.errors])
        if not study.series:
            self.viewer.clear()
            self.ranking.set_series(0, None)

    # ============================================================================================ series/slices
    def select_series(self, row: int) -> None:
        self.model.select_series(row)

    def _series_shown(self, s) -> None:
        self.browser.select(self.model.series_row)
        for v in self.planes.all_viewers():
            v._drawn = v._geometry_of = None
        self.viewer.plane = self.model.plane
        self.planes.show_sides()
        ps = self.model.view_series()
        self.viewer.set_geometry((ps.spacing[0], ps.spacing[1]))
        self.viewer.units = s.units
        self.slice_info.fill_presets_menu()
        self.ranking.set_series(s.num_slices, self.slice_info.ranking_thumbnail)
        res = self.results.get(s.uid)
        if res is not None and len(res):
            self.ranking.set_scores({i: (r.score, r.percentile) for i, r in res.results.items()})
            n, tot = len(res), s.num_slices
            self.analysis.show_message(f"Showing the saved scores of {n} of {tot} slices" if n < tot else
                                       f"Showing the saved scores ({res.detector.get('backbone', '')})")
        self._update_backbone_label()
        self.ranking.set_threshold(float(self.session.view.get("flag_pct", self.ranking.threshold_pct)))
        self.review.update_ranking_decisions()
        self.viewer.set_window(*self.model.display.window())
        self._fit_next = True

    def show_slice(self, index: int, fit: bool = False) -> None:
        self._fit_next = self._fit_next or fit
        self.model.show_slice(index)

    _fit_next = False

    def _slice_shown(self, index: int) -> None:
        s = self.series
        if self.planes.main_is_acquired() and not s.is_loaded(index):
            # not read yet: said so (never the previous slice's pixels); drawn when it arrives (model "slice" again)
            self.viewer.show_loading(f"Loading slice {index + 1} of {s.num_slices}…")
        elif self.planes.main_is_acquired():
            c, w, _name = self.model.display.window()
            self.viewer.set_pixels(s.slice(index), (c, w), fit=self._fit_next)
            # only this view's map: the other planes' slices, when they change, are redrawn on "crosshair"
            self.slice_info.refresh_main_overlay()
        elif getattr(self.viewer, "_drawn", None) != (self.model.plane, self.model.view_index()) or self._fit_next:
            self.planes.draw(self.viewer, fit=self._fit_next)
        self._fit_next = False
        self.slice_info.refresh()
        self.ranking.set_current(index)
        self.tray.set_current(self.session.reference_set.find(s.uid, index))
        self.sliceShown.emit(index)

    def _jump_from_panel(self, index: int) -> None:
        self.show_slice(index)
        self.viewer.setFocus()

    def _overlay_changed(self) -> None:
        ov = self.analysis.overlay_state()
        self.act_overlay.setChecked(ov["visible"])
        self.model.set_view("overlay", ov)
        self.slice_info.refresh_overlays()

    def _flag_threshold_changed(self, pct: float) -> None:
        self.model.set_view("flag_pct", pct)

    def toggle_overlay(self) -> None:
        self.analysis.show_overlay.toggle()

    # ============================================================================================ session
    def save_session(self) -> None:
        self._save_timer.stop()
        self.model.save()

    def _save_problem(self, message: str | None) -> None:
        """A save failed, or went to the spare folder: said once, in plain words."""
        if message:
            self.statusBar().showMessage(f"⚠ {message}", 15000)
            self._error(message, title="Review not saved" if "could not be saved (" in message else "MedAD Viewer")

    # ============================================================================================ misc UI
    # ============================================================================================ drag & drop
    # ============================================================================================ shutdown
    def closeEvent(self, ev) -> None:
        """Returns within a second whatever runs: every job is cancelled and given half a second to stop; one still
        busy (inside a long read or a training step) is detached and ends on its own, saving what it finished.
        The session is saved before and after."""
        self.model.save()
        running = [w for w in [self.scoring.job, *self._loaders] if w is not None and w.is_running]
        for w in running:
            w.cancel()  # an unfinished export leaves no file; a cancelled scoring job saves the slices it scored
        deadline = time.monotonic() + self.CLOSE_WAIT_S
        for w in running:
            w.wait(max(0, int((deadline - time.monotonic()) * 1000)))
        for w in running:
            if w.is_running:
                w.detach()
        self.model.save()
        self._mem_timer.stop()
        self._save_timer.stop()
        super().closeEvent(ev)

    CLOSE_WAIT_S = 0.5
