"""The reference tray, for the main window: its cards (thumbnails with the abnormal examples' masks outlined), and
saving and loading named or file reference sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QFileDialog, QInputDialog

from ..io.imaging import letterbox
from ..io.windowing import default_window
from ..review.references import ReferenceSet, list_named, load_named, save_named
from .imaging import thumbnail
from .study_browser import pixmap_from_gray


class ReferencesMixin:
    """The main window's reference-tray methods (self is the MainWindow)."""

    def _refresh_tray(self) -> None:
        rs = self.session.reference_set
        cards = []
        current = None
        for pos, r in enumerate(rs.references):
            series = self.model.references.series_of(r)
            pm = None
            if series is not None and 0 <= r.index < series.num_slices and series.is_loaded(r.index):
                w = self.model.display.windows.get(series.uid)
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
            self.model.references.replace(rs)

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
        self.model.references.replace(rs)
        self._load_reference_studies()


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
