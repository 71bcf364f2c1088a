"""Memory: one compact (int16) copy of the voxels, slices made on demand without copying the volume."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medad_viewer.io import load_study


def _peak_numpy_bytes(fn) -> tuple[object, int]:
    """Peak bytes allocated through Python/numpy while running fn (numpy reports to tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture(scope="module")
def big_mha(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    vol = rng.integers(-1024, 2000, size=(200, 256, 256), dtype=np.int16)
    image = sitk.GetImageFromArray(vol)
    # Flipped rows (direction y = -1), as in many NRRD/NIfTI files: reorientation must not copy.
    image.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path_factory.mktemp("big") / "big.mha"
    sitk.WriteImage(image, str(path))
    return path, vol


def test_large_volume_is_held_once_as_int16(big_mha: tuple[Path, np.ndarray]) -> None:
    path, vol = big_mha
    study, peak = _peak_numpy_bytes(lambda: load_study(path))
    (s,) = study.series
    v = s.volume()
    assert v.dtype == np.int16 and v.shape == (200, 256, 256)
    # No numpy-side copy of the 26 MB volume while loading (the pixels stay in the image buffer).
    assert peak < vol.nbytes // 10
    assert s.volume() is v  # the stored array, not a copy per call
    assert not v.flags.writeable
    np.testing.assert_array_equal(v[100], vol[100, ::-1, :])


def test_slice_does_not_copy_the_volume(big_mha: tuple[Path, np.ndarray]) -> None:
    path, vol = big_mha
    (s,) = load_study(path).series
    plane, peak = _peak_numpy_bytes(lambda: s.slice(150))
    assert plane.dtype == np.float32 and plane.shape == (256, 256)
    assert peak < 3 * plane.nbytes  # one float32 slice, not a volume
    np.testing.assert_array_equal(plane, vol[150, ::-1, :].astype(np.float32))
    plane[:] = 0  # the caller owns the slice: changing it leaves the volume alone
    assert s.slice(150)[0, 0] == vol[150, -1, 0]


def test_volume_outlives_its_series(big_mha: tuple[Path, np.ndarray]) -> None:
    # volume() may be a view of a SimpleITK buffer: it must stay valid after the Series is gone.
    path, vol = big_mha
    v = load_study(path).series[0].volume()
    gc.collect()
    _ = [np.ones(1_000_000) for _ in range(20)]  # reuse freed memory if any was freed
    np.testing.assert_array_equal(v[7], vol[7, ::-1, :])


def test_dicom_series_is_stored_once(tmp_path: Path) -> None:
    n, rows, cols = 40, 128, 128
    rng = np.random.default_rng(1)
    for k in range(n):
        image = sitk.GetImageFromArray(rng.integers(-1000, 1000, size=(rows, cols), dtype=np.int16))
        for key, value in {
            "0008|0060": "CT",
            "0020|000e": "1.2.3.99",
            "0020|0032": f"0\\0\\{k * 1.5}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(k),
        }.items():
            image.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(tmp_path / f"{k}.dcm"))
        writer.Execute(image)
    load_study(tmp_path)  # warm up: first-use caches are not what is measured
    study, peak = _peak_numpy_bytes(lambda: load_study(tmp_path))
    (s,) = study.series
    assert s.volume().dtype == np.int16 and s.num_slices == n
    nbytes = n * rows * cols * 2
    assert peak < 1.5 * nbytes  # the one int16 stack plus a slice or two in flight
