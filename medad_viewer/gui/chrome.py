"""The main window's chrome: status bar (backbone, device, memory), the open dialogs and recent studies, the
settings dialog, the viewer's context menu, messages, Help, and drag & drop."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMenu, QMessageBox, QWidget

from ..io.windowing import presets_for
from ..review.state import Decision
from .actions import shortcuts_html
from .jobs import resident_bytes
from .panels import AnalysisPanel, ReviewPanel
from .planes_controller import PlanesController
from .ranking import RankingPanel
from .reference_tray import ReferenceTray
from .settings import SettingsDialog
from .slice_viewer import SliceViewer
from .study_browser import StudyBrowser


class ChromeMixin:
    """The main window's layout, status bar, dialogs and messages (self is the MainWindow)."""

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
        self.browser.openFolderRequested.connect(self.open_folder_dialog)
        self.browser.openFileRequested.connect(self.open_file_dialog)
        self.browser.seriesSelected.connect(self.select_series)
        self.ranking.sliceClicked.connect(self._jump_from_panel)
        self.ranking.flagThresholdChanged.connect(self._flag_threshold_changed)
        self.analysis.runRequested.connect(lambda: self.scoring.run())
        self.analysis.cancelRequested.connect(lambda: self.scoring.cancel())
        self.analysis.overlayChanged.connect(self._overlay_changed)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.backbone_label = QLabel()
        self.device_label = QLabel("Device: checking…")
        self.memory_label = QLabel()
        for w in (self.backbone_label, self.device_label, self.memory_label):
            w.setContentsMargins(6, 0, 6, 0)
            sb.addPermanentWidget(w)
        self._update_backbone_label()

    def _update_backbone_label(self) -> None:
        info = self.detector_info
        s = self.app_settings
        weights = s.get("weights") or ("ImageNet weights" if s.get("backbone") == "efficientnet-lite2"
                                       else "default weights")
        text = (f"Backbone: {info.get('backbone', '?')} · {info.get('weights', '')} · {info.get('method', '')}"
                if info else f"Backbone: {s.get('backbone')} · {weights} · {s.get('method')}")
        untrained = bool(info) and not info.get("pretrained", True)
        self.backbone_label.setText(f"⚠ {text} — UNTRAINED weights: scores are meaningless" if untrained else text)
        self.backbone_label.setStyleSheet("QLabel { color: white; background: #c0392b; font-weight: bold; padding: "
                                          "1px 6px; }" if untrained else "")

    def _update_memory(self) -> None:
        rss = resident_bytes()
        self.memory_label.setText(f"Memory: {rss / 2 ** 30:.2f} GB" if rss else "")

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

    def open_settings(self) -> None:
        dlg = SettingsDialog(self.app_settings, self)
        if dlg.exec():
            self._update_backbone_label()
            self._probe_device()

    def _viewer_context_menu(self, pos) -> None:
        if self.series is None:
            return
        m = QMenu(self)
        m.addAction("Add as normal reference (R)", lambda: self.references.add("normal"))
        m.addAction("Add as abnormal example (uses the drawing as mask)", lambda: self.references.add("abnormal"))
        pos_in_set = self.session.reference_set.find(self.series.uid, self.index)
        if pos_in_set is not None:
            m.addAction("Remove from references", lambda: self.references.remove(pos_in_set))
        m.addSeparator()
        m.addAction("Confirm finding (A)", lambda: self.review.set_decision(Decision.CONFIRMED))
        m.addAction("Dismiss (D)", lambda: self.review.set_decision(Decision.DISMISSED))
        m.addAction("Mark unreviewed (U)", lambda: self.review.set_decision(Decision.UNREVIEWED))
        m.addSeparator()
        wm = m.addMenu("Window preset")
        for k, p in enumerate(presets_for(self.series)[:5]):
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
            self.open_path(paths[0])
