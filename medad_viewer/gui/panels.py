"""Side panels: Adapt & score (run, progress, cancel), overlay controls, and the per-slice review controls."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel,
                               QPlainTextEdit, QProgressBar, QPushButton, QSlider, QSpinBox, QToolButton,
                               QVBoxLayout, QWidget)

from ..io.colormaps import COLORMAPS, DEFAULT_COLORMAP
from ..review.state import Decision, SliceReview

# Threshold choices in "percentile of normal": dense near the top, where the useful thresholds are.
THRESHOLDS = (50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.0, 94.0, 95.0, 96.0, 97.0, 98.0, 98.5, 99.0, 99.2, 99.4,
              99.5, 99.6, 99.7, 99.8, 99.9, 99.95, 99.99)


def pct_to_slider(pct: float) -> int:
    return min(range(len(THRESHOLDS)), key=lambda i: abs(THRESHOLDS[i] - pct))


def slider_to_pct(pos: int) -> float:
    return THRESHOLDS[min(max(int(pos), 0), len(THRESHOLDS) - 1)]


def _button_row(*buttons: tuple[str, object]) -> tuple[QHBoxLayout, list[QPushButton]]:
    """A row of push buttons, each (text, the signal its click emits)."""
    row = QHBoxLayout()
    made = []
    for text, signal in buttons:
        b = QPushButton(text)
        b.clicked.connect(signal)
        row.addWidget(b)
        made.append(b)
    return row, made


def _bold(widget: QWidget) -> QWidget:
    f = widget.font()
    f.setBold(True)
    widget.setFont(f)
    return widget


class AnalysisPanel(QWidget):
    """Adapt & score button, progress with stage and time remaining, Cancel; overlay controls below."""

    runRequested = Signal()
    cancelRequested = Signal()
    overlayChanged = Signal()

    RUN_TIP = "Adapt to the reference slices (or reuse a cached adaptation), then score every slice of the open series"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_button = QPushButton("Adapt && score")
        self.run_button.setToolTip(self.RUN_TIP)
        self.run_button.setMinimumHeight(34)
        _bold(self.run_button)
        self.run_button.clicked.connect(self.runRequested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(True)
        self.progress.setFormat("")
        self.stage = QLabel("")
        self.stage.setWordWrap(True)
        self.stage.setStyleSheet("QLabel { color: #666; }")

        self.show_overlay = QCheckBox("Show anomaly overlay (H)")
        self.show_overlay.setChecked(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, len(THRESHOLDS) - 1)
        self.threshold.setPageStep(2)
        self.threshold.setValue(pct_to_slider(99.0))
        self.threshold_label = QLabel()
        self.threshold_label.setMinimumWidth(150)
        self.colormap = QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.colormap.setCurrentText(DEFAULT_COLORMAP)
        self.contour = QCheckBox("Contour of the thresholded region")
        for w in (self.show_overlay, self.contour):
            w.toggled.connect(self.overlayChanged)
        for s in (self.opacity, self.threshold):
            s.valueChanged.connect(self.overlayChanged)
        self.colormap.currentTextChanged.connect(self.overlayChanged)
        self.threshold.valueChanged.connect(lambda _v: self.set_threshold_value(None))

        run_row = QHBoxLayout()
        run_row.addWidget(self.run_button, 1)
        run_row.addWidget(self.cancel_button)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Opacity", self.opacity)
        form.addRow("Threshold", self.threshold)
        form.addRow("", self.threshold_label)
        form.addRow("Colour map", self.colormap)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addLayout(run_row)
        lay.addWidget(self.progress)
        lay.addWidget(self.stage)
        lay.addWidget(self.show_overlay)
        lay.addLayout(form)
        lay.addWidget(self.contour)
        lay.addStretch(1)
        self._value = None
        self.set_threshold_value(None)

    # ------------------------------------------------------------------------------------------------ overlay
    @property
    def threshold_pct(self) -> float:
        return slider_to_pct(self.threshold.value())

    def set_threshold_pct(self, pct: float) -> None:
        self.threshold.setValue(pct_to_slider(pct))

    def set_threshold_value(self, value: float | None) -> None:
        """Show the map value the threshold stands for (known once a series is scored)."""
        if value is not None:
            self._value = value
        v = "" if self._value is None else f" (map ≥ {self._value:.2f})"
        self.threshold_label.setText(f"{self.threshold_pct:g}th percentile of normal{v}")

    def overlay_state(self) -> dict:
        return {"visible": self.show_overlay.isChecked(), "opacity": self.opacity.value() / 100.0,
                "threshold_pct": self.threshold_pct, "colormap": self.colormap.currentText(),
                "contour": self.contour.isChecked()}

    def restore_overlay_state(self, d: dict) -> None:
        widgets = (self.show_overlay, self.opacity, self.threshold, self.colormap, self.contour)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.show_overlay.setChecked(bool(d.get("visible", True)))
            self.opacity.setValue(int(round(float(d.get("opacity", 0.6)) * 100)))
            self.threshold.setValue(pct_to_slider(float(d.get("threshold_pct", 99.0))))
            if d.get("colormap") in COLORMAPS:
                self.colormap.setCurrentText(d["colormap"])
            self.contour.setChecked(bool(d.get("contour", False)))
        finally:
            for w in widgets:
                w.blockSignals(False)
        self.set_threshold_value(None)
        self.overlayChanged.emit()

    # -------------------------------------------------------------------------------------------------- jobs
    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.cancel_button.setText("Cancel")
        if running:
            self.progress.setValue(0)
            self.progress.setFormat("%p%")

    def set_waiting(self, reason: str) -> None:
        """Adapt & score would wait before scoring (`reason`: the series is still loading); "" once it would not."""
        if reason:
            self.run_button.setToolTip(f"{self.RUN_TIP}. {reason}")
            self.stage.setText(reason)
            self._waiting = True
        elif self._waiting:
            self._waiting = False
            self.run_button.setToolTip(self.RUN_TIP)
            self.stage.setText("")

    _waiting = False

    def set_cancelling(self) -> None:
        self.cancel_button.setEnabled(False)
        self.cancel_button.setText("Cancelling…")

    def show_progress(self, fraction: float, stage: str, remaining_s: float | None) -> None:
        self.progress.setValue(int(round(1000 * min(max(fraction, 0.0), 1.0))))
        eta = "" if remaining_s is None else f" — about {_duration(remaining_s)} left"
        self.stage.setText(f"{stage}{eta}")

    def show_message(self, text: str) -> None:
        self.stage.setText(text)


def _duration(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{max(1, int(round(s)))} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 10 else f"{m} min"


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
        self.slice_label = _bold(QLabel("No slice"))
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

        nav, (self.prev_button, self.next_button) = _button_row(
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

        ur, (self.undo_button, self.redo_button) = _button_row(("Undo", self.undoRequested),
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
