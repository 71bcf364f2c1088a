"""Anomaly maps and the reviewer's annotations as volumes (NIfTI or NRRD) on the source series' own voxel grid.

io shows volumes reoriented to LPS; the geometry a run records (`series_record`) is that displayed grid, plus the
file's own direction when io reoriented it. Exports go back to the file's grid (an axis permutation and flips, the
exact inverse of io's), so a map or label volume has the same size, spacing, origin and direction as the source and
overlays it voxel for voxel in any viewer, or in a pipeline that insists on identical headers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import cv2
import numpy as np
import SimpleITK as sitk

from ..engine.jobs import CancelToken, no_progress
from ..review.state import SliceReview
from ..io.atomic import atomic_output, suffix_of
from .data import Progress, ReportData, ReportError, full_maps

VOLUME_FORMATS = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".mha": "MetaImage"}
ANNOTATION_LABEL = 1


@dataclass(frozen=True)
class Geometry:
    """The displayed grid of a series: (slices, rows, columns), spacing (x, y, z), origin, direction (9, ITK)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    file_direction: tuple[float, ...] | None = None  # the source file's own direction, when io reoriented it

    @classmethod
    def from_record(cls, target: Mapping) -> "Geometry":
        """From a run's `target` record (score_dir.series_record)."""
        try:
            shape = (int(target["num_slices"]), int(target["rows"]), int(target["columns"]))
            fd = target.get("file_direction")
            return cls(shape, tuple(float(v) for v in target["spacing"]), tuple(float(v) for v in target["origin"]),
                       tuple(float(v) for v in target["direction"]),
                       tuple(float(v) for v in fd) if fd is not None and len(fd) == 9 else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(f"the run does not record its series geometry ({exc}); cannot write a volume") from None


def to_image(volume: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a displayed-grid (slices, rows, columns) array, moved back onto the file's grid."""
    vol = np.ascontiguousarray(volume)
    if vol.shape != geometry.shape:
        raise ValueError(f"volume {vol.shape} does not match the series grid {geometry.shape}")
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    if geometry.file_direction is not None:
        # io's reorientation is only a permutation and flips: DICOMOrient undoes it exactly (origin included).
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(geometry.file_direction)
        img = sitk.DICOMOrient(img, code)
    return img


def write_volume(volume: np.ndarray, geometry: Geometry, path: str | os.PathLike,
                 cancel: CancelToken | None = None) -> Path:
    """Write a displayed-grid volume as NIfTI/NRRD/MHA (by the name's suffix) on the source grid, atomically."""
    suffix = suffix_of(path)
    if suffix not in VOLUME_FORMATS:
        raise ReportError(f"{Path(path).name}: choose a volume file name ending in "
                          f"{', '.join(VOLUME_FORMATS)}")
    img = to_image(volume, geometry)
    with atomic_output(path, cancel) as tmp:
        try:
            sitk.WriteImage(img, tmp, True)  # compressed: maps are mostly zeros
        except RuntimeError as exc:
            raise ReportError(f"could not write {Path(path).name}: {str(exc).strip().splitlines()[-1]}") from None
    return Path(path)


# ------------------------------------------------------------------------------------------------- the maps
def map_volume(data: ReportData, progress: Progress = no_progress, cancel: CancelToken | None = None) -> np.ndarray:
    """(slices, rows, columns) float32 anomaly maps on the displayed grid; unscored slices are zeros."""
    g = Geometry.from_record(data.target)
    if cancel is not None:
        cancel.raise_if_cancelled()
    progress(0.1, "Assembling the anomaly maps")
    return full_maps(data.run, *g.shape)


def write_map_volume(data: ReportData, path: str | os.PathLike, progress: Progress = no_progress,
                     cancel: CancelToken | None = None) -> Path:
    """The anomaly maps as a float32 volume aligned with the source series (values as in the viewer: 1 ~ p99)."""
    g = Geometry.from_record(data.target)
    vol = map_volume(data, progress, cancel)
    progress(0.5, f"Writing {Path(path).name}")
    out = write_volume(vol, g, path, cancel)
    progress(1.0, "Map volume written")
    return out


# ---------------------------------------------------------------------------------------------- annotations
def rasterize(annotations: Iterable, rows: int, cols: int, label: int = ANNOTATION_LABEL) -> np.ndarray:
    """uint8 (rows, cols) mask of ellipses, brush strokes and polygons given in slice pixel coordinates.

    Coordinates are continuous (pixel c spans [c, c+1), as the viewer draws them); a pixel is labelled when its
    centre lies inside the ellipse, within half the brush width of a stroke, or inside a polygon. Ellipses and
    strokes are tested exactly (OpenCV's drawing includes every pixel the outline touches, a few percent too much).
    """
    out = np.zeros((rows, cols), dtype=np.uint8)
    for a in annotations:
        kind = getattr(a, "kind", "")
        if kind == "ellipse" and a.rx > 0 and a.ry > 0:
            sl, yy, xx = _window(a.cx - a.rx, a.cx + a.rx, a.cy - a.ry, a.cy + a.ry, rows, cols)
            if sl is not None:
                inside = ((xx - a.cx) / a.rx) ** 2 + ((yy - a.cy) / a.ry) ** 2 <= 1.0
                out[sl][inside] = label
        elif kind == "stroke" and a.points:
            pts = np.asarray(a.points, dtype=np.float64).reshape(-1, 2)
            r = max(float(a.width), 1.0) / 2.0
            sl, yy, xx = _window(pts[:, 0].min() - r, pts[:, 0].max() + r, pts[:, 1].min() - r,
                                 pts[:, 1].max() + r, rows, cols)
            if sl is not None:
                segs = np.concatenate([pts[:1], pts]) if len(pts) == 1 else pts
                near = np.zeros(xx.shape, dtype=bool)
                for (x0, y0), (x1, y1) in zip(segs[:-1], segs[1:]):
                    dx, dy = x1 - x0, y1 - y0
                    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
                    near |= (xx - x0 - t * dx) ** 2 + (yy - y0 - t * dy) ** 2 <= r * r
                out[sl][near] = label
        elif kind == "polygon" and len(getattr(a, "points", ())) >= 3:
            # 4 fractional bits keep sub-pixel vertices; -0.5 moves continuous coordinates onto pixel centres.
            pts = np.round((np.asarray(a.points, dtype=np.float64) - 0.5) * 16).astype(np.int32)
            cv2.fillPoly(out, [pts.reshape(-1, 1, 2)], int(label), cv2.LINE_8, 4)
    return out


def _window(x0: float, x1: float, y0: float, y1: float, rows: int, cols: int):
    """The pixel block covering [x0, x1] x [y0, y1] (clipped), and its pixel-centre coordinates."""
    c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)) + 1, cols)
    r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)) + 1, rows)
    if c0 >= c1 or r0 >= r1:
        return None, None, None
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5
    return (slice(r0, r1), slice(c0, c1)), yy, xx


def annotation_volume(geometry: Geometry, reviews: Mapping[int, SliceReview], progress: Progress = no_progress,
                      cancel: CancelToken | None = None) -> np.ndarray:
    """uint8 label volume on the displayed grid: 1 inside the reviewer's annotations, 0 elsewhere."""
    n, rows, cols = geometry.shape
    out = np.zeros((n, rows, cols), dtype=np.uint8)
    todo = [(i, r) for i, r in sorted(reviews.items()) if r.annotations and 0 <= i < n]
    for k, (i, r) in enumerate(todo):
        if cancel is not None:
            cancel.raise_if_cancelled()
        out[i] = rasterize(r.annotations, rows, cols)
        progress(0.8 * (k + 1) / len(todo), f"Annotations of slice {i + 1}")
    return out


def write_annotation_volume(data: ReportData, path: str | os.PathLike, progress: Progress = no_progress,
                            cancel: CancelToken | None = None) -> Path:
    """The reviewer's annotations as a label volume (uint8, 1 = annotated) aligned with the source series."""
    g = Geometry.from_record(data.target)
    vol = annotation_volume(g, data.reviews, progress, cancel)
    progress(0.85, f"Writing {Path(path).name}")
    out = write_volume(vol, g, path, cancel)
    progress(1.0, "Annotation volume written")
    return out
