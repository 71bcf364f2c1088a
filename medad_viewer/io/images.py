"""Plain 2D images (PNG, JPEG, TIFF, BMP): one file, or a folder of them as one series.

Bit depth is kept (16-bit PNG stays 16-bit); colour is converted to grey (ITU-R BT.601 luma);
EXIF rotation is ignored, as pixels are data here. A folder's images are sorted naturally by
name ('img2' before 'img10'); images of a different size or bit depth than their neighbours
form their own series (largest group first), as one stack needs one grid and one grey scale.
Modality is 'OT' unless the caller says otherwise. Multi-page TIFF: first page only.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import SimpleITK as sitk

from ._util import (MAX_BYTES, ReadFailure, SliceStack, check_size, credible_expansion, human_bytes, natural_key,
                    stable_uid, storage_dtype_for)
from .dicom import _SITK_TO_NUMPY
from .series import LoadError, Series

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


def image_format(path: str) -> str | None:
    return _FORMATS.get(os.path.splitext(path)[1].lower())


@dataclass
class _Probe:
    path: str
    rows: int
    columns: int
    depth: str  # "8-bit", "16-bit", "32-bit", "float": images of different depth don't share a stack
    channels: int = 1
    decoded: np.ndarray | None = None


def _depth_of(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return "float"
    return f"{dtype.itemsize * 8}-bit"


def _probe(path: str) -> _Probe:
    """Size and depth from the header when SimpleITK can read it (no decoding), else by decoding."""
    name = os.path.basename(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
        size = reader.GetSize()
        dtype = np.dtype(_SITK_TO_NUMPY.get(reader.GetPixelID(), np.float64))
    except RuntimeError:
        grey = decode_image(path)
        return _Probe(path, grey.shape[0], grey.shape[1], _depth_of(grey.dtype), decoded=grey)
    check_size(name, (int(size[1]), int(size[0])), 2)
    check_expansion(path, int(size[1]), int(size[0]), int(reader.GetNumberOfComponents()), dtype.itemsize)
    return _Probe(path, int(size[1]), int(size[0]), _depth_of(dtype), int(reader.GetNumberOfComponents()))


def check_expansion(path: str, rows: int, cols: int, channels: int, itemsize: int) -> None:
    """Raise ReadFailure when decoding the image the header describes would take far more memory than its file
    could credibly hold (a damaged header or a decompression bomb; see _util.MAX_EXPANSION)."""
    decoded = rows * cols * max(channels, 1) * itemsize
    try:
        size = os.path.getsize(path)
    except OSError:
        return  # reported when the file is read
    if not credible_expansion(decoded, size):
        raise ReadFailure(
            f"{os.path.basename(path)}: the file is damaged (its header claims {cols} x {rows} pixels, "
            f"{human_bytes(decoded)} to decode, far more than a file of {human_bytes(size)} can hold)"
        )


def _png_size(path: str) -> tuple[int, int, int, int] | None:
    """(rows, columns, channels, bytes a sample) from a PNG's IHDR chunk, or None when it has none."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", head[16:26])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour)  # a palette decodes to colour
    return None if channels is None else (height, width, channels, 2 if depth == 16 else 1)


def decode_image(path: str) -> np.ndarray:
    """Decode a plain image to a 2-D grey array at its full bit depth (raises ReadFailure)."""
    name = os.path.basename(path)
    kind = image_format(path) or "image"
    try:
        if os.path.getsize(path) > MAX_BYTES:
            raise ReadFailure(f"{name}: file is too large to open")
        # The size the decoder will allocate, checked first (also when SimpleITK could not read the header).
        png = _png_size(path) if kind == "PNG" else None
        if png is not None:
            check_size(name, png[:2], 2)
            check_expansion(path, *png)
        # np.fromfile + imdecode rather than imread: imread cannot open non-ASCII paths on Windows.
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ReadFailure(f"{name}: could not be read ({exc.strerror or exc})") from None
    if buf.size == 0:
        raise ReadFailure(f"{name}: the file is empty")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ReadFailure(f"{name}: could not be decoded (the file is damaged or not really a {kind} image)")
    check_size(name, img.shape[:2], 2)
    return to_grey(img)


def to_grey(img: np.ndarray) -> np.ndarray:
    """OpenCV's BGR / BGRA / grey+alpha to one grey channel, same dtype."""
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels == 1 or channels == 2:
        return np.ascontiguousarray(img[..., 0])
    if img.dtype in (np.uint8, np.uint16, np.float32):
        code = cv2.COLOR_BGR2GRAY if channels == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(img, code)
    grey = img[..., 2] * 0.299 + img[..., 1] * 0.587 + img[..., 0] * 0.114
    return np.rint(grey).astype(img.dtype) if img.dtype.kind in "iu" else grey.astype(np.float32)


def load_image_files(
    paths: list[str],
    *,
    folder: str | None = None,
    modality: str | None = None,
    tick: Callable[[], None] | None = None,
) -> tuple[list[Series], list[LoadError]]:
    """Plain images of one folder (or one file) as series; never raises for bad files."""
    tick = tick or (lambda: None)
    errors: list[LoadError] = []
    probes: list[_Probe] = []
    for path in sorted(paths, key=lambda p: natural_key(os.path.basename(p))):
        try:
            probes.append(_probe(path))
        except ReadFailure as exc:
            errors.append(LoadError(path, str(exc)))
            tick()

    groups: dict[tuple[int, int, str], list[_Probe]] = {}
    for p in probes:
        groups.setdefault((p.rows, p.columns, p.depth), []).append(p)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), natural_key(kv[1][0].path)))

    series: list[Series] = []
    for gi, ((rows, cols, depth), group) in enumerate(ordered):
        stack = SliceStack(len(group), rows, cols, storage_dtype_for(np.float32 if depth == "float" else np.uint8))
        kept: list[_Probe] = []
        failures: list[tuple[str, str]] = []
        colour = 0
        for p in group:
            try:
                grey = p.decoded if p.decoded is not None else decode_image(p.path)
                p.decoded = None
                if grey.shape != (rows, cols):
                    raise ReadFailure(f"{os.path.basename(p.path)}: its decoded size {grey.shape[1]} x "
                                      f"{grey.shape[0]} differs from its header")
                stack.append(grey)
                kept.append(p)
                colour += p.channels > 1
            except ReadFailure as exc:
                failures.append((p.path, str(exc)))
            except MemoryError:
                failures.append((p.path, f"{os.path.basename(p.path)}: not enough memory to open this image"))
            tick()
        if not kept:
            errors.extend(LoadError(path, message) for path, message in failures)
            continue
        warnings = [
            f"image file {os.path.basename(path)} could not be read and was skipped: {message.split(': ', 1)[-1]}"
            for path, message in failures
        ]
        volume = stack.result()
        if len(kept) == 1:
            source = os.path.abspath(kept[0].path)
            uid = stable_uid(source)
            description = os.path.basename(source)
        else:
            source = os.path.abspath(folder or os.path.dirname(kept[0].path))
            uid = stable_uid(source, "" if len(ordered) == 1 else f"{cols}x{rows}-{depth}")
            description = f"{os.path.basename(source.rstrip(os.sep)) or source} ({len(kept)} images)"
            if gi > 0:
                description += f", {cols} x {rows} {depth}"
        formats = sorted({image_format(p.path) or "image" for p in kept})
        metadata: dict = {"format": "/".join(formats), "bit_depth": depth}
        if colour:
            metadata["converted_to_grey"] = colour
        series.append(
            # A stack of images, not a volume: unit spacing, positions 0, 1, 2, ... (from_array's defaults).
            Series.from_array(
                volume,
                uid=uid,
                modality=(modality or "OT").upper(),
                description=description,
                source=source,
                is_volume=False,
                metadata=metadata,
                identifiers={"SourceFiles": [os.path.basename(p.path) for p in kept]},
                warnings=warnings,
            )
        )
    return series, errors
