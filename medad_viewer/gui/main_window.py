"""MainWindow: study browser, slice viewer, ranking, reference tray and review, wired to the review model and the
background worker. Widgets display and forward gestures; the model lives in medad_viewer.review."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence, QPixmap
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow, QMenu,
                               QMessageBox, QWidget)

from ..io import Series, Study, load_study
from ..paths import DEMO_REFERENCES, DEMO_STUDY
from ..io.windowing import default_window, presets_for
from ..review.adaptation_cache import AdaptationCache
from ..review.export import EXPORTS, ExportContext
from ..review.references import ReferenceSet, ReferenceSlice, list_named, load_named, save_named
from ..review.results import ScoreResults
from ..review.scoring import FIT_END, ScoreJob, run_score_job
from ..review.session import SaveFailed, Session, SessionStore
from ..review.state import Decision, annotations_mask, next_flagged
from .export_dialog import ExportProgressDialog, PdfExportDialog, open_when_done, set_open_when_done
from .imaging import thumbnail
from .panels import AnalysisPanel, ReviewPanel
from .ranking import RankingPanel
from .reference_tray import ReferenceTray
from .settings import AppSettings, SettingsDialog
from .slice_viewer import SliceViewer
from .study_browser import StudyBrowser, pixmap_from_gray
from .worker import Worker



def _load_study_job(path: str):
    """Everything opening a study reads from disk, for the worker thread: series, thumbnails, the saved session
    (moved from beside the study first, where an earlier version kept it) and its scores."""

    def run(progress, cancel, emit):
        progress(0.0, f"Reading {path}")
        study = load_study(path, progress=lambda done, total: progress(done / max(total, 1), "Reading files"),
                           cancel=cancel)
        cancel.raise_if_cancelled()
        thumbs = []
        for s in study.series:
            w = default_window(s)
            thumbs.append(thumbnail(s.slice(s.num_slices // 2), (w.center, w.width), 64))
            cancel.raise_if_cancelled()
        store = SessionStore.for_study(study, path)
        session, scores, notes = None, {}, []
        if store is not None:
            try:
                store.migrate_legacy(study)
            except SaveFailed as exc:
                notes.append(f"The review session kept beside the study could not be moved: {exc}")
            session = store.load(study)
            if session is not None:
                for s in study.series:
                    res = store.load_scores(s.uid)
                    if res is not None and res.num_slices == s.num_slices:
                        scores[s.uid] = res
        return {"path": path, "study": study, "thumbs": thumbs, "store": store, "session": session,
                "scores": scores, "notes": notes}

    return run


class MainWindow(QMainWindow):
    studyOpened = Signal(str)
    sliceShown = Signal(int)
    scoringFinished = Signal(object)
    scoringFailed = Signal(str)
    scoringCancelled = Signal()

    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("MedAD Viewer")
        self.setAcceptDrops(True)
        self.app_settings = AppSettings(settings)
        # Tests and scripts: turns the settings dict into the DetectorSettings (or dict) the job uses.
        self.settings_hook: Callable[[dict], Any] | None = None
        # Torch threads for engine jobs: on a small CPU leave a core to the UI.
        self.job_threads: int | None = max(1, (os.cpu_count() or 2) - 1) if (os.cpu_count() or 2) <= 4 else None

        self.study: Study | None = None
        self.study_path: str | None = None
        self.store: SessionStore | None = None
        self.session: Session = Session("")
        self.series: Series | None = None
        self.series_row = -1
        self.index = 0
        self.results: dict[str, ScoreResults] = {}
        self.windows: dict[str, tuple[float, float, str]] = {}
        self.detector_info: dict | None = None
        self.job: Worker | None = None
        self._job_started = 0.0
        self._job_results: ScoreResults | None = None
        self._previous_results: ScoreResults | None = None
        self._score_started: float | None = None
        self._per_slice_s: float | None = None
        self._loaders: list[Worker] = []
        self._study_loader: Worker | None = None  # the one study load whose result will be shown
        self._unsaved_scores: set[str] = set()  # series whose scores a save could not write (kept in memory)
        self._save_problem_shown: str | None = None
        self._studies: dict[str, Study] = {}  # loaded studies by path: the open one and reference sources
        self._pending_reference_set: ReferenceSet | None = None
        self._pending_slice: int | None = None
        self._message_box: QMessageBox | None = None

        self._build_widgets()
        self._build_actions()
        self._build_status_bar()
        self.session.review.subscribe(self._review_changed)

        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(600)
        self._save_timer.timeout.connect(self.save_session)
        self._mem_timer = QTimer(self)
        self._mem_timer.setInterval(2000)
        self._mem_timer.timeout.connect(self._update_memory)
        self._mem_timer.start()
        self._update_memory()
        self._probe_device()
        self._refresh_all()
        self.resize(1500, 940)

    # ================================================================================================== layout
    def _build_widgets(self) -> None:
        self.viewer = SliceViewer()
        self.setCentralWidget(self.viewer)
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

        self.viewer.scrollRequested.connect(lambda d: self.show_slice(self.index + d))
        self.viewer.windowChanged.connect(self._window_dragged)
        self.viewer.contextMenuRequested.connect(self._viewer_context_menu)
        self.viewer.annotationDrawn.connect(self._annotation_drawn)
        self.browser.openFolderRequested.connect(self.open_folder_dialog)
        self.browser.openFileRequested.connect(self.open_file_dialog)
        self.browser.seriesSelected.connect(self.select_series)
        self.ranking.sliceClicked.connect(self._jump_from_panel)
        self.ranking.flagThresholdChanged.connect(self._flag_threshold_changed)
        self.tray.addRequested.connect(lambda: self.add_reference("normal"))
        self.tray.addAbnormalRequested.connect(lambda: self.add_reference("abnormal"))
        self.tray.removeRequested.connect(self.remove_reference)
        self.tray.showRequested.connect(self.show_reference)
        self.tray.saveRequested.connect(self.save_reference_set_named)
        self.tray.saveAsFileRequested.connect(self.save_reference_set_file)
        self.tray.loadNamedRequested.connect(self.load_reference_set_named)
        self.tray.loadFileRequested.connect(self.load_reference_set_file)
        self.tray.clearRequested.connect(self.clear_references)
        self.analysis.runRequested.connect(self.run_scoring)
        self.analysis.cancelRequested.connect(self.cancel_job)
        self.analysis.overlayChanged.connect(self._overlay_changed)
        rp = self.review_panel
        rp.decisionRequested.connect(lambda d: self.set_decision(Decision(d)))
        rp.noteEdited.connect(self._note_edited)
        rp.toolChanged.connect(self.set_tool)
        rp.brushSizeChanged.connect(lambda v: setattr(self.viewer, "brush_width", float(v)))
        rp.clearAnnotationsRequested.connect(self._clear_annotations)
        rp.undoRequested.connect(self.undo)
        rp.redoRequested.connect(self.redo)
        rp.nextFlaggedRequested.connect(lambda: self.goto_flagged(+1))
        rp.previousFlaggedRequested.connect(lambda: self.goto_flagged(-1))

    def _action(self, text: str, slot: Callable, shortcut: str | QKeySequence | list | None = None,
                tip: str = "", menu: QMenu | None = None) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            if isinstance(shortcut, list):
                a.setShortcuts([QKeySequence(s) for s in shortcut])
            else:
                a.setShortcut(QKeySequence(shortcut))
        # Window-wide, so keys work wherever the focus is (text fields still get their own keys first).
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(tip)
        a.triggered.connect(lambda _checked=False: slot())
        self.addAction(a)
        if menu is not None:
            menu.addAction(a)
        return a

    def _build_actions(self) -> None:
        mb = self.menuBar()
        m_file = mb.addMenu("&File")
        self.act_open_folder = self._action("Open folder…", self.open_folder_dialog, QKeySequence.StandardKey.Open,
                                            "Open a folder of DICOM files or images", m_file)
        self.act_open_file = self._action("Open file…", self.open_file_dialog, "Ctrl+Shift+O",
                                          "Open a NIfTI, NRRD, MetaImage, DICOM or image file", m_file)
        self.recent_menu = m_file.addMenu("Open recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        self._action("Open the demo study", self.open_demo, None, "Brain MR with a tumour and saved references",
                     m_file)
        m_file.addSeparator()
        self._action("Save session", self.save_session, QKeySequence.StandardKey.Save,
                     "Reviews are saved automatically; this saves now", m_file)
        self.export_menu = m_file.addMenu("Export")
        self._build_export_menu()
        m_file.addSeparator()
        self._action("Quit", self.close, QKeySequence.StandardKey.Quit, "", m_file)

        m_edit = mb.addMenu("&Edit")
        self.act_undo = self._action("Undo", self.undo, "Ctrl+Z", "Undo the last review action", m_edit)
        self.act_redo = self._action("Redo", self.redo, ["Ctrl+Y", "Ctrl+Shift+Z"], "Redo", m_edit)
        m_edit.addSeparator()
        self._action("Settings…", self.open_settings, "Ctrl+,", "Backbone, weights, device, method, budget", m_edit)

        m_view = mb.addMenu("&View")
        self._action("Next slice", lambda: self.show_slice(self.index + 1), "Down", "", m_view)
        self._action("Previous slice", lambda: self.show_slice(self.index - 1), "Up", "", m_view)
        self._action("Forward 10 slices", lambda: self.show_slice(self.index + 10), "PgDown", "", m_view)
        self._action("Back 10 slices", lambda: self.show_slice(self.index - 10), "PgUp", "", m_view)
        self._action("First slice", lambda: self.show_slice(0), "Home", "", m_view)
        self._action("Last slice", lambda: self.show_slice(10 ** 9), "End", "", m_view)
        m_view.addSeparator()
        self.presets_menu = m_view.addMenu("Window presets")
        self.preset_actions = [self._action(f"Preset {k + 1}", lambda k=k: self.apply_preset(k), str(k + 1))
                               for k in range(5)]
        self._action("Reset window", self.reset_window, "0", "Back to the series' default window", m_view)
        self._action("Fit to window", self.viewer.fit, "F", "Also: double-click the image", m_view)
        m_view.addSeparator()
        self.act_overlay = self._action("Show anomaly overlay", self.toggle_overlay, "H", "", m_view)
        self.act_overlay.setCheckable(True)
        self.act_overlay.setChecked(True)
        self._action("Show contour", lambda: self.analysis.contour.toggle(), "C", "", m_view)

        m_review = mb.addMenu("&Review")
        self._action("Confirm finding", lambda: self.set_decision(Decision.CONFIRMED), "A", "", m_review)
        self._action("Dismiss", lambda: self.set_decision(Decision.DISMISSED), "D", "", m_review)
        self._action("Mark unreviewed", lambda: self.set_decision(Decision.UNREVIEWED), "U", "", m_review)
        m_review.addSeparator()
        self._action("Next flagged slice", lambda: self.goto_flagged(+1), "N", "", m_review)
        self._action("Previous flagged slice", lambda: self.goto_flagged(-1), "P", "", m_review)
        m_review.addSeparator()
        self._action("Window/level tool", lambda: self.set_tool("window"), "W", "", m_review)
        self._action("Ellipse tool", lambda: self.set_tool("ellipse"), "E", "", m_review)
        self._action("Brush tool", lambda: self.set_tool("brush"), "B", "", m_review)
        m_review.addSeparator()
        self._action("Add as normal reference", lambda: self.add_reference("normal"), "R",
                     "Use the current slice as an example of normal anatomy", m_review)
        self._action("Add as abnormal example", lambda: self.add_reference("abnormal"), "Shift+R",
                     "The drawn ellipses/strokes become its mask", m_review)

        m_an = mb.addMenu("&Analysis")
        self.act_run = self._action("Adapt && score", self.run_scoring, "Ctrl+Return", "", m_an)
        self.act_cancel = self._action("Cancel", self.cancel_job, "Esc", "", m_an)

        m_help = mb.addMenu("&Help")
        self._action("Keyboard shortcuts", self._show_shortcuts, "F1", "", m_help)
        self._action("About MedAD Viewer", self._about, None, "", m_help)

        tb = self.addToolBar("Main")
        tb.setObjectName("main-toolbar")
        tb.setMovable(False)
        tb.addAction(self.act_open_folder)
        tb.addAction(self.act_open_file)
        tb.addSeparator()
        tb.addAction(self.act_run)
        tb.addAction(self.act_cancel)
        tb.addSeparator()
        tb.addAction(self.act_undo)
        tb.addAction(self.act_redo)

    def _build_export_menu(self) -> None:
        try:
            from .. import report
        except Exception as exc:  # noqa: BLE001 - a broken optional package must not stop the viewer
            report, why = None, f"the report package could not be imported ({exc})"
        else:
            why = ""
        self.export_actions: dict[str, QAction] = {}
        for text, fn_name, filt in EXPORTS:
            fn = getattr(report, fn_name, None) if report is not None else None
            a = QAction(text, self)
            if fn is None:
                a.setEnabled(False)
                a.setToolTip(f"Not available yet: {why or f'medad_viewer.report has no {fn_name}()'}")
            else:
                a.triggered.connect(lambda _c=False, f=fn, t=text, flt=filt: self._export(f, t, flt))
            self.export_menu.addAction(a)
            self.export_actions[fn_name] = a
        self.export_menu.addSeparator()
        self.act_open_exports = QAction("Open exported files when done", self)
        self.act_open_exports.setCheckable(True)
        self.act_open_exports.setChecked(open_when_done(self.app_settings.q))
        self.act_open_exports.toggled.connect(lambda on: set_open_when_done(self.app_settings.q, on))
        self.export_menu.addAction(self.act_open_exports)
        self.export_menu.aboutToShow.connect(
            lambda: self.act_open_exports.setChecked(open_when_done(self.app_settings.q)))
        self.export_menu.setToolTipsVisible(True)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.backbone_label = QLabel()
        self.device_label = QLabel("Device: checking…")
        self.memory_label = QLabel()
        for w in (self.backbone_label, self.device_label, self.memory_label):
            w.setContentsMargins(6, 0, 6, 0)
            sb.addPermanentWidget(w)
        self._update_backbone_label()

    # ============================================================================================ status bar
    def _update_backbone_label(self) -> None:
        info = self.detector_info
        if info:
            name = info.get("backbone", "?")
            weights = info.get("weights", "")
            text = f"Backbone: {name} · {weights} · {info.get('method', '')}"
            if not info.get("pretrained", True):
                self.backbone_label.setText(f"⚠ {text} — UNTRAINED weights: scores are meaningless")
                self.backbone_label.setStyleSheet("QLabel { color: white; background: #c0392b; font-weight: bold;"
                                                  " padding: 1px 6px; }")
                return
        else:
            s = self.app_settings
            weights = s.get("weights") or ("ImageNet weights" if s.get("backbone") == "efficientnet-lite2"
                                           else "default weights")
            text = f"Backbone: {s.get('backbone')} · {weights} · {s.get('method')}"
        self.backbone_label.setText(text)
        self.backbone_label.setStyleSheet("")

    def _probe_device(self) -> None:
        pref = self.app_settings.get("device")

        def probe(progress, cancel, emit):
            from ..engine.backbones import describe_device, resolve_device
            # Import what Adapt & score needs now, while nothing runs: importing later, mid-job, creates masses
            # of objects whose garbage collection pauses the UI thread too.
            from ..engine import detector, score  # noqa: F401
            return describe_device(resolve_device(pref))

        w = Worker(probe, "device-probe", self)
        w.finished.connect(lambda text: self.device_label.setText(f"Device: {text}"))
        w.finished.connect(_freeze_heap)
        w.failed.connect(lambda msg: self.device_label.setText(f"Device: ⚠ {msg}"))
        self._start_loader(w)

    def _update_memory(self) -> None:
        rss = _resident_bytes()
        self.memory_label.setText(f"Memory: {rss / 2 ** 30:.2f} GB" if rss else "")

    # ============================================================================================ opening
    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a study folder", self._last_dir())
        if path:
            self.open_path(path)

    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a study file", self._last_dir(),
            "Medical images (*.dcm *.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.png *.jpg *.jpeg *.tif *.tiff *.bmp);;"
            "All files (*)")
        if path:
            self.open_path(path)

    def _last_dir(self) -> str:
        recent = self.app_settings.recent()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.app_settings.recent()
        for p in recent:
            self.recent_menu.addAction(p, lambda p=p: self.open_path(p))
        if not recent:
            a = self.recent_menu.addAction("No recent studies")
            a.setEnabled(False)
        else:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", self.app_settings.clear_recent)

    def open_demo(self) -> None:
        self.open_path(str(DEMO_STUDY), reference_set=DEMO_REFERENCES)

    def open_path(self, path: str, reference_set: str | os.PathLike | None = None) -> None:
        """Open a study in the background. `reference_set`: a set file loaded into the tray unless the study's
        saved session already has references."""
        path = str(Path(path).expanduser().resolve())
        if self.job is not None and self.job.is_running:
            # Scoring belongs to the open series; its finished slices are saved by the job itself.
            self.cancel_job()
        self.save_session()
        self._pending_reference_set = None
        if reference_set is not None:
            try:
                self._pending_reference_set = ReferenceSet.load(reference_set)
            except ValueError as exc:
                self.browser.errors.add_messages([str(exc)])
        self.browser.set_loading(path)
        self.statusBar().showMessage(f"Loading {path} …")
        # The latest request wins: an older load still running is cancelled, and its result dropped if it comes.
        if self._study_loader is not None:
            self._study_loader.cancel()
        w = Worker(_load_study_job(path), "load-study", self)
        self._study_loader = w
        w.finished.connect(lambda payload, w=w: self._study_loaded(payload) if w is self._study_loader else None)
        w.failed.connect(lambda msg, p=path, w=w: self._study_failed(p, msg) if w is self._study_loader else None)
        w.done.connect(lambda w=w: setattr(self, "_study_loader", None) if w is self._study_loader else None)
        self._start_loader(w)

    def _start_loader(self, w: Worker) -> None:
        self._loaders.append(w)
        w.thread_finished.connect(lambda w=w: self._loaders.remove(w) if w in self._loaders else None)
        w.start()

    def _study_failed(self, path: str, msg: str) -> None:
        self.browser.study_label.setText(f"<b>{path}</b><br>Could not be opened")
        self.browser.errors.add_messages([msg])
        self.statusBar().showMessage(f"Could not open {path}", 8000)

    def _study_loaded(self, payload: dict) -> None:
        study: Study = payload["study"]
        path = payload["path"]
        if self.study_path is not None:
            self._studies.pop(self.study_path, None)
        self.study, self.study_path, self.store = study, path, payload["store"]
        self._studies[path] = study
        self.results = dict(payload["scores"])
        self.detector_info = None
        self.windows = {}
        self.browser.errors.clear()
        if study.errors:
            self.browser.errors.add_messages([e.full for e in study.errors])
        if payload.get("notes"):
            self.browser.errors.add_messages(payload["notes"])
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
        if "overlay" in self.session.view:
            self.analysis.restore_overlay_state(self.session.view["overlay"])
        entries = [{"pixmap": pixmap_from_gray(t), "modality": s.modality, "description": s.description,
                    "num_slices": s.num_slices, "rows": s.rows, "columns": s.columns, "warnings": s.warnings}
                   for s, t in zip(study.series, payload["thumbs"])]
        row = 0
        if self.session.series_uid:
            row = next((i for i, s in enumerate(study.series) if s.uid == self.session.series_uid), 0)
        self.browser.set_study(path, entries, row if entries else None)
        self.setWindowTitle(f"MedAD Viewer — {Path(path).name}")
        self.app_settings.add_recent(path)
        self.series = None
        self.series_row = -1
        if study.series:
            self._pending_slice = self.session.slice_index if saved is not None else None
            self.select_series(row)
            msg = f"Opened {Path(path).name}: {len(study.series)} series"
            if saved is not None:
                msg += " — previous review session restored"
            self.statusBar().showMessage(msg, 8000)
        else:
            self.viewer.clear()
            self.viewer.placeholder.setText(f"No images could be read from\n{path}\n\nSupported: "
                                            "DICOM, NIfTI, NRRD, MetaImage, PNG, JPEG, TIFF, BMP.")
            self.ranking.set_series(0, None)
            if not study.errors:
                self.browser.errors.add_messages([f"{path}: no images found (empty folder?)"])
            self.statusBar().showMessage(f"No images in {path}", 8000)
        self._refresh_tray()
        self._load_reference_studies()
        self.studyOpened.emit(path)

    def _load_reference_studies(self) -> None:
        """Reference slices from other studies: read those studies in the background for their thumbnails."""
        missing = sorted({r.source for r in self.session.reference_set if r.source not in self._studies})
        missing = [m for m in missing if os.path.exists(m)]
        if not missing:
            return

        def run(progress, cancel, emit):
            return {p: load_study(p) for p in missing}

        w = Worker(run, "load-references", self)
        w.finished.connect(self._reference_studies_loaded)
        self._start_loader(w)

    def _reference_studies_loaded(self, studies: dict) -> None:
        self._studies.update(studies)
        self._refresh_tray()

    # ============================================================================================ series/slices
    def select_series(self, row: int) -> None:
        if self.study is None or not 0 <= row < len(self.study.series):
            return
        if row == self.series_row:
            return
        self.series_row = row
        s = self.series = self.study.series[row]
        self.browser.select(row)
        self.session.series_uid = s.uid
        self.viewer.set_geometry((s.spacing[0], s.spacing[1]))
        self.viewer.units = "HU" if s.modality.upper() == "CT" else ""
        if s.uid not in self.windows:
            w = default_window(s)
            self.windows[s.uid] = (w.center, w.width, w.name)
        self._fill_presets_menu()
        self.ranking.set_series(s.num_slices, self._ranking_thumbnail)
        res = self.results.get(s.uid)
        if res is not None and len(res):
            self.ranking.set_scores({i: (r.score, r.percentile) for i, r in res.results.items()})
            self.detector_info = res.detector or None
            n, tot = len(res), s.num_slices
            self.analysis.show_message(f"Showing the saved scores of {n} of {tot} slices" if n < tot else
                                       f"Showing the saved scores ({res.detector.get('backbone', '')})")
        else:
            self.detector_info = None
        self._update_backbone_label()
        self.ranking.set_threshold(float(self.session.view.get("flag_pct", self.ranking.threshold_pct)))
        self._update_ranking_decisions()
        start = self._pending_slice if self._pending_slice is not None else s.num_slices // 2
        self._pending_slice = None
        self.index = -1
        c, w, name = self.windows[s.uid]
        self.viewer.set_window(c, w, name)
        self.show_slice(start, fit=True)

    def _fill_presets_menu(self) -> None:
        self.presets_menu.clear()
        if self.series is None:
            return
        for k, p in enumerate(presets_for(self.series)[:5]):
            a = self.preset_actions[k]
            a.setText(f"{p.name} (W {p.width:g} L {p.center:g})")
            self.presets_menu.addAction(a)

    def show_slice(self, index: int, fit: bool = False) -> None:
        s = self.series
        if s is None:
            return
        index = int(min(max(index, 0), s.num_slices - 1))
        changed = index != self.index
        self.index = index
        c, w, _name = self.windows[s.uid]
        self.viewer.set_pixels(s.slice(index), (c, w), fit=fit)
        self._refresh_overlay()
        self._refresh_slice_info()
        self.ranking.set_current(index)
        self.tray.set_current(self.session.reference_set.find(s.uid, index))
        if changed:
            self.session.slice_index = index
            self._schedule_save()
            self.sliceShown.emit(index)

    def _jump_from_panel(self, index: int) -> None:
        self.show_slice(index)
        self.viewer.setFocus()

    def _refresh_slice_info(self) -> None:
        s = self.series
        if s is None:
            return
        i = self.index
        rev = self.session.review.get(s.uid, i)
        left = (f"<b>{_esc(s.description or s.modality)}</b> · {s.modality}<br>"
                f"Slice {i + 1} / {s.num_slices} · {s.slice_position(i):.1f} mm")
        right = []
        res = self.results.get(s.uid)
        r = res.get(i) if res is not None else None
        if r is not None:
            right.append(f"Score <b>{r.score:.2f}</b> · {r.percentile:.1f}th pct of normal")
        if rev.decision == Decision.CONFIRMED:
            right.append("<span style='color:#ff6b6b'><b>CONFIRMED</b></span>")
        elif rev.decision == Decision.DISMISSED:
            right.append("<span style='color:#bbbbbb'><b>DISMISSED</b></span>")
        pos = self.session.reference_set.find(s.uid, i)
        if pos is not None:
            kind = self.session.reference_set.references[pos].kind
            color = "#5dd39e" if kind == "normal" else "#ff8a80"
            right.append(f"<span style='color:{color}'>{kind.capitalize()} reference</span>")
        self.viewer.set_info(left, "<br>".join(right))
        counts = self.session.review.counts(s.uid)
        count_txt = (f"{counts[Decision.CONFIRMED]} confirmed · {counts[Decision.DISMISSED]} dismissed · "
                     f"{s.num_slices - counts[Decision.CONFIRMED] - counts[Decision.DISMISSED]} unreviewed")
        self.review_panel.show_review(f"Slice {i + 1} of {s.num_slices}", rev, count_txt,
                                      self.session.review.undo_label(), self.session.review.redo_label())
        self.viewer.set_annotations(rev.annotations)
        self.act_undo.setEnabled(self.session.review.can_undo)
        self.act_redo.setEnabled(self.session.review.can_redo)

    def _refresh_overlay(self) -> None:
        s = self.series
        ov = self.analysis.overlay_state()
        res = self.results.get(s.uid) if s is not None else None
        r = res.get(self.index) if res is not None else None
        if res is not None:
            thr = res.value_at(ov["threshold_pct"])
            self.analysis.set_threshold_value(thr)
            self.viewer.map_percentile = res.pixel_percentile
        else:
            thr = 1.0
            self.viewer.map_percentile = None
        if r is None:
            self.viewer.set_overlay(None)
            return
        # A fixed scale per threshold, so a colour means the same on every slice: threshold .. threshold + max(1, thr)
        # (in units of the normal 99th percentile).
        vmax = thr + max(1.0, thr)
        self.viewer.set_overlay(r.map, thr, vmax, ov["opacity"], ov["colormap"], ov["contour"], ov["visible"])

    def _overlay_changed(self) -> None:
        ov = self.analysis.overlay_state()
        self.act_overlay.setChecked(ov["visible"])
        self.session.view["overlay"] = ov
        self._refresh_overlay()
        self._schedule_save()

    def _flag_threshold_changed(self, pct: float) -> None:
        self.session.view["flag_pct"] = pct
        self._schedule_save()

    def toggle_overlay(self) -> None:
        self.analysis.show_overlay.toggle()

    def _ranking_thumbnail(self, index: int) -> QPixmap | None:
        s = self.series
        if s is None or not 0 <= index < s.num_slices:
            return None
        c, w, _ = self.windows.get(s.uid, (0.0, 1.0, ""))
        return pixmap_from_gray(thumbnail(s.slice(index), (c, w), 40))

    # ============================================================================================ window/level
    def apply_preset(self, k: int) -> None:
        if self.series is None:
            return
        presets = presets_for(self.series)
        if k >= len(presets):
            self.statusBar().showMessage(f"No preset {k + 1} for {self.series.modality}", 3000)
            return
        p = presets[k]
        self._set_window(p.center, p.width, p.name)

    def reset_window(self) -> None:
        if self.series is not None:
            w = default_window(self.series)
            self._set_window(w.center, w.width, w.name)

    def _set_window(self, c: float, w: float, name: str) -> None:
        if self.series is None:
            return
        self.windows[self.series.uid] = (float(c), float(w), name)
        self.viewer.set_window(c, w, name)
        self._remember_windows()

    def _window_dragged(self, c: float, w: float) -> None:
        if self.series is not None:
            self.windows[self.series.uid] = (c, w, "")
            self._remember_windows()

    def _remember_windows(self) -> None:
        self.session.view["windows"] = {uid: list(v) for uid, v in self.windows.items()}
        self._schedule_save()

    # ============================================================================================ references
    def add_reference(self, kind: str = "normal") -> None:
        s = self.series
        if s is None or self.study_path is None:
            return
        rs = self.session.reference_set
        mask = None
        if kind == "abnormal":
            anns = self.session.review.get(s.uid, self.index).annotations
            if not anns:
                self._say("To add a known abnormal example, first draw the finding on this slice with the Ellipse "
                          "or Brush tool (Review panel); the drawing becomes its mask.")
                return
            mask = annotations_mask(anns, (s.rows, s.columns))
        if rs.modality and rs.modality != s.modality:
            self._say(f"Note: the references so far are {rs.modality}; this slice is {s.modality}. Mixing "
                      "modalities usually hurts the detector.")
        if not rs.modality:
            rs.modality = s.modality
        rs.add(ReferenceSlice(self.study_path, s.uid, self.index, kind, mask, s.description))
        self.statusBar().showMessage(f"Slice {self.index + 1} added as {'a normal reference' if kind == 'normal' else 'an abnormal example'}"
                                     f" ({len(rs.normals())} normal references)", 5000)
        self._references_changed()

    def remove_reference(self, pos: int) -> None:
        rs = self.session.reference_set
        if 0 <= pos < len(rs):
            r = rs.remove(pos)
            if not rs.references:
                rs.modality = ""
            self.statusBar().showMessage(f"Removed reference slice {r.index + 1}", 4000)
            self._references_changed()

    def clear_references(self) -> None:
        self.session.reference_set = ReferenceSet()
        self._references_changed()

    def show_reference(self, pos: int) -> None:
        rs = self.session.reference_set
        if not 0 <= pos < len(rs) or self.study is None:
            return
        r = rs.references[pos]
        row = next((i for i, s in enumerate(self.study.series) if s.uid == r.series_uid), None)
        if row is None:
            self.statusBar().showMessage(f"That reference is from another study: {r.source}", 6000)
            return
        self.select_series(row)
        self.show_slice(r.index)

    def _references_changed(self) -> None:
        self._refresh_tray()
        self._refresh_slice_info()
        self.save_session()

    def _refresh_tray(self) -> None:
        rs = self.session.reference_set
        cards = []
        current = None
        for pos, r in enumerate(rs.references):
            series = self._reference_series(r)
            pm = None
            if series is not None and 0 <= r.index < series.num_slices:
                w = self.windows.get(series.uid)
                win = (w[0], w[1]) if w else (default_window(series).center, default_window(series).width)
                img = thumbnail(series.slice(r.index), win, 72)
                if r.mask is not None and r.mask.shape == (series.rows, series.columns):
                    pm = _with_mask_outline(img, r.mask)
                else:
                    pm = pixmap_from_gray(img)
            here = self.series is not None and r.series_uid == self.series.uid
            if here and r.index == self.index:
                current = pos
            name = Path(r.source).name
            cards.append({"pixmap": pm, "kind": r.kind, "caption": f"{'' if here else name + ' · '}slice {r.index + 1}",
                          "tooltip": f"{r.description or r.series_uid}\n{r.source}\nslice {r.index + 1}\n"
                                     "Click to show it; ✕ removes it"})
        self.tray.set_references(rs.name, cards, current)
        self.tray.set_named_sets([n for n, _ in list_named()])

    def _reference_series(self, r: ReferenceSlice) -> Series | None:
        study = self._studies.get(r.source)
        if study is None:
            return None
        for s in study.series:
            if s.uid == r.series_uid:
                return s
        same = [s for s in study.series if r.description and s.description == r.description]
        if len(same) == 1:
            return same[0]
        return study.series[0] if len(study.series) == 1 else None

    def save_reference_set_named(self) -> None:
        rs = self.session.reference_set
        name, ok = QInputDialog.getText(self, "Save reference set", "Name for this set of references:",
                                        text=rs.name if rs.name != "Untitled" else "")
        if ok and name.strip():
            try:
                path = save_named(rs, name.strip())
            except OSError as exc:
                self._error(f"Could not save the reference set: {exc}")
                return
            self.statusBar().showMessage(f"Saved reference set '{rs.name}' ({path})", 6000)
            self._references_changed()

    def save_reference_set_file(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save reference set", str(Path(self.study_path or ".").parent /
                                                                          "reference_set.json"), "JSON (*.json)")
        if path:
            try:
                self.session.reference_set.save(path)
            except OSError as exc:
                self._error(f"Could not save the reference set: {exc}")

    def load_reference_set_named(self, name: str) -> None:
        try:
            self.set_reference_set(load_named(name))
        except (KeyError, ValueError) as exc:
            self._error(str(exc))

    def load_reference_set_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load reference set", self._last_dir(), "JSON (*.json)")
        if path:
            try:
                self.set_reference_set(ReferenceSet.load(path))
            except ValueError as exc:
                self._error(str(exc))

    def set_reference_set(self, rs: ReferenceSet) -> None:
        self.session.reference_set = rs
        self._references_changed()
        self._load_reference_studies()

    # ============================================================================================ review
    def set_decision(self, decision: Decision) -> None:
        if self.series is not None:
            self.session.review.set_decision(self.series.uid, self.index, decision)

    def _note_edited(self, text: str) -> None:
        if self.series is not None:
            self.session.review.set_note(self.series.uid, self.index, text)

    def _annotation_drawn(self, shape) -> None:
        if self.series is not None:
            self.session.review.add_annotation(self.series.uid, self.index, shape)

    def _clear_annotations(self) -> None:
        if self.series is not None:
            self.session.review.clear_annotations(self.series.uid, self.index)

    def set_tool(self, tool: str) -> None:
        self.viewer.set_tool(tool)
        self.review_panel.set_tool(tool)

    def undo(self) -> None:
        self._show_touched(self.session.review.undo())

    def redo(self) -> None:
        self._show_touched(self.session.review.redo())

    def _show_touched(self, key) -> None:
        if key is None or self.series is None or self.study is None:
            return
        uid, index = key
        if uid != self.series.uid:
            row = next((i for i, s in enumerate(self.study.series) if s.uid == uid), None)
            if row is None:
                return
            self.select_series(row)
        if index != self.index:
            self.show_slice(index)  # show what was undone

    def _review_changed(self, key) -> None:
        if self.series is not None and key[0] == self.series.uid:
            self._update_ranking_decisions()
            if key[1] == self.index:
                self._refresh_slice_info()
        self.act_undo.setEnabled(self.session.review.can_undo)
        self.act_redo.setEnabled(self.session.review.can_redo)
        # Notes are saved after a pause in typing; decisions and drawings at once.
        last = self.session.review.undo_label()
        if last == "Edit note":
            self._schedule_save()
        else:
            self.save_session()

    def _update_ranking_decisions(self) -> None:
        if self.series is None:
            return
        self.ranking.set_decisions({i: r.decision for (_u, i), r in self.session.review.items(self.series.uid)})

    def goto_flagged(self, step: int) -> None:
        s = self.series
        res = self.results.get(s.uid) if s is not None else None
        if res is None or not len(res):
            self.statusBar().showMessage("No scores yet: run Adapt & score first", 4000)
            return
        pct = self.ranking.threshold_pct
        nxt = next_flagged(res.percentiles(), pct, self.index, step)
        if nxt is None:
            self.statusBar().showMessage(f"No slice is flagged at the {pct:g}th percentile of normal slices; lower "
                                         "'Flag at' in the Slice ranking panel", 6000)
            return
        self.show_slice(nxt)

    # ============================================================================================ session
    def _schedule_save(self) -> None:
        """Save within the autosave delay of the first unsaved change: the timer is not restarted by later ones,
        so steady typing or scrolling still reaches the disk every 0.6 s (what a crash can lose is bounded)."""
        if self.store is not None and not self._save_timer.isActive():
            self._save_timer.start()

    def save_session(self) -> None:
        """Save the session, and any scores an earlier save could not write. A failure is said once, in plain
        words; everything stays in memory and the next save tries again."""
        self._save_timer.stop()
        if self.store is None:
            return
        try:
            self.store.save(self.session)
            for uid in sorted(self._unsaved_scores):
                res = self.results.get(uid)
                if res is not None and len(res):
                    self.store.save_scores(res)
                self._unsaved_scores.discard(uid)
        except OSError as exc:
            self._save_problem(str(exc) if isinstance(exc, SaveFailed) else
                               f"The review session could not be saved ({exc.strerror or exc}).")
            return
        self._save_problem(None)

    def _save_problem(self, message: str | None) -> None:
        """Show a save problem (or the store's note that a spare folder was used) once; None: all saved."""
        message = message or (self.store.notice if self.store is not None else None)
        if message and message != self._save_problem_shown:
            self._save_problem_shown = message
            self.statusBar().showMessage(f"⚠ {message}", 15000)
            self._error(message, title="Review not saved" if "could not be saved (" in message else "MedAD Viewer")
        elif not message:
            self._save_problem_shown = None

    # ============================================================================================ scoring
    def detector_settings(self) -> Any:
        d = self.app_settings.detector_settings(self.series.modality if self.series else "OT")
        return self.settings_hook(d) if self.settings_hook is not None else d

    def run_scoring(self) -> None:
        if self.job is not None and self.job.is_running:
            return
        s = self.series
        if s is None:
            self._say("Open a study first (File → Open folder… or Open file…).")
            return
        settings = self.detector_settings()
        method = settings.get("method") if isinstance(settings, dict) else settings.method
        rs = self.session.reference_set
        if method != "zero" and not rs.normals():
            self._say("Add at least one normal reference slice first: browse to a slice with normal anatomy and "
                      "press R.")
            return
        if rs.modality and rs.modality != s.modality:
            self.statusBar().showMessage(f"⚠ References are {rs.modality}, this series is {s.modality}", 10000)
        self.save_session()
        # The previous scores come back if this run fails or is cancelled before its first slice.
        self._previous_results = self.results.pop(s.uid, None)
        self._job_results = ScoreResults(s.uid, s.num_slices)
        self.results[s.uid] = self._job_results
        self.ranking.clear_scores("Scoring…")
        self._refresh_overlay()
        store = self.store
        job = ScoreJob(rs.copy(), s, settings, device=self.app_settings.get("device"),
                       studies=dict(self._studies), cache=AdaptationCache(), threads=self.job_threads,
                       save=store.save_scores if store is not None else None)

        def run(progress, cancel, emit):
            job.on_save_error = lambda message: emit(("save-error", message))
            return run_score_job(job, progress, cancel, on_result=lambda r: emit(("slice", r)),
                                 on_detector=lambda info: emit(("detector", info)))

        _freeze_heap()  # what exists now (the open study, thumbnails) need not be scanned during the job
        w = Worker(run, "adapt-score", self)
        w.progress.connect(self._job_progress)
        w.partial.connect(self._job_partial)
        w.finished.connect(self._job_finished)
        w.failed.connect(self._job_failed)
        w.cancelled.connect(self._job_cancelled)
        w.done.connect(self._job_done)
        self.job = w
        self._job_series_uid = s.uid
        self._job_started = time.monotonic()
        self._score_started = None
        self.analysis.set_running(True)
        self.analysis.show_progress(0.0, "Starting", None)
        self.act_run.setEnabled(False)
        w.start()

    def cancel_job(self) -> None:
        if self.job is not None and self.job.is_running and not self.job.is_cancelling:
            self.job.cancel()
            self.analysis.set_cancelling()
            self.analysis.show_message("Cancelling… (slices already scored are kept)")

    def _job_progress(self, fraction: float, message: str) -> None:
        if self.job is not None and self.job.is_cancelling:
            return
        self.analysis.show_progress(fraction, message, self._time_remaining(fraction))

    def _time_remaining(self, fraction: float) -> float | None:
        """Adaptation and scoring run at very different paces, so each stage is extrapolated on its own: scoring
        from the slices done so far, adaptation from its progress plus scoring at the last measured pace."""
        now = time.monotonic()
        res = self._job_results
        total = res.num_slices if res is not None else 0
        if self._score_started is not None and res is not None:
            done = len(res)
            if done == 0:
                return None
            per_slice = (now - self._score_started) / done
            self._per_slice_s = per_slice
            return per_slice * (total - done)
        elapsed = now - self._job_started
        fit_fraction = fraction / FIT_END  # run_score_job gives adaptation 0 .. FIT_END of the bar
        if fit_fraction < 0.03 or elapsed < 3:
            return None
        fit_left = elapsed * (1.0 - fit_fraction) / fit_fraction
        per_slice = self._per_slice_s or float(self.app_settings.q.value("stats/seconds_per_slice", 0.5))
        return fit_left + per_slice * total

    def _job_partial(self, item) -> None:
        kind, payload = item
        if kind == "save-error":
            uid = self._job_results.series_uid if self._job_results is not None else None
            if uid is not None:
                self._unsaved_scores.add(uid)
            self._save_problem(payload)
            return
        res = self._job_results
        if res is None:
            return
        if kind == "detector":
            self._score_started = time.monotonic()  # scoring starts now
            res.detector = payload
            self.detector_info = payload
            self._update_backbone_label()
            return
        r = res.put(payload)
        if self.series is not None and self.series.uid == res.series_uid:
            self.ranking.add_score(r.index, r.score, r.percentile)
            if r.index == self.index:
                self._refresh_overlay()
                self._refresh_slice_info()

    def _job_finished(self, outcome) -> None:
        self._previous_results = None
        res = outcome.results
        self.results[res.series_uid] = res
        self._job_results = None
        self.detector_info = outcome.detector
        self._update_backbone_label()
        self.session.scores_summary[res.series_uid] = {
            "detector": outcome.detector, "scored": len(res), "total": res.num_slices, "complete": res.complete,
            "top": [r.index for r in res.ranked()[:5]], "fit_seconds": round(outcome.fit_seconds, 1),
            "score_seconds": round(outcome.score_seconds, 1), "from_cache": outcome.from_cache}
        self.session.settings = outcome.detector | {"settings": self._settings_dict()}
        self.save_session()
        if self.series is not None and self.series.uid == res.series_uid:
            self.ranking.set_scores({i: (r.score, r.percentile) for i, r in res.results.items()})
            self._refresh_overlay()
            self._refresh_slice_info()
        if len(res) and outcome.score_seconds > 0:
            self.app_settings.q.setValue("stats/seconds_per_slice", outcome.score_seconds / len(res))
        total = time.monotonic() - self._job_started
        how = "reused the cached adaptation" if outcome.from_cache else f"adaptation {outcome.fit_seconds:.0f} s"
        msg = f"Scored {len(res)} slices in {total:.0f} s ({how})."
        if not outcome.detector.get("pretrained", True):
            msg += " ⚠ The backbone has UNTRAINED weights: these scores are meaningless."
        self.analysis.show_progress(1.0, msg, None)
        self.scoringFinished.emit(outcome)

    def _settings_dict(self) -> dict:
        s = self.detector_settings()
        return s if isinstance(s, dict) else s.to_dict()

    def _restore_previous_results(self) -> None:
        res, prev = self._job_results, self._previous_results
        if prev is not None and (res is None or not len(res)):
            self.results[prev.series_uid] = prev
            if self.series is not None and self.series.uid == prev.series_uid:
                self.ranking.set_scores({i: (r.score, r.percentile) for i, r in prev.results.items()})
                self._refresh_overlay()
                self._refresh_slice_info()
        self._previous_results = None

    def _job_failed(self, message: str) -> None:
        self._restore_previous_results()
        self._job_results = None
        self.analysis.show_message(f"⚠ {message}")
        self._error(message, title="Adapt & score failed")
        self.scoringFailed.emit(message)

    def _job_cancelled(self) -> None:
        res = self._job_results
        self._restore_previous_results()
        self._job_results = None
        n = len(res) if res is not None else 0
        total = res.num_slices if res is not None else 0
        self.analysis.show_message(f"Cancelled. {n} of {total} slices were scored; their maps are kept.")
        self.analysis.progress.setValue(0)
        self.scoringCancelled.emit()

    def _job_done(self) -> None:
        self.job = None
        self.analysis.set_running(False)
        self.act_run.setEnabled(True)

    # ============================================================================================ export
    # Exports that need the series scored first (the others, annotation volume and view PNG, work without scores).
    _NEEDS_SCORES = ("export_pdf_report", "export_scores_csv", "export_scores_json", "export_map_volume")

    def _export(self, fn: Callable, text: str, filt: str) -> None:
        """File → Export → <text>: the PDF report asks for its options first; then a file name; then the export runs
        in the background with a progress window and Cancel."""
        if self.series is None:
            self._say("Open a study first.")
            return
        name = getattr(fn, "__name__", "")
        res = self.results.get(self.series.uid)
        if name in self._NEEDS_SCORES and (res is None or not len(res)):
            self._error("This series has no scores yet: pick normal references and press Adapt & score first.",
                        title="Export")
            return
        title = text.rstrip("…")
        if name == "export_pdf_report":
            ctx = self.export_context()
            dlg = PdfExportDialog(ctx.threshold_pct, self.app_settings.q, self, flag_pct=ctx.flag_pct)
            dlg.setWindowModality(Qt.WindowModality.WindowModal)
            self.export_dialog = dlg
            dlg.accepted.connect(lambda: self._export_ask_path(fn, title, filt, dlg.options(), dlg.open_after))
            dlg.finished.connect(dlg.deleteLater)
            dlg.open()
            return
        self._export_ask_path(fn, title, filt, None, open_when_done(self.app_settings.q))

    def _export_ask_path(self, fn: Callable, title: str, filt: str, options: dict | None, open_after: bool) -> None:
        self.export_dialog = None
        path, _ = QFileDialog.getSaveFileName(self, title, str(Path(self.study_path or ".").parent), filt)
        if path:
            self.export_to(fn, path, options, open_after=open_after)

    def export_context(self) -> ExportContext:
        s = self.series
        c, w, name = self.windows.get(s.uid, (None, None, "")) if s is not None else (None, None, "")
        ov = self.analysis.overlay_state()
        return ExportContext(self.study_path or "", s, self.results.get(s.uid) if s is not None else None,
                             self.session.review, self.session.reference_set, ov["threshold_pct"],
                             self.detector_info or {}, self.index, None if c is None else (c, w), name,
                             ov["opacity"], ov["colormap"], self.ranking.threshold_pct)

    def export_to(self, fn: Callable, path: str, options: dict | None = None, *, open_after: bool = False) -> Worker:
        """Run an export in the background (a PDF of many slices takes a while) with a non-modal progress window and
        Cancel; `options` are keyword arguments for `fn` (those it accepts). A cancelled or failed export leaves no
        file (the report package writes atomically); a failure shows a message; with `open_after` the written file
        is opened with the desktop's application."""
        import inspect

        ctx = self.export_context().snapshot()
        params = inspect.signature(fn).parameters
        extra = {k: v for k, v in (options or {}).items() if k in params}

        def run(progress, cancel, emit):
            kwargs = {k: v for k, v in (("progress", progress), ("cancel", cancel)) if k in params}
            return fn(ctx, path, **extra, **kwargs)

        name = Path(path).name
        w = Worker(run, "export", self)
        w.progress.connect(lambda f, m: self.statusBar().showMessage(f"Exporting {name}… {m}", 3000))
        w.finished.connect(lambda out: self._export_finished(str(out or path), open_after))
        w.failed.connect(lambda msg: self._export_failed(path, msg))
        w.cancelled.connect(lambda: self.statusBar().showMessage(f"Export of {name} cancelled; no file was written.",
                                                                 8000))
        dlg = ExportProgressDialog(w, f"Exporting {name}", self)
        w.done.connect(lambda: setattr(self, "export_progress", None) if self.export_progress is dlg else None)
        self.export_progress = dlg
        dlg.show()
        self.statusBar().showMessage(f"Exporting {name} …")
        # Started from the event loop, so a caller connecting to the returned worker's signals misses none of them
        # (a quick export could otherwise finish before the caller has connected).
        self._loaders.append(w)
        w.thread_finished.connect(lambda w=w: self._loaders.remove(w) if w in self._loaders else None)
        QTimer.singleShot(0, self, w.start)
        return w

    export_progress: ExportProgressDialog | None = None
    export_dialog: PdfExportDialog | None = None

    def _export_finished(self, path: str, open_after: bool) -> None:
        self.statusBar().showMessage(f"Exported {path}", 8000)
        if open_after and not QDesktopServices.openUrl(QUrl.fromLocalFile(path)):
            self._say(f"Exported {path}, but no application could open it.")

    def _export_failed(self, path: str, msg: str) -> None:
        self.statusBar().showMessage(f"Export of {Path(path).name} failed", 8000)
        self._error(f"Could not export {path}: {msg}\n\nNo file was written. Choose another folder or file name, or "
                    "free some disk space, then export again.", title="Export failed")

    # ============================================================================================ misc UI
    def open_settings(self) -> None:
        dlg = SettingsDialog(self.app_settings, self)
        if dlg.exec():
            self._update_backbone_label()
            self._probe_device()

    def _viewer_context_menu(self, pos) -> None:
        if self.series is None:
            return
        m = QMenu(self)
        m.addAction("Add as normal reference (R)", lambda: self.add_reference("normal"))
        m.addAction("Add as abnormal example (uses the drawing as mask)", lambda: self.add_reference("abnormal"))
        pos_in_set = self.session.reference_set.find(self.series.uid, self.index)
        if pos_in_set is not None:
            m.addAction("Remove from references", lambda: self.remove_reference(pos_in_set))
        m.addSeparator()
        m.addAction("Confirm finding (A)", lambda: self.set_decision(Decision.CONFIRMED))
        m.addAction("Dismiss (D)", lambda: self.set_decision(Decision.DISMISSED))
        m.addAction("Mark unreviewed (U)", lambda: self.set_decision(Decision.UNREVIEWED))
        m.addSeparator()
        wm = m.addMenu("Window preset")
        for k, p in enumerate(presets_for(self.series)[:5]):
            wm.addAction(f"{k + 1}: {p.name}", lambda k=k: self.apply_preset(k))
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
        QMessageBox.information(self, "Keyboard shortcuts", SHORTCUTS_HTML)

    def _about(self) -> None:
        from .. import __version__
        QMessageBox.about(self, "About MedAD Viewer",
                          f"<b>MedAD Viewer {__version__}</b><br>Few-shot anomaly detection for medical images. "
                          "A review aid for clinicians: it ranks slices that differ from the normal references you "
                          "pick. It does not make a diagnosis.")

    # ============================================================================================ drag & drop
    def dragEnterEvent(self, ev) -> None:
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()

    def dropEvent(self, ev) -> None:
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            ev.acceptProposedAction()
            self.open_path(paths[0])

    # ============================================================================================ shutdown
    def closeEvent(self, ev) -> None:
        """Returns within a second whatever runs: every job is cancelled and given half a second to stop; one still
        busy (inside a long read or a training step) is detached and ends on its own, saving what it finished.
        The session is saved before and after."""
        self.save_session()
        running = [w for w in [self.job, *self._loaders] if w is not None and w.is_running]
        for w in running:
            w.cancel()  # an unfinished export leaves no file; a cancelled scoring job saves the slices it scored
        deadline = time.monotonic() + self.CLOSE_WAIT_S
        for w in running:
            w.wait(max(0, int((deadline - time.monotonic()) * 1000)))
        for w in running:
            if w.is_running:
                w.detach()
        self.save_session()
        self._mem_timer.stop()
        self._save_timer.stop()
        super().closeEvent(ev)

    CLOSE_WAIT_S = 0.5

    def _refresh_all(self) -> None:
        self._refresh_tray()
        self.review_panel.setEnabled(False)


def _freeze_heap(*_args) -> None:
    """Move everything alive after start-up (Qt wrappers, torch, numpy) out of the garbage collector's view: a full
    collection then scans only what was made since, which keeps its pauses of the UI thread (which hold the GIL,
    whichever thread triggers them) short while a job allocates."""
    import gc

    gc.freeze()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _with_mask_outline(img: np.ndarray, mask: np.ndarray) -> QPixmap:
    import cv2
    from PySide6.QtGui import QImage

    size = img.shape[0]
    h, w = mask.shape
    scale = size / max(h, w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    small = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST)
    m = np.zeros((size, size), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    m[top: top + nh, left: left + nw] = small
    rgb = np.repeat(img[..., None], 3, axis=2).copy()
    edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    rgb[edge] = (235, 70, 60)
    qimg = QImage(rgb.data, size, size, 3 * size, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimg.copy())


def _resident_bytes() -> int:
    """Resident memory of this process (Linux /proc; psutil elsewhere when installed; else peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001
        pass
    try:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except Exception:  # noqa: BLE001
        return 0


SHORTCUTS_HTML = """
<table>
<tr><td><b>Mouse wheel, ↑ / ↓</b></td><td>previous / next slice (PgUp/PgDn: 10, Home/End)</td></tr>
<tr><td><b>Left-drag</b></td><td>window / level (or draw, with the Ellipse or Brush tool)</td></tr>
<tr><td><b>Right-drag, Ctrl+wheel</b></td><td>zoom</td></tr>
<tr><td><b>Middle-drag</b></td><td>pan</td></tr>
<tr><td><b>Double-click, F</b></td><td>fit to window</td></tr>
<tr><td><b>1 – 5, 0</b></td><td>window presets, default window</td></tr>
<tr><td><b>H, C</b></td><td>anomaly overlay on/off, contour on/off</td></tr>
<tr><td><b>R, Shift+R</b></td><td>add as normal reference, as abnormal example</td></tr>
<tr><td><b>A, D, U</b></td><td>confirm, dismiss, unreviewed</td></tr>
<tr><td><b>N, P</b></td><td>next / previous flagged slice</td></tr>
<tr><td><b>W, E, B</b></td><td>window/level, ellipse, brush tool</td></tr>
<tr><td><b>Ctrl+Z, Ctrl+Y</b></td><td>undo, redo review actions</td></tr>
<tr><td><b>Ctrl+Enter, Esc</b></td><td>Adapt &amp; score, cancel</td></tr>
</table>
"""
