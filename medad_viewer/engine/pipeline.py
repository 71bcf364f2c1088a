"""The one path from normal reference slices to scored slices, used by `medad-viewer score`, `eval`, the window's
job and the benchmarks:

    reference slices (SliceRef: a loaded series and a slice index) + a target (a series, or a folder's images)
      -> read: every slice through its own series' intensity normaliser, the one place where a study's pixels
         become the engine's [0, 1]
      -> fit: an AnomalyDetector on the normal references (or a fitted one the caller has cached for these pixels)
      -> score: slice by slice, batch by batch (`engine.series_scores.score_series`: through-plane step on volumes, partial
         results as they come, cancel between batches)
      -> FitAndScore: the detector, the scores (engine.series_scores.SliceScore, one record type), and the timings.

Progress runs 0 .. `fit_share` while fitting and on to 1 while scoring; a cancel token is checked between stages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .backbones import Backbone, load_backbone
from .detector import AnomalyDetector, DetectorSettings
from .jobs import CancelToken, no_progress, sub_progress
from .preprocess import normalizer_for_series
from .series_scores import SeriesScores, SliceScore, score_series

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class SliceRef:
    """One slice of a loaded series (io.Series) given to the engine: a normal reference, or with `mask` (the
    lesion, bool, the slice's shape) an abnormal example."""

    series: Any
    index: int
    mask: np.ndarray | None = None


class Normalised:
    """Slices of series in [0, 1], each series through its own normaliser (`normalizer_for_series`), made once per
    series: the engine's one normalisation point."""

    def __init__(self) -> None:
        self._norms: dict[int, tuple[Any, Callable[[np.ndarray], np.ndarray]]] = {}

    def normalizer(self, series) -> Callable[[np.ndarray], np.ndarray]:
        got = self._norms.get(id(series))
        if got is None or got[0] is not series:
            got = self._norms[id(series)] = (series, normalizer_for_series(series))
        return got[1]

    def __call__(self, series, index: int) -> np.ndarray:
        return self.normalizer(series)(series.slice(index))


def read_references(references: Sequence[SliceRef]) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    """The normal references and the abnormal examples ((slice, mask as float32) pairs; an example whose mask is
    empty or of another shape is left out), in [0, 1]."""
    read = Normalised()
    normals, abnormal = [], []
    for ref in references:
        img = read(ref.series, ref.index)
        if ref.mask is None:
            normals.append(img)
        elif ref.mask.shape == img.shape and ref.mask.any():
            abnormal.append((img, ref.mask.astype(np.float32)))
    return normals, abnormal


class ImageFolder:
    """Separate images (each the first slice of its own series: a folder of PNGs, the test images of `eval`)
    scored as the slices of one series that is not a volume (no through-plane step), each through its own
    normaliser."""

    is_volume = False

    def __init__(self, items: Sequence[Any]):
        self.items = list(items)
        self.num_slices = len(self.items)
        self._read = Normalised()

    def slice(self, i: int) -> np.ndarray:
        return self._read(self.items[i], 0)


def fit_detector(references: Sequence[np.ndarray], settings: DetectorSettings | None = None,
                 backbone: Backbone | None = None, device: torch.device | str = "cpu",
                 progress: Progress = no_progress, cancel: CancelToken | None = None,
                 abnormal: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> AnomalyDetector:
    """A detector fitted on normal reference slices already in [0, 1] (`read_references`), the backbone loaded
    when not given."""
    settings = settings or DetectorSettings()
    device = torch.device(device)
    if backbone is None:
        backbone = load_backbone(settings.backbone, settings.weights, device=device)
    return AnomalyDetector(settings, backbone, device).fit(references, progress, cancel, abnormal)


@dataclass
class FitAndScore:
    detector: AnomalyDetector
    scores: SeriesScores  # empty of results when the caller took them through `on_result` with keep=False
    from_cache: bool
    fit_seconds: float
    score_seconds: float  # all slices


def fit_and_score(references: Sequence[SliceRef], target, settings: DetectorSettings | None = None, *,
                  indices: Sequence[int] | None = None, backbone: Backbone | None = None,
                  device: torch.device | str = "cpu", progress: Progress = no_progress,
                  cancel: CancelToken | None = None, fit_share: float = 0.7, batch_size: int = 8,
                  cached: Callable[[list[np.ndarray], list], AnomalyDetector | None] | None = None,
                  cached_share: float = 0.05,
                  on_fitted: Callable[[AnomalyDetector, bool], None] | None = None,
                  on_result: Callable[[SliceScore], None] | None = None, keep: bool = True) -> FitAndScore:
    """Fit on `references`, then score `target` (an io.Series, every slice or `indices`; or a sequence of series
    of one image each, scored as a folder of unrelated images: `ImageFolder`).

    cached(normals, abnormal): a detector the caller fitted before on these very pixels, or None to fit one
    (progress then runs to `cached_share` only). on_fitted(detector, from_cache): told before scoring starts.
    on_result / keep: as `score_series` (results already delivered stay valid when cancelled)."""
    settings = settings or DetectorSettings()
    cancel = cancel or CancelToken()
    progress(0.0, "Reading the reference slices")
    normals, abnormal = read_references(references)
    if settings.method != "zero" and not normals:
        raise ValueError("pick at least one normal reference slice")
    cancel.raise_if_cancelled()
    t0 = time.monotonic()
    detector = cached(normals, abnormal) if cached is not None else None
    from_cache = detector is not None
    if detector is None:
        detector = fit_detector(normals, settings, backbone, device, sub_progress(progress, 0.0, fit_share), cancel, abnormal)
    else:
        fit_share = cached_share
        progress(fit_share, "Reusing the adaptation cached for these references")
    cancel.raise_if_cancelled()
    fit_seconds = time.monotonic() - t0
    if on_fitted is not None:
        on_fitted(detector, from_cache)
    scores = score_target(detector, target, indices=indices, progress=sub_progress(progress, fit_share, 1.0),
                          cancel=cancel, batch_size=batch_size, on_result=on_result, keep=keep)
    return FitAndScore(detector, scores, from_cache, fit_seconds, scores.seconds)


def score_target(detector: AnomalyDetector, target, *, indices: Sequence[int] | None = None,
                 progress: Progress = no_progress, cancel: CancelToken | None = None, batch_size: int = 8,
                 on_result: Callable[[SliceScore], None] | None = None, keep: bool = True) -> SeriesScores:
    """The scoring half of `fit_and_score`, for a detector fitted once and used on many series (the batch
    worklist): `target` an io.Series or a sequence of one-image series."""
    series, normalizer = target, None
    if isinstance(target, (list, tuple)):
        series, normalizer = ImageFolder(target), _as_read
    return score_series(detector, series, indices, normalizer=normalizer, batch_size=batch_size, progress=progress,
                        cancel=cancel, on_result=on_result, keep=keep)


def _as_read(pixels01: np.ndarray) -> np.ndarray:
    """An `ImageFolder`'s slices come normalised already."""
    return pixels01
