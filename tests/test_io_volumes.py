"""NIfTI / NRRD / MetaImage loading: reorientation to LPS checked against numpy flips of the raw
arrays and against physical coordinates; label maps line up with their images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medad_viewer.io import Series, load_study, load_volume_aligned


def _raw(path: Path) -> tuple[sitk.Image, np.ndarray]:
    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


def _only_series(path: Path, **kwargs) -> Series:
    study = load_study(path, **kwargs)
    assert study.errors == []
    assert len(study.series) == 1
    return study.series[0]


def _physical(series: Series, k: int, r: int, c: int) -> np.ndarray:
    d = np.array(series.direction).reshape(3, 3)
    return np.array(series.origin) + d @ (np.array([c, r, k]) * np.array(series.spacing))


@pytest.fixture(scope="module")
def mr1(sample_data: Path) -> Series:
    return _only_series(sample_data / "mr-brain" / "brain1_image.nrrd")


@pytest.fixture(scope="module")
def ct_nifti(sample_data: Path) -> Series:
    return _only_series(sample_data / "ct-nifti" / "example_ct_sm.nii.gz")


def test_mr_nrrd_is_flipped_so_rows_run_anterior_to_posterior(mr1: Series, sample_data: Path) -> None:
    image, raw = _raw(sample_data / "mr-brain" / "brain1_image.nrrd")
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert mr1.modality == "MR"
    assert (mr1.num_slices, mr1.rows, mr1.columns) == (25, 256, 256)
    assert mr1.is_volume
    assert mr1.volume().dtype == np.int16
    # Raw rows run posterior -> anterior (direction y = -1): display flips them, nothing else.
    np.testing.assert_array_equal(mr1.volume(), raw[:, ::-1, :])
    np.testing.assert_array_equal(mr1.slice(12), raw[12, ::-1, :].astype(np.float32))
    assert mr1.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert mr1.origin == pytest.approx(image.TransformIndexToPhysicalPoint((0, 255, 0)))
    assert mr1.spacing == pytest.approx(image.GetSpacing())


def test_mr_second_volume_slices(sample_data: Path) -> None:
    mr2 = _only_series(sample_data / "mr-brain" / "brain2_image.nrrd")
    assert mr2.num_slices == 23 and mr2.modality == "MR"


def test_ct_nifti_is_flipped_in_both_in_plane_axes(ct_nifti: Series, sample_data: Path) -> None:
    image, raw = _raw(sample_data / "ct-nifti" / "example_ct_sm.nii.gz")
    assert image.GetDirection() == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert ct_nifti.modality == "CT"  # guessed: values go below -500
    assert (ct_nifti.num_slices, ct_nifti.rows, ct_nifti.columns) == (30, 101, 122)
    np.testing.assert_array_equal(ct_nifti.volume(), raw[:, ::-1, ::-1])
    assert ct_nifti.origin == pytest.approx(image.TransformIndexToPhysicalPoint((121, 100, 0)))
    assert ct_nifti.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    positions = [ct_nifti.slice_position(k) for k in range(30)]
    assert np.diff(positions) == pytest.approx(np.full(29, 3.0))


@pytest.mark.parametrize("name", ["mr-brain/brain1_image.nrrd", "ct-nifti/example_ct_sm.nii.gz"])
def test_reported_geometry_maps_display_voxels_to_the_right_raw_voxels(sample_data: Path, name: str) -> None:
    path = sample_data / name
    image, raw = _raw(path)
    series = _only_series(path)
    rng = np.random.default_rng(1)
    for _ in range(50):
        k, r, c = (int(rng.integers(0, n)) for n in series.volume().shape)
        i, j, kk = image.TransformPhysicalPointToIndex(tuple(_physical(series, k, r, c)))
        assert series.volume()[k, r, c] == raw[kk, j, i]


def test_reorientation_matches_simpleitk_dicomorient(sample_data: Path) -> None:
    for name in ("mr-brain/brain2_image.nrrd", "ct-nifti/example_ct_sm.nii.gz"):
        path = sample_data / name
        oriented = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
        series = _only_series(path)
        np.testing.assert_array_equal(series.volume(), sitk.GetArrayViewFromImage(oriented))
        assert series.origin == pytest.approx(oriented.GetOrigin())
        assert series.direction == pytest.approx(oriented.GetDirection())


def test_labels_line_up_with_their_images(mr1: Series, sample_data: Path) -> None:
    label_path = sample_data / "mr-brain" / "brain1_label.nrrd"
    labels, spacing, origin, direction = load_volume_aligned(label_path)
    assert labels.shape == mr1.volume().shape
    assert spacing == pytest.approx(mr1.spacing)
    assert origin == pytest.approx(mr1.origin)
    assert direction == pytest.approx(mr1.direction)
    assert labels.flags.writeable  # a private copy for the caller
    # Every tumour voxel of the raw label map lands, via physical space, where the loader put it.
    label_image, raw_labels = _raw(label_path)
    _, raw_image = _raw(sample_data / "mr-brain" / "brain1_image.nrrd")
    kk, jj, ii = np.nonzero(raw_labels)
    assert len(kk) > 100
    d = np.array(mr1.direction).reshape(3, 3)
    for k, j, i in list(zip(kk, jj, ii))[:: max(len(kk) // 200, 1)]:
        point = np.array(label_image.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))
        c, r, s = np.rint(np.linalg.solve(d, point - np.array(mr1.origin)) / np.array(mr1.spacing)).astype(int)
        assert labels[s, r, c] == raw_labels[k, j, i]
        assert mr1.volume()[s, r, c] == raw_image[k, j, i]
    assert int((labels != 0).sum()) == len(kk)


def test_label_file_in_a_study_is_marked_seg(sample_data: Path) -> None:
    study = load_study(sample_data / "mr-brain")
    assert study.errors == []
    by_name = {s.description: s for s in study.series}
    assert by_name["brain1_label.nrrd"].modality == "SEG"
    assert sorted(s.num_slices for s in study.series if s.modality == "MR") == [23, 25]


def test_modality_override_and_stable_uid(sample_data: Path) -> None:
    path = sample_data / "ct-nifti" / "example_ct_sm.nii.gz"
    a = _only_series(path, modality="mr")
    b = _only_series(path)
    assert a.modality == "MR" and b.modality == "CT"
    assert a.uid == b.uid and a.uid.startswith("file:")


def test_permuted_volume_is_browsed_axially(tmp_path: Path) -> None:
    # Index x runs anterior -> posterior, y superior -> inferior, z left -> right (sagittal
    # slices): the loader must permute and flip exactly as DICOMOrient does.
    vol = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((1.0, 2.0, 3.0))
    image.SetOrigin((10.0, -5.0, 7.0))
    image.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
    path = tmp_path / "sag.mha"
    sitk.WriteImage(image, str(path))
    series = _only_series(path)
    oriented = sitk.DICOMOrient(image, "LPS")
    np.testing.assert_array_equal(series.volume(), sitk.GetArrayViewFromImage(oriented))
    assert series.spacing == pytest.approx(oriented.GetSpacing())
    assert series.origin == pytest.approx(oriented.GetOrigin())
    assert series.direction == pytest.approx(oriented.GetDirection())
    assert series.volume().flags.c_contiguous  # permuted: copied once so slices read fast


def test_4d_nifti_shows_the_first_volume(tmp_path: Path) -> None:
    vol4 = np.arange(3 * 2 * 4 * 5, dtype=np.int16).reshape(3, 2, 4, 5)  # t, z, y, x
    image = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in vol4])
    path = tmp_path / "fmri.nii.gz"
    sitk.WriteImage(image, str(path))
    series = _only_series(path)
    assert series.volume().shape == (2, 4, 5)
    np.testing.assert_array_equal(np.asarray(series.volume()), vol4[0])
    assert any("3 volumes" in w for w in series.warnings)


def test_2d_metaimage_and_float_storage(tmp_path: Path) -> None:
    flat = sitk.GetImageFromArray(np.full((4, 5), 7.0, np.float32))
    sitk.WriteImage(flat, str(tmp_path / "flat.mha"))
    frac = sitk.GetImageFromArray(np.full((2, 4, 5), 0.25, np.float64))
    sitk.WriteImage(frac, str(tmp_path / "frac.nrrd"))
    whole = _only_series(tmp_path / "flat.mha")
    assert whole.volume().shape == (1, 4, 5) and not whole.is_volume
    assert whole.volume().dtype == np.int16  # integral float values are stored compactly
    part = _only_series(tmp_path / "frac.nrrd")
    assert part.volume().dtype == np.float32
    assert part.slice(1)[0, 0] == pytest.approx(0.25)
