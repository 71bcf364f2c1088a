"""The fitted anomaly detector: fit on normal references, score slices, save and load.

Methods: `memory` (training-free memory bank), `zero` (zero-shot text alignment, vision-language backbones only) and
`adapted` (few-shot adaptation; final map = adapted head map fused 50/50 with the memory bank on adapted features).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..io.atomic import atomic_write, atomic_write_json
from .adapt import AdaptReport, AdaptSettings, adapt
from .backbones import Backbone, load_backbone
from .calibration import NormalCalibration
from .jobs import CancelToken, no_progress, sub_progress
from .memory_bank import MemoryBank
from .model import AnomalyModel, combine_levels, gaussian_blur
from .preprocess import PreparedSlice, prepare, restore
from .prompts import build_prompts, default_organ
from .synthesis import augment_normal

METHODS = ("adapted", "memory", "zero")


@dataclass
class DetectorSettings:
    method: str = "adapted"
    backbone: str = "efficientnet-lite2"
    weights: str | None = None
    input_size: int | None = None  # None: the backbone's own
    levels: tuple[int, ...] | None = None  # None: CNN strides 4/8/16, CLIP all hooked blocks
    metric: str = "cosine"
    aggregate_kernel: int = 3
    bank_max_per_level: int = 16384
    # Greedy coreset to this share of the reference patches (PatchCore): scoring cost falls with the bank's size.
    bank_coreset_fraction: float = 0.25
    # Augmented copies of each reference in the bank and the calibration. Off by default: on the development set
    # (2 folds x 5 seeds) they did not beat plain references (benchmarks/compare_methods.py, see README).
    ref_augmentations: int = 0
    smoothing_sigma: float = 4.0  # in pixels of a 256-pixel input
    image_score: str = "topk"  # "topk" (mean of the top 1% of in-body pixels) or "max"
    topk_fraction: float = 0.01
    fusion_weight: float = 0.5  # share of the memory bank in the adapted map
    restrict_to_body: bool = True  # air and table outside the patient are never anomalous
    modality: str = "OT"
    organ: str | None = None
    adapt: AdaptSettings = field(default_factory=AdaptSettings)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adapt"]["synthesis_kinds"] = list(self.adapt.synthesis_kinds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorSettings":
        d = dict(d)
        a = dict(d.pop("adapt", {}))
        if "synthesis_kinds" in a:
            a["synthesis_kinds"] = tuple(a["synthesis_kinds"])
        if d.get("levels") is not None:
            d["levels"] = tuple(d["levels"])
        return cls(**d, adapt=AdaptSettings(**a))


@dataclass
class ScoredImage:
    map: np.ndarray  # (H, W) float32, in units of the normal references' 99th percentile (0 = typical normal)
    score: float  # raw image score
    percentile: float  # percentile of normal, 0..100


class AnomalyDetector:
    cpu_batch = 4  # slices per forward pass on a CPU: small enough that a cancel is honoured within a second
    def __init__(self, settings: DetectorSettings, backbone: Backbone, device: torch.device):
        if settings.method not in METHODS:
            raise ValueError(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
        if settings.method == "zero" and not backbone.is_vision_language:
            raise ValueError(f"zero-shot scoring needs a vision-language backbone; {backbone.name} has no text encoder")
        self.settings = settings
        self.backbone = backbone
        self.device = device
        self.size = int(backbone.input_size if (backbone.fixed_input_size or not settings.input_size)
                        else settings.input_size)
        levels = settings.levels
        if levels is None:
            levels = (0, 1, 2) if not backbone.is_vision_language else tuple(range(len(backbone.level_dims)))
        self.levels = list(levels)
        text = None
        heads = None
        if settings.method in ("adapted", "zero"):
            if backbone.is_vision_language:
                prompts = build_prompts(settings.modality, settings.organ or default_organ(settings.modality))
                text = torch.stack([backbone.encode_text(prompts.normal).mean(0),
                                    backbone.encode_text(prompts.abnormal).mean(0)])
                heads = "text"
            else:
                heads = "linear"
        torch.manual_seed(settings.adapt.seed)  # adapter and head initialisation: same seed, same model
        self.model = AnomalyModel(backbone, self.levels, adapters=settings.method == "adapted", heads=heads,
                                  text_embeddings=text).to(device)
        self.model.input_size = self.size
        self.bank = MemoryBank(settings.metric, settings.bank_max_per_level, settings.aggregate_kernel,
                               settings.bank_coreset_fraction) \
            if settings.method in ("adapted", "memory") else None
        # Each map component is put on the normal references' scale before fusing: (v - median) / (p99 - median).
        self.component_scale: dict[str, tuple[float, float]] = {}
        self.calibration: NormalCalibration | None = None
        self.reference_hashes: list[str] = []
        self.adapt_report: AdaptReport | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------------- describe
    def describe(self) -> dict:
        return {"method": self.settings.method, "backbone": self.backbone.name, "weights": self.backbone.weights,
                "pretrained": self.backbone.pretrained, "device": str(self.device), "input_size": self.size,
                "levels": self.levels, "software": f"medad-viewer {__version__}"}

    # ------------------------------------------------------------------------------------------------------ fit
    def fit(self, references: Sequence[np.ndarray], progress: Callable[[float, str], None] = no_progress,
            cancel: CancelToken | None = None,
            abnormal: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> "AnomalyDetector":
        """references: normal slices in [0, 1] (any size). abnormal: optional (slice, mask) pairs as extra positives."""
        cancel = cancel or CancelToken()
        s = self.settings
        if s.method != "zero" and len(references) < 1:
            raise ValueError("pick at least one normal reference slice")
        t0 = time.monotonic()
        prepared = [prepare(r, self.size) for r in references]
        self.reference_hashes = [hashlib.sha1(np.ascontiguousarray(r, dtype=np.float32).tobytes()).hexdigest()[:16]
                                 for r in references]
        if s.method == "adapted":
            positives = []
            for img, mask in abnormal:
                p = prepare(img, self.size)
                m = prepare(mask.astype(np.float32), self.size).image > 0.5
                positives.append((p.image, m.astype(np.float32)))
            self.adapt_report = adapt(self.model, [p.image for p in prepared], [p.body for p in prepared], s.adapt,
                                      self.device, sub_progress(progress, 0.0, 0.8), cancel, positives)
        self.timings["adapt_s"] = time.monotonic() - t0
        cancel.raise_if_cancelled()
        progress(0.8, "Building the memory bank")
        self._fit_bank_and_calibrate(prepared, sub_progress(progress, 0.8, 1.0), cancel)
        self.timings["fit_s"] = time.monotonic() - t0
        progress(1.0, "Ready")
        return self

    def _augmented_references(self, prepared: list[PreparedSlice]) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
        rng = np.random.default_rng(self.settings.adapt.seed + 1)
        imgs, bodies, owners = [], [], []
        for i, p in enumerate(prepared):
            imgs.append(p.image)
            bodies.append(p.body)
            owners.append(i)
            for _ in range(self.settings.ref_augmentations):
                a, b = augment_normal(p.image, p.body, rng)
                imgs.append(a)
                bodies.append(b)
                owners.append(i)
        return imgs, bodies, owners

    @torch.no_grad()
    def _fit_bank_and_calibrate(self, prepared: list[PreparedSlice], progress, cancel: CancelToken) -> None:
        self.model.eval()
        if not prepared:  # zero-shot without references: raw probabilities, nothing to calibrate against
            self.component_scale = {"text": (0.0, 1.0)}
            self.calibration = None
            return
        imgs, bodies, owners = self._augmented_references(prepared)
        seg_all: list[list[torch.Tensor]] = []
        chunk = self.cpu_batch if self.device.type == "cpu" else 32
        for start in range(0, len(imgs), chunk):
            cancel.raise_if_cancelled()
            x = self._to_input(imgs[start: start + chunk])
            seg_all.append([f.detach() for f in self.model.features(x).seg])
        seg = [torch.cat([b[l] for b in seg_all]) for l in range(len(self.levels))]
        body_t = torch.from_numpy(np.stack(bodies).astype(np.float32)).unsqueeze(1).to(self.device)
        level_bodies = [F.interpolate(body_t, size=f.shape[-2:], mode="area").squeeze(1) > 0.25 for f in seg]
        owners_t = torch.tensor(owners)
        if self.bank is not None:
            self.bank.fit(seg, owners_t, level_bodies, seed=self.settings.adapt.seed)
        progress(0.5, "Calibrating on the references (leave-one-out)")
        # Leave-one-out raw components of every reference image, then the per-component normal scale.
        raw: dict[str, list[np.ndarray]] = {}
        n_refs = len(prepared)
        for i in range(n_refs):
            cancel.raise_if_cancelled()
            sel = [k for k, o in enumerate(owners) if o == i]
            comps = self._raw_components([imgs[k] for k in sel], exclude_owner=i if n_refs > 1 else None)
            for name, maps in comps.items():
                raw.setdefault(name, []).append(maps)
        body_all = np.stack(bodies)
        self.component_scale = {}
        for name, maps in raw.items():
            vals = np.concatenate(maps)[body_all].ravel()
            med, p99 = np.percentile(vals, [50, 99]) if vals.size else (0.0, 1.0)
            self.component_scale[name] = (float(med), float(max(p99 - med, 1e-6)))
        finals = self._fuse({name: np.concatenate(maps) for name, maps in raw.items()}, body_all)
        scores = [self._image_score(m, b) for m, b in zip(finals, body_all)]
        # Calibration per reference: the mean of its copies' scores would hide the spread; keep them all.
        self.calibration = NormalCalibration.from_normal(finals[body_all], np.array(scores))

    # ---------------------------------------------------------------------------------------------------- score
    def _to_input(self, imgs: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(imgs).astype(np.float32)).unsqueeze(1).to(self.device)
        return self.backbone.preprocess(x, self.size)

    @torch.no_grad()
    def _raw_components(self, imgs: Sequence[np.ndarray], exclude_owner: int | None = None) -> dict[str, np.ndarray]:
        """Per component, (B, S, S) smoothed raw maps."""
        x = self._to_input(imgs)
        feats = self.model.features(x)
        sigma = self.settings.smoothing_sigma * self.size / 256.0
        out: dict[str, torch.Tensor] = {}
        if self.bank is not None:
            out["bank"] = combine_levels(self.bank.score(feats.seg, exclude_owner=exclude_owner), self.size)
        if self.model.heads is not None:
            level_logits, _ = self.model.head_logits(feats)
            # Heads give the abnormal-minus-normal logit: its sigmoid is the two-class softmax P(abnormal).
            probs = [torch.sigmoid(l) for l in level_logits]
            out["text" if self.backbone.is_vision_language else "head"] = combine_levels(probs, self.size)
        return {k: gaussian_blur(v, sigma).cpu().numpy() for k, v in out.items()}

    def _fuse(self, comps: dict[str, np.ndarray], bodies: np.ndarray) -> np.ndarray:
        normed = {}
        for name, m in comps.items():
            med, scale = self.component_scale.get(name, (0.0, 1.0))
            normed[name] = (m - med) / scale
        if "bank" in normed and len(normed) > 1:
            other = next(v for k, v in normed.items() if k != "bank")
            w = self.settings.fusion_weight
            fused = w * normed["bank"] + (1 - w) * other
        else:
            fused = next(iter(normed.values()))
        # Air and table are never anomalous; below-typical values carry no evidence.
        if not self.settings.restrict_to_body:
            return np.maximum(fused, 0.0).astype(np.float32)
        return np.where(bodies, np.maximum(fused, 0.0), 0.0).astype(np.float32)

    def _image_score(self, m: np.ndarray, body: np.ndarray) -> float:
        vals = m[body] if (body.any() and self.settings.restrict_to_body) else m.ravel()
        if self.settings.image_score == "max" or vals.size == 0:
            return float(vals.max()) if vals.size else 0.0
        k = max(1, int(round(self.settings.topk_fraction * vals.size)))
        return float(np.partition(vals, vals.size - k)[-k:].mean())

    def score_prepared(self, prepared: Sequence[PreparedSlice]) -> list[ScoredImage]:
        if not prepared:
            return []
        comps = self._raw_components([p.image for p in prepared])
        bodies = np.stack([p.body for p in prepared])
        finals = self._fuse(comps, bodies)
        out = []
        for m, p, b in zip(finals, prepared, bodies):
            raw = self._image_score(m, b)
            pct = float(self.calibration.image_percentile(raw)) if self.calibration else float("nan")
            out.append(ScoredImage(restore(m, p), raw, pct))
        return out

    def score(self, images: Sequence[np.ndarray], batch_size: int = 8,
              progress: Callable[[float, str], None] = no_progress, cancel: CancelToken | None = None,
              on_result: Callable[[int, ScoredImage], None] | None = None) -> list[ScoredImage]:
        """Score slices in [0, 1]; `on_result(i, result)` is called as each arrives."""
        cancel = cancel or CancelToken()
        results: list[ScoredImage] = []
        for start in range(0, len(images), batch_size):
            cancel.raise_if_cancelled()
            batch = [prepare(im, self.size) for im in images[start: start + batch_size]]
            for j, r in enumerate(self.score_prepared(batch)):
                results.append(r)
                if on_result is not None:
                    on_result(start + j, r)
            progress(len(results) / len(images), f"Scored {len(results)} of {len(images)} slices")
        return results

    # ------------------------------------------------------------------------------------------------ save/load
    def save(self, path: str | os.PathLike) -> Path:
        """Write `<path>.safetensors` + `<path>.json` atomically; returns the JSON path."""
        from safetensors.torch import save_file

        base = Path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.adapter_state().items()}
        if self.bank is not None:
            tensors.update(self.bank.state())
        if self.calibration is not None:
            tensors.update({k: torch.from_numpy(np.asarray(v, dtype=np.float64))
                            for k, v in self.calibration.state().items()})
        sidecar = {
            "format": "medad-viewer-detector/1",
            **self.describe(),
            "weights_id": self.backbone.weights_id,
            "reference_hashes": self.reference_hashes,
            "settings": self.settings.to_dict(),
            "component_scale": self.component_scale,
            "adapt_report": None if self.adapt_report is None else asdict(self.adapt_report),
            "timings": self.timings,
        }
        st_path = base.with_suffix(".safetensors")
        js_path = base.with_suffix(".json")
        atomic_write(st_path, lambda tmp: save_file(tensors, tmp))
        atomic_write_json(js_path, sidecar)
        return js_path

    @classmethod
    def load(cls, path: str | os.PathLike, backbone: Backbone | None = None,
             device: torch.device | str = "cpu") -> "AnomalyDetector":
        from safetensors.torch import load_file

        base = Path(path)
        if base.suffix in (".json", ".safetensors"):
            base = base.with_suffix("")
        sidecar = json.loads(base.with_suffix(".json").read_text())
        settings = DetectorSettings.from_dict(sidecar["settings"])
        device = torch.device(device)
        if backbone is None:
            backbone = load_backbone(settings.backbone, settings.weights, device=device)
        if backbone.weights_id != sidecar["weights_id"]:
            raise ValueError(f"this adaptation was made with {sidecar['backbone']} ({sidecar['weights']}), "
                             f"not {backbone.name} ({backbone.weights})")
        det = cls(settings, backbone, device)
        tensors = load_file(str(base.with_suffix(".safetensors")))
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        det.model.load_state_dict(model_state, strict=False)
        det.model.eval()
        if det.bank is not None:
            det.bank.load_state({k: v for k, v in tensors.items() if k.startswith("bank.")}, device)
        cal = {k: v.numpy() for k, v in tensors.items() if k.startswith("calibration.")}
        det.calibration = NormalCalibration.from_state(cal) if cal else None
        det.component_scale = {k: tuple(v) for k, v in sidecar["component_scale"].items()}
        det.reference_hashes = sidecar["reference_hashes"]
        det.timings = sidecar.get("timings", {})
        return det


def fit_detector(references: Sequence[np.ndarray], settings: DetectorSettings | None = None,
                 backbone: Backbone | None = None, device: torch.device | str = "cpu",
                 progress: Callable[[float, str], None] = no_progress, cancel: CancelToken | None = None,
                 abnormal: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> AnomalyDetector:
    """Load the backbone if needed, then fit a detector on normal references."""
    settings = settings or DetectorSettings()
    device = torch.device(device)
    if backbone is None:
        backbone = load_backbone(settings.backbone, settings.weights, device=device)
    return AnomalyDetector(settings, backbone, device).fit(references, progress, cancel, abnormal)
