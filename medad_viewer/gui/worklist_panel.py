"""The worklist panel (File → Open worklist…): the series `medad-viewer batch` scored, most anomalous first, with
filters (flagged only, modality, failed); a double-click asks for the series to be opened with its scores."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QHBoxLayout, QHeaderView, QLabel, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

HEADERS = ("Study", "Series", "Modality", "Slices", "Highest score", "Percentile", "Flagged slices", "Status")
KEYS = ("study", "series", "modality", "slices", "top_score", "top_percentile", "flagged_slices", "status")


class WorklistPanel(QWidget):
    openRequested = Signal(dict)  # the row double-clicked

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[dict] = []
        self.shown: list[dict] = []
        self.title = QLabel("No worklist open")
        self.flagged_only = QCheckBox("Flagged only")
        self.failed_only = QCheckBox("Failed only")
        self.modality = QComboBox()
        self.table = QTableWidget(0, len(HEADERS))
        self.table.setHorizontalHeaderLabels(HEADERS)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.cellDoubleClicked.connect(lambda r, _c: self.openRequested.emit(self.shown[r]))
        filters = QHBoxLayout()
        for w in (self.flagged_only, self.failed_only, QLabel("Modality"), self.modality):
            filters.addWidget(w)
        filters.addStretch(1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.title)
        lay.addLayout(filters)
        lay.addWidget(self.table, 1)
        for box in (self.flagged_only, self.failed_only):
            box.toggled.connect(self._fill)
        self.modality.currentIndexChanged.connect(self._fill)

    def set_rows(self, title: str, rows: list[dict]) -> None:
        """The worklist's rows, as written (most anomalous first)."""
        self.rows = list(rows)
        self.title.setText(title)
        self.modality.blockSignals(True)
        self.modality.clear()
        self.modality.addItem("All", "")
        for m in sorted({r.get("modality") or "" for r in self.rows} - {""}):
            self.modality.addItem(m, m)
        self.modality.blockSignals(False)
        self._fill()

    def _fill(self) -> None:
        modality = self.modality.currentData() or ""
        rows = [r for r in self.rows
                if (not self.flagged_only.isChecked() or (r.get("flagged_slices") or 0) > 0)
                and (not self.failed_only.isChecked() or r.get("status") != "scored")
                and (not modality or r.get("modality") == modality)]
        self.shown = rows
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for j, key in enumerate(KEYS):
                v = r.get(key)
                text = "" if v is None else (f"{v:.3f}" if key == "top_score" else
                                             f"{v:.1f}" if key == "top_percentile" else str(v))
                item = QTableWidgetItem(text)
                if key not in ("study", "series", "modality", "status"):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if r.get("status") != "scored":
                    item.setToolTip(r.get("message") or "")
                self.table.setItem(i, j, item)
