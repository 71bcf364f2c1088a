"""Settings kept with QSettings (backbone, weights, device, method, adaptation budget, recent studies), typed; the
dialog that edits them is gui/settings_dialog.py."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

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
