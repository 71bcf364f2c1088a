"""Few-shot evaluation on the BMAD / MVFA-AD folder layout, over several seeds (several picks of references).

    DATA/train/good/img/*.png          pool of normal references
    DATA/valid/...                     optional; never touched by the test metrics
    DATA/test/good/img/*.png           normal test images
    DATA/test/Ungood/img/*.png         abnormal test images
    DATA/test/Ungood/anomaly_mask/*.png  pixel masks (optional: without them pixel metrics are null)
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from .backbones import load_backbone, resolve_device
from .detector import AnomalyDetector, DetectorSettings
from .jobs import CancelToken, no_progress, sub_progress
from .metrics import aupro, f1_max, image_auroc, pixel_auroc
from .pipeline import Normalised, SliceRef, fit_and_score
from .records import SliceScore

_IMG_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")


def _natural(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in _IMG_EXT), key=_natural)


def read_series(path: Path):
    """One image file as `score` and the viewer open it: a series of one slice."""
    from ..io import load_study

    study = load_study(str(path))
    if not study.series:
        detail = study.errors[0].message if study.errors else "not a readable image"
        raise ValueError(f"{path}: {detail}")
    return study.series[0]


def read_image01(path: Path) -> np.ndarray:
    """One image file in [0, 1], as the engine sees it (`engine.pipeline`'s normalisation)."""
    return Normalised()(read_series(path), 0)


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"{path}: not a readable mask")
    if m.shape != shape:
        m = cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return m > 127


class BmadDataset:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.pool = _list_images(self.root / "train" / "good" / "img")
        good = _list_images(self.root / "test" / "good" / "img")
        bad = _list_images(self.root / "test" / "Ungood" / "img")
        if not self.pool:
            raise ValueError(f"{self.root}: no reference pool at train/good/img")
        if not good or not bad:
            raise ValueError(f"{self.root}: need test/good/img and test/Ungood/img images")
        mask_dir = self.root / "test" / "Ungood" / "anomaly_mask"
        self.has_masks = mask_dir.is_dir() and any(mask_dir.iterdir())
        self.test_paths = good + bad
        self.labels = np.array([0] * len(good) + [1] * len(bad))
        self.series = [read_series(p) for p in self.test_paths]  # each test image, scored as a folder of images
        self.masks = None
        if self.has_masks:
            masks = []
            for p, lab, s in zip(self.test_paths, self.labels, self.series):
                shape = (s.rows, s.columns)
                if lab == 0:
                    masks.append(np.zeros(shape, bool))
                else:
                    cand = [mask_dir / p.name] + [mask_dir / (p.stem + ext) for ext in _IMG_EXT]
                    mp = next((c for c in cand if c.is_file()), None)
                    masks.append(_read_mask(mp, shape) if mp else np.zeros(shape, bool))
            self.masks = masks

    def pick_references(self, k: int, seed: int) -> list[Path]:
        rng = np.random.default_rng(seed)
        k = min(k, len(self.pool))
        return [self.pool[i] for i in sorted(rng.choice(len(self.pool), size=k, replace=False))]


def run_fold(ds: BmadDataset, references: Sequence[Path], settings: DetectorSettings, backbone, device,
             progress: Callable[[float, str], None] = no_progress, cancel: CancelToken | None = None
             ) -> tuple[AnomalyDetector, list[SliceScore], float, float]:
    """One few-shot run through the one fit-and-score path (`engine.pipeline.fit_and_score`): fit on the reference
    files, score every test image. Returns the detector, the results in test order, fit seconds and scoring
    seconds per image."""
    refs = [SliceRef(read_series(p), 0) for p in references]
    run = fit_and_score(refs, ds.series, copy.deepcopy(settings), backbone=backbone, device=device,
                        progress=progress, cancel=cancel, fit_share=0.7, batch_size=8)
    results = [run.scores.results[i] for i in range(len(ds.series))]
    return run.detector, results, run.fit_seconds, run.score_seconds / len(ds.series)


def evaluate(data_dir: str | Path, k: int = 4, seeds: Sequence[int] = (0, 1, 2),
             settings: DetectorSettings | None = None, device: str = "auto",
             progress: Callable[[float, str], None] = no_progress, cancel: CancelToken | None = None,
             dataset: BmadDataset | None = None, backbone=None) -> dict:
    """Mean and spread of the metrics over seeds; each seed picks its own k references from train/good."""
    settings = settings or DetectorSettings()
    dev = resolve_device(device)
    ds = dataset or BmadDataset(data_dir)
    if backbone is None:
        backbone = load_backbone(settings.backbone, settings.weights, device=dev)
    per_seed = []
    for si, seed in enumerate(seeds):
        base = si / len(seeds)
        step = 1 / len(seeds)
        s = replace(settings, adapt=replace(settings.adapt, seed=int(seed)))
        refs = ds.pick_references(k, seed)
        det, results, adapt_s, score_s = run_fold(ds, refs, s, backbone, dev,
                                                  sub_progress(progress, base, base + step), cancel)
        scores = np.array([r.score for r in results])
        report = det.adapt_report
        row = {"seed": int(seed), "references": [p.name for p in refs],
               "image_auroc": image_auroc(ds.labels, scores), "f1_max": f1_max(ds.labels, scores),
               "pixel_auroc": None, "aupro": None, "adapt_s": adapt_s, "score_s_per_image": score_s,
               "steps": None if report is None else report.steps,
               "stopped_because": None if report is None else report.stopped_because}
        if ds.masks is not None:
            maps = np.stack([r.map for r in results])
            masks = np.stack(ds.masks)
            row["pixel_auroc"] = pixel_auroc(masks, maps)
            row["aupro"] = aupro(masks, maps)
        per_seed.append(row)
        progress(base + step, f"seed {seed}: image AUROC {row['image_auroc']:.3f}"
                 + (f", pixel AUROC {row['pixel_auroc']:.3f}" if row["pixel_auroc"] is not None else ""))
    out: dict = {"dataset": str(ds.root), "backbone": backbone.name, "weights": backbone.weights,
                 "method": settings.method, "k": k, "seeds": [int(s) for s in seeds], "device": str(dev)}
    for key in METRIC_KEYS + ("adapt_s", "score_s_per_image"):
        vals = [r[key] for r in per_seed if r[key] is not None]
        out[key] = float(np.mean(vals)) if vals else None
        if key in METRIC_KEYS:
            out[f"{key}_min"] = float(np.min(vals)) if vals else None
            out[f"{key}_max"] = float(np.max(vals)) if vals else None
    out["per_seed"] = per_seed
    return out
