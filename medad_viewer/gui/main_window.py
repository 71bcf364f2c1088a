"""MainWindow: lays out the study browser, the slice viewers, the ranking, the reference tray and the panels around the
Qt-free viewer model (`review/viewer_model.py`), and wires one controller per concern, each listening to its own model's
events: opening studies (gui/opening_controller.py), the planes (planes_controller.py), the slice's lines and
overlays (slice_info_controller.py), the display (display_controller.py), the review (review_controller.py),
measuring (measure_controller.py), the references (references_controller.py), Adapt & score
(scoring_controller.py), File → Export (export_controller.py) and the status bar (status_controller.py). Long work
runs in the one background worker (gui/worker.py) through the jobs of gui/background_jobs.py. Menus and keys: gui/actions.py."""

from __future__ import annotations

import time

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import QDockWidget, QMainWindow, QMenu, QMessageBox, QWidget

from ..io.windowing import presets_for
from ..review.state import Decision
from ..review.viewer_model import ViewerModel
from .actions import build_actions, shortcuts_html
from .display_controller import DisplayController
from .export_controller import ExportController
from .measure_controller import MeasureController
from .background_jobs import freeze_heap
from .analysis_panel import AnalysisPanel
from .review_panel import ReviewPanel
from .planes_controller import PlanesController
from .ranking_panel import RankingPanel
from .reference_tray import ReferenceTray
from .opening_controller import OpeningController
from .references_controller import ReferencesController
from .review_controller import ReviewController
from .scoring_controller import ScoringController
from .settings import AppSettings
from .settings_dialog import SettingsDialog
from .slice_info_controller import SliceInfoController, probe_html
from .slice_viewer import SliceViewer
from .status_controller import StatusController
from .study_browser import StudyBrowser
from .why_panel import attach_why_panel
from .worklist_controller import WorklistController
from .worker import Worker


class MainWindow(QMainWindow):
    studyOpened = Signal(str)
    sliceShown = Signal(int)
    scoringFinished = Signal(object)
    scoringFailed = Signal(str)
    scoringCancelled = Signal()
    CLOSE_WAIT_S = 0.5


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
        self.status = StatusController(self)
        self.scoring = ScoringController(self)
        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.timeout.connect(self.save_session)
        self._connect_model()
        self.opening = OpeningController(self)
        self.worklist = WorklistController(self)
        self.references = ReferencesController(self)
        self.exports = ExportController(self)
        self.measure = MeasureController(self)
        self.viewer.probe_text = lambda row, column: probe_html(self.model.probe(row, column))
        self.status.probe_device()
        QTimer.singleShot(0, freeze_heap)  # what start-up made need not be scanned by the collector again
        self.references.refresh()
        self.review_panel.setEnabled(False)
        self.resize(1500, 940)

    # ============================================================================================ model events
    def _connect_model(self) -> None:
        """The window's handlers of the model's typed events (review/events.py)."""
        ev = self.model.events
        ev.series.connect(lambda e: self._series_shown(e.series))
        ev.slice.connect(lambda e: self._slice_shown(e.index))
        saving = self.model.saving.events
        saving.due.connect(lambda e: self._save_timer.isActive() or self._save_timer.start(int(e.delay_s * 1000)))
        saving.problem.connect(lambda e: self._save_problem(e.message))
        ev.say.connect(lambda e: self._say(e.text))

    @property
    def settled(self) -> bool:
        """The device probe has finished: the window is as a user finds it. (At start-up there is none: the device is
        told without importing torch, which the first Adapt & score imports.)"""
        return not any(w.name == "device-probe" for w in self._loaders)

    def _start_loader(self, w: Worker) -> None:
        self._loaders.append(w)
        w.thread_finished.connect(lambda w=w: self._loaders.remove(w) if w in self._loaders else None)
        w.start()

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
        res = self.model.results.get(s.uid)
        if res is not None and len(res):
            self.ranking.set_scores({i: (r.score, r.percentile) for i, r in res.results.items()})
            n, tot = len(res), s.num_slices
            self.analysis.show_message(f"Showing the saved scores of {n} of {tot} slices" if n < tot else
                                       f"Showing the saved scores ({res.detector.get('backbone', '')})")
        self.status.update_backbone()
        self.ranking.set_threshold(float(self.model.session.view.get("flag_pct", self.ranking.threshold_pct)))
        self.review.update_ranking_decisions()
        self.viewer.set_window(*self.model.display.window())
        self._fit_next = True

    def show_slice(self, index: int, fit: bool = False) -> None:
        self._fit_next = self._fit_next or fit
        self.model.show_slice(index)

    _fit_next = False

    def _slice_shown(self, index: int) -> None:
        s = self.model.series
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
        self.tray.set_current(self.model.session.reference_set.find(s.uid, index))
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

    # ============================================================================================ layout, dialogs
    def _build_widgets(self) -> None:
        self.viewer = SliceViewer()
        self.planes = PlanesController(self)
        self.setCentralWidget(self.planes.widget)
        self.browser = StudyBrowser()
        self.ranking = RankingPanel()
        self.tray = ReferenceTray()
        self.analysis = AnalysisPanel()
        self.review_panel = ReviewPanel()

        def dock(title: str, widget: QWidget, area: Qt.DockWidgetArea, name: str) -> QDockWidget:
            d = QDockWidget(title, self)
            d.setObjectName(name)
            d.setWidget(widget)
            d.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                          | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
            self.addDockWidget(area, d)
            return d

        self.browser_dock = dock("Study", self.browser, Qt.DockWidgetArea.LeftDockWidgetArea, "study")
        self.tray_dock = dock("Reference tray", self.tray, Qt.DockWidgetArea.BottomDockWidgetArea, "tray")
        self.analysis_dock = dock("Adapt && score", self.analysis, Qt.DockWidgetArea.RightDockWidgetArea, "analysis")
        self.ranking_dock = dock("Slice ranking", self.ranking, Qt.DockWidgetArea.RightDockWidgetArea, "ranking")
        self.review_dock = dock("Review", self.review_panel, Qt.DockWidgetArea.LeftDockWidgetArea, "review")
        self.browser_dock.setMinimumWidth(270)
        self.analysis_dock.setMinimumWidth(330)
        # The ranking list deserves the height; the Adapt & score panel needs only its controls.
        self.resizeDocks([self.analysis_dock, self.ranking_dock], [250, 650], Qt.Orientation.Vertical)
        self.resizeDocks([self.browser_dock, self.review_dock], [430, 400], Qt.Orientation.Vertical)
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)

        self.viewer.scrollRequested.connect(self.planes.step)
        self.viewer.contextMenuRequested.connect(self._viewer_context_menu)
        self.browser.seriesSelected.connect(self.select_series)
        self.ranking.sliceClicked.connect(self._jump_from_panel)
        self.ranking.flagThresholdChanged.connect(self._flag_threshold_changed)
        self.analysis.runRequested.connect(lambda: self.scoring.run())
        self.analysis.cancelRequested.connect(lambda: self.scoring.cancel())
        self.analysis.overlayChanged.connect(self._overlay_changed)

    def open_settings(self) -> None:
        dlg = SettingsDialog(self.app_settings, self)
        if dlg.exec():
            self.status.update_backbone()
            self.status.probe_device()

    def _viewer_context_menu(self, pos) -> None:
        if self.model.series is None:
            return
        m = QMenu(self)
        m.addAction("Add as normal reference (R)", lambda: self.references.add("normal"))
        m.addAction("Add as abnormal example (uses the drawing as mask)", lambda: self.references.add("abnormal"))
        pos_in_set = self.model.session.reference_set.find(self.model.series.uid, self.model.index)
        if pos_in_set is not None:
            m.addAction("Remove from references", lambda: self.references.remove(pos_in_set))
        m.addSeparator()
        m.addAction("Confirm finding (A)", lambda: self.review.set_decision(Decision.CONFIRMED))
        m.addAction("Dismiss (D)", lambda: self.review.set_decision(Decision.DISMISSED))
        m.addAction("Mark unreviewed (U)", lambda: self.review.set_decision(Decision.UNREVIEWED))
        m.addSeparator()
        wm = m.addMenu("Window preset")
        for k, p in enumerate(presets_for(self.model.series)[:5]):
            wm.addAction(f"{k + 1}: {p.name}", lambda k=k: self.slice_info.apply_preset(k))
        m.addAction("Fit to window", self.viewer.fit)
        m.popup(pos)

    def _say(self, text: str) -> None:
        """A hint in the Adapt & score panel and the status bar: no dialog to dismiss."""
        self.analysis.show_message(text)
        self.statusBar().showMessage(text, 8000)

    def _error(self, text: str, title: str = "MedAD Viewer") -> None:
        """A window-modal message that does not block the event loop (a running job keeps reporting)."""
        if self._message_box is not None:
            self._message_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()
        self._message_box = box

    def _show_shortcuts(self) -> None:
        QMessageBox.information(self, "Keyboard shortcuts", shortcuts_html(self))

    def _about(self) -> None:
        from .. import __version__
        QMessageBox.about(self, "About MedAD Viewer",
                          f"<b>MedAD Viewer {__version__}</b><br>Few-shot anomaly detection for medical images. "
                          "A review aid for clinicians: it ranks slices that differ from the normal references you "
                          "pick. It does not make a diagnosis.")

    def dragEnterEvent(self, ev) -> None:
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()

    def dropEvent(self, ev) -> None:
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.opening.open_path(paths[0])

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
        self.status.memory_timer.stop()
        self._save_timer.stop()
        super().closeEvent(ev)

    CLOSE_WAIT_S = 0.5
