"""DICOM loading on the real sample CT series and X-ray, checked against independent reads."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from medad_viewer.io import Series, load_study
from medad_viewer.io.deid import is_identifying


def _tags(path: Path) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return {k: reader.GetMetaData(k).strip() for k in reader.GetMetaDataKeys()}


def _raw_stored_pixels(path: Path) -> np.ndarray:
    """Stored values straight from the file: the JPEG 2000 frame inside the encapsulated pixel
    data, decoded by OpenCV, so no DICOM rescale can have been applied."""
    data = path.read_bytes()
    pos = data.rfind(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")
    assert pos > 0, "sample CT is expected to hold encapsulated pixel data"
    pos += 12
    fragments = []
    while True:
        group, elem, length = struct.unpack_from("<HHI", data, pos)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        fragments.append(data[pos : pos + length])
        pos += length
    codestream = b"".join(fragments[1:])  # the first item is the (empty) offset table
    raw = cv2.imdecode(np.frombuffer(codestream, np.uint8), cv2.IMREAD_UNCHANGED)
    assert raw is not None and raw.dtype == np.uint16
    return raw


@pytest.fixture(scope="module")
def ct(sample_data: Path):
    study = load_study(sample_data / "ct-dicom")
    assert study.errors == []
    assert len(study.series) == 1
    return study.series[0]


@pytest.fixture(scope="module")
def xray(sample_data: Path) -> Series:
    study = load_study(sample_data / "xray" / "Fake_MONOHR1.dcm")
    assert study.errors == []
    assert len(study.series) == 1
    return study.series[0]


def test_ct_series_basics(ct: Series, sample_data: Path) -> None:
    assert ct.modality == "CT"
    assert (ct.num_slices, ct.rows, ct.columns) == (20, 512, 512)
    assert ct.is_volume
    assert ct.warnings == []
    assert ct.volume().dtype == np.int16
    assert ct.volume().shape == (20, 512, 512)
    assert ct.description == "CT Body 3.0"
    assert Path(ct.source) == (sample_data / "ct-dicom").resolve()
    assert ct.file_window == (40.0, 300.0)  # first of the two windows in the files
    assert ct.slice_thickness == pytest.approx(3.0)
    assert ct.photometric == "MONOCHROME2"
    s = ct.slice(0)
    assert s.dtype == np.float32 and s.shape == (512, 512)


def test_ct_uid_is_stable(ct: Series, sample_data: Path) -> None:
    # The sample files have an empty SeriesInstanceUID: the loader must still give a stable id.
    again = load_study(sample_data / "ct-dicom").series[0]
    assert again.uid == ct.uid and ct.uid


def test_ct_slices_ordered_by_position_along_normal(ct: Series, sample_data: Path) -> None:
    files = sorted((sample_data / "ct-dicom").glob("*.dcm"))
    z = sorted(float(_tags(f)["0020|0032"].split("\\")[2]) for f in files)
    positions = [ct.slice_position(i) for i in range(ct.num_slices)]
    assert np.all(np.diff(positions) > 0)
    # IOP is 1\0\0\0\1\0, so the normal is +z and the position is the z of ImagePositionPatient.
    assert positions == pytest.approx(z)
    assert ct.origin[2] == pytest.approx(z[0])


def test_ct_spacing_matches_tags(ct: Series, sample_data: Path) -> None:
    tags = _tags(next((sample_data / "ct-dicom").glob("*.dcm")))
    row_spacing, col_spacing = (float(v) for v in tags["0028|0030"].split("\\"))
    assert ct.spacing[0] == pytest.approx(col_spacing)
    assert ct.spacing[1] == pytest.approx(row_spacing)
    assert ct.spacing[2] == pytest.approx(2.0)  # IPP z steps by 2 mm (thickness is 3 mm)
    assert ct.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))


@pytest.mark.parametrize("which", [0, 7, 19])
def test_ct_hu_is_stored_value_times_slope_plus_intercept(ct: Series, sample_data: Path, which: int) -> None:
    path = sorted((sample_data / "ct-dicom").glob("*.dcm"))[which]
    tags = _tags(path)
    slope, intercept = float(tags["0028|1053"]), float(tags["0028|1052"])
    z = float(tags["0020|0032"].split("\\")[2])
    index = int(np.argmin([abs(ct.slice_position(i) - z) for i in range(ct.num_slices)]))
    assert ct.slice_position(index) == pytest.approx(z)
    raw = _raw_stored_pixels(path).astype(np.float64)
    expected = raw * slope + intercept
    got = ct.slice(index)
    np.testing.assert_array_equal(got, expected.astype(np.float32))
    # A known voxel, spelled out.
    assert got[256, 256] == pytest.approx(raw[256, 256] * slope + intercept)


def test_ct_file_order_is_not_position_order(ct: Series, sample_data: Path) -> None:
    # Files sorted by name run superior -> inferior, so a loader that kept file order would fail.
    files = sorted((sample_data / "ct-dicom").glob("*.dcm"))
    first_z = float(_tags(files[0])["0020|0032"].split("\\")[2])
    assert ct.slice_position(ct.num_slices - 1) == pytest.approx(first_z)


def test_ct_air_and_tissue_in_hu(ct: Series) -> None:
    s = ct.slice(10)
    # Air in the field of view, in front of the patient (row 0 is anterior).
    assert -1050 <= float(np.median(s[40:80, 236:276])) <= -950
    # Padding outside the reconstruction circle is the lowest stored value.
    assert float(s.min()) == pytest.approx(-1024.0)
    # The posterior half holds the spine: more bone-dense voxels at the bottom than at the top.
    assert (s[256:] > 300).sum() > 5 * max((s[:256] > 300).sum(), 1)


def test_ct_metadata_and_identifiers_are_separate(ct: Series) -> None:
    assert ct.metadata["Manufacturer"] == "SIEMENS"
    assert ct.metadata["KVP"] == "120"
    assert "StudyDate" in ct.identifiers
    assert ct.identifiers["InstitutionAddress"].startswith("Petersgraben")
    for key in ct.metadata:
        assert not is_identifying(key), key
    assert len(ct.identifiers["SourceFiles"]) == 20


def test_xray_monochrome1_is_inverted(xray: Series, sample_data: Path) -> None:
    path = sample_data / "xray" / "Fake_MONOHR1.dcm"
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0].astype(np.float32)
    assert xray.modality == "CR"
    assert xray.photometric == "MONOCHROME1"
    assert (xray.num_slices, xray.rows, xray.columns) == (1, 1024, 1024)
    assert not xray.is_volume
    assert xray.spacing[:2] == pytest.approx((0.168, 0.168))
    shown = xray.slice(0)
    # 8 bits stored: inverted within 0..255.
    np.testing.assert_array_equal(shown, 255.0 - raw)
    # Lungs (either side of the centre) dark, mediastinum and spine bright.
    lungs = np.concatenate([shown[350:600, 180:330].ravel(), shown[350:600, 700:850].ravel()]).mean()
    mediastinum = shown[350:600, 470:560].mean()
    assert mediastinum > lungs + 30


def test_xray_identifiers(xray: Series) -> None:
    assert xray.identifiers["PatientID"] == "16d7f894-55d7-4d95-8957-d18987f0e981"
    assert xray.metadata["BodyPartExamined"] == "CHEST"
    assert "PatientID" not in xray.metadata and "PatientName" not in xray.metadata
    assert xray.uid == "1.2.276.0.7230010.3.1.3.8323329.6904.1517875201.850817"


# --- synthetic series: orientation rules, grouping ------------------------------------------


def _write_slice(path: Path, plane: np.ndarray, tags: dict[str, str], spacing=(0.5, 0.8)) -> None:
    image = sitk.GetImageFromArray(plane.astype(np.int16))
    image.SetSpacing(spacing)
    for key, value in tags.items():
        image.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    writer.SetFileName(str(path))
    writer.Execute(image)


def _series_tags(uid: str, iop: str, ipp: tuple[float, float, float], instance: int, **extra: str) -> dict[str, str]:
    tags = {
        "0008|0060": "CT",
        "0008|103e": f"synthetic {uid[-1]}",
        "0010|0010": "Doe^Jane",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
        "0020|000e": uid,
        "0020|0011": "3",
        "0020|0013": str(instance),
        "0020|0032": "\\".join(f"{v:g}" for v in ipp),
        "0020|0037": iop,
    }
    tags.update(extra)
    return tags


def test_flipped_axial_series_is_shown_in_radiological_orientation(tmp_path: Path) -> None:
    # IOP -1\0\0\0\-1\0: columns run to the patient's right, rows to anterior (e.g. prone).
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 1000, size=(4, 6, 5)).astype(np.int16)
    uid = "1.2.826.0.1.3680043.2.1125.9"
    for k in range(4):
        # File names in reverse of position order, instance numbers scrambled.
        _write_slice(tmp_path / f"s{3 - k}.dcm", vol[k],
                     _series_tags(uid, "-1\\0\\0\\0\\-1\\0", (10.0, 20.0, 100.0 + 2.5 * k), (k * 7) % 5))
    study = load_study(tmp_path)
    assert study.errors == []
    (s,) = study.series
    assert s.uid == uid and s.identifiers["PatientName"] == "Doe^Jane"
    assert s.num_slices == 4 and s.is_volume
    for k in range(4):
        np.testing.assert_array_equal(s.slice(k), vol[k, ::-1, ::-1])
        assert s.slice_position(k) == pytest.approx(100.0 + 2.5 * k)
    assert s.spacing == pytest.approx((0.5, 0.8, 2.5))
    assert s.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    # Displayed pixel (0, 0) is stored pixel (5, 4): IPP + 4 columns * 0.5 * (-x) + 5 rows * 0.8 * (-y).
    assert s.origin == pytest.approx((10.0 - 4 * 0.5, 20.0 - 5 * 0.8, 100.0))


def test_coronal_series_is_shown_head_up(tmp_path: Path) -> None:
    # IOP 1\0\0\0\0\1: stored rows run inferior -> superior (+z), so they must be flipped to
    # put the head at the top.
    vol = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    uid = "1.2.826.0.1.3680043.2.1125.8"
    for k in range(3):
        _write_slice(tmp_path / f"c{k}.dcm", vol[k], _series_tags(uid, "1\\0\\0\\0\\0\\1", (0.0, 5.0 * k, 0.0), k + 1))
    (s,) = load_study(tmp_path).series
    for k in range(3):
        np.testing.assert_array_equal(s.slice(k), vol[k, ::-1, :])
    d = np.array(s.direction).reshape(3, 3)
    assert d[:, 1] == pytest.approx((0, 0, -1))  # rows run superior -> inferior
    assert [s.slice_position(k) for k in range(3)] == pytest.approx([0.0, 5.0, 10.0])


def test_two_series_and_duplicate_positions(tmp_path: Path) -> None:
    plane = np.zeros((4, 4), np.int16)
    for k in range(3):
        _write_slice(tmp_path / f"a{k}.dcm", plane + k, _series_tags("1.2.3.1", "1\\0\\0\\0\\1\\0", (0, 0, float(k)), k))
    for k in range(2):
        _write_slice(tmp_path / f"b{k}.dcm", plane,
                     _series_tags("1.2.3.2", "1\\0\\0\\0\\1\\0", (0, 0, float(k)), k))
    # Two echoes at the same positions in one series: split into two stacks.
    for k in range(2):
        for echo in (1, 2):
            _write_slice(tmp_path / f"e{k}_{echo}.dcm", plane + echo,
                         _series_tags("1.2.3.3", "1\\0\\0\\0\\1\\0", (0, 0, float(k)), 10 * k + echo,
                                      **{"0018|0086": str(echo)}))
    study = load_study(tmp_path)
    assert study.errors == []
    by_uid = {s.uid: s for s in study.series}
    assert set(by_uid) == {"1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.3#stack2"}
    assert by_uid["1.2.3.1"].num_slices == 3
    assert by_uid["1.2.3.3"].num_slices == 2
    assert by_uid["1.2.3.3"].slice(0)[0, 0] == 1 and by_uid["1.2.3.3#stack2"].slice(0)[0, 0] == 2
    assert any("split" in w for w in by_uid["1.2.3.3"].warnings)


def test_multiframe_dicom_frames_become_slices(tmp_path: Path) -> None:
    vol = (np.arange(4 * 8 * 10) % 300 - 100).astype(np.int16).reshape(4, 8, 10)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.5, 0.6, 2.0))
    image.SetMetaData("0008|0060", "CT")
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.SetFileName(str(tmp_path / "mf.dcm"))
    writer.Execute(image)
    (s,) = load_study(tmp_path / "mf.dcm").series
    assert (s.num_slices, s.rows, s.columns) == (4, 8, 10)
    assert s.is_volume
    np.testing.assert_array_equal(s.volume(), vol)
    assert s.spacing == pytest.approx((0.5, 0.6, 2.0))
    assert np.all(np.diff([s.slice_position(k) for k in range(4)]) > 0)


def test_localizer_of_another_size_is_a_separate_part(tmp_path: Path) -> None:
    for k in range(3):
        _write_slice(tmp_path / f"ax{k}.dcm", np.full((4, 4), k, np.int16),
                     _series_tags("1.2.3.5", "1\\0\\0\\0\\1\\0", (0, 0, float(k)), k + 2))
    _write_slice(tmp_path / "scout.dcm", np.zeros((6, 8), np.int16),
                 _series_tags("1.2.3.5", "1\\0\\0\\0\\0\\-1", (0, 0, 0), 1))
    study = load_study(tmp_path)
    assert study.errors == []
    assert sorted((s.uid, s.num_slices) for s in study.series) == [("1.2.3.5", 3), ("1.2.3.5#part2", 1)]
