"""Helpers shared by the loaders: size limits, compact pixel storage, stable ids, natural sorting."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable

import numpy as np
import SimpleITK as sitk

# Refuse inputs whose stored pixels would exceed this (the viewer holds one copy in memory).
MAX_BYTES = 2**31
# Refuse 2D images wider or taller than this: nothing medical is, and decoders may misbehave.
MAX_2D_SIDE = 16384
# Compressed pixels are not believed to expand more than MAX_EXPANSION times once they would take more than
# EXPANSION_FLOOR: real images, even nearly blank ones and label maps, stay below that; a damaged header or a
# decompression bomb does not, and decoding it would take gigabytes for a file of a few megabytes.
MAX_EXPANSION = 200
EXPANSION_FLOOR = 256 * 2**20

ProgressCallback = Callable[[int, int], None]

_INT16 = np.iinfo(np.int16)
_UINT16 = np.iinfo(np.uint16)


class ReadFailure(Exception):
    """A file could not be loaded; the message is plain words meant for the user."""


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def check_size(name: str, shape: tuple[int, ...], itemsize: int = 2) -> None:
    """Raise ReadFailure when an image of `shape` is too large to open."""
    rows, cols = shape[-2], shape[-1]
    if len(shape) == 2 or (len(shape) == 3 and shape[0] == 1):
        if rows > MAX_2D_SIDE or cols > MAX_2D_SIDE:
            raise ReadFailure(
                f"{name}: image is too large to open ({cols} x {rows} pixels; "
                f"the limit is {MAX_2D_SIDE} pixels on a side)"
            )
    nbytes = int(np.prod(shape, dtype=np.int64)) * itemsize
    if nbytes > MAX_BYTES:
        dims = " x ".join(str(s) for s in reversed(shape))
        raise ReadFailure(
            f"{name}: image is too large to open ({dims} voxels, about {human_bytes(nbytes)}; "
            f"the limit is {human_bytes(MAX_BYTES)})"
        )


def credible_expansion(decoded: int, stored: int) -> bool:
    """Whether `stored` bytes of compressed data can credibly hold `decoded` bytes of pixels."""
    return decoded <= EXPANSION_FLOOR or decoded <= MAX_EXPANSION * stored


def stable_uid(path: str | os.PathLike[str], suffix: str = "") -> str:
    """'file:' + sha1 of the resolved path (+ suffix): the same input always gets the same uid."""
    resolved = os.path.realpath(os.fspath(path))
    digest = hashlib.sha1(resolved.encode("utf-8", "surrogateescape")).hexdigest()
    return f"file:{digest}" + (f"#{suffix}" if suffix else "")


def natural_key(text: str) -> tuple:
    """Sort key putting 'img2' before 'img10'."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts if p)


def storage_dtype_for(dtype: np.dtype) -> np.dtype:
    """The dtype slices of `dtype` are first stored as, before their values are seen
    (SliceStack widens it when a slice does not fit)."""
    return np.dtype(np.int16) if np.dtype(dtype).kind in "iub" else np.dtype(np.float32)


def fits(arr: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every value of `arr` is stored exactly in `dtype` (int16, uint16 or float32)."""
    dtype = np.dtype(dtype)
    if arr.size == 0 or arr.dtype == dtype:
        return True
    if dtype.kind == "f":
        # float64 input loses precision far below what display or scoring can notice;
        # integers are exact in float32 only up to 2**24.
        if arr.dtype.kind == "f":
            return True
        return bool(arr.min() >= -(2**24) and arr.max() <= 2**24)
    info = np.iinfo(dtype)
    if arr.dtype.kind in "iub":
        return bool(arr.min() >= info.min and arr.max() <= info.max)
    if not np.all(np.isfinite(arr)):
        return False
    if arr.min() < info.min or arr.max() > info.max:
        return False
    return bool(np.all(np.floor(arr) == arr))


def compact_dtype(arr: np.ndarray, chunk: int = 16) -> np.dtype:
    """The smallest storage dtype (int16, uint16, float32) holding `arr`, checked slab by slab so
    no full-size temporary is made."""
    if arr.dtype == np.int16:
        return np.dtype(np.int16)
    candidates = [np.dtype(np.int16), np.dtype(np.uint16)] if arr.dtype.kind in "iubf" else []
    for cand in candidates:
        if all(fits(arr[i : i + chunk], cand) for i in range(0, max(arr.shape[0], 1), chunk)):
            return cand
    return np.dtype(np.float32)


class SliceStack:
    """Fills one preallocated (n, rows, cols) array slice by slice, widening its dtype only if a
    slice does not fit, so a series is held as a single compact copy.

    `append` fills the slots in order; `put` fills any slot (a series read in another order, the slice shown first:
    the array is then zeroed, whose pages the system gives only as they are written, so memory grows with the slices
    read). `on_widen(array)` is told of the new array after a widening (the old one is left as it was)."""

    def __init__(self, n: int, rows: int, cols: int, dtype: np.dtype, zeroed: bool = False) -> None:
        self.data = (np.zeros if zeroed else np.empty)((n, rows, cols), dtype=dtype)
        self.count = 0
        self._zeroed = zeroed
        self._nonnegative = True
        self.on_widen: Callable[[np.ndarray], None] | None = None

    def append(self, plane: np.ndarray) -> None:
        self.put(self.count, plane)
        self.count += 1

    def put(self, index: int, plane: np.ndarray) -> None:
        if plane.shape != self.data.shape[1:]:
            raise ReadFailure(f"slice size {plane.shape} differs from the series {self.data.shape[1:]}")
        if not fits(plane, self.data.dtype):
            self._widen(plane)
        if plane.size and self.data.dtype.kind in "iu" and plane.min() < 0:
            self._nonnegative = False
        self.data[index] = plane

    def _widen(self, plane: np.ndarray) -> None:
        new = np.dtype(np.float32)
        if (
            self.data.dtype == np.int16
            and self._nonnegative
            and plane.dtype.kind in "iu"
            and fits(plane, np.dtype(np.uint16))
        ):
            new = np.dtype(np.uint16)
        if self._zeroed:  # slots filled in any order: all of them move
            widened = self.data.astype(new)
        else:
            widened = np.empty(self.data.shape, dtype=new)
            widened[: self.count] = self.data[: self.count]
        self.data = widened
        if self.on_widen is not None:
            self.on_widen(widened)

    def result(self) -> np.ndarray:
        # A view of the filled part: slices that failed only waste their unused slots.
        return self.data[: self.count]


class _ImageBuffer:
    """Exposes a SimpleITK image's pixel buffer to numpy while keeping the image alive: arrays
    made from it (and their views) hold a reference, so the memory can never be freed under them."""

    def __init__(self, image: sitk.Image) -> None:
        self._image = image
        view = sitk.GetArrayViewFromImage(image)
        interface = dict(view.__array_interface__)
        interface["data"] = (interface["data"][0], True)  # read-only
        self.__array_interface__ = interface


def owned_view(image: sitk.Image) -> np.ndarray:
    """A read-only numpy array (z, y, x) over `image`'s pixels, without copying them."""
    return np.asarray(_ImageBuffer(image))
