"""File → Export dialogs: the PDF report's options, and the small non-modal progress window with Cancel that every
export shows while it runs in the background Worker."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout,
                               QHBoxLayout, QLabel, QProgressBar, QPushButton, QRadioButton, QVBoxLayout, QWidget)

from .worker import Worker


# (value of report.export_pdf_report(slices=...), radio button text); the first is the default
SLICE_OPTIONS = [
    ("flagged", "Flagged and confirmed slices"),
    ("confirmed", "Confirmed slices only"),
    ("all", "All scored slices"),
]


from .settings import OPEN_WHEN_DONE_KEY  # noqa: E402,F401 - where the choice is kept (AppSettings)


def _pixel_threshold(value: float, tip: str) -> QDoubleSpinBox:
    """A map threshold as a percentile of normal pixels (the overlay's, the report's, the SEG's)."""
    box = QDoubleSpinBox()
    box.setRange(1.0, 99.99)
    box.setDecimals(2)
    box.setSingleStep(0.5)
    box.setSuffix("th percentile of normal pixels")
    box.setValue(float(value))
    box.setToolTip(tip)
    return box


def _export_buttons(dialog: QDialog) -> QDialogButtonBox:
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
    buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export…")
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    return buttons


class PdfExportDialog(QDialog):
    """Options of File → Export → PDF report. `options()` gives the keyword arguments of
    report.export_pdf_report (include_identifiers, flag_pct, threshold_pct, slices); `open_after` whether to open
    the file. Both thresholds start at the viewer's: "Flag at" of the ranking, the overlay's heatmap threshold."""

    def __init__(self, threshold_pct: float, settings, parent: QWidget | None = None,
                 flag_pct: float | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export PDF report")
        self.settings = settings

        self.identifiers = QCheckBox("Include identifying data (patient name, ID, birth date)")
        self.identifiers.setChecked(False)
        self.identifiers_warning = QLabel("⚠ The report will name the patient: share it only where allowed.")
        self.identifiers_warning.setStyleSheet("QLabel { color: #c0392b; }")
        self.identifiers_warning.setWordWrap(True)
        self.identifiers_warning.setVisible(False)
        self.identifiers.toggled.connect(self.identifiers_warning.setVisible)

        self.flag = QDoubleSpinBox()
        self.flag.setRange(1.0, 99.99)
        self.flag.setDecimals(1)
        self.flag.setSingleStep(5.0)
        self.flag.setSuffix("th percentile of normal slices")
        self.flag.setValue(float(threshold_pct if flag_pct is None else flag_pct))
        self.flag.setToolTip("Slices scoring at or above this are flagged (as 'Flag at' in the Slice ranking panel)")

        self.threshold = _pixel_threshold(threshold_pct, "Heatmaps colour pixels from this value up (as the overlay's "
                                                         "threshold in the viewer)")

        self.slice_group = QButtonGroup(self)
        slices_box = QVBoxLayout()
        slices_box.setContentsMargins(0, 0, 0, 0)
        self.slice_buttons: dict[str, QRadioButton] = {}
        for k, (value, text) in enumerate(SLICE_OPTIONS):
            b = QRadioButton(text)
            b.setChecked(k == 0)
            self.slice_group.addButton(b, k)
            slices_box.addWidget(b)
            self.slice_buttons[value] = b

        self.open_after_check = QCheckBox("Open the file when done")
        self.open_after_check.setChecked(settings.open_exports_when_done)

        form = QFormLayout()
        form.addRow("Flag slices at:", self.flag)
        form.addRow("Heatmap from:", self.threshold)
        slices_widget = QWidget()
        slices_widget.setLayout(slices_box)
        form.addRow("Slices:", slices_widget)

        buttons = _export_buttons(self)

        lay = QVBoxLayout(self)
        lay.addWidget(self.identifiers)
        lay.addWidget(self.identifiers_warning)
        lay.addLayout(form)
        lay.addWidget(self.open_after_check)
        lay.addWidget(buttons)

    @property
    def slices(self) -> str:
        return SLICE_OPTIONS[max(self.slice_group.checkedId(), 0)][0]

    @property
    def open_after(self) -> bool:
        return self.open_after_check.isChecked()

    def options(self) -> dict:
        return {"include_identifiers": self.identifiers.isChecked(), "flag_pct": float(self.flag.value()),
                "threshold_pct": float(self.threshold.value()), "slices": self.slices}

    def accept(self) -> None:
        self.settings.open_exports_when_done = self.open_after
        super().accept()


class DicomExportDialog(QDialog):
    """Options of File → Export → DICOM Segmentation / parametric map: the same privacy choice as the PDF report
    (de-identified unless asked), with what de-identification does and does not remove for these objects, and for
    the SEG the threshold of its AUTOMATIC segment. `options()` gives the export function's keyword arguments."""

    def __init__(self, title: str, threshold_pct: float | None, settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from ..report.dicom_objects import describe_choice

        self.setWindowTitle(title)
        self.settings = settings
        self._describe = describe_choice
        self.identifiers = QCheckBox("Include identifying data (patient name, ID, birth date)")
        self.identifiers.setChecked(False)
        self.explanation = QLabel(describe_choice(False))
        self.explanation.setWordWrap(True)
        self.explanation.setMinimumWidth(420)
        self.identifiers.toggled.connect(lambda on: self.explanation.setText(describe_choice(on)))
        lay = QVBoxLayout(self)
        lay.addWidget(self.identifiers)
        lay.addWidget(self.explanation)
        self.threshold = None
        if threshold_pct is not None:
            self.threshold = _pixel_threshold(threshold_pct, "The AUTOMATIC segment holds the map above this (the "
                                                             "overlay's threshold)")
            form = QFormLayout()
            form.addRow("Segment the map from:", self.threshold)
            lay.addLayout(form)
        self.open_after_check = QCheckBox("Open the file when done")
        self.open_after_check.setChecked(settings.open_exports_when_done)
        lay.addWidget(self.open_after_check)
        lay.addWidget(_export_buttons(self))

    @property
    def open_after(self) -> bool:
        return self.open_after_check.isChecked()

    def options(self) -> dict:
        out = {"include_identifiers": self.identifiers.isChecked()}
        if self.threshold is not None:
            out["threshold_pct"] = float(self.threshold.value())
        return out

    def accept(self) -> None:
        self.settings.open_exports_when_done = self.open_after
        super().accept()


class ExportProgressDialog(QDialog):
    """Non-modal: stage text, a progress bar and Cancel, following one export Worker; closes itself when it ends."""

    def __init__(self, worker: Worker, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setModal(False)
        self.setWindowModality(Qt.WindowModality.NonModal)
        self.worker = worker
        self.ended = False
        self.stage = QLabel("Starting…")
        self.stage.setWordWrap(True)
        self.stage.setMinimumWidth(320)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.stage)
        lay.addWidget(self.bar)
        lay.addLayout(row)
        worker.progress.connect(self._progress)
        worker.done.connect(self._ended)

    def _progress(self, fraction: float, message: str) -> None:
        self.bar.setValue(int(round(max(0.0, min(1.0, fraction)) * 1000)))
        if message:
            self.stage.setText(message)

    def _ended(self) -> None:
        self.ended = True
        self.close()

    def cancel(self) -> None:
        """Asks the export to stop; it ends at its next check and leaves no file."""
        if self.ended:
            return
        self.worker.cancel()
        self.cancel_button.setEnabled(False)
        self.stage.setText("Cancelling…")

    def reject(self) -> None:  # Esc or the window's close button while running: cancel, as the button does
        if not self.ended:
            self.cancel()
            return
        super().reject()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        if not self.ended:
            self.cancel()
            event.ignore()
            return
        super().closeEvent(event)
