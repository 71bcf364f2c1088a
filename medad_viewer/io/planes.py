"""Axial, coronal and sagittal views of one series: the stored volume reformatted without a copy. No Qt.

A `Series` stores its slices in the acquisition plane; `plane_view(series, plane)` gives a `PlaneView` whose
`series` shows the same voxels in another plane (a transposed, flipped numpy view of the same array, so nothing is
copied), with its own spacing, origin and direction, so that `voxel_position`, windowing and the data probe work
on it unchanged. Conventions are the radiological ones of the viewer:

  axial     patient right on the screen's left, anterior up; slices run inferior → superior
  coronal   patient right on the screen's left, head up; slices run posterior → anterior
  sagittal  anterior on the screen's left, head up; slices run right → left

The view of the plane a series was acquired in is the series itself, as it is shown today (its display orientation
is kept). Each axis of the stored array is matched to the patient axis its direction is closest to, so an oblique
acquisition is shown in the nearest plane, not resampled. A reformat across an unevenly spaced series uses the mean
slice spacing (`PlaneView.uneven` says so).

`PlaneView.to_plane` / `from_plane` convert voxel indices (slice, row, column) between the acquired array and the
plane, and `PlaneView.take` cuts a slice of the plane out of any array laid out like the acquired volume, at its own
resolution (the compact anomaly maps are at most 256 pixels a side).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np

from .series import Series

PLANES = ("axial", "coronal", "sagittal")

# For each plane: (screen right, screen down, slice direction), each a patient axis (0 = L, 1 = P, 2 = S in LPS)
# and a sign.
_TARGET = {
    "axial": ((0, +1), (1, +1), (2, +1)),
    "coronal": ((0, +1), (2, -1), (1, -1)),
    "sagittal": ((1, +1), (2, -1), (0, +1)),
}
_SLICE_AXIS = {"axial": 2, "coronal": 1, "sagittal": 0}  # the patient axis each plane's slices are stacked along


def _axis_match(direction: tuple[float, ...]) -> tuple[tuple[int, int], ...]:
    """For the array's x (columns), y (rows) and z (slices): the patient axis its direction is closest to and the
    sign along it; one patient axis per array axis (the best assignment, so an oblique series still gets three)."""
    d = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))
    best = max(permutations(range(3)), key=lambda p: sum(d[p[a], a] for a in range(3)))
    signed = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    return tuple((best[a], 1 if signed[best[a], a] >= 0 else -1) for a in range(3))


def acquired_plane(series: Series) -> str:
    """The plane the series' slices were acquired in (by the patient axis its slice direction is closest to)."""
    patient_axis = _axis_match(series.direction)[2][0]
    return next(p for p, a in _SLICE_AXIS.items() if a == patient_axis)


def available_planes(series: Series) -> tuple[str, ...]:
    """The three planes for a volume; only its own for a single image or a stack of unrelated images."""
    return PLANES if series.is_volume and series.num_slices > 1 else (acquired_plane(series),)


@dataclass(frozen=True)
class PlaneView:
    """One plane of a series. `axes[i]` is the array axis (0 slices, 1 rows, 2 columns of the acquired volume) that
    becomes axis i (slice, row, column) of the plane, `flips[i]` whether it runs backwards."""

    plane: str
    source: Series
    series: Series
    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    uneven: bool = False

    @property
    def is_acquired(self) -> bool:
        return self.series is self.source

    def to_plane(self, k: int, r: int, c: int) -> tuple[int, int, int]:
        """Acquired voxel (slice, row, column) -> the same voxel in the plane."""
        src = (k, r, c)
        shape = self.source.volume().shape
        return tuple(shape[a] - 1 - src[a] if f else src[a] for a, f in zip(self.axes, self.flips))  # type: ignore

    def from_plane(self, k: int, r: int, c: int) -> tuple[int, int, int]:
        """A voxel of the plane -> acquired (slice, row, column)."""
        shape = self.source.volume().shape
        out = [0, 0, 0]
        for i, (a, f) in enumerate(zip(self.axes, self.flips)):
            v = (k, r, c)[i]
            out[a] = shape[a] - 1 - v if f else v
        return tuple(out)  # type: ignore[return-value]

    def source_index(self, index: int) -> int:
        """The index along the acquired array axis `axes[0]` that slice `index` of the plane lies at."""
        n = self.source.volume().shape[self.axes[0]]
        return n - 1 - index if self.flips[0] else index

    def take(self, array: np.ndarray, index: int) -> np.ndarray:
        """Slice `index` of the plane cut from `array`, laid out like the acquired volume (slices, rows, columns) but
        perhaps at another resolution in rows and columns: a (rows, columns) view at the array's own resolution."""
        a0 = self.axes[0]
        j = _scaled(self.source_index(index), array.shape[a0], self.source.volume().shape[a0])
        return self._oriented(np.take(array, j, axis=a0))

    def line_of(self, image: np.ndarray, index: int) -> np.ndarray:
        """The line slice `index` of a reformatted plane cuts from one acquired slice: `image` is (rows, columns),
        perhaps at another resolution (a compact map). Lines of every acquired slice, stacked in slice order, make
        the cut that `orient` turns into the plane's slice."""
        a0 = self.axes[0]
        full = self.source.volume().shape[a0]
        j = _scaled(self.source_index(index), image.shape[a0 - 1], full)
        return image[j] if a0 == 1 else image[:, j]

    def orient(self, cut: np.ndarray) -> np.ndarray:
        """(acquired slices, the kept in-plane axis) lines, both in acquired order -> the reformatted plane's
        (rows, columns), flips applied."""
        return self._oriented(cut)

    def _oriented(self, cut: np.ndarray) -> np.ndarray:
        """A cut across axes[0] (its two axes the remaining acquired axes, in order) as the plane's rows, columns."""
        rest = [a for a in (0, 1, 2) if a != self.axes[0]]
        out = cut.transpose([rest.index(self.axes[1]), rest.index(self.axes[2])])
        if self.flips[1]:
            out = out[::-1]
        if self.flips[2]:
            out = out[:, ::-1]
        return out


def _scaled(i: int, n: int, full: int) -> int:
    """Index `i` of `full` positions as the index of the same place among `n` (a coarser map's pixels)."""
    return i if n == full else min(int((i + 0.5) * n / full), n - 1)


def plane_view(series: Series, plane: str) -> PlaneView:
    """The view of `series` in `plane` (one of PLANES); cached on the series."""
    if plane not in PLANES:
        raise ValueError(f"unknown plane {plane!r}: one of {', '.join(PLANES)}")
    key = f"plane:{plane}"
    hit = series._cache.get(key)
    # A series still reading its slices may move them to a wider array (io/_util.SliceStack): a view of the old one
    # would miss the slices read since.
    if hit is not None and (hit.is_acquired or np.may_share_memory(hit.series._volume, series._volume)):
        return hit
    if plane == acquired_plane(series) or plane not in available_planes(series):
        view = PlaneView(plane, series, series, (0, 1, 2), (False, False, False))
        series._cache[key] = view
        return view
    match = _axis_match(series.direction)  # per array axis x, y, z: (patient axis, sign)
    # numpy axis of array axis x, y, z: columns 2, rows 1, slices 0
    np_axis = {0: 2, 1: 1, 2: 0}
    by_patient = {pa: (xyz, sign) for xyz, (pa, sign) in enumerate(match)}
    # plane axes in numpy order: slice (third target), row (second), column (first)
    right, down, through = _TARGET[plane]
    axes, flips, xyz_of = [], [], []
    for pa, want in (through, down, right):
        xyz, sign = by_patient[pa]
        axes.append(np_axis[xyz])
        flips.append(sign != want)
        xyz_of.append(xyz)
    vol = series.volume()
    view = vol.transpose(axes)
    view = view[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    d = np.asarray(series.direction, dtype=np.float64).reshape(3, 3)
    positions = np.asarray(series._positions, dtype=np.float64)
    steps = np.diff(positions)
    uneven = bool(len(steps) > 1 and np.ptp(steps) > 0.01 * max(abs(float(np.mean(steps))), 1e-6))
    sz = float(np.mean(steps)) if len(steps) else float(series.spacing[2])
    sp_xyz = (float(series.spacing[0]), float(series.spacing[1]), sz)
    # the new x (columns), y (rows), z (slices): array axes right, down, through
    new_xyz = (xyz_of[2], xyz_of[1], xyz_of[0])
    new_flips = (flips[2], flips[1], flips[0])
    spacing = tuple(sp_xyz[a] for a in new_xyz)
    direction = np.column_stack([d[:, a] * (-1.0 if f else 1.0) for a, f in zip(new_xyz, new_flips)])
    # the position of the plane's voxel (0, 0, 0): the acquired voxel at the far end of each flipped axis
    shape_xyz = (series.columns, series.rows, series.num_slices)
    corner = [shape_xyz[a] - 1 if f else 0 for a, f in zip(new_xyz, new_flips)]
    idx = [0.0, 0.0, 0.0]
    for a, v in zip(new_xyz, corner):
        idx[a] = float(v)
    origin = np.asarray(series.origin, dtype=np.float64) + d @ (np.asarray(idx) * np.asarray(sp_xyz))
    out = Series.from_array(
        view, uid=f"{series.uid}@{plane}", modality=series.modality,
        description=f"{series.description} ({plane})" if series.description else plane, source=series.source,
        spacing=spacing, origin=tuple(origin), direction=tuple(direction.ravel()), is_volume=True,
        slice_thickness=spacing[2], file_window=series.file_window, photometric=series.photometric,
        metadata=series.metadata, identifiers=series.identifiers)
    pv = PlaneView(plane, series, out, tuple(axes), tuple(flips), uneven)  # type: ignore[arg-type]
    series._cache[key] = pv
    return pv
