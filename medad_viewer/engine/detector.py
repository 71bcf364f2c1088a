"""The fitted anomaly detector: fit on normal references, score slices, save and load.

Methods: `memory` (training-free memory bank), `zero` (zero-shot text alignment, vision-language backbones only) and
`adapted` (few-shot adaptation; final map = adapted head map fused with the memory bank on adapted features).

This module is the orchestrator: `AnomalyDetector.fit` and `.score` run a slice through the stages, each a section
of the class below in this order, each calling down into its own module and never back:

1. prepare      `preprocess.prepare`: square, backbone-sized, body mask and scoring region
2. features     `model.AnomalyModel.features`: the frozen backbone's levels ...
3. adapt        ... through the adapters (method `adapted`; trained at fit time by `adapt.adapt`)
4. map          components: distances to the `memory_bank` (`memory`, `adapted`), the model's heads (`adapted`,
                `zero`); then `maps`: to the input grid, smoothed within the region, on the normal scale, fused
5. image score  `image_score.image_scores`: one number per slice from its map
6. calibrate    at fit time the normal scale of each map component and a `calibration.NormalCalibration` from the
                references held out (leave-one-out, stages 2-5 on each); at score time the percentile of normal
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
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
from .defaults import DEFAULT_BACKBONE, DEFAULT_METHOD
from .image_score import image_scores
from .jobs import CancelToken, no_progress, sub_progress
from .maps import cells_touching, combine_levels, fuse, guided_within, hyperintensity_gate, smooth_within
from .memory_bank import MemoryBank, neighbourhood_distance, patch_features
from .model import AnomalyModel, LevelFeatures, class_text_embeddings
from .preprocess import RADIOGRAPH_MODALITIES, PreparedSlice, image_kind, prepare, restore
from .records import SliceScore
from .symmetry import midline, on_grid, reflect, reflection_matrix

METHODS = ("adapted", "memory", "zero")
DETECTOR_FORMAT = "medad-viewer-detector/5"  # 3: image kind, mirror, intensity term; 4: hyperintensity gate;
# 5: the flip map a 3 x 3 convolution
SCORING_REGIONS = ("anatomy", "body", "image")
# The flip map (`mirror_pass` "features"): each cell's mirrored features from its 3 x 3 neighbourhood, ridge
# regularised (on held-out whole-head FLAIR slices, cosine to the true mirrored features 0.976 at ridge 0.1, 0.975 at
# 0.01; a 5 x 5 neighbourhood over-fits 4 references: 0.962)
FLIP_MAP_KERNEL, FLIP_MAP_RIDGE = 3, 0.1
ADAPT_END = 0.8  # fit's progress: adaptation takes 0 .. ADAPT_END, the memory bank and calibration the rest


@dataclass
class DetectorSettings:
    method: str = DEFAULT_METHOD
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    input_size: int | None = None  # None: the backbone's own
    levels: tuple[int, ...] | None = None  # None: CNN strides 4 and 8, CLIP all hooked blocks
    patch_stride: int = 8  # CNNs: the patch grid's stride in input pixels (each level is brought to this grid)
    metric: str = "cosine"
    aggregate_kernel: int = 3
    # Mirrored copies of the references in the bank: anatomy is near-symmetric, so a mirrored normal slice is another
    # plausible normal slice (dev set, k=4: image AUROC 0.863 vs 0.858 on FLAIR, 0.650 vs 0.614 whole-head; pixel
    # 0.871 vs 0.862 whole-head). With one reference its mirror also calibrates the normal scale.
    bank_flip: bool = True
    # Above this many patches the bank is a greedy coreset of this size, so scoring time stays flat in k.
    bank_max_patches: int = 8192
    smoothing_sigma: float = 2.0  # in pixels of a 256-pixel input
    # > 0: the map refined by a guided filter (the slice as guide) of this radius, in pixels of a 256-pixel input: a
    # lesion's colour follows its edges rather than a blur (issue 19, LGG same-study, seed 0: slice / pixel AUROC
    # 0.917 / 0.976 with sigma 4 and no filter, 0.922 / 0.980 with sigma 2 and this filter; compare_methods.py's
    # "no-guided" variant)
    guided_radius: int = 8
    guided_eps: float = 0.001
    # "local_max": the largest mean over a small fixed window; "max": the largest pixel; "top": the mean of the
    # highest `image_score_top` share; "mean": the region's mean; "auto": by the image kind (`resolved_settings`)
    image_score: str = "auto"
    image_score_window: int = 13  # pixels of a 256-pixel input (about 1/20 of the field of view)
    image_score_top: float = 0.01  # "top": the share of the region's pixels averaged
    # Share of the slice's own median map value, where above the references' median (0), subtracted from its score:
    # a slice far from every reference everywhere comes from a level or view the references do not cover; a lesion
    # stands out of its own slice. Below 0 (a slice as close to the references as they are to each other) nothing
    # is added, so a slice like a reference never scores higher for it.
    # 0 since the slice's own mirror joined (issue 19): the mirror already discounts what is unlike the references
    # everywhere in the slice; compare_methods.py's "memory-contrast1" variant measures the alternative.
    image_score_contrast: float = 0.0
    # Where anomalies are looked for: "anatomy" (inside the skull on head MR, else the body), "body", or "image".
    scoring_region: str = "anatomy"
    fusion_weight: float = 0.5  # share of the memory bank in the adapted map
    # The slice's own mirror image (about its symmetry axis) as a position-matched reference: "off", or how its
    # patch distance joins the bank's: "min" (a patch like its other side is normal), "mean", "geo".
    self_mirror: str = "auto"
    mirror_radius: int = 1  # cells: a patch is compared with the mirrored patches within this many cells
    # "*_gated": the mirror's distance x (bank distance here / bank distance at the mirrored place) ** this power
    # where the mirrored place is the more unusual one, so the healthy side of a one-sided lesion is not lit up
    mirror_gate_power: float = 2.0
    # How the mirror's patches are made: "features" (default), from the slice's own patch features, mapped by the
    # backbone's flip map (a 3 x 3 convolution fitted at fit time from the references and their left-right flipped
    # copies: a CNN's features of a flipped image are its features flipped with its oriented channels exchanged,
    # each cell's partly from its neighbours) and moved to their reflection on the grid, no second forward pass;
    # "image", the reflected slice through the backbone again (twice the forward pass; on 2 CPU cores 2.5 x the
    # forward pass against 1.4 x). compare_methods.py's "mirror-image" variant measures it against the default.
    mirror_pass: str = "features"
    # On a volume (`engine.series_scores.score_series`), one symmetry-axis angle for all its slices, the median of
    # those found on 9 slices spread over it (`volume_midline_angle`): the head's plane of symmetry cuts parallel
    # slices along parallel lines, and a slice's own angle is thrown off by a lesion or the skull base (on the LGG
    # volumes the angles found slice by slice spread by 5 degrees, interquartile, within one volume). Each slice
    # then searches only the axis's position (1.05 ms a slice, against 1.5 for the position and the angle). False:
    # every slice its own angle.
    volume_midline: bool = True
    # > 0: a patch match also costs (w² / 2) x the squared difference of the two patches' mean intensities ([0, 1]
    # units of the prepared slice), on top of 1 - cosine similarity, which alone is blind to brightness. None: 0.
    # It was on (4) for FLAIR series until the hyperintensity gate below did its work better: with the gate, on
    # FLAIR, the term costs image AUROC on every set (LGG other-patient 0.898 against 0.925, BRATS FLAIR 0.987 against
    # 0.991, LGG same-study 0.952 against 0.960) for at most 0.004 of pixel AUROC; on T1c it costs (BRATS T1c image
    # AUROC 0.905 -> 0.832 at 4). compare_methods.py's "intensity4" variant measures it.
    intensity_weight: float | None = None
    bank_intensity: bool = True  # the intensity term in the bank's matches too (else only in the mirror's)
    # > 0: each map pixel counts in full only where the slice is brighter than the median of its own scoring region
    # by this many interquartile ranges, and keeps `hyperintensity_floor` of its value where it is no brighter than
    # that median (linear between). A FLAIR lesion is hyperintense (Meissen et al. 2021), while the patch grid (8 px)
    # and smoothing spread a lesion's distance onto the normal tissue around it. None: by the MR sequence
    # (`resolved_settings`): FLAIR_HYPERINTENSITY_GATE on FLAIR, else 0 (off).
    hyperintensity_gate: float | None = None
    hyperintensity_floor: float = 0.25
    # Across the slices of a volume (`engine.series_scores.score_series`): "neighbours", a slice's score is at most the
    # higher of its two neighbours' (within `through_plane_gap` slices), so only what an adjacent slice confirms
    # keeps its height (a lesion is three-dimensional; a one-slice spike of the map is not); "off"; "auto": by
    # the image kind (`resolved_settings`). The maps are not changed.
    through_plane: str = "auto"
    through_plane_gap: int = 2
    modality: str = "OT"
    sequence: str | None = None  # the MR sequence when the series says ("FLAIR", `io.series_sequence`), else None
    organ: str | None = None
    adapt: AdaptSettings = field(default_factory=AdaptSettings)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adapt"]["synthesis_kinds"] = list(self.adapt.synthesis_kinds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorSettings":
        """Unknown keys (settings of an older version, kept in a session) are ignored."""
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in dict(d).items() if k in known}
        a = dict(d.pop("adapt", None) or {})
        known_a = {f.name for f in fields(AdaptSettings)}
        a = {k: v for k, v in a.items() if k in known_a}
        if "synthesis_kinds" in a:
            a["synthesis_kinds"] = tuple(a["synthesis_kinds"])
        if d.get("levels") is not None:
            d["levels"] = tuple(d["levels"])
        return cls(**d, adapt=AdaptSettings(**a))


FLAIR_HYPERINTENSITY_GATE = 2.0


def resolved_settings(settings: DetectorSettings, kind: str | None = None) -> DetectorSettings:
    """`settings` with its "auto" values settled for the image kind ("section" or "radiograph").

    Cross-sections (head and body CT/MR): the slice's own mirror joins the bank (most lesions are one-sided) and
    the image score is the largest local mean (a lesion is local). Radiographs (chest X-rays): no mirror (the heart
    is not), and the image score is the mean of the map over the body (pneumonia and other opacities are diffuse).
    The hyperintensity gate, when None, is settled by the sequence alone (on FLAIR), the intensity term to 0 (kind
    None settles only those)."""
    changes = {}
    flair = (settings.sequence or "").upper() == "FLAIR" and (settings.modality or "OT").upper() in ("MR", "OT")
    if settings.intensity_weight is None:
        changes["intensity_weight"] = 0.0
    if settings.hyperintensity_gate is None:
        changes["hyperintensity_gate"] = FLAIR_HYPERINTENSITY_GATE if flair else 0.0
    if kind is None:
        return replace(settings, **changes) if changes else settings
    section = kind != "radiograph"
    if settings.self_mirror == "auto":
        changes["self_mirror"] = "geo_gated" if section else "off"
    if settings.image_score == "auto":
        changes["image_score"] = "local_max" if section else "mean"
    if settings.through_plane == "auto":
        changes["through_plane"] = "neighbours" if section else "off"
    return replace(settings, **changes) if changes else settings


def pixels_hash(pixels: np.ndarray) -> str:
    """A slice's identity by its pixels as given to `fit` / `score` ([0, 1] float32): `reference_hashes`, which slices
    of a series are the references (`engine.series_scores.score_series`), the adaptation cache's key."""
    return hashlib.sha1(np.ascontiguousarray(pixels, dtype=np.float32).tobytes()).hexdigest()[:16]


class AnomalyDetector:
    """Fit on normal references, then score slices. `fit` and `score` come first and read as the pipeline; the
    stages follow in pipeline order (prepare, features, adapt, map, image score, calibrate), then save and load."""

    cpu_batch = 4  # slices per forward pass on a CPU: small enough that a cancel is honoured within a second

    def __init__(self, settings: DetectorSettings, backbone: Backbone, device: torch.device):
        if settings.method not in METHODS:
            raise ValueError(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
        if settings.method == "zero" and not backbone.is_vision_language:
            raise ValueError(f"zero-shot scoring needs a vision-language backbone; {backbone.name} has no text encoder")
        if settings.scoring_region not in SCORING_REGIONS:
            raise ValueError(f"unknown scoring region {settings.scoring_region!r}; choose one of "
                             f"{', '.join(SCORING_REGIONS)}")
        self.settings = settings = resolved_settings(settings)  # the intensity term: the bank needs it now
        self.backbone = backbone
        self.device = device
        self.size = int(backbone.input_size if (backbone.fixed_input_size or not settings.input_size)
                        else settings.input_size)
        levels = settings.levels
        if levels is None:
            levels = (0, 1) if not backbone.is_vision_language else tuple(range(len(backbone.level_dims)))
        self.levels = list(levels)
        text = None
        heads = None
        if settings.method in ("adapted", "zero"):
            if backbone.is_vision_language:
                text = class_text_embeddings(backbone, settings.modality, settings.organ)
                heads = "text"
            else:
                heads = "linear"
        torch.manual_seed(settings.adapt.seed)  # adapter and head initialisation: same seed, same model
        self.model = AnomalyModel(backbone, self.levels, adapters=settings.method == "adapted", heads=heads,
                                  text_embeddings=text, input_size=self.size).to(device)
        self.bank = MemoryBank(settings.metric, settings.bank_max_patches,
                               settings.intensity_weight if settings.bank_intensity else 0.0) \
            if settings.method in ("adapted", "memory") else None
        # Each map component is put on the normal references' scale before fusing: (v - median) / (p99 - median).
        self.component_scale: dict[str, tuple[float, float]] = {}
        self.calibration: NormalCalibration | None = None
        self.reference_hashes: list[str] = []
        self.adapt_report: AdaptReport | None = None
        self.timings: dict[str, float] = {}
        # (W, b): the patch features of the slice's mirror image ~ conv(its features, W) + b, reflected on the grid
        # (`mirror_pass` "features"; fitted with the memory bank)
        self.flip_map: tuple[torch.Tensor, torch.Tensor] | None = None
        # per reference, the flip map fitted without it: calibration only (not saved)
        self.calibration_flip_maps: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        # "section" or "radiograph" (`preprocess.image_kind`): from the modality, or for plain images from the
        # references at fit time; None until then. It settles the "auto" settings (`resolved_settings`).
        self.kind: str | None = None
        if settings.method == "zero" or (settings.modality or "OT").upper() != "OT":
            self._resolve_kind([])

    def _resolve_kind(self, prepared: Sequence[PreparedSlice]) -> None:
        self.kind = image_kind(self.settings.modality, prepared)
        self.settings = resolved_settings(self.settings, self.kind)

    def describe(self) -> dict:
        return {"method": self.settings.method, "kind": self.kind, "backbone": self.backbone.name, "weights": self.backbone.weights,
                "pretrained": self.backbone.pretrained, "device": str(self.device), "input_size": self.size,
                "levels": self.levels, "software": f"medad-viewer {__version__}",
                "settings": self.settings.to_dict()}  # as they ran: "auto" values settled for the kind and sequence

    # ------------------------------------------------------------------------------------------------------ fit
    def fit(self, references: Sequence[np.ndarray], progress: Callable[[float, str], None] = no_progress,
            cancel: CancelToken | None = None,
            abnormal: Sequence[tuple[np.ndarray, np.ndarray]] = ()) -> "AnomalyDetector":
        """references: normal slices in [0, 1] (any size). abnormal: optional (slice, mask) pairs as extra positives.

        prepare the references -> adapt the model on them (method `adapted`) -> fill the memory bank with their
        features (and their mirrored copies') -> calibrate on the held-out copies."""
        cancel = cancel or CancelToken()
        s = self.settings
        if s.method != "zero" and len(references) < 1:
            raise ValueError("pick at least one normal reference slice")
        t0 = time.monotonic()
        prepared = [self._prepare(r) for r in references]
        self._resolve_kind(prepared)
        if self.kind == "radiograph" and (s.modality or "OT").upper() not in RADIOGRAPH_MODALITIES:
            prepared = [replace(p, region=p.body) for p in prepared]  # a radiograph's body, as `prepare` gives it
        self.reference_hashes = [pixels_hash(r) for r in references]
        if s.method == "adapted":
            self._adapt(prepared, abnormal, sub_progress(progress, 0.0, ADAPT_END), cancel)
        self.timings["adapt_s"] = time.monotonic() - t0
        cancel.raise_if_cancelled()
        progress(ADAPT_END, "Building the memory bank")
        after_adapt = sub_progress(progress, ADAPT_END, 1.0)
        self.model.eval()
        if prepared:
            mirrored = [self._mirrored(p) for p in prepared] if s.bank_flip else []
            if self.bank is not None:
                self._fit_bank(prepared + mirrored, cancel, len(prepared) if mirrored else 0)
            after_adapt(0.5, "Calibrating on the references (leave-one-out)")
            # Normal slices the bank is scored on without their own copies: the mirrored references and, for the
            # memory bank (no adapters trained on them), the references themselves too: twice the samples for the
            # normal scale (LGG same-study, 5 seeds: slice AUROC 0.946 vs 0.941, normal slices flagged 5.1 % vs
            # 5.9 %, lesion slices 76.8 % vs 76.4 %; rank-invariant elsewhere).
            both = bool(mirrored) and s.method == "memory" and len(prepared) > 1  # one: its mirror stands in
            self._calibrate(prepared + mirrored if both else (mirrored or prepared), len(prepared), cancel)
        else:  # zero-shot without references: raw probabilities, nothing to calibrate against
            self.component_scale = {"text": (0.0, 1.0)}
            self.calibration = None
        self.timings["fit_s"] = time.monotonic() - t0
        progress(1.0, "Ready")
        return self

    # ---------------------------------------------------------------------------------------------------- score
    def score(self, images: Sequence[np.ndarray], batch_size: int = 8,
              progress: Callable[[float, str], None] = no_progress, cancel: CancelToken | None = None,
              on_result: Callable[[int, SliceScore], None] | None = None,
              midline_angle: float | None = None) -> list[SliceScore]:
        """Score slices in [0, 1], each result indexed by its position in `images`; `on_result(i, result)` is
        called as each arrives. midline_angle: the slices are of one volume whose symmetry axis has this angle
        (`engine.series_scores.volume_midline_angle`)."""
        cancel = cancel or CancelToken()
        results: list[SliceScore] = []
        for start in range(0, len(images), batch_size):
            cancel.raise_if_cancelled()
            batch = [self._prepare(im, midline_angle) for im in images[start: start + batch_size]]
            for j, r in enumerate(self.score_prepared(batch, cancel)):
                r.index = start + j
                results.append(r)
                if on_result is not None:
                    on_result(start + j, r)
            progress(len(results) / len(images), f"Scored {len(results)} of {len(images)} slices")
        return results

    def score_prepared(self, prepared: Sequence[PreparedSlice], cancel: CancelToken | None = None
                       ) -> list[SliceScore]:
        """Prepared slices -> features -> (adapters) -> map -> image score -> percentile of normal; each map back
        on its slice's own pixel grid. `cancel` is also checked between the stages of the batch."""
        if not prepared:
            return []
        regions = np.stack([self.region_of(p) for p in prepared])
        finals = self._fuse(self._component_maps(prepared, regions, cancel=cancel), regions)
        out = []
        for m, p, raw in zip(finals, prepared, self._image_scores(finals, regions)):
            out.append(SliceScore(len(out), raw, self.percentile_of(raw), restore(m, p)))
        return out

    # ----------------------------------------------------------------------------------------------- 1 prepare
    def _prepare(self, pixels01: np.ndarray, midline_angle: float | None = None) -> PreparedSlice:
        p = prepare(pixels01, self.size, self.settings.modality, self.kind)
        p.midline_angle = midline_angle
        return p

    def region_of(self, p: PreparedSlice) -> np.ndarray:
        """Where this detector looks for anomalies in a prepared slice."""
        if self.settings.scoring_region == "anatomy":
            return p.region
        if self.settings.scoring_region == "body":
            return p.body
        return np.ones_like(p.body)

    @staticmethod
    def _mirrored(p: PreparedSlice) -> PreparedSlice:
        """The slice mirrored left-right, with its masks."""
        return PreparedSlice(np.ascontiguousarray(p.image[:, ::-1]), np.ascontiguousarray(p.body[:, ::-1]),
                             np.ascontiguousarray(p.region[:, ::-1]), p.original_shape, p.pad)

    def _to_input(self, imgs: Sequence[np.ndarray]) -> torch.Tensor:
        """Prepared (S, S) images -> the backbone's (B, 3, S, S) input on this detector's device."""
        x = torch.from_numpy(np.stack(imgs).astype(np.float32)).unsqueeze(1).to(self.device)
        return self.backbone.preprocess(x, self.size)

    # ---------------------------------------------------------------------------------- 2 features, 3 adapters
    def _features(self, prepared: Sequence[PreparedSlice]) -> LevelFeatures:
        """The model's level features of prepared slices: the frozen backbone's, through the adapters if any."""
        return self.model.features(self._to_input([p.image for p in prepared]))

    # ---------------------------------------------------------------------------------------- 3 adapt (fit only)
    def _adapt(self, prepared: list[PreparedSlice], abnormal: Sequence[tuple[np.ndarray, np.ndarray]],
               progress: Callable[[float, str], None], cancel: CancelToken) -> None:
        """Train the model's adapters and heads on the prepared references (and marked abnormal slices)."""
        positives = []
        for img, mask in abnormal:
            p = self._prepare(img)
            m = prepare(mask.astype(np.float32), self.size).image > 0.5
            positives.append((p.image, m.astype(np.float32)))
        self.adapt_report = adapt(self.model, [p.image for p in prepared], [self.region_of(p) for p in prepared],
                                  self.settings.adapt, self.device, progress, cancel, positives)

    # ----------------------------------------------------------------------------------------------------- 4 map
    @torch.no_grad()
    def _fit_bank(self, in_bank: list[PreparedSlice], cancel: CancelToken, n_mirrored: int = 0) -> None:
        """At fit time: the memory bank holds the patch features of `in_bank` (slice i is owner i) that touch the
        scoring region. n_mirrored > 0: `in_bank` is n references then their n mirrored copies, from which the flip
        map is fitted (`mirror_pass` "features"; without mirrored copies the mirror stays a second forward pass)."""
        chunks = []
        step = self.cpu_batch if self.device.type == "cpu" else 32
        for start in range(0, len(in_bank), step):
            cancel.raise_if_cancelled()
            part = in_bank[start: start + step]
            chunks.append(self._patches(self._features(part).seg, part))
        patches = torch.cat(chunks)
        regions = torch.from_numpy(np.stack([self.region_of(p) for p in in_bank])).to(self.device)
        keep = cells_touching(regions, patches.shape[-1])  # pure air is never scored: no need to keep it
        if self.settings.mirror_pass == "features" and n_mirrored:
            n = n_mirrored  # the references, then their mirrored copies (`fit`)
            moments = flip_map_moments(patches[:n], patches[n: 2 * n], keep[:n], self.settings.intensity_weight > 0)
            self.flip_map = solve_flip_map(moments)
            # For calibration, each reference's mirror made by a map fitted without it, as the bank hides its copies:
            # a map that learnt a reference predicts its mirror better than a new slice's, which made normal slices
            # look more normal than they are (LGG same-study: 8.0 % of normal slices flagged against 5.3 % with
            # the second forward pass)
            self.calibration_flip_maps = ([solve_flip_map(moments[:i] + moments[i + 1:]) for i in range(n)]
                                          if n > 1 else None)
        self.bank.fit(self.bank_view(patches), torch.arange(len(in_bank)), keep, seed=self.settings.adapt.seed)

    def _patches(self, seg: list[torch.Tensor], prepared: Sequence[PreparedSlice] = (),
                 images: Sequence[np.ndarray] | None = None) -> torch.Tensor:
        """Level features -> the memory bank's patch features on one grid (each level's stride brought to it); with
        an intensity term, the patches' mean intensity last (of `images`, by default the prepared slices' own)."""
        grid = self._grid(seg)
        out = patch_features(seg, grid, self.settings.aggregate_kernel)
        if self.settings.intensity_weight > 0:
            imgs = [p.image for p in prepared] if images is None else images
            x = torch.from_numpy(np.stack(imgs).astype(np.float32)).unsqueeze(1).to(out.device)
            out = torch.cat([out, patch_features([x], grid, self.settings.aggregate_kernel)], 1)
        return out

    def bank_view(self, patches: torch.Tensor) -> torch.Tensor:
        """`_patches` as the memory bank takes them: without the intensity channel when only the mirror uses it."""
        if self.settings.intensity_weight > 0 and not self.settings.bank_intensity:
            return patches[:, :-1]
        return patches

    def _grid(self, seg: list[torch.Tensor]) -> int:
        if self.backbone.is_vision_language:
            return int(seg[0].shape[-1])  # every ViT level shares the token grid
        return max(1, self.size // int(self.settings.patch_stride))

    @torch.no_grad()
    def _component_maps(self, prepared: Sequence[PreparedSlice], regions: np.ndarray,
                        exclude_owners: tuple[int, ...] = (), feats: LevelFeatures | None = None,
                        cancel: CancelToken | None = None,
                        flip_map: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
        """Per component ("bank", "head" or "text"), (B, S, S) raw maps smoothed within each slice's region
        (`regions`, (B, S, S) bool, from `region_of`). exclude_owners: bank entries hidden (calibration). feats:
        the slices' `_features`, when the caller has them already (engine.explain)."""
        cancel = cancel or CancelToken()
        feats = self._features(prepared) if feats is None else feats
        raw: dict[str, torch.Tensor] = {}
        if self.bank is not None:
            cancel.raise_if_cancelled()
            patches = self._patches(feats.seg, prepared)
            # Only patches that the region's smoothed, upsampled map can read: those touching it and their neighbours.
            where = cells_touching(torch.from_numpy(regions).to(self.device), patches.shape[-1], grow=1)
            d = self.bank.score(self.bank_view(patches), exclude_owners=exclude_owners, where=where)
            if self.settings.self_mirror != "off":
                cancel.raise_if_cancelled()  # the mirror (with mirror_pass "image", a second forward pass)
                d = self.join_mirror(d, self.mirror_distance(d, patches, prepared, where, flip_map))
            raw["bank"] = combine_levels([d], self.size)
        if self.model.heads is not None:
            level_logits, _ = self.model.head_logits(feats)
            # Heads give the abnormal-minus-normal logit: its sigmoid is the two-class softmax P(abnormal).
            probs = [torch.sigmoid(l) for l in level_logits]
            raw["text" if self.backbone.is_vision_language else "head"] = combine_levels(probs, self.size)
        sigma = self.settings.smoothing_sigma * self.size / 256.0
        cancel.raise_if_cancelled()
        out = {k: smooth_within(v, regions, sigma) for k, v in raw.items()}
        if self.settings.guided_radius > 0:
            guides = np.stack([p.image for p in prepared])
            r = max(1, int(round(self.settings.guided_radius * self.size / 256.0)))
            out = {k: guided_within(v, guides, regions, r, self.settings.guided_eps) for k, v in out.items()}
        if self.settings.hyperintensity_gate > 0:
            gates = self.hyperintensity(prepared, regions)
            out = {k: v * gates for k, v in out.items()}
        return out

    def hyperintensity(self, prepared: Sequence[PreparedSlice], regions: np.ndarray) -> np.ndarray:
        """(B, S, S) the factor each map pixel keeps (`hyperintensity_gate`): 1 where the slice is bright for its
        own scoring region, down to `hyperintensity_floor` where it is no brighter than the region's median."""
        s = self.settings
        return np.stack([hyperintensity_gate(p.image, reg, s.hyperintensity_gate, s.hyperintensity_floor)
                         for p, reg in zip(prepared, regions)])

    def mirror_distance(self, d: torch.Tensor, patches: torch.Tensor, prepared: Sequence[PreparedSlice],
                        where: torch.Tensor, flip_map: tuple[torch.Tensor, torch.Tensor] | None = None
                        ) -> torch.Tensor:
        """(B, g, g) each patch's distance to the slice's own mirror image (reflected about its symmetry axis) within
        `mirror_radius` cells of the same place, gated ("*_gated") by how much more unusual the mirrored place is to
        the bank (`d`: the bank's distances). The mirror's patches come from the slice's own patches through the flip
        map (`mirror_pass` "features"; `flip_map`: another than the detector's, for calibration), or from a second
        forward pass of the reflected slice (one batch of twice the size is slower on a CPU: 105 against 77 ms a
        slice on 2 cores)."""
        flip_map = self.flip_map if flip_map is None else flip_map
        axes = [midline(p.image, p.body, angle=p.midline_angle) for p in prepared]
        if flip_map is not None:
            mp = reflect_patches(patches, axes, self.size, flip_map, self.settings.intensity_weight > 0)
        else:
            mirrored = [p.image if a is None else reflect(p.image, a) for p, a in zip(prepared, axes)]
            with torch.no_grad():
                mp = self._patches(self.model.features(self._to_input(mirrored)).seg, prepared, mirrored)
        dm = neighbourhood_distance(patches, mp, self.settings.mirror_radius, self.settings.intensity_weight) * where
        if self.settings.self_mirror.endswith("_gated"):
            # The healthy side of a one-sided lesion differs from its mirror as much as the lesion does; of the two,
            # only the one farther from the normal references keeps its asymmetry.
            g = d.shape[-1]
            d_np = d.cpu().numpy()
            other = np.stack([d_np[i] if a is None else
                              reflect(d_np[i], a, grid_scale=g / float(self.size)) for i, a in enumerate(axes)])
            other = torch.from_numpy(other).to(d.device)
            dm = dm * torch.where(other > d, d / other.clamp_min(1e-6), torch.ones_like(d)) ** self.settings.mirror_gate_power
        return dm

    def join_mirror(self, d: torch.Tensor, dm: torch.Tensor) -> torch.Tensor:
        """The bank's distances and the mirror's joined as `self_mirror` says: "min", "mean" or "geo" (geometric
        mean: a patch is anomalous only when unlike both the references and its own other side)."""
        how = self.settings.self_mirror
        if how.endswith("_gated"):
            how = how[: -len("_gated")]
        if how == "min":
            return torch.minimum(d, dm)
        if how == "mean":
            return 0.5 * (d + dm)
        if how == "geo":
            return torch.sqrt(d.clamp_min(0) * dm.clamp_min(0))
        raise ValueError(f"unknown self_mirror {how!r}")

    def _fuse(self, comps: dict[str, np.ndarray], regions: np.ndarray) -> np.ndarray:
        """The components on the normal references' scale (`component_scale`, from calibration), fused into one
        map; outside the region the value of a perfect match."""
        return fuse(comps, regions, self.component_scale, self.settings.fusion_weight)

    # --------------------------------------------------------------------------------------------- 5 image score
    def _image_scores(self, maps: np.ndarray, regions: np.ndarray) -> list[float]:
        s = self.settings
        return image_scores(maps, regions, s.image_score, s.image_score_window * self.size / 256.0,
                            s.image_score_contrast, s.image_score_top)

    # ----------------------------------------------------------------------------------------------- 6 calibrate
    def _calibrate(self, slices: list[PreparedSlice], n: int, cancel: CancelToken) -> None:
        """At fit time, from normal slices the detector was not fitted on (`slices`: the mirrored references, or
        the references themselves without mirrored copies, or the n references followed by their n mirrored copies;
        each scored without either of its reference's two copies): their raw components (stages 2-4), the
        per-component normal scale, then the fused maps' pixel values and image scores."""
        regions = np.stack([self.region_of(p) for p in slices])
        raw: dict[str, list[np.ndarray]] = {}
        owners = self._calibration_owners(n)
        loo = self.calibration_flip_maps
        for i, exclude in enumerate(owners * (len(slices) // max(n, 1))):  # references and mirrors: same owners
            cancel.raise_if_cancelled()
            comps = self._component_maps(slices[i: i + 1], regions[i: i + 1],
                                         exclude_owners=exclude if self.bank is not None else (),
                                         flip_map=None if loo is None else loo[i % n])
            for name, maps in comps.items():
                raw.setdefault(name, []).append(maps)
        self.component_scale = {}
        for name, maps in raw.items():
            vals = np.concatenate(maps)[regions].ravel()
            med, p99 = np.percentile(vals, [50, 99]) if vals.size else (0.0, 1.0)
            self.component_scale[name] = (float(med), float(max(p99 - med, 1e-6)))
        finals = self._fuse({name: np.concatenate(maps) for name, maps in raw.items()}, regions)
        scores = self._image_scores(finals, regions)
        self.calibration = NormalCalibration.from_normal(finals[regions], np.array(scores))

    def bank_owner(self, owner: int) -> tuple[int, bool]:
        """A memory bank owner -> (which reference, in the order `fit` was given them; whether its mirrored copy)."""
        n = len(self.reference_hashes)
        if self.settings.bank_flip and n and owner >= n:
            return owner - n, True
        return owner, False

    def _calibration_owners(self, n: int) -> list[tuple[int, ...]]:
        """The bank owners hidden from each calibration slice (the bank holds the n references as owners 0..n-1 and,
        with mirrored copies, their mirrors as n..2n-1).

        With mirrored copies the calibration slices are the mirrored references (adapters and heads never trained on
        them) and, with the memory bank and more than one reference, the references too, each scored without its
        reference's two copies; with one reference only the mirror, without itself, so the original stands in for
        another normal slice. Without them: the references, each without itself (leave-one-out)."""
        if not self.settings.bank_flip:
            return [(i,) if n > 1 else () for i in range(n)]
        return [(i, n + i) if n > 1 else (n + i,) for i in range(n)]

    def percentile_of(self, raw: float) -> float:
        """An image score's percentile of normal (NaN when there was nothing to calibrate on)."""
        return float(self.calibration.image_percentile(raw)) if self.calibration else float("nan")

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
        if self.flip_map is not None:
            tensors.update({"flip_map.A": self.flip_map[0].cpu().contiguous(),
                            "flip_map.b": self.flip_map[1].cpu().contiguous()})
        sidecar = {
            "format": DETECTOR_FORMAT,
            **self.describe(),
            "weights_id": self.backbone.weights_id,
            "reference_hashes": self.reference_hashes,
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
        if sidecar.get("format") != DETECTOR_FORMAT:
            raise ValueError(f"{base.name} was saved by another version of the detector "
                             f"({sidecar.get('format')}); adapt again")
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
        if "flip_map.A" in tensors:
            det.flip_map = (tensors["flip_map.A"].to(device), tensors["flip_map.b"].to(device))
        det.component_scale = {k: tuple(v) for k, v in sidecar["component_scale"].items()}
        det.reference_hashes = sidecar["reference_hashes"]
        det.kind = sidecar.get("kind")
        det.timings = sidecar.get("timings", {})
        rep = sidecar.get("adapt_report")
        if rep:  # kept for the record (run.json, the batch's results): how the adaptation went
            det.adapt_report = AdaptReport(**{**rep, "history": [tuple(h) for h in rep.get("history", [])]})
        return det


def flip_map_moments(patches: torch.Tensor, flipped: torch.Tensor, keep: torch.Tensor, intensity: bool,
                     kernel: int = FLIP_MAP_KERNEL) -> list[tuple[torch.Tensor, ...]]:
    """Per slice, the sums a flip map is solved from (`solve_flip_map`): n slices' patches (n, C, g, g), their
    left-right flipped copies' patches, the cells `keep` ((n, g, g) bool) that count. Each cell's regression input is
    its `kernel` x `kernel` neighbourhood (C * kernel² values, in conv2d's order) and its target the mirrored
    features at that place; both directions count (the flipped copy's features predict the slice's too). The
    intensity channel (last, `intensity`) is left out: a patch's mean intensity does not change when flipped."""
    c = patches.shape[1] - (1 if intensity else 0)
    kf = torch.flip(keep, dims=[-1])

    def cols(p: torch.Tensor, where: torch.Tensor) -> torch.Tensor:  # (cells, C * kernel²)
        n, _, g, _ = p.shape
        u = F.unfold(p[:, :c].double(), kernel, padding=kernel // 2).view(n, c * kernel * kernel, g, g)
        return u.permute(0, 2, 3, 1)[where]

    def rows(p: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        return torch.flip(p[:, :c].double(), dims=[-1]).permute(0, 2, 3, 1)[where]

    out = []
    for i in range(patches.shape[0]):
        x = torch.cat([cols(patches[i: i + 1], keep[i: i + 1]), cols(flipped[i: i + 1], kf[i: i + 1])])
        y = torch.cat([rows(flipped[i: i + 1], keep[i: i + 1]), rows(patches[i: i + 1], kf[i: i + 1])])
        out.append((torch.tensor(float(x.shape[0]), dtype=torch.float64), x.sum(0), y.sum(0), x.T @ x, x.T @ y))
    return out


def solve_flip_map(moments: Sequence[tuple[torch.Tensor, ...]], ridge: float = FLIP_MAP_RIDGE
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b): the convolution with flip(features of the flipped slice) ~ conv(features, W) + b, by ridge regression
    (the ridge a share of the inputs' mean variance) from the summed `flip_map_moments` of the slices it learns from.

    Each cell's mirrored features depend on how the texture is arranged inside it, which its own pooled features
    have lost; its neighbours' features hold part of it: on held-out whole-head FLAIR slices the prediction's cosine
    similarity to the true mirrored features is 0.976 from the 3 x 3 neighbourhood against 0.934 from the cell alone
    (0.737 for the plain reflection)."""
    n, sx, sy, sxx, sxy = (sum(m[j] for m in moments) for j in range(5))
    xm, ym = sx / n, sy / n
    gram = sxx - n * torch.outer(xm, xm)
    cross = sxy - n * torch.outer(xm, ym)
    d = gram.shape[0]
    gram = gram + ridge * torch.trace(gram) / d * torch.eye(d, dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(gram, cross).T  # (C, C * kernel²): y = w @ x
    b = ym - w @ xm
    c = w.shape[0]
    kernel = int(round((d // c) ** 0.5))
    return w.reshape(c, c, kernel, kernel).float(), b.float()


def fit_flip_map(patches: torch.Tensor, flipped: torch.Tensor, keep: torch.Tensor, intensity: bool,
                 ridge: float = FLIP_MAP_RIDGE, kernel: int = FLIP_MAP_KERNEL) -> tuple[torch.Tensor, torch.Tensor]:
    """`solve_flip_map` of all the slices' `flip_map_moments`."""
    return solve_flip_map(flip_map_moments(patches, flipped, keep, intensity, kernel), ridge)


def reflect_patches(patches: torch.Tensor, axes: Sequence, size: int, flip_map: tuple[torch.Tensor, torch.Tensor],
                    intensity: bool) -> torch.Tensor:
    """The patches of each slice's mirror image about its axis (`symmetry.Midline`, None: the slice itself), made
    from its own patches: the mirrored features at each place by `flip_map` (a convolution), then moved to the
    place's reflection on the grid (bilinear; off the grid zero)."""
    b, ch, g, _ = patches.shape
    c = ch - (1 if intensity else 0)
    w, bias = flip_map
    mapped = F.conv2d(patches[:, :c], w, bias, padding=w.shape[-1] // 2)
    # Moved with them: where a patch holds features (off the grid, or from an empty patch, the reflection has none:
    # no match there, the cosine of a zero vector) and the intensity channel. One channel, not the patches again:
    # 0.81 against 1.11 ms a slice on 2 cores, the same output
    has = (patches[:, :c].abs().sum(1, keepdim=True) > 0).to(patches.dtype)
    src = torch.cat([mapped, has, patches[:, c:]], 1)
    u = np.arange(g, dtype=np.float64) + 0.5  # cell centres, in cells
    xx, yy = np.meshgrid(u, u)
    grids = np.empty((b, g, g, 2))
    for i, axis in enumerate(axes):
        if axis is None:  # no axis: the slice is its own mirror, as the second forward pass would see it
            sx, sy = xx, yy
        else:
            m = reflection_matrix(on_grid(axis, g / float(size), centre=0.5))
            # cv2.warpAffine's destination p reads the source at M^-1 p; a reflection is its own inverse. Centres.
            sx = m[0, 0] * xx + m[0, 1] * yy + m[0, 2]
            sy = m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
        grids[i, ..., 0], grids[i, ..., 1] = sx / g * 2 - 1, sy / g * 2 - 1
    both = F.grid_sample(src, torch.from_numpy(grids).to(patches.device, patches.dtype), mode="bilinear",
                         padding_mode="zeros", align_corners=False)
    out = torch.cat([both[:, :c] * (both[:, c: c + 1] > 0), both[:, c + 1:]], 1)
    none = [i for i, axis in enumerate(axes) if axis is None]
    if none:
        out[none] = patches[none]
    return out
