"""Body masks on real CT, MR and X-ray slices from the sample data, plus degenerate inputs."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from medad_viewer.engine.foreground import body_mask, body_mask_volume, fill_holes


def _window(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def ct_slice(sample_data: Path) -> np.ndarray:
    files = sorted((sample_data / "ct-dicom").glob("*.dcm"))
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(files[len(files) // 2])))
    return _window(arr[0])  # 512x512 abdomen, patient table below the body


@pytest.fixture(scope="module")
def ct_hu(sample_data: Path) -> np.ndarray:
    files = sorted((sample_data / "ct-dicom").glob("*.dcm"))
    return sitk.GetArrayFromImage(sitk.ReadImage(str(files[len(files) // 2])))[0].astype(np.float32)


@pytest.fixture(scope="module")
def mr_slice(sample_data: Path) -> np.ndarray:
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_data / "mr-brain" / "brain1_image.nrrd")))
    return _window(vol[12])  # 256x256 axial head through the ventricles


@pytest.fixture(scope="module")
def xray(sample_data: Path) -> np.ndarray:
    img = cv2.imread(str(sample_data / "xray" / "tbx11k_h0001_healthy.png"), cv2.IMREAD_GRAYSCALE)
    return _window(img)


def _n_components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def test_ct_body_covers_centre_excludes_corners_and_table(ct_slice: np.ndarray) -> None:
    m = body_mask(ct_slice)
    assert m.dtype == bool and m.shape == ct_slice.shape
    assert m[240:280, 236:276].all()
    for sl in (np.s_[:40, :40], np.s_[:40, -40:], np.s_[-40:, :40], np.s_[-40:, -40:]):
        assert not m[sl].any()
    # The table's curved plates are bright rows below y=440 in this series; the body ends above them.
    assert (ct_slice[440:, 200:312] > 0.5).any(), "sample changed: no table below the body"
    assert not m[440:].any()
    assert np.nonzero(m.any(axis=1))[0].max() < 440
    assert _n_components(m) == 1
    assert 0.2 < m.mean() < 0.5


@pytest.mark.parametrize("low, high", [(-160, 240), (-1350, 150), (0, 80), (-1000, 1000)])
def test_ct_body_in_fixed_hu_windows(ct_hu: np.ndarray, low: float, high: float) -> None:
    # The engine windows CT in fixed HU (soft tissue, lung, brain, ...), not by percentiles. In the
    # narrow brain window fat is as black as air, so the outline must be closed before filling.
    img = np.clip((ct_hu - low) / (high - low), 0, 1).astype(np.float32)
    m = body_mask(img)
    assert _n_components(m) == 1
    assert m[240:280, 236:276].all()
    assert not m[440:].any()
    assert 0.25 < m.mean() < 0.45


def test_ct_body_fills_internal_air(ct_slice: np.ndarray) -> None:
    # Bowel gas / lung is dark like outside air but enclosed by the body wall: it belongs to the body.
    m = body_mask(ct_slice)
    assert np.array_equal(m, fill_holes(m))
    dark_in_body = (ct_slice < 0.1) & m
    assert dark_in_body.sum() > 50, "expected some gas inside the body on this slice"


def test_ct_body_downsized_still_excludes_table(ct_slice: np.ndarray) -> None:
    small = cv2.resize(ct_slice, (256, 256), interpolation=cv2.INTER_AREA)
    m = body_mask(small)
    assert not m[220:].any()
    assert m[120:140, 118:138].all()
    assert _n_components(m) == 1


def test_mr_head_includes_brain_and_scalp_excludes_background(mr_slice: np.ndarray) -> None:
    m = body_mask(mr_slice)
    assert m[100:160, 100:160].all()
    for sl in (np.s_[:12, :12], np.s_[:12, -12:], np.s_[-12:, :12], np.s_[-12:, -12:]):
        assert not m[sl].any()
    # Skull (dark on T1) sits between scalp and brain; the whole head must be one filled blob.
    assert _n_components(m) == 1
    assert np.array_equal(m, fill_holes(m))
    # Bright scalp ring on the left of the centre row is inside the mask.
    row = mr_slice[128]
    first_bright = int(np.argmax(row > 0.5))
    assert m[128, first_bright]
    assert not m[128, : max(first_bright - 6, 0)].any()


def test_xray_mask_is_most_of_image(xray: np.ndarray) -> None:
    m = body_mask(xray)
    h, w = m.shape
    assert 0.7 < m.mean() < 0.98
    # Lung fields are dark but part of the anatomy.
    assert m[h // 3 : h // 2, w // 4 : w // 3].all()
    assert m[h // 3 : h // 2, 2 * w // 3 : 3 * w // 4].all()
    # The black background beside the arms at the bottom corners is excluded.
    assert not m[-20:, :10].any()
    assert not m[-20:, -10:].any()


@pytest.mark.parametrize("shape", [(64, 64), (32, 32), (5, 7), (1, 1)])
def test_empty_and_constant_slices(shape: tuple[int, int]) -> None:
    for value in (0.0, 0.5, 1.0):
        m = body_mask(np.full(shape, value, np.float32))
        assert m.shape == shape and m.dtype == bool and not m.any()


def test_nan_and_empty_shape() -> None:
    assert body_mask(np.zeros((0, 0), np.float32)).shape == (0, 0)
    a = np.zeros((32, 32), np.float32)
    a[8:24, 8:24] = 0.8
    a[0, 0] = np.nan
    m = body_mask(a)
    assert m[10:22, 10:22].all() and not m[0, 0]


def test_tiny_images(ct_slice: np.ndarray, mr_slice: np.ndarray) -> None:
    for img in (ct_slice, mr_slice):
        small = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
        m = body_mask(small)
        assert m.shape == (32, 32)
        assert m[14:18, 14:18].all()
        assert not m[0, 0] and not m[0, -1]


def test_synthetic_disc_with_table_and_specks() -> None:
    img = np.zeros((128, 128), np.float32)
    cv2.circle(img, (64, 56), 36, 0.7, -1)
    cv2.circle(img, (64, 56), 12, 0.02, -1)  # a dark "lung" inside the body
    img[104:107, 10:118] = 0.9  # thin table plate
    img[5:8, 5:8] = 1.0  # text marker speck
    m = body_mask(img)
    assert m[56, 64] and m[56, 30]
    assert not m[100:].any()
    assert not m[:10, :10].any()
    assert _n_components(m) == 1


def test_keeps_large_secondary_components() -> None:
    # Two legs / two arms: both big components belong to the body.
    img = np.zeros((128, 128), np.float32)
    cv2.circle(img, (35, 64), 25, 0.8, -1)
    cv2.circle(img, (95, 64), 25, 0.8, -1)
    m = body_mask(img)
    assert m[64, 35] and m[64, 95]
    assert _n_components(m) == 2


def test_rejects_non_2d() -> None:
    with pytest.raises(ValueError):
        body_mask(np.zeros((2, 8, 8), np.float32))


def test_volume(mr_slice: np.ndarray) -> None:
    vol = np.stack([mr_slice, np.zeros_like(mr_slice), mr_slice])
    mv = body_mask_volume(vol)
    assert mv.shape == vol.shape
    assert np.array_equal(mv[0], body_mask(mr_slice)) and not mv[1].any()


def test_fast_on_256(ct_slice: np.ndarray, mr_slice: np.ndarray) -> None:
    imgs = [cv2.resize(ct_slice, (256, 256), interpolation=cv2.INTER_AREA), mr_slice]
    for img in imgs:
        body_mask(img)
        t = time.perf_counter()
        for _ in range(20):
            body_mask(img)
        per_call_ms = (time.perf_counter() - t) / 20 * 1000
        # Budget is 10 ms; the margin absorbs a loaded CI machine.
        assert per_call_ms < 10.0, per_call_ms


def test_median_of_equals_numpys_median():
    """The histogram-guided median of the skull search is np.median's value exactly: odd and even counts, ties,
    values on the bins' edges, and np.median itself outside [0, 1] or with NaN."""
    from medad_viewer.engine.foreground import median_of
    rng = np.random.default_rng(0)
    cases = [rng.random(n).astype(np.float32) for n in (1, 2, 3, 4, 101, 4096, 32301)]
    cases += [(rng.integers(0, 5, 1000) / 4).astype(np.float32),  # ties, on the bins' edges, 0 and 1 included
              np.where(rng.random(999) < 0.5, 0.0, 1.0).astype(np.float32),
              np.array([0.25, 0.75], np.float32), np.array([1.5, -0.2, 0.3, 0.9], np.float32),
              rng.random(10)]  # float64: np.median itself
    for v in cases:
        assert median_of(v) == float(np.median(v)), v[:6]
    assert np.isnan(median_of(np.array([0.5, np.nan, 0.2], np.float32)))
