"""Bad input: damaged, misnamed, empty, oversized and unsupported files load what they can and
report the rest in plain words, never with an exception. Sample files are copied, never changed."""

from __future__ import annotations

import gzip
import shutil
import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from medad_viewer.io import load_study


def _copy_ct(sample_data: Path, dest: Path) -> Path:
    shutil.copytree(sample_data / "ct-dicom", dest)
    for p in dest.iterdir():
        p.chmod(0o644)  # the sample tree is read-only; the copies must be writable
    return dest


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_slice_drops_only_that_slice(sample_data: Path, tmp_path: Path) -> None:
    folder = _copy_ct(sample_data, tmp_path / "ct")
    victim = sorted(folder.glob("*.dcm"))[4]
    _truncate(victim)
    (folder / "README.txt").write_text("notes")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    start = time.perf_counter()
    study = load_study(folder)
    assert time.perf_counter() - start < 10  # a truncated file must not stall the scan
    assert study.errors == []  # README and .DS_Store are ignored silently
    (s,) = study.series
    assert s.num_slices == 19
    assert any(victim.name in w and "skipped" in w for w in s.warnings)
    assert any("gap" in w for w in s.warnings)  # and the hole it leaves is pointed out
    assert s.spacing[2] == pytest.approx(2.0)
    assert np.all(np.diff([s.slice_position(i) for i in range(19)]) > 0)


def test_text_file_named_dcm_is_reported(sample_data: Path, tmp_path: Path) -> None:
    folder = _copy_ct(sample_data, tmp_path / "ct")
    (folder / "bad.dcm").write_text("this is not an image\n")
    study = load_study(folder)
    assert [s.num_slices for s in study.series] == [20]
    (err,) = study.errors
    assert err.path.endswith("bad.dcm") and "bad.dcm" in err.message and "not DICOM" in err.message
    alone = load_study(folder / "bad.dcm")
    assert alone.series == [] and "bad.dcm" in alone.errors[0].message


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    study = load_study(tmp_path / "empty")
    assert study.series == []
    (err,) = study.errors
    assert "holds no images" in err.message


def test_folder_of_non_images_is_reported_as_empty(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "data").write_bytes(bytes(range(256)) * 10)  # no extension, not DICOM
    study = load_study(tmp_path)
    assert study.series == [] and len(study.errors) == 1 and "holds no images" in study.errors[0].message


def test_two_series_in_one_folder_with_subfolder(sample_data: Path, tmp_path: Path) -> None:
    folder = _copy_ct(sample_data, tmp_path / "mixed")
    (folder / "xr").mkdir()
    shutil.copy(sample_data / "xray" / "Fake_MONOHR1.dcm", folder / "xr" / "IM0001")  # no extension
    study = load_study(folder)
    assert study.errors == []
    assert sorted((s.modality, s.num_slices) for s in study.series) == [("CR", 1), ("CT", 20)]


def test_truncated_slice_is_attributed_even_beside_another_series(sample_data: Path, tmp_path: Path) -> None:
    folder = _copy_ct(sample_data, tmp_path / "mixed")
    shutil.copy(sample_data / "xray" / "Fake_MONOHR1.dcm", folder / "xray.dcm")
    victim = sorted(folder.glob("CT*.dcm"))[0]
    _truncate(victim)
    study = load_study(folder)
    assert study.errors == []
    ct = next(s for s in study.series if s.modality == "CT")
    assert ct.num_slices == 19 and any(victim.name in w for w in ct.warnings)


def test_random_bytes_png_and_unsupported_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "noise.png").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.dcm").write_bytes(b"")
    study = load_study(tmp_path)
    assert study.series == []
    messages = sorted(e.message for e in study.errors)
    assert len(messages) == 2
    assert "empty.dcm" in messages[0] and "empty" in messages[0]
    assert "noise.png" in messages[1] and "could not be decoded" in messages[1]
    single = load_study(tmp_path / "noise.png")
    assert single.series == [] and "noise.png" in single.errors[0].message
    txt = load_study(tmp_path / "notes.txt")
    assert txt.series == [] and "not a supported image file" in txt.errors[0].message


def test_missing_path_and_programmer_errors(tmp_path: Path) -> None:
    study = load_study(tmp_path / "nope")
    assert study.series == [] and "no such file or folder" in study.errors[0].message
    with pytest.raises(TypeError):
        load_study(None)  # type: ignore[arg-type]


def test_oversized_inputs_are_refused(tmp_path: Path) -> None:
    (tmp_path / "huge.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 2048 2048 1024\nElementType = MET_SHORT\n"
        "ElementDataFile = huge.raw\n"
    )
    study = load_study(tmp_path / "huge.mhd")
    assert study.series == [] and "too large" in study.errors[0].message
    assert cv2.imwrite(str(tmp_path / "wide.png"), np.zeros((1, 16385), np.uint8))
    study = load_study(tmp_path / "wide.png")
    assert study.series == [] and "too large" in study.errors[0].message and "16385" in study.errors[0].message


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    if vr in (b"OB", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH", group, elem) + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return struct.pack("<HH", group, elem) + vr + struct.pack("<H", len(value)) + value


def test_non_image_dicom_is_skipped_silently(tmp_path: Path) -> None:
    sr_class = b"1.2.840.10008.5.1.4.1.1.88.11"
    meta = (
        _element(2, 1, b"OB", b"\0\1")
        + _element(2, 2, b"UI", sr_class)
        + _element(2, 3, b"UI", b"1.2.3.4")
        + _element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1")
    )
    meta = _element(2, 0, b"UL", struct.pack("<I", len(meta))) + meta
    body = _element(8, 0x16, b"UI", sr_class) + _element(8, 0x60, b"CS", b"SR")
    (tmp_path / "report.dcm").write_bytes(b"\0" * 128 + b"DICM" + meta + body)
    study = load_study(tmp_path)
    assert study.series == [] and len(study.errors) == 1 and "holds no images" in study.errors[0].message
    single = load_study(tmp_path / "report.dcm")
    assert "holds no image" in single.errors[0].message


def test_progress_is_reported(sample_data: Path) -> None:
    calls: list[tuple[int, int]] = []
    load_study(sample_data / "mr-brain", progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] == 4
    assert all(done <= total for done, total in calls)


def test_truncated_volumes_and_images_are_reported(sample_data: Path, tmp_path: Path) -> None:
    # ITK reads a truncated NIfTI without complaint, zero-filling the rest: the loader must not.
    nifti = sample_data / "ct-nifti" / "example_ct_sm.nii.gz"
    data = nifti.read_bytes()
    (tmp_path / "half.nii.gz").write_bytes(data[: len(data) // 2])
    raw = gzip.decompress(data)
    (tmp_path / "half.nii").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "whole.nii").write_bytes(raw)
    png = (sample_data / "xray" / "00000001_000.png").read_bytes()
    (tmp_path / "half.png").write_bytes(png[: len(png) // 2])
    nrrd = (sample_data / "mr-brain" / "brain1_image.nrrd").read_bytes()
    (tmp_path / "half.nrrd").write_bytes(nrrd[: len(nrrd) // 2])
    study = load_study(tmp_path)
    assert [s.description for s in study.series] == ["whole.nii"]
    reported = {Path(e.path).name: e.message for e in study.errors}
    assert set(reported) == {"half.nii.gz", "half.nii", "half.png", "half.nrrd"}
    for name, message in reported.items():
        assert message.startswith(name + ":"), message
    assert "truncated" in reported["half.nii.gz"] and "truncated" in reported["half.nii"]


def test_uncompressed_nifti_named_gz_opens(sample_data: Path, tmp_path: Path) -> None:
    """Tools that rename files leave plain NIfTI called ".nii.gz": judged by its bytes, it opens; cut short, it is
    still reported as truncated."""
    raw = gzip.decompress((sample_data / "ct-nifti" / "example_ct_sm.nii.gz").read_bytes())
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "renamed.nii.gz").write_bytes(raw)
    (tmp_path / "ref").mkdir()
    (tmp_path / "ref" / "real.nii").write_bytes(raw)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "renamed-half.nii.gz").write_bytes(raw[: len(raw) // 2])
    renamed, real = load_study(tmp_path / "plain"), load_study(tmp_path / "ref")
    assert not renamed.errors and len(renamed.series) == 1
    s, r = renamed.series[0], real.series[0]
    assert s.num_slices == r.num_slices > 1
    np.testing.assert_array_equal(s.slice(s.num_slices // 2), r.slice(r.num_slices // 2))
    cut = load_study(tmp_path / "cut")
    assert not cut.series
    assert [e.message for e in cut.errors] == ["renamed-half.nii.gz: the file is truncated (it ends before its data does)"]


def test_every_load_error_names_the_file_and_says_what_to_do(sample_data: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.dcm").write_bytes(b"just some text, not DICOM")
    png = (sample_data / "xray" / "00000001_000.png").read_bytes()
    (tmp_path / "half.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "scan.nii.gz").write_bytes(b"\x1f\x8b" + b"\0" * 40)
    study = load_study(tmp_path)
    assert len(study.errors) == 4
    for e in study.errors:
        assert e.message.startswith(Path(e.path).name + ":"), e.message
        assert e.advice and e.full == f"{e.message}. {e.advice}", e.message
    gone = load_study(tmp_path / "moved-away")
    assert "moved" in gone.errors[0].advice
