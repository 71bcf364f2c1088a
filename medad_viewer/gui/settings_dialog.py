"""The Settings dialog: backbone, weights, device, method and adaptation budget (kept by gui/settings.py)."""

from __future__ import annotations


from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..engine.defaults import DEFAULT_BACKBONE
from .settings import BACKBONES, DEVICES, METHODS, AppSettings


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.backbone = QComboBox()
        self.backbone.setEditable(True)
        for name, label in BACKBONES:
            self.backbone.addItem(name)
            self.backbone.setItemData(self.backbone.count() - 1, label, 3)  # tooltip role
        self.backbone.setCurrentText(settings.get("backbone"))
        self.weights = QLineEdit(settings.get("weights"))
        self.weights.setPlaceholderText("empty = the backbone's default; or a pretrained tag; or a weights file")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        wrow = QHBoxLayout()
        wrow.addWidget(self.weights, 1)
        wrow.addWidget(browse)
        self.device = QComboBox()
        for key, label in DEVICES:
            self.device.addItem(label, key)
        self.device.setCurrentIndex(max(0, [k for k, _ in DEVICES].index(settings.get("device"))
                                        if settings.get("device") in [k for k, _ in DEVICES] else 0))
        self.method = QComboBox()
        for key, label in METHODS:
            self.method.addItem(label, key)
        keys = [k for k, _ in METHODS]
        self.method.setCurrentIndex(keys.index(settings.get("method")) if settings.get("method") in keys else 0)
        self.budget = QDoubleSpinBox()
        self.budget.setRange(5, 3600)
        self.budget.setSuffix(" s")
        self.budget.setValue(float(settings.get("time_budget_s")))
        self.budget.setToolTip("A safety cap: adaptation runs its steps (or stops when validation stops improving) "
                               "and is cut short only if it would take longer than this")
        self.steps = QSpinBox()
        self.steps.setRange(1, 100_000)
        self.steps.setValue(int(settings.get("max_steps")))
        form = QFormLayout()
        form.addRow("Backbone", self.backbone)
        form.addRow("Weights", wrow)
        form.addRow("Device", self.device)
        form.addRow("Method", self.method)
        form.addRow("Adaptation time cap", self.budget)
        form.addRow("Adaptation max steps", self.steps)
        note = QLabel("Vision-language backbones without trained weights produce meaningless scores; the status "
                      "bar warns when that happens. Weights never download without your action: place files "
                      "locally and point to them here.")
        note.setWordWrap(True)
        note.setStyleSheet("QLabel { color: #666; }")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
                                   | QDialogButtonBox.StandardButton.RestoreDefaults)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(self._defaults)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(buttons)
        self.resize(560, 300)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Backbone weights", "",
                                              "Weights (*.safetensors *.pt *.pth *.bin);;All files (*)")
        if path:
            self.weights.setText(path)

    def _defaults(self) -> None:
        d = AppSettings.DEFAULTS
        self.backbone.setCurrentText(d["backbone"])
        self.weights.setText(d["weights"])
        self.device.setCurrentIndex(0)
        self.method.setCurrentIndex([k for k, _ in METHODS].index(d["method"]))
        self.budget.setValue(d["time_budget_s"])
        self.steps.setValue(d["max_steps"])

    def accept(self) -> None:
        s = self.settings
        s.set("backbone", self.backbone.currentText().strip() or DEFAULT_BACKBONE)
        s.set("weights", self.weights.text().strip())
        s.set("device", self.device.currentData())
        s.set("method", self.method.currentData())
        s.set("time_budget_s", float(self.budget.value()))
        s.set("max_steps", int(self.steps.value()))
        super().accept()
