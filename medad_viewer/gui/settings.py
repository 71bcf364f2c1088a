"""Settings kept with QSettings (backbone, weights, device, method, adaptation budget, recent studies), and the
Settings dialog."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from ..engine.defaults import ADAPT_MAX_STEPS, ADAPT_TIME_CAP_S, DEFAULT_BACKBONE, DEFAULT_METHOD

BACKBONES = [
    ("efficientnet-lite2", "EfficientNet-Lite2 (ImageNet, offline default)"),
    ("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "BiomedCLIP (vision-language, download)"),
    ("open_clip:ViT-B-16", "CLIP ViT-B/16 (vision-language; weights tag e.g. openai)"),
    ("open_clip:ViT-L-14-336", "CLIP ViT-L/14-336 (vision-language, MVFA-AD size; GPU advised)"),
]
METHODS = [("memory", "Memory bank (default; no training, seconds)"),
           ("adapted", "Few-shot adaptation + memory bank (trains adapters, about a minute on a CPU)"),
           ("zero", "Zero-shot text prompts (vision-language backbones)")]
DEVICES = [("auto", "Automatic (CUDA GPU, else Apple MPS, else CPU)"), ("cpu", "CPU"), ("cuda", "CUDA GPU"),
           ("mps", "Apple MPS")]
MAX_RECENT = 10
OPEN_WHEN_DONE_KEY = "export/open_when_done"


class AppSettings:
    """Typed access to the persisted settings."""

    DEFAULTS = {"backbone": DEFAULT_BACKBONE, "weights": "", "device": "auto", "method": DEFAULT_METHOD,
                "time_budget_s": ADAPT_TIME_CAP_S, "max_steps": ADAPT_MAX_STEPS}

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings or QSettings("MedAD", "MedAD Viewer")

    def get(self, key: str):
        default = self.DEFAULTS[key]
        value = self.q.value(f"engine/{key}", default)
        try:
            return type(default)(value) if value is not None else default
        except (TypeError, ValueError):
            return default

    def set(self, key: str, value) -> None:
        self.q.setValue(f"engine/{key}", value)

    def detector_settings(self, modality: str, sequence: str | None = None) -> dict:
        """DetectorSettings as a dict (built into the dataclass by the job, so the UI never imports torch)."""
        return {"method": self.get("method"), "backbone": self.get("backbone"),
                "weights": self.get("weights") or None, "modality": modality or "OT", "sequence": sequence,
                "adapt": {"time_budget_s": float(self.get("time_budget_s")), "max_steps": int(self.get("max_steps"))}}

    @property
    def open_exports_when_done(self) -> bool:
        """The remembered "Open the file when done" choice of exports (off until the user turns it on)."""
        return self.q.value(OPEN_WHEN_DONE_KEY, False) in (True, "true", "1", 1)

    @open_exports_when_done.setter
    def open_exports_when_done(self, value: bool) -> None:
        self.q.setValue(OPEN_WHEN_DONE_KEY, bool(value))

    # ---------------------------------------------------------------------------------------------------- stats
    def seconds_per_slice(self) -> float:
        """The last measured scoring pace, for the first time-remaining estimate of a run."""
        try:
            return float(self.q.value("stats/seconds_per_slice", 0.5))
        except (TypeError, ValueError):
            return 0.5

    def set_seconds_per_slice(self, seconds: float) -> None:
        self.q.setValue("stats/seconds_per_slice", float(seconds))

    # --------------------------------------------------------------------------------------------------- recent
    def recent(self) -> list[str]:
        v = self.q.value("recent/studies", [])
        if isinstance(v, str):
            v = [v]
        return [p for p in (v or []) if p]

    def add_recent(self, path: str) -> None:
        path = str(Path(path).resolve())
        items = [p for p in self.recent() if p != path]
        self.q.setValue("recent/studies", [path] + items[: MAX_RECENT - 1])

    def clear_recent(self) -> None:
        self.q.setValue("recent/studies", [])


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
