"""The references' controller: the reference tray's cards (thumbnails with the abnormal examples' masks outlined),
its gestures, and saving and loading named or file reference sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QFileDialog, QInputDialog

from ..io.imaging import letterbox
from ..io.windowing import default_window
from ..review.references import ReferenceSet, list_named, load_named, save_named
from .thumbnails import thumbnail
from .background_jobs import load_studies_job
from .study_browser import pixmap_from_gray
from .worker import Worker


class ReferencesController:
    """Owns the reference tray (gui/reference_tray.py): forwards its gestures to the references model, draws its cards
    when the references change, saves and loads reference sets, and loads the studies the references come from.
    `window` gives the viewer model, the status bar, dialogs' parent and the background loaders."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.tray = tray = window.tray
        tray.addRequested.connect(lambda: self.add("normal"))
        tray.addAbnormalRequested.connect(lambda: self.add("abnormal"))
        tray.removeRequested.connect(self.remove)
        tray.showRequested.connect(self.show)
        tray.saveRequested.connect(self.save_named)
        tray.saveAsFileRequested.connect(self.save_file)
        tray.loadNamedRequested.connect(self.load_named)
        tray.loadFileRequested.connect(self.load_file)
        tray.clearRequested.connect(lambda: self.model.references.replace(ReferenceSet()))
        self.model.references.events.changed.connect(lambda _e: (self.refresh(), window.slice_info.refresh()))

    # ---------------------------------------------------------------------------------------------- gestures
    def add(self, kind: str = "normal") -> None:
        """The slice shown as a normal reference, or ("abnormal") an abnormal example masked by its drawing."""
        msg = self.model.references.add(kind)
        if msg:
            self.window.statusBar().showMessage(msg, 5000)

    def remove(self, pos: int) -> None:
        msg = self.model.references.remove(pos)
        if msg:
            self.window.statusBar().showMessage(msg, 4000)

    def show(self, pos: int) -> None:
        """Show the reference at `pos` of the tray (in the study shown)."""
        rs = self.model.session.reference_set
        if not 0 <= pos < len(rs) or self.model.study is None:
            return
        r = rs.references[pos]
        row = self.model.row_of(r.series_uid)
        if row is None:
            self.window.statusBar().showMessage(f"That reference is from another study: {r.source}", 6000)
            return
        self.window.select_series(row)
        self.window.show_slice(r.index)

    # ---------------------------------------------------------------------------------------------- the tray
    def refresh(self) -> None:
        m = self.model
        rs = m.session.reference_set
        cards = []
        current = None
        for pos, r in enumerate(rs.references):
            series = m.references.series_of(r)
            pm = None
            if series is not None and 0 <= r.index < series.num_slices and series.is_loaded(r.index):
                w = m.display.windows.get(series.uid)
                win = (w[0], w[1]) if w else (default_window(series).center, default_window(series).width)
                img = thumbnail(series.slice(r.index), win, 72)
                if r.mask is not None and r.mask.shape == (series.rows, series.columns):
                    pm = _with_mask_outline(img, r.mask)
                else:
                    pm = pixmap_from_gray(img)
            here = m.series is not None and r.series_uid == m.series.uid
            if here and r.index == m.index:
                current = pos
            name = Path(r.source).name
            cards.append({"pixmap": pm, "kind": r.kind, "caption": f"{'' if here else name + ' · '}slice {r.index + 1}",
                          "tooltip": f"{r.description or r.series_uid}\n{r.source}\nslice {r.index + 1}\n"
                                     "Click to show it; ✕ removes it"})
        self.tray.set_references(rs.name, cards, current)
        self.tray.set_named_sets([n for n, _ in list_named()])

    # ------------------------------------------------------------------------------------------ reference sets
    def save_named(self) -> None:
        rs = self.model.session.reference_set
        name, ok = QInputDialog.getText(self.window, "Save reference set", "Name for this set of references:",
                                        text=rs.name if rs.name != "Untitled" else "")
        if ok and name.strip():
            try:
                path = save_named(rs, name.strip())
            except OSError as exc:
                self.window._error(f"Could not save the reference set: {exc}")
                return
            self.window.statusBar().showMessage(f"Saved reference set '{rs.name}' ({path})", 6000)
            self.model.references.replace(rs)

    def save_file(self) -> None:
        start = Path(self.model.study_path or ".").parent / "reference_set.json"
        path, _ = QFileDialog.getSaveFileName(self.window, "Save reference set", str(start), "JSON (*.json)")
        if path:
            try:
                self.model.session.reference_set.save(path)
            except OSError as exc:
                self.window._error(f"Could not save the reference set: {exc}")

    def load_named(self, name: str) -> None:
        try:
            self.replace(load_named(name))
        except (KeyError, ValueError) as exc:
            self.window._error(str(exc))

    def load_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Load reference set", self.window.opening.last_dir(),
                                              "JSON (*.json)")
        if path:
            try:
                self.replace(ReferenceSet.load(path))
            except ValueError as exc:
                self.window._error(str(exc))

    def replace(self, rs: ReferenceSet) -> None:
        self.model.references.replace(rs)
        self.load_sources()

    def load_sources(self) -> None:
        """Load, in the background, the studies the references come from that are not loaded yet."""
        missing = self.model.references.missing_sources()
        if missing:
            w = Worker(load_studies_job(missing), "load-references", self.window)
            w.finished.connect(self.model.references.add_studies)
            self.window._start_loader(w)


def _with_mask_outline(img: np.ndarray, mask: np.ndarray) -> QPixmap:
    """A reference card's thumbnail with its abnormal example's mask outlined in red."""
    import cv2
    from PySide6.QtGui import QImage

    size = img.shape[0]
    m = letterbox(mask.astype(np.uint8), size, cv2.INTER_NEAREST)
    rgb = np.repeat(img[..., None], 3, axis=2).copy()
    edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    rgb[edge] = (235, 70, 60)
    qimg = QImage(rgb.data, size, size, 3 * size, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimg.copy())
