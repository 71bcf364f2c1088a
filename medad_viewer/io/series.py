"""The loaded-data model: Series (one browsable stack of slices), Study and LoadError. No Qt."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IDENTITY_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SPACING_FORMATS = ("DICOM", "NIFTI", "NRRD", "METAIMAGE", "VOLUME")  # metadata["format"] that records a pixel size


@dataclass
class LoadError:
    """A file or folder that could not be loaded; `message` names the file and says what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return self.message

    @property
    def advice(self) -> str:
        """What the user can do about it, in one sentence ("" when there is nothing to say)."""
        from .advice import advice_for
        return advice_for(self.message)

    @property
    def full(self) -> str:
        """The message and the advice, as shown to the user."""
        return f"{self.message}. {self.advice}" if self.advice else self.message


@dataclass(eq=False)
class Series:
    """One stack of 2D slices, browsable by index, with its geometry and metadata.

    Pixel data lives in a single stored array (see `volume()`): int16 when the values fit, uint16
    for 16-bit data above 32767, float32 for non-integer data. `slice()` converts one slice at a
    time to float32 in modality units (HU for CT), so a whole float copy is never held.

    Display orientation: for volumes and DICOM series, row 0 is anterior and column 0 is the
    patient's right on axial slices (radiological convention); coronal and sagittal DICOM series
    are shown head up. `spacing`, `origin` and `direction` (ITK convention, LPS, direction
    row-major with one column per array axis x=columns, y=rows, z=slices) describe the
    *displayed* array, so `origin + direction @ (c*sx, r*sy, k*sz)` is the LPS position in mm of
    voxel `volume()[k, r, c]`.

    `uid` is the SeriesInstanceUID for DICOM ('#partN' appended for further groups of another
    size or orientation in the same series, '#stackN' for further stacks when images share slice
    positions). Series without a UID of their own (DICOM files without one, volumes, plain images)
    get one from their pixels: 'dicom:<digest>' or 'file:<digest>' (with the same '#...' parts; a
    second identical copy in one study gets '#copyN'), so a study that is copied or moved keeps its
    series' identity. `aliases` are the uids earlier versions gave the series (a hash of its path),
    by which older sessions and reference sets still find it.

    Equality is identity (eq=False): two loads of the same file are different objects, and a
    Series can key a dict.

    A DICOM series opened for browsing may still be reading its pixels (`io.fill`, `load_study(defer_pixels=True)`):
    its geometry and metadata are final, `is_loaded(i)` says which slices are read, `slice(i)` of one not read yet
    raises SliceNotLoaded, `request(i)` asks for it next, and `complete` turns true once the study's fill is
    finished. Until then `volume()` holds zeros where slices are not read yet.
    """

    uid: str
    modality: str
    description: str
    source: str
    num_slices: int
    rows: int
    columns: int
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION
    slice_thickness: float | None = None
    file_window: tuple[float, float] | None = None
    photometric: str = "MONOCHROME2"
    metadata: dict[str, Any] = field(default_factory=dict)
    identifiers: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    aliases: tuple[str, ...] = ()
    _volume: np.ndarray | None = field(default=None, repr=False)
    _positions: np.ndarray | None = field(default=None, repr=False)
    _three_d: bool = field(default=False, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    # While its pixels are being read: the reader (io.dicom's stack fill), with `loaded` (a bool per slice) and
    # `request(index)`; None once every slice is read.
    _pending: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._volume is None:
            raise ValueError("Series needs its pixel array (_volume); use Series.from_array")
        vol = self._volume
        if vol.ndim != 3:
            raise ValueError(f"Series volume must be 3-D (slices, rows, columns), got shape {vol.shape}")
        if vol.shape != (self.num_slices, self.rows, self.columns):
            raise ValueError(
                f"Series shape fields {(self.num_slices, self.rows, self.columns)} "
                f"do not match the volume {vol.shape}"
            )
        # The stored array is shared by every caller; read-only stops one of them silently
        # changing what the others see.
        if vol.flags.writeable:
            vol.flags.writeable = False
        if self._positions is None:
            self._positions = np.arange(self.num_slices, dtype=np.float64) * float(self.spacing[2])
        else:
            self._positions = np.asarray(self._positions, dtype=np.float64)
            if self._positions.shape != (self.num_slices,):
                raise ValueError("one slice position per slice is needed")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(s) for s in self.origin)  # type: ignore[assignment]
        self.direction = tuple(float(s) for s in self.direction)
        if len(self.direction) != 9:
            raise ValueError("direction must hold 9 floats (3x3, row-major)")

    @classmethod
    def from_array(
        cls,
        volume: np.ndarray,
        *,
        uid: str,
        modality: str = "OT",
        description: str = "",
        source: str = "",
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
        origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
        direction: tuple[float, ...] = IDENTITY_DIRECTION,
        is_volume: bool | None = None,
        positions: np.ndarray | None = None,
        **kwargs: Any,
    ) -> Series:
        """Wrap an array of shape (slices, rows, columns) or (rows, columns) without copying it: the one way the
        loaders (and tests, for synthetic data) make a Series, so its shape fields always come from the array.

        The array is marked read-only. `positions` default to slices evenly spaced by spacing[2] along the slice
        normal (direction's third column) from the origin; `is_volume` to more than one slice. Further keyword
        arguments are Series fields (slice_thickness, file_window, photometric, metadata, identifiers, ...).
        """
        vol = np.asarray(volume)
        if vol.ndim == 2:
            vol = vol[np.newaxis]
        if is_volume is None:
            is_volume = vol.shape[0] > 1
        if positions is None:
            normal = np.asarray(direction, dtype=np.float64).reshape(3, 3)[:, 2]
            start = float(np.dot(np.asarray(origin, dtype=np.float64), normal))
            positions = start + np.arange(vol.shape[0], dtype=np.float64) * float(spacing[2])
        return cls(
            uid=uid,
            modality=modality,
            description=description,
            source=source,
            num_slices=int(vol.shape[0]),
            rows=int(vol.shape[1]),
            columns=int(vol.shape[2]),
            spacing=spacing,
            origin=origin,
            direction=direction,
            _volume=vol,
            _positions=positions,
            _three_d=bool(is_volume),
            **kwargs,
        )

    @property
    def units(self) -> str:
        """The unit of the pixel values: HU for CT, none named for other modalities."""
        return "HU" if str(self.modality).upper() == "CT" else ""

    @property
    def spacing_known(self) -> bool:
        """The pixel size comes from the file (DICOM, NIfTI, NRRD, MetaImage, ...): plain images (PNG, JPEG, TIFF)
        record none and are given 1 mm, so sizes on them are in pixels."""
        fmt = str((self.metadata or {}).get("format", "")).upper()
        return fmt in SPACING_FORMATS

    @property
    def is_volume(self) -> bool:
        """True for more than one slice from a 3D source (CT/MR series, NIfTI, NRRD, ...)."""
        return self.num_slices > 1 and self._three_d

    def slice(self, index: int) -> np.ndarray:
        """A new float32 (rows, columns) array of slice `index`, in modality units and display orientation.
        SliceNotLoaded when the slice is not read yet (see `is_loaded`)."""
        index = self._check_index(index)
        pending = self._pending
        if pending is not None and not pending.loaded[index]:
            raise SliceNotLoaded(f"slice {index + 1} of {self.num_slices} is not read yet")
        return self._volume[index].astype(np.float32, order="C")  # type: ignore[index]

    @property
    def complete(self) -> bool:
        """Every slice is read (always, except while a study opened for browsing fills in; see io.fill)."""
        return self._pending is None

    def is_loaded(self, index: int) -> bool:
        """Whether slice `index` is read (its pixels are in `volume()`)."""
        index = self._check_index(index)
        pending = self._pending
        return pending is None or bool(pending.loaded[index])

    def loaded_count(self) -> int:
        """How many slices are read."""
        pending = self._pending
        return self.num_slices if pending is None else int(np.count_nonzero(pending.loaded))

    def request(self, index: int) -> None:
        """Ask for slice `index` to be read next (nothing to do once it is read); returns at once."""
        pending = self._pending
        if pending is not None and 0 <= int(index) < self.num_slices and not pending.loaded[int(index)]:
            pending.request(int(index))

    def slice_position(self, index: int) -> float:
        """Position of slice `index` in mm along the slice normal; strictly increasing with index."""
        index = self._check_index(index)
        return float(self._positions[index])  # type: ignore[index]

    def voxel_position(self, index: int, row: float, column: float) -> tuple[float, float, float]:
        """The patient position (LPS, mm) of voxel (slice `index`, `row`, `column`) as displayed:
        origin + direction @ (column * sx, row * sy, index * sz)."""
        d = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        step = np.array([column * self.spacing[0], row * self.spacing[1], index * self.spacing[2]])
        x, y, z = np.asarray(self.origin, dtype=np.float64) + d @ step
        return float(x) + 0.0, float(y) + 0.0, float(z) + 0.0

    def volume(self) -> np.ndarray:
        """The stored (slices, rows, columns) array itself: read-only, not a copy, possibly strided."""
        return self._volume  # type: ignore[return-value]

    def _check_index(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.num_slices:
            raise IndexError(f"slice index {index} out of range for {self.num_slices} slices")
        return index


class SliceNotLoaded(LookupError):
    """A slice of a series whose pixels are still being read was asked for before it was read."""


@dataclass
class Study:
    """Everything found at one path: the series that loaded and the files that did not. `pending`: while series
    opened for browsing are still reading their pixels, the io.fill.SliceFill that reads them (None otherwise)."""

    series: list[Series]
    errors: list[LoadError]
    source: str
    pending: Any = field(default=None, repr=False)


# FLAIR as scanners and archives name it: "AX T2 FLAIR", "t2_tirm_tra_dark-fluid" (Siemens), "flair.nii.gz".
_FLAIR = re.compile(r"flair|dark[-_ ]?fluid|tirm", re.IGNORECASE)


def series_sequence(series: Series) -> str | None:
    """The MR sequence a series says it is, from its description (DICOM SeriesDescription; a volume's file name) or
    its file name: "FLAIR", or None when it does not say (plain images, other sequences, other modalities)."""
    if (series.modality or "OT").upper() not in ("MR", "OT"):
        return None
    text = f"{series.description or ''} {os.path.basename(series.source or '')}"
    return "FLAIR" if _FLAIR.search(text) else None
