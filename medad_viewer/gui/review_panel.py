"""The Review panel: the slice's decision, note and drawing tools, undo and redo, and stepping through the flagged
slices."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QButtonGroup, QGridLayout, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSpinBox,
                               QToolButton, QVBoxLayout, QWidget)

from ..review.state import Decision, SliceReview
from .widget_helpers import bold, button_row


class ReviewPanel(QWidget):
    """Decision for the current slice, a note, and the annotation tools."""

    decisionRequested = Signal(str)
    noteEdited = Signal(str)
    toolChanged = Signal(str)  # "window" | "ellipse" | "brush"
    brushSizeChanged = Signal(int)
    clearAnnotationsRequested = Signal()
    undoRequested = Signal()
    redoRequested = Signal()
    previousFlaggedRequested = Signal()
    nextFlaggedRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slice_label = bold(QLabel("No slice"))
        self.buttons: dict[Decision, QPushButton] = {}
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        row = QHBoxLayout()
        for decision, text, tip in ((Decision.CONFIRMED, "Confirm (A)", "Finding confirmed"),
                                    (Decision.DISMISSED, "Dismiss (D)", "Not a finding: dismissed"),
                                    (Decision.UNREVIEWED, "Unreviewed (U)", "Not reviewed yet")):
            b = QPushButton(text)
            b.setCheckable(True)
            b.setToolTip(tip)
            b.clicked.connect(lambda _c=False, d=decision: self.decisionRequested.emit(d.value))
            self.group.addButton(b)
            self.buttons[decision] = b
            row.addWidget(b)
        self.buttons[Decision.CONFIRMED].setStyleSheet("QPushButton:checked { background: #c0392b; color: white; }")
        self.buttons[Decision.DISMISSED].setStyleSheet("QPushButton:checked { background: #7f8c8d; color: white; }")

        nav, (self.prev_button, self.next_button) = button_row(
            ("◀ Previous flagged (P)", self.previousFlaggedRequested), ("Next flagged (N) ▶", self.nextFlaggedRequested))

        self.note = QPlainTextEdit()
        self.note.setPlaceholderText("Note on this slice…")
        self.note.setMaximumHeight(70)
        self.note.textChanged.connect(self._note_changed)

        tools = QGridLayout()
        self.tool_buttons: dict[str, QToolButton] = {}
        self.tool_group = QButtonGroup(self)
        for col, (tool, text, tip) in enumerate((("window", "Window/level", "Left-drag adjusts window and level"),
                                                 ("ellipse", "Ellipse", "Left-drag draws an ellipse around the "
                                                                       "finding"),
                                                 ("brush", "Brush", "Left-drag paints over the finding"))):
            b = QToolButton()
            b.setText(text)
            b.setToolTip(tip)
            b.setCheckable(True)
            b.clicked.connect(lambda _c=False, t=tool: self.toolChanged.emit(t))
            self.tool_group.addButton(b)
            self.tool_buttons[tool] = b
            tools.addWidget(b, 0, col)
        self.tool_buttons["window"].setChecked(True)
        self.brush_size = QSpinBox()
        self.brush_size.setRange(1, 64)
        self.brush_size.setValue(6)
        self.brush_size.setSuffix(" px brush")
        self.brush_size.valueChanged.connect(self.brushSizeChanged)
        self.clear_button = QPushButton("Clear drawings")
        self.clear_button.clicked.connect(self.clearAnnotationsRequested)
        tools.addWidget(self.brush_size, 1, 0, 1, 2)
        tools.addWidget(self.clear_button, 1, 2)

        ur, (self.undo_button, self.redo_button) = button_row(("Undo", self.undoRequested),
                                                              ("Redo", self.redoRequested))
        self.counts = QLabel("")
        self.counts.setStyleSheet("QLabel { color: #666; }")

        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(self.slice_label)
        lay.addLayout(row)
        lay.addLayout(nav)
        lay.addWidget(self.note)
        lay.addLayout(tools)
        lay.addLayout(ur)
        lay.addWidget(self.counts)
        lay.addStretch(1)
        self._setting = False
        self.setEnabled(False)

    def _note_changed(self) -> None:
        if not self._setting:
            self.noteEdited.emit(self.note.toPlainText())

    def show_review(self, title: str, review: SliceReview, counts: str, undo: str, redo: str) -> None:
        self.setEnabled(True)
        self.slice_label.setText(title)
        for d, b in self.buttons.items():
            b.setChecked(d == review.decision)
        if self.note.toPlainText() != review.note:
            self._setting = True
            cursor_at_end = self.note.textCursor().atEnd()
            self.note.setPlainText(review.note)
            if cursor_at_end:
                self.note.moveCursor(self.note.textCursor().MoveOperation.End)
            self._setting = False
        n = len(review.annotations)
        self.clear_button.setEnabled(n > 0)
        self.clear_button.setText(f"Clear drawings ({n})" if n else "Clear drawings")
        self.undo_button.setEnabled(bool(undo))
        self.undo_button.setToolTip(f"Undo: {undo} (Ctrl+Z)" if undo else "Nothing to undo")
        self.redo_button.setEnabled(bool(redo))
        self.redo_button.setToolTip(f"Redo: {redo} (Ctrl+Y)" if redo else "Nothing to redo")
        self.counts.setText(counts)

    def set_tool(self, tool: str) -> None:
        if tool in self.tool_buttons:
            self.tool_buttons[tool].setChecked(True)
        elif (b := self.tool_group.checkedButton()) is not None:
            # A tool without a button here (the Length and Ellipse ROI tools, M and O): none of these is chosen.
            self.tool_group.setExclusive(False)
            b.setChecked(False)
            self.tool_group.setExclusive(True)
