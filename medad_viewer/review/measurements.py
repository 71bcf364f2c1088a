"""Measurements on a slice: a length in mm and an elliptical region of interest with the statistics of the raw values
(modality units: HU for CT) and of the anomaly map inside it. Plain values, no Qt; kept with the session.

Coordinates are those of the viewer's image, in pixels of the slice: pixel (row r, column c) covers
[c, c+1) x [r, r+1), so its centre is (c + 0.5, r + 0.5). A pixel is *inside* an ellipse when its centre is
(((x - cx) / rx)² + ((y - cy) / ry)² <= 1): the same rule whatever the spacing, and a drawn ellipse takes about as
many pixels as its area. SD is the population standard deviation (numpy's default, ddof=0), as OHIF and Slicer give.
The area is the ellipse's own, pi * rx * ry * sx * sy, not a count of pixels (that count is `pixels`).

Each measurement names the series, the plane ("acquired" for the slices as stored; "axial", "coronal" or
"sagittal" for reformatted views) and the slice index in that plane, so the stats are computed on the Series of
that plane (a reformatted Series carries its own spacing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterator, Mapping, Sequence

import numpy as np

from .history import History, Step, UsesHistory

ACQUIRED = "acquired"


@dataclass(frozen=True)
class Length:
    """A straight line from p0 to p1 (x = column, y = row, slice pixels) on slice `index` of `plane`."""

    p0: tuple[float, float]
    p1: tuple[float, float]
    series_uid: str = ""
    plane: str = ACQUIRED
    index: int = 0
    kind: str = field(default="length", init=False)

    def to_dict(self) -> dict:
        return {"kind": "length", "p0": list(self.p0), "p1": list(self.p1), **_where(self)}


@dataclass(frozen=True)
class EllipseROI:
    """An axis-aligned ellipse: centre (cx, cy) and radii (rx, ry) in slice pixels, on slice `index` of `plane`."""

    cx: float
    cy: float
    rx: float
    ry: float
    series_uid: str = ""
    plane: str = ACQUIRED
    index: int = 0
    kind: str = field(default="roi", init=False)

    def to_dict(self) -> dict:
        return {"kind": "roi", "cx": self.cx, "cy": self.cy, "rx": self.rx, "ry": self.ry, **_where(self)}


Measurement = Length | EllipseROI


def _where(m: Measurement) -> dict:
    return {"series_uid": m.series_uid, "plane": m.plane, "index": int(m.index)}


def measurement_from_dict(d: Mapping) -> Measurement:
    where = {"series_uid": str(d.get("series_uid", "")), "plane": str(d.get("plane") or ACQUIRED),
             "index": int(d.get("index", 0))}
    if d.get("kind") == "length":
        p0, p1 = d["p0"], d["p1"]
        return Length((float(p0[0]), float(p0[1])), (float(p1[0]), float(p1[1])), **where)
    if d.get("kind") == "roi":
        return EllipseROI(float(d["cx"]), float(d["cy"]), float(d["rx"]), float(d["ry"]), **where)
    raise ValueError(f"unknown measurement kind {d.get('kind')!r}")


def placed(m: Measurement, series_uid: str, index: int, plane: str = ACQUIRED) -> Measurement:
    """`m` recorded on slice `index` of `plane` of the series `series_uid` (the viewer draws only the shape)."""
    return replace(m, series_uid=str(series_uid), index=int(index), plane=str(plane or ACQUIRED))


# ---------------------------------------------------------------------------------------------------- the numbers
def _xy_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    """(mm per column, mm per row): Series.spacing[0] runs along the columns (x), spacing[1] along the rows (y)."""
    sx, sy = float(spacing[0]), float(spacing[1])
    return (sx if sx > 0 else 1.0, sy if sy > 0 else 1.0)


def length_mm(m: Length, spacing: Sequence[float]) -> float:
    sx, sy = _xy_spacing(spacing)
    return math.hypot((m.p1[0] - m.p0[0]) * sx, (m.p1[1] - m.p0[1]) * sy)


def roi_mask(roi: EllipseROI, shape: tuple[int, int]) -> np.ndarray:
    """(rows, columns) bool: the pixels whose centres lie inside the ellipse."""
    rows, cols = int(shape[0]), int(shape[1])
    if roi.rx <= 0 or roi.ry <= 0:
        return np.zeros((rows, cols), bool)
    y = (np.arange(rows, dtype=np.float64) + 0.5 - roi.cy) / roi.ry
    x = (np.arange(cols, dtype=np.float64) + 0.5 - roi.cx) / roi.rx
    return (y[:, None] ** 2 + x[None, :] ** 2) <= 1.0


def roi_area_mm2(roi: EllipseROI, spacing: Sequence[float]) -> float:
    sx, sy = _xy_spacing(spacing)
    return math.pi * roi.rx * roi.ry * sx * sy


@dataclass(frozen=True)
class Measured:
    """What a measurement gives: its size, and for an ROI the raw values and the map inside (None where unknown:
    no pixel inside, or the slice not scored)."""

    kind: str
    length_mm: float | None = None
    area_mm2: float | None = None
    pixels: int = 0
    mean: float | None = None
    sd: float | None = None
    min: float | None = None
    max: float | None = None
    map_mean: float | None = None
    map_sd: float | None = None
    map_max: float | None = None
    units: str = ""  # of the raw values: "HU" for CT, "" otherwise


def measure(m: Measurement, pixels: np.ndarray, spacing: Sequence[float], amap: np.ndarray | None = None,
            units: str = "") -> Measured:
    """The numbers of `m` on its slice: `pixels` (rows, columns) in modality units, `spacing` the Series' (mm per
    column, mm per row, ...), `amap` the slice's full-size anomaly map (SliceScore.map) or None."""
    if isinstance(m, Length):
        return Measured("length", length_mm=length_mm(m, spacing), units=units)
    pixels = np.asarray(pixels)
    inside = roi_mask(m, pixels.shape)
    n = int(inside.sum())
    out = dict(kind="roi", area_mm2=roi_area_mm2(m, spacing), pixels=n, units=units)
    if n:
        v = pixels[inside].astype(np.float64)
        out.update(mean=float(v.mean()), sd=float(v.std()), min=float(v.min()), max=float(v.max()))
        if amap is not None and np.shape(amap) == pixels.shape:
            mv = np.asarray(amap, dtype=np.float64)[inside]
            mv = mv[np.isfinite(mv)]
            if mv.size:
                out.update(map_mean=float(mv.mean()), map_sd=float(mv.std()), map_max=float(mv.max()))
    return Measured(**out)


def measure_on(m: Measurement, series, amap: np.ndarray | None = None) -> Measured:
    """`measure` on slice `m.index` of `series` (the Series of m's plane: acquired, or reformatted)."""
    return measure(m, series.slice(m.index), series.spacing, amap, series.units)


def _value(v: float, units: str) -> str:
    text = f"{v:.0f}" if units == "HU" or abs(v) >= 100 else f"{v:.3g}"
    return text


def size_text(r: Measured, mm: bool = True) -> str:
    """The length or area; in pixels when the image records no pixel size (`mm` False: plain images)."""
    if not mm:
        return f"{r.length_mm:.1f} px" if r.kind == "length" else f"{r.area_mm2:.0f} px²"
    if r.kind == "length":
        return f"{r.length_mm:.1f} mm"
    return f"{r.area_mm2:.1f} mm²" if r.area_mm2 < 1000 else f"{r.area_mm2 / 100.0:.2f} cm²"


def values_text(r: Measured) -> str:
    """'mean ± SD units' of the raw values inside ('' for a length, 'no pixel inside' for an empty ROI)."""
    if r.kind == "length":
        return ""
    if r.mean is None:
        return "no pixel inside"
    units = f" {r.units}" if r.units else ""
    return f"{_value(r.mean, r.units)} ± {_value(r.sd, r.units)}{units}"


def map_text(r: Measured) -> str:
    """'map mean / max' inside, '' when the slice has no map."""
    if r.map_mean is None:
        return ""
    return f"map {r.map_mean:.2f} / max {r.map_max:.2f}"


def label(r: Measured, sep: str = " · ", mm: bool = True) -> str:
    """'23.4 mm' for a length; '41 ± 12 HU · map 0.84 / max 2.10 · 180.2 mm²' for an ROI (the viewer's label puts
    each part on a line of its own: sep="\n")."""
    if r.kind == "length":
        return size_text(r, mm)
    return sep.join(t for t in (values_text(r), map_text(r), size_text(r, mm)) if t)


# ---------------------------------------------------------------------------------------------------- the list
class Measurements(UsesHistory):
    """The session's measurements, in the order they were made. Adding and removing are undoable steps in the
    session's one history, shared with the slice reviews (`review.history`; on its own, a history of its own)."""

    def __init__(self, items: Sequence[Measurement] = ()) -> None:
        self._items: list[Measurement] = list(items)
        self.history = History()  # its own until a `Session` gives it the one shared with the reviews

    def __iter__(self) -> Iterator[Measurement]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> Measurement:
        return self._items[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Measurements) and self._items == other._items

    def on_slice(self, series_uid: str, index: int, plane: str = ACQUIRED) -> list[tuple[int, Measurement]]:
        """(position in the list, measurement) of those on one slice of one plane."""
        return [(k, m) for k, m in enumerate(self._items)
                if m.series_uid == series_uid and m.index == int(index) and m.plane == plane]

    def add(self, m: Measurement) -> int:
        self._items.append(m)
        self._push(("add", len(self._items) - 1, m))
        return len(self._items) - 1

    def remove(self, position: int) -> Measurement | None:
        if not 0 <= position < len(self._items):
            return None
        m = self._items.pop(position)
        self._push(("remove", position, m))
        return m

    def _push(self, record: tuple[str, int, Measurement]) -> None:
        self.history.push(Step("measurements", _step_label(record), record, self._undo_step, self._redo_step))

    def _undo_step(self, record: tuple[str, int, Measurement]) -> Measurement:
        what, pos, m = record
        if what == "add":
            self._items.pop(pos)
        else:
            self._items.insert(pos, m)
        return m

    def _redo_step(self, record: tuple[str, int, Measurement]) -> Measurement:
        what, pos, m = record
        if what == "add":
            self._items.insert(pos, m)
        else:
            self._items.pop(pos)
        return m

    def to_list(self) -> list[dict]:
        """The measurements only: the undo history belongs to one sitting."""
        return [m.to_dict() for m in self._items]

    @classmethod
    def from_list(cls, items: Sequence[Mapping]) -> "Measurements":
        return cls([measurement_from_dict(d) for d in items or []])

    def copy(self) -> "Measurements":
        return Measurements(self._items)


def _step_label(step: tuple[str, int, Measurement]) -> str:
    what, _pos, m = step
    name = "length" if m.kind == "length" else "ellipse ROI"
    return f"Add {name}" if what == "add" else f"Remove {name}"
