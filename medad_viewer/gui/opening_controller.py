"""Opening studies' controller: File → Open (folder, file, recent, the demo, a drop), the load job in the background
(the latest request wins), a large series shown while the rest of its slices are read, and what the window shows
when a study is opened, is read in full, or changed after it was shown (slices that could not be read)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from ..paths import DEMO_REFERENCES, DEMO_STUDY
from ..review.references import ReferenceSet
from .background_jobs import load_study_job
from .study_browser import pixmap_from_gray
from .worker import Worker


class OpeningController:
    """`window` gives the study browser, the viewers, the panels, the status bar and the background loaders."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.loader: Worker | None = None  # the one study load whose result will be shown
        self.filler: Worker | None = None  # the load job still reading the slices of the study shown
        self._planes_drawn = 0.0
        ev = self.model.events
        ev.study.connect(lambda e: self._study_shown(e.load))
        ev.loading.connect(lambda e: self._loading_progress((e.done, e.total)))
        ev.loaded.connect(lambda _e: self._loading_done(None))
        ev.study_changed.connect(lambda e: self._study_changed(e.study))
        window.browser.openFolderRequested.connect(self.open_folder_dialog)
        window.browser.openFileRequested.connect(self.open_file_dialog)

    def open_demo(self) -> None:
        self.open_path(str(DEMO_STUDY), reference_set=DEMO_REFERENCES)

    def open_path(self, path: str, reference_set: str | os.PathLike | None = None) -> None:
        """Open a study in the background. `reference_set`: a set file loaded into the tray unless the study's
        saved session already has references. The latest request wins: an older load still running is cancelled,
        and its result dropped if it comes."""
        path = str(Path(path).expanduser().resolve())
        if self.window.scoring.running:
            self.window.scoring.cancel()  # scoring belongs to the open series; the job saves the slices it finished
        pending = None
        if reference_set is not None:
            try:
                pending = ReferenceSet.load(reference_set)
            except ValueError as exc:
                self.window.browser.errors.add_messages([str(exc)])
        token = self.model.begin_load(pending)
        self.window.browser.set_loading(path)
        self.window.statusBar().showMessage(f"Loading {path} …")
        if self.loader is not None:
            self.loader.cancel()
        # A study shown while its slices are still read (the load job goes on filling them in) keeps filling until
        # this one is shown: if this open fails, the study on screen still completes.
        w = self.loader = Worker(load_study_job(path), "load-study", self.window)
        w.partial.connect(lambda item: self._load_partial(w, token, item))
        w.finished.connect(lambda payload: self._load_finished(w, token, payload))
        w.failed.connect(lambda msg: self._load_failed(w, token, path, msg))
        w.done.connect(lambda: setattr(self, "loader", None) if w is self.loader else None)
        self.window._start_loader(w)

    def _load_partial(self, w: Worker, token: int, item: tuple) -> None:
        kind, payload = item
        if kind == "study":
            if self.model.load_finished(token, payload):
                # shown: from now on this job only fills in the slices (a later open does not cancel it until that
                # study is shown)
                self.filler = w
                if self.loader is w:
                    self.loader = None
                self.window.scoring.update_run_state()
        elif kind == "slices":
            self.model.load_progress(token, *payload)

    def _load_finished(self, w: Worker, token: int, payload: dict) -> None:
        if payload.get("complete"):
            self.model.load_complete(token)
        elif self.model.load_finished(token, payload):
            self.window.scoring.update_run_state()
        if self.filler is w:
            self.filler = None

    def _load_failed(self, w: Worker, token: int, path: str, msg: str) -> None:
        if self.model.is_current(token) and not self.model.shows(token):
            self._study_failed(path, msg)
        elif self.model.shows(token):  # the rest of the slices could not be read
            self.window.browser.errors.add_messages([f"{path}: reading the slices stopped: {msg}"])
        if self.filler is w:
            self.filler = None

    def _study_failed(self, path: str, msg: str) -> None:
        self.window.browser.study_label.setText(f"<b>{path}</b><br>Could not be opened")
        self.window.browser.errors.add_messages([msg])
        self.window.statusBar().showMessage(f"Could not open {path}", 8000)

    def _study_shown(self, payload: dict) -> None:
        study, path = payload["study"], payload["path"]
        # The study shown before this one may still be filling in its slices: no longer needed.
        if self.filler is not None and self.filler is not self.loader:
            self.filler.cancel()
            self.filler = None
        self.window.browser.errors.clear()
        self.window.browser.errors.add_messages([e.full for e in study.errors] + list(payload.get("notes") or []))
        if "overlay" in self.model.session.view:
            self.window.analysis.restore_overlay_state(self.model.session.view["overlay"])
        entries = [{"pixmap": pixmap_from_gray(t), "modality": s.modality, "description": s.description,
                    "num_slices": s.num_slices, "rows": s.rows, "columns": s.columns, "warnings": s.warnings}
                   for s, t in zip(study.series, payload["thumbs"])]
        row = self.model.saved_series_row()
        self.window.browser.set_study(path, entries, row if entries else None)
        self.window.setWindowTitle(f"MedAD Viewer — {Path(path).name}")
        self.window.app_settings.add_recent(path)
        if study.series:
            self.window.select_series(row)
            restored = " — previous review session restored" if payload["session"] is not None else ""
            self.window.statusBar().showMessage(f"Opened {Path(path).name}: {len(study.series)} series{restored}", 8000)
        else:
            self.window.viewer.clear()
            self.window.viewer.placeholder.setText(f"No images could be read from\n{path}\n\nSupported: "
                                            "DICOM, NIfTI, NRRD, MetaImage, PNG, JPEG, TIFF, BMP.")
            self.window.ranking.set_series(0, None)
            if not study.errors:
                self.window.browser.errors.add_messages([f"{path}: no images found (empty folder?)"])
            self.window.statusBar().showMessage(f"No images in {path}", 8000)
        self.window.references.refresh()
        self.window.references.load_sources()
        self.window.studyOpened.emit(path)

    def _loading_progress(self, progress: tuple[int, int]) -> None:
        done, total = progress
        self.window.statusBar().showMessage(f"Reading slices: {done} / {total}", 2000)
        self.window.scoring.update_run_state()
        if (self.model.layout == "1x3" or not self.window.planes.main_is_acquired()) and time.monotonic() - self._planes_drawn > 0.5:
            # the reformatted views show the slices read so far: redrawn twice a second while the rest arrive
            self._planes_drawn = time.monotonic()
            self.window.planes.draw_sides(force=True)
            if not self.window.planes.main_is_acquired():
                self.window.planes.draw(self.window.viewer)

    def _loading_done(self, _payload=None) -> None:
        self.window.statusBar().showMessage("All slices read", 3000)
        self.window.scoring.update_run_state()
        self.window.references.refresh()
        if self.model.series is not None:
            self.window.planes.draw_sides(force=True)
            if not self.window.planes.main_is_acquired():
                self.window.planes.draw(self.window.viewer)

    def _study_changed(self, study) -> None:
        """Once every slice was read: some could not be (their warnings), or a series had none readable (dropped).
        The list of series is drawn anew."""
        from .thumbnails import thumbnail
        from ..io.windowing import default_window

        entries = []
        for s in study.series:
            w = default_window(s)
            pm = pixmap_from_gray(thumbnail(s.slice(s.num_slices // 2), (w.center, w.width), 64))
            entries.append({"pixmap": pm, "modality": s.modality, "description": s.description,
                            "num_slices": s.num_slices, "rows": s.rows, "columns": s.columns, "warnings": s.warnings})
        self.window.browser.set_study(self.model.study_path, entries, max(self.model.series_row, 0) if entries else None)
        self.window.browser.errors.clear()
        self.window.browser.errors.add_messages([e.full for e in study.errors])
        if not study.series:
            self.window.viewer.clear()
            self.window.ranking.set_series(0, None)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.window, "Open a study folder", self.last_dir())
        if path:
            self.open_path(path)

    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.window, "Open a study file", self.last_dir(),
            "Medical images (*.dcm *.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.png *.jpg *.jpeg *.tif *.tiff *.bmp);;"
            "All files (*)")
        if path:
            self.open_path(path)

    def last_dir(self) -> str:
        recent = self.window.app_settings.recent()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def fill_recent_menu(self) -> None:
        self.window.recent_menu.clear()
        recent = self.window.app_settings.recent()
        for p in recent:
            self.window.recent_menu.addAction(p, lambda p=p: self.open_path(p))
        if not recent:
            a = self.window.recent_menu.addAction("No recent studies")
            a.setEnabled(False)
        else:
            self.window.recent_menu.addSeparator()
            self.window.recent_menu.addAction("Clear list", self.window.app_settings.clear_recent)
