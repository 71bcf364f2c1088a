"""The Adapt & score panel: run, progress and cancel, and the overlay controls (opacity, threshold in percentile of
normal, colour map, contour)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                               QSlider, QVBoxLayout, QWidget)

from ..io.colormaps import COLORMAPS, DEFAULT_COLORMAP
from .widget_helpers import bold

# Threshold choices in "percentile of normal": dense near the top, where the useful thresholds are.
THRESHOLDS = (50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.0, 94.0, 95.0, 96.0, 97.0, 98.0, 98.5, 99.0, 99.2, 99.4,
              99.5, 99.6, 99.7, 99.8, 99.9, 99.95, 99.99)


def pct_to_slider(pct: float) -> int:
    return min(range(len(THRESHOLDS)), key=lambda i: abs(THRESHOLDS[i] - pct))


def slider_to_pct(pos: int) -> float:
    return THRESHOLDS[min(max(int(pos), 0), len(THRESHOLDS) - 1)]


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
        bold(self.run_button)
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
