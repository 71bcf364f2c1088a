"""StudyBrowser: open a folder or file, the series found (thumbnail, modality, description, slice count), and a
dismissible panel listing files that could not be read."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout,
                               QWidget)

SERIES_ROLE = Qt.ItemDataRole.UserRole + 1


class ErrorPanel(QWidget):
    """Files that could not be loaded; never a modal box, never a crash."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel()
        self.header.setStyleSheet("QLabel { color: #b03a2e; font-weight: bold; }")
        self.dismiss = QPushButton("Dismiss")
        self.dismiss.setToolTip("Hide these messages")
        self.dismiss.clicked.connect(self.clear)
        self.list = QListWidget()
        self.list.setWordWrap(True)
        self.list.setMaximumHeight(140)
        top = QHBoxLayout()
        top.addWidget(self.header, 1)
        top.addWidget(self.dismiss)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 4, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.list)
        self.setStyleSheet("ErrorPanel { background: #fdecea; }")
        self.hide()

    def add_messages(self, messages: list[str], title: str | None = None) -> None:
        for m in messages:
            it = QListWidgetItem(m)
            it.setToolTip(m)
            self.list.addItem(it)
        n = self.list.count()
        self.header.setText(title or f"{n} problem{'s' if n != 1 else ''} while loading")
        self.setVisible(n > 0)

    def clear(self) -> None:
        self.list.clear()
        self.hide()

    def messages(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]


class StudyBrowser(QWidget):
    openFolderRequested = Signal()
    openFileRequested = Signal()
    seriesSelected = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.open_folder = QPushButton("Open folder…")
        self.open_file = QPushButton("Open file…")
        self.open_folder.clicked.connect(self.openFolderRequested)
        self.open_file.clicked.connect(self.openFileRequested)
        self.study_label = QLabel("No study open")
        self.study_label.setWordWrap(True)
        self.study_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.list = QListWidget()
        self.list.setIconSize(QSize(64, 64))
        self.list.setSpacing(2)
        self.list.setWordWrap(True)
        self.list.currentRowChanged.connect(self._row_changed)
        self.errors = ErrorPanel()
        hint = QLabel("Drop a folder or file here to open it")
        hint.setStyleSheet("QLabel { color: #888; font-size: 11px; }")
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_folder)
        buttons.addWidget(self.open_file)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(buttons)
        lay.addWidget(self.study_label)
        lay.addWidget(self.list, 1)
        lay.addWidget(hint)
        lay.addWidget(self.errors)
        self._setting = False

    def _row_changed(self, row: int) -> None:
        if not self._setting and row >= 0:
            self.seriesSelected.emit(row)

    def set_loading(self, path: str) -> None:
        self.study_label.setText(f"Loading {path} …")
        self.list.clear()

    def set_study(self, path: str, entries: list[dict], current: int | None) -> None:
        """entries: dicts with pixmap, modality, description, num_slices, rows, columns, warnings."""
        self._setting = True
        try:
            self.list.clear()
            for i, e in enumerate(entries):
                warn = f"\n⚠ {len(e['warnings'])} warning(s)" if e.get("warnings") else ""
                text = (f"{e['modality']} · {e['description'] or 'series ' + str(i + 1)}\n"
                        f"{e['num_slices']} slice{'s' if e['num_slices'] != 1 else ''} · "
                        f"{e['columns']}×{e['rows']}{warn}")
                it = QListWidgetItem(text)
                if e.get("pixmap") is not None:
                    it.setIcon(e["pixmap"])
                it.setToolTip(text + ("\n" + "\n".join(e["warnings"]) if e.get("warnings") else ""))
                it.setData(SERIES_ROLE, i)
                self.list.addItem(it)
            if current is not None and 0 <= current < len(entries):
                self.list.setCurrentRow(current)
        finally:
            self._setting = False
        n = len(entries)
        self.study_label.setText(f"<b>{path}</b><br>{n} series" if n else f"<b>{path}</b><br>No images found")

    def select(self, row: int) -> None:
        self._setting = True
        self.list.setCurrentRow(row)
        self._setting = False

    def series_count(self) -> int:
        return self.list.count()


def pixmap_from_gray(img) -> QPixmap:
    """uint8 (rows, cols) numpy -> QPixmap (copied, so the array may go)."""
    import numpy as np
    from PySide6.QtGui import QImage

    a = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = a.shape
    qimg = QImage(a.data, w, h, w, QImage.Format.Format_Grayscale8)
    return QPixmap.fromImage(qimg.copy())
