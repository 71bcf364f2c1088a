"""NIfTI, NRRD and MetaImage volumes, reoriented to LPS so they browse as axial slices.

Reorientation is an axis permutation plus flips (what `sitk.DICOMOrient(img, "LPS")` does),
done on numpy views so no copy is made unless axes must be permuted: displayed columns run
patient right to left, rows anterior to posterior, slices inferior to superior. Label maps on
the same grid go through the same code (`load_volume_aligned`) and so line up voxel for voxel.

Modality is a guess, overridable by the caller: 'SEG' for a small non-negative integer volume
whose file name says label/seg/mask, else 'CT' when the minimum is below -500 (air in HU),
else 'MR'.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import zlib

import numpy as np
import SimpleITK as sitk

from ._util import (ReadFailure, check_size, compact_dtype, credible_expansion, human_bytes, owned_view, stable_uid,
                    storage_dtype_for)
from .deid import FREE_TEXT_KEYS
from .dicom import _SITK_TO_NUMPY
from .series import Series

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_FORMATS = {".nii.gz": "NIfTI", ".nii": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}
_LABEL_NAME = re.compile(r"(label|labels|seg|segmentation|mask|annotation)", re.IGNORECASE)

Geometry = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, ...]]


def volume_suffix(path: str) -> str | None:
    lower = path.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return None


def load_volume_aligned(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float], tuple[float, ...]]:
    """Read a volume (image or label map) in display orientation, as `load_study` shows it.

    Returns (array (slices, rows, columns), spacing (x, y, z) mm, origin, direction (9 floats,
    ITK convention)). The array is a private, writeable copy in compact storage (int16 when the
    values fit). Raises ReadFailure with a plain-words message when the file cannot be read.
    """
    volume, (spacing, origin, direction), _info = read_volume(os.fspath(path))
    return np.array(volume, copy=True), spacing, origin, direction


def read_volume(path: str) -> tuple[np.ndarray, Geometry, dict]:
    """Read and reorient one volume file; the array may be a read-only view of the file's buffer."""
    name = os.path.basename(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ReadFailure(f"{name}: could not be read (the file is damaged or not a supported volume)") from None
    dim = reader.GetDimension()
    size = list(reader.GetSize())
    if reader.GetNumberOfComponents() > 1:
        raise ReadFailure(f"{name}: holds colour or vector voxels, which the viewer cannot show")
    if dim not in (2, 3, 4):
        raise ReadFailure(f"{name}: is a {dim}-D image; only 2-D, 3-D and 4-D files are supported")
    if 0 in size:
        raise ReadFailure(f"{name}: holds no voxels (its header gives its size as {' x '.join(map(str, size))})")
    notes: list[str] = []
    if dim == 4:
        if size[3] > 1:
            notes.append(f"the file holds {size[3]} volumes (a time series); only the first is shown")
        # Read only the first volume rather than all of them.
        reader.SetExtractIndex([0, 0, 0, 0])
        reader.SetExtractSize([size[0], size[1], size[2], 0])
        size = size[:3]
    if _FORMATS.get(volume_suffix(path) or "") == "NIfTI":
        _check_nifti_complete(path, reader)
    native = np.dtype(_SITK_TO_NUMPY.get(reader.GetPixelID(), np.float64))
    shape = tuple(reversed(size)) if len(size) == 3 else (1, size[1], size[0])
    check_size(name, shape, max(storage_dtype_for(native).itemsize, 2))
    if _FORMATS.get(volume_suffix(path) or "") in ("NRRD", "MetaImage"):
        _check_data_size(path, int(np.prod(shape, dtype=np.int64)), native.itemsize)
    try:
        image = reader.Execute()
    except RuntimeError:
        raise ReadFailure(f"{name}: could not be read (the file is damaged or truncated)") from None
    except MemoryError:
        raise ReadFailure(f"{name}: not enough memory to open this volume") from None

    info = {
        "format": _FORMATS.get(volume_suffix(path) or "", "volume"),
        "pixel_type": image.GetPixelIDTypeAsString(),
        "original_size": tuple(int(s) for s in image.GetSize()),
        "original_spacing": tuple(float(s) for s in image.GetSpacing()),
        "original_direction": tuple(float(s) for s in image.GetDirection()),
        "notes": notes,
        "free_text": {k: image.GetMetaData(k).strip() for k in image.GetMetaDataKeys()
                      if k in FREE_TEXT_KEYS and image.GetMetaData(k).strip()},
        "cal": _cal_window(image),
    }
    arr = owned_view(image)
    spacing = list(image.GetSpacing())
    origin = list(image.GetOrigin())
    direction = np.array(image.GetDirection(), dtype=np.float64)
    if image.GetDimension() == 2:
        arr = arr[np.newaxis]
        spacing += [1.0]
        origin += [0.0]
        d2 = direction.reshape(2, 2)
        direction = np.eye(3)
        direction[:2, :2] = d2
    direction = direction.reshape(3, 3)
    del image

    target = compact_dtype(arr)
    if arr.dtype != target:
        arr = arr.astype(target)
    view, geometry, reoriented = orient_lps(arr, tuple(spacing), tuple(origin), direction)
    info["reoriented"] = reoriented
    return view, geometry, info


def orient_lps(
    arr: np.ndarray,
    spacing: tuple[float, ...],
    origin: tuple[float, ...],
    direction: np.ndarray,
) -> tuple[np.ndarray, Geometry, bool]:
    """Permute and flip a (z, y, x) array so its axes point to L, P and S as closely as possible.

    Returns the reoriented array (a view when only flips are needed, a contiguous copy when
    axes are permuted, so display slices stay fast to read), its geometry, and whether it changed.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    # Greedy assignment of each index axis to its closest physical axis; a permutation always.
    perm = [-1, -1, -1]  # perm[index axis] = physical axis
    used: set[int] = set()
    for flat in np.argsort(-np.abs(d), axis=None, kind="stable"):
        phys, idx = divmod(int(flat), 3)
        if perm[idx] == -1 and phys not in used:
            perm[idx] = phys
            used.add(phys)
    inv = [perm.index(p) for p in range(3)]  # inv[physical axis] = index axis
    signs = [1.0 if d[perm[i], i] >= 0 else -1.0 for i in range(3)]

    size = arr.shape[::-1]  # index axes x, y, z
    axes = (2 - inv[2], 2 - inv[1], 2 - inv[0])
    view = arr.transpose(axes) if axes != (0, 1, 2) else arr
    for phys in range(3):
        if signs[inv[phys]] < 0:
            view = np.flip(view, axis=2 - phys)
    if axes != (0, 1, 2):
        view = np.ascontiguousarray(view)

    new_origin = np.array(origin, dtype=np.float64)
    for i in range(3):
        if signs[i] < 0:
            new_origin += (size[i] - 1) * spacing[i] * d[:, i]
    new_dir = np.column_stack([d[:, inv[q]] * signs[inv[q]] for q in range(3)])
    new_spacing = tuple(float(spacing[inv[q]]) for q in range(3))
    changed = axes != (0, 1, 2) or any(s < 0 for s in signs)
    # "+ 0.0" turns the -0.0 that sign flips leave into 0.0.
    geometry = (new_spacing, tuple(float(v) + 0.0 for v in new_origin), tuple(float(v) + 0.0 for v in new_dir.ravel()))
    return view, geometry, changed  # type: ignore[return-value]


def guess_modality(arr: np.ndarray, path: str) -> str:
    """'SEG' for label maps, 'CT' when values go below -500 (air in HU), else 'MR'."""
    if arr.size == 0:
        return "OT"
    lo, hi = arr.min(), arr.max()
    if arr.dtype.kind in "iu" and lo >= 0 and hi < 256 and _LABEL_NAME.search(os.path.basename(path)):
        return "SEG"
    return "CT" if lo < -500 else "MR"


def load_volume_series(path: str, modality: str | None = None) -> Series:
    """One volume file as a Series (raises ReadFailure)."""
    volume, (spacing, origin, direction), info = read_volume(path)
    metadata = {k: info[k] for k in ("format", "pixel_type", "original_size", "original_spacing",
                                      "original_direction", "reoriented")}
    # Slices evenly spaced along the normal from the origin: from_array's positions.
    return Series.from_array(
        volume,
        uid=stable_uid(path),
        modality=(modality or guess_modality(volume, path)).upper(),
        description=os.path.basename(path),
        source=os.path.abspath(path),
        spacing=spacing,
        origin=origin,
        direction=direction,
        is_volume=True,
        file_window=info["cal"],
        metadata=metadata,
        identifiers={**info["free_text"], "SourceFiles": [os.path.basename(path)]},
        warnings=list(info["notes"]),
    )


def _check_nifti_complete(path: str, reader: sitk.ImageFileReader) -> None:
    """Raise ReadFailure for a truncated NIfTI file: ITK reads those without complaint and fills
    the missing part with zeros, which would look like a real (half-empty) volume."""
    name = os.path.basename(path)
    try:
        ndim = int(float(reader.GetMetaData("dim[0]")))
        voxels = 1
        for i in range(1, ndim + 1):
            voxels *= max(int(float(reader.GetMetaData(f"dim[{i}]"))), 1)
        expected = int(float(reader.GetMetaData("vox_offset"))) + voxels * int(float(reader.GetMetaData("bitpix"))) // 8
    except (RuntimeError, ValueError):
        return  # header fields missing: nothing to check against
    truncated = f"{name}: the file is truncated (it ends before its data does)"
    # By content, not by name: tools that rename files leave uncompressed NIfTI called ".nii.gz" (ITK reads both).
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if not gzipped:
        if os.path.getsize(path) < expected:
            raise ReadFailure(truncated)
        return
    # gzip ends with the uncompressed size mod 2**32: a cheap first check; a full decompression
    # confirms, so a multi-member gzip is not mistaken for a damaged one.
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        (isize,) = struct.unpack("<I", fh.read(4))
    if isize == expected % 2**32:
        return
    try:
        with gzip.open(path, "rb") as gz:
            total = 0
            while chunk := gz.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        raise ReadFailure(truncated) from None
    if total < expected:
        raise ReadFailure(truncated)


def _attached_data(path: str) -> tuple[str, int] | None:
    """(encoding, bytes after the header) of a NRRD or MetaImage file whose data follows its header in the same
    file, the encoding being 'raw', 'hex', 'text' or 'compressed'; None when the data is in another file or the
    header is not understood (ITK then decides)."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        size = os.fstat(fh.fileno()).st_size
    fields: dict[str, str] = {}
    offset = 0
    if head.startswith(b"NRRD"):
        for line in head.splitlines(keepends=True):
            offset += len(line)
            text = line.decode("latin-1").strip()
            if not text:  # the blank line ending the header
                break
            key, sep, value = text.partition(":")
            if sep and not text.startswith("#") and not value.startswith("="):  # "key:=value" is not a field
                fields[key.strip().lower()] = value.strip().lower()
        else:
            return None
        if "data file" in fields or "datafile" in fields:
            return None
        kind = {"raw": "raw", "hex": "hex", "txt": "text", "text": "text", "ascii": "text", "gzip": "compressed",
                "gz": "compressed", "bzip2": "compressed", "bz2": "compressed"}.get(fields.get("encoding", ""))
        return (kind, size - offset) if kind else None
    for line in head.splitlines(keepends=True):  # MetaImage: "Key = Value" lines, ElementDataFile last
        offset += len(line)
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            return None
        fields[key.strip().lower()] = value.strip().lower()
        if key.strip().lower() == "elementdatafile":
            if fields["elementdatafile"] != "local":
                return None
            return ("compressed" if fields.get("compresseddata") == "true" else "raw", size - offset)
    return None


def _check_data_size(path: str, voxels: int, itemsize: int) -> None:
    """Raise ReadFailure when a NRRD or MetaImage header claims more voxels than its file can hold: ITK would
    allocate them all (up to the size limit) before failing, or fill what the file lacks with zeros."""
    name = os.path.basename(path)
    try:
        attached = _attached_data(path)
    except OSError:
        return  # reported when the file is read
    if attached is None:
        return
    kind, have = attached
    needed = voxels * itemsize
    if kind == "compressed":
        if not credible_expansion(needed, have):
            raise ReadFailure(
                f"{name}: the file is damaged (its header claims {human_bytes(needed)} of voxels, far more than "
                f"its {human_bytes(have)} of compressed data can hold)"
            )
        return
    # Raw data needs every byte; hex two characters a byte; text at least one character a voxel.
    if have < {"raw": needed, "hex": 2 * needed, "text": voxels}[kind]:
        raise ReadFailure(f"{name}: the file is truncated (it ends before its data does)")


def _cal_window(image: sitk.Image) -> tuple[float, float] | None:
    # NIfTI's cal_min/cal_max is the display range the writer intended.
    if not (image.HasMetaDataKey("cal_min") and image.HasMetaDataKey("cal_max")):
        return None
    try:
        lo = float(image.GetMetaData("cal_min"))
        hi = float(image.GetMetaData("cal_max"))
    except ValueError:
        return None
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return None
    return ((lo + hi) / 2.0, hi - lo)
