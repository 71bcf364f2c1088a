"""Why is this hot? One point of a scored slice explained by the normal patch the memory bank matched there: the
query patch, the bank entry nearest to it (which reference, mirrored or not, where in it), the distance against the
normal references' spread, and each map component's share of the map value (bank and head, for adapted runs).

Cheap by design: one slice's features through the detector's own stages (the same `prepare`, features, bank search
and fusion as `AnomalyDetector.score`), one nearest-entry search; nothing else of the series is rescored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .detector import AnomalyDetector
from .maps import cells_touching, fusion_weights
from .preprocess import restore

Box = tuple[float, float, float, float]  # (row0, column0, row1, column1) in a slice's pixels, ends exclusive


@dataclass(frozen=True)
class Component:
    """One map component at the point: "bank" (distance to the nearest normal patch), "head" (a CNN's learned head)
    or "text" (alignment with the abnormal prompts)."""

    name: str
    raw: float  # the component at the point after smoothing, on its own scale (a distance, a probability)
    normal_median: float  # ... of the normal references' pixels (leave-one-out), from calibration
    normal_spread: float  # their 99th percentile minus the median
    weight: float  # its share of the fused map
    value: float  # (raw - median) / spread at the point: 0 the normal median, 1 the normal 99th percentile

    @property
    def contribution(self) -> float:
        """weight * value: the components' contributions add up to the map value (inside the scoring region)."""
        return self.weight * self.value


@dataclass(frozen=True)
class Explanation:
    row: int
    column: int
    shape: tuple[int, int]  # the slice's (rows, columns)
    grid: int  # the patch grid's side (cells per side of the square, padded slice)
    cell: tuple[int, int]  # the query patch: (row, column) on that grid
    box: Box  # ... its pixels in the slice
    inside_region: bool  # the point lies where this detector looks for anomalies
    map_value: float  # the anomaly map at the point, as scoring makes it (1 ~ the normal 99th percentile)
    map_percentile: float | None  # ... as a percentile of normal pixels (None without calibration)
    components: tuple[Component, ...]
    metric: str = ""  # the bank's distance: "cosine" (1 - cosine similarity) or "l2"
    entry: int | None = None  # the bank entry matched at the query cell (None: no bank, or the cell is not scored)
    distance: float | None = None  # its distance: the bank map's raw value at the cell, before smoothing
    owner: int | None = None  # the entry's owner in the bank (a mirrored copy has its own)
    reference: int | None = None  # which reference, in the order the detector was fitted on them
    mirrored: bool = False  # the match is in the reference's mirrored (left-right) copy
    reference_cell: tuple[int, int] | None = None  # the match on the owner's grid (the mirrored image's if mirrored)
    # With the slice's own mirror (`DetectorSettings.self_mirror`): the patch's distance to the same place of its
    # own mirror image (gated), and the two joined as scoring joins them: the bank component's raw value.
    mirror_distance: float | None = None
    joined_distance: float | None = None
    missing: str = ""  # what could not be explained, in plain words ("" when nothing is missing)
    # With the hyperintensity gate (`DetectorSettings.hyperintensity_gate`, FLAIR): the share of its value the map
    # keeps at the point (1: bright for this slice; the floor: no brighter than the region's median). None when off.
    brightness_kept: float | None = None

    @property
    def bank(self) -> Component | None:
        return next((c for c in self.components if c.name == "bank"), None)

    @property
    def distance_in_spread(self) -> float | None:
        """The matched distance on the normal scale: (distance - normal median) / (normal p99 - median)."""
        b = self.bank
        if self.distance is None or b is None:
            return None
        d = self.distance if self.joined_distance is None else self.joined_distance
        return (d - b.normal_median) / b.normal_spread

    def reference_box(self, shape: tuple[int, int]) -> Box | None:
        """The matched patch's pixels in its reference slice of `shape` (rows, columns): for a mirrored copy, where
        the mirrored patch lies in the unmirrored slice (show that crop flipped left-right to see what matched)."""
        if self.reference_cell is None:
            return None
        return cell_box(self.reference_cell, shape, self.grid, mirrored=self.mirrored)


def _padding(shape: tuple[int, int]) -> tuple[int, int, int]:
    """The square `preprocess.prepare` pads a slice into: (side, top, left)."""
    h, w = shape
    side = max(h, w)
    return side, (side - h) // 2, (side - w) // 2


def point_cell(row: int, column: int, shape: tuple[int, int], grid: int) -> tuple[int, int]:
    """The patch cell (row, column) of a slice pixel."""
    side, top, left = _padding(shape)
    r = math.floor((row + top + 0.5) * grid / side)
    c = math.floor((column + left + 0.5) * grid / side)
    return min(max(r, 0), grid - 1), min(max(c, 0), grid - 1)


def cell_box(cell: tuple[int, int], shape: tuple[int, int], grid: int, mirrored: bool = False) -> Box:
    """A patch cell's pixels in a slice of `shape`, clipped to it; `mirrored`: a cell of the slice's mirrored copy."""
    side, top, left = _padding(shape)
    h, w = shape
    step = side / grid
    r, c = cell
    x0, x1 = c * step, (c + 1) * step
    if mirrored:  # column p of the padded square is column side - p of its mirror
        x0, x1 = side - x1, side - x0
    y0, y1 = r * step - top, (r + 1) * step - top
    x0, x1 = x0 - left, x1 - left
    return (min(max(y0, 0.0), h), min(max(x0, 0.0), w), min(max(y1, 0.0), h), min(max(x1, 0.0), w))


@torch.no_grad()
def explain_point(detector: AnomalyDetector, image: np.ndarray, row: int, column: int,
                  midline_angle: float | None = None) -> Explanation:
    """Explain the map at slice pixel (row, column). `image`: the slice in [0, 1] as given to `detector.score` (the
    series' intensity normaliser applied, see engine.series_scores.score_series); `midline_angle`: its volume's
    symmetry-axis angle, as scoring gave it (`volume_midline_angle`)."""
    image = np.asarray(image, dtype=np.float32)
    shape = (int(image.shape[0]), int(image.shape[1]))
    if not (0 <= row < shape[0] and 0 <= column < shape[1]):
        raise ValueError(f"pixel ({row}, {column}) is outside the {shape[0]} x {shape[1]} slice")
    det = detector
    p = det._prepare(image, midline_angle)
    region = det.region_of(p)
    regions = region[None]
    feats = det._features([p])

    # The map value and each component's share, as scoring computes them (the same stages, this slice alone).
    comps = det._component_maps([p], regions, feats=feats)
    fused = restore(det._fuse(comps, regions)[0], p)
    map_value = float(fused[row, column])
    pct = float(det.calibration.pixel_percentile(np.array([map_value]))[0]) if det.calibration else None
    weights = fusion_weights(list(comps), det.settings.fusion_weight)
    components = []
    for name, weight in weights.items():
        med, spread = det.component_scale.get(name, (0.0, 1.0))
        raw = float(restore(comps[name][0], p)[row, column])
        components.append(Component(name, raw, float(med), float(spread), float(weight), (raw - med) / spread))

    inside = bool(region[point_cell(row, column, shape, det.size)])  # the region is on the model's input grid

    grid = det._grid(feats.seg)
    cell = point_cell(row, column, shape, grid)
    out = dict(row=int(row), column=int(column), shape=shape, grid=grid, cell=cell,
               box=cell_box(cell, shape, grid), inside_region=inside, map_value=map_value, map_percentile=pct,
               components=tuple(components))
    if det.settings.hyperintensity_gate > 0:
        out["brightness_kept"] = float(restore(det.hyperintensity([p], regions)[0], p)[row, column])
    if det.bank is None:
        return Explanation(**out, missing="this detector has no memory bank (zero-shot): there is no normal "
                                          "reference patch to show")
    patches = det._patches(feats.seg, [p])
    where = cells_touching(torch.from_numpy(regions).to(det.device), patches.shape[-1], grow=1)  # as in scoring
    dist, idx = det.bank.nearest(det.bank_view(patches), where=where)
    entry = int(idx[0, cell[0], cell[1]])
    out["metric"] = det.bank.metric
    if entry < 0:
        return Explanation(**out, missing="this point is outside the scored region")
    owner = int(det.bank.owners[entry])
    reference, mirrored = det.bank_owner(owner)
    ref_cell = None
    missing = "" if inside else "this point is outside the scored region"
    if det.bank.cells is None:
        missing = missing or ("where the matched patch lies in its reference was not kept by this (older) "
                              "adaptation: adapt again to see it")
    else:
        flat = int(det.bank.cells[entry])
        ref_cell = (flat // grid, flat % grid)
    mirror = joined = None
    if det.settings.self_mirror != "off":
        dm = det.mirror_distance(dist, patches, [p], where)
        mirror = float(dm[0, cell[0], cell[1]])
        joined = float(det.join_mirror(dist, dm)[0, cell[0], cell[1]])
    return Explanation(**out, entry=entry, distance=float(dist[0, cell[0], cell[1]]), owner=owner,
                       reference=reference, mirrored=mirrored, reference_cell=ref_cell, missing=missing,
                       mirror_distance=mirror, joined_distance=joined)
