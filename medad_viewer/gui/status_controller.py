"""The status bar's controller: the backbone and weights the scores come from (in red when they are untrained), the
device the engine runs on, and the app's memory."""

from __future__ import annotations

import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel

from .background_jobs import device_guess, device_probe_job, resident_bytes
from .worker import Worker


class StatusController:
    """`window` gives the status bar, the settings and the background loaders."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self._build()
        self.memory_timer = QTimer(window)
        self.memory_timer.setInterval(2000)
        self.memory_timer.timeout.connect(self.update_memory)
        self.memory_timer.start()
        self.update_memory()

    def _build(self) -> None:
        sb = self.window.statusBar()
        self.backbone_label = QLabel()
        self.device_label = QLabel("Device: checking…")
        self.memory_label = QLabel()
        for w in (self.backbone_label, self.device_label, self.memory_label):
            w.setContentsMargins(6, 0, 6, 0)
            sb.addPermanentWidget(w)
        self.update_backbone()

    def update_backbone(self) -> None:
        info = self.model.detector_info
        s = self.window.app_settings
        weights = s.get("weights") or ("ImageNet weights" if s.get("backbone") == "efficientnet-lite2"
                                       else "default weights")
        text = (f"Backbone: {info.get('backbone', '?')} · {info.get('weights', '')} · {info.get('method', '')}"
                if info else f"Backbone: {s.get('backbone')} · {weights} · {s.get('method')}")
        untrained = bool(info) and not info.get("pretrained", True)
        self.backbone_label.setText(f"⚠ {text} — UNTRAINED weights: scores are meaningless" if untrained else text)
        self.backbone_label.setStyleSheet("QLabel { color: white; background: #c0392b; font-weight: bold; padding: "
                                          "1px 6px; }" if untrained else "")

    def update_memory(self) -> None:
        rss = resident_bytes()
        self.memory_label.setText(f"Memory: {rss / 2 ** 30:.2f} GB" if rss else "")

    def probe_device(self) -> None:
        """The status bar's device. Before the first Adapt & score torch is not imported (the window starts without
        it: issue 20), so the device is told from what the machine has; the first job says what it really uses."""
        preference = self.window.app_settings.get("device")
        if "torch" not in sys.modules:
            self.device_label.setText(f"Device: {device_guess(preference)}")
            return
        w = Worker(device_probe_job(preference), "device-probe", self.window)
        w.finished.connect(lambda text: self.device_label.setText(f"Device: {text}"))
        w.failed.connect(lambda msg: self.device_label.setText(f"Device: ⚠ {msg}"))
        self.window._start_loader(w)
