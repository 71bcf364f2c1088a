"""Fitted detectors kept on disk per (reference set, backbone weights, method, settings), so scoring another series
with the same references does not adapt again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .storage import data_dir


def cache_key(reference_hash: str, weights_id: str, settings: dict, reference_pixels: Sequence[str] = ()) -> str:
    """`settings`: DetectorSettings.to_dict() (method included). `reference_pixels`: hashes of the reference
    images as fitted, so a study file that changed on disk under the same name gets a fresh adaptation."""
    blob = json.dumps({"references": reference_hash, "weights": weights_id, "settings": settings,
                       "pixels": list(reference_pixels)}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


class AdaptationCache:
    def __init__(self, folder: str | os.PathLike | None = None, max_entries: int = 24):
        self.folder = Path(folder) if folder else data_dir() / "adaptations"
        self.max_entries = max_entries

    def base(self, key: str) -> Path:
        return self.folder / key

    def has(self, key: str) -> bool:
        b = self.base(key)
        return b.with_suffix(".json").is_file() and b.with_suffix(".safetensors").is_file()

    def load(self, key: str, backbone: Any = None, device: Any = "cpu"):
        """The cached detector, or None when absent or unreadable (then it is simply fitted again)."""
        if not self.has(key):
            return None
        from ..engine.detector import AnomalyDetector

        try:
            det = AnomalyDetector.load(self.base(key), backbone=backbone, device=device)
        except Exception:  # a damaged or outdated entry must never block scoring
            return None
        try:  # touch: pruning keeps the recently used
            os.utime(self.base(key).with_suffix(".json"))
        except OSError:
            pass
        return det

    def store(self, key: str, detector: Any) -> Path | None:
        """Save (atomically, by the detector); a full disk only costs the cache, never the job."""
        try:
            path = detector.save(self.base(key))
        except OSError:
            return None
        self.prune()
        return path

    def prune(self) -> None:
        entries = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for js in entries[self.max_entries:]:
            for p in (js, js.with_suffix(".safetensors")):
                try:
                    p.unlink()
                except OSError:
                    pass
