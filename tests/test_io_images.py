"""Plain images: the sample X-ray PNGs, bit depth, colour to grey, folders as series."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from medad_viewer.io import load_study


def _write_png(path: Path, array: np.ndarray) -> None:
    assert cv2.imwrite(str(path), array)


def test_sample_xray_folder(sample_data: Path) -> None:
    study = load_study(sample_data / "xray")
    assert study.errors == []
    by_modality = {s.modality: s for s in study.series}
    assert set(by_modality) == {"OT", "CR"}
    pngs = by_modality["OT"]
    assert (pngs.num_slices, pngs.rows, pngs.columns) == (4, 512, 512)
    assert not pngs.is_volume
    assert pngs.metadata["bit_depth"] == "8-bit"
    assert pngs.metadata["converted_to_grey"] == 2  # the two TBX11K images are RGB
    names = sorted(p.name for p in (sample_data / "xray").glob("*.png"))
    assert pngs.identifiers["SourceFiles"] == names
    for k, name in enumerate(names):
        raw = cv2.imread(str(sample_data / "xray" / name), cv2.IMREAD_UNCHANGED)
        if raw.ndim == 3:
            raw = cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)
        np.testing.assert_array_equal(pngs.slice(k), raw.astype(np.float32))
    assert [pngs.slice_position(k) for k in range(4)] == [0.0, 1.0, 2.0, 3.0]


def test_single_png_file(sample_data: Path) -> None:
    study = load_study(sample_data / "xray" / "00000001_000.png")
    assert study.errors == []
    (s,) = study.series
    assert s.description == "00000001_000.png" and s.num_slices == 1 and s.modality == "OT"
    assert load_study(sample_data / "xray" / "00000001_000.png", modality="CR").series[0].modality == "CR"


def test_16_bit_png_keeps_its_values(tmp_path: Path) -> None:
    wide = (np.arange(64 * 48, dtype=np.uint32) * 19 % 65536).astype(np.uint16).reshape(48, 64)
    narrow = (np.arange(64 * 48) * 4 % 4096).astype(np.uint16).reshape(48, 64)
    _write_png(tmp_path / "wide.png", wide)
    (a,) = load_study(tmp_path / "wide.png").series
    assert a.slice(0).max() > 50000
    np.testing.assert_array_equal(a.slice(0), wide.astype(np.float32))
    assert a.volume().dtype == np.uint16  # above 32767: int16 cannot hold it
    assert a.metadata["bit_depth"] == "16-bit"
    _write_png(tmp_path / "narrow.png", narrow)
    (b,) = load_study(tmp_path / "narrow.png").series
    np.testing.assert_array_equal(b.slice(0), narrow.astype(np.float32))
    assert b.slice(0).max() == 4092
    assert b.volume().dtype == np.int16


def test_folder_is_one_series_sorted_naturally(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        _write_png(tmp_path / f"img{i}.png", np.full((8, 9), i, np.uint8))
    (s,) = load_study(tmp_path).series
    assert [s.slice(k)[0, 0] for k in range(3)] == [1, 2, 10]
    assert s.identifiers["SourceFiles"] == ["img1.png", "img2.png", "img10.png"]
    assert s.description == f"{tmp_path.name} (3 images)"


def test_different_sizes_and_depths_make_separate_series(tmp_path: Path) -> None:
    for i in range(3):
        _write_png(tmp_path / f"a{i}.png", np.full((8, 9), i, np.uint8))
    _write_png(tmp_path / "big.png", np.zeros((20, 20), np.uint8))
    _write_png(tmp_path / "deep.png", np.full((8, 9), 1000, np.uint16))
    study = load_study(tmp_path)
    assert study.errors == []
    sizes = sorted((s.num_slices, s.rows, s.columns, s.metadata["bit_depth"]) for s in study.series)
    assert sizes == [(1, 8, 9, "16-bit"), (1, 20, 20, "8-bit"), (3, 8, 9, "8-bit")]
    assert len({s.uid for s in study.series}) == 3


def test_colour_jpeg_and_tiff(tmp_path: Path) -> None:
    colour = np.zeros((10, 12, 3), np.uint8)
    colour[..., 2] = 200  # red in BGR
    _write_png(tmp_path / "red.tif", colour)
    (s,) = load_study(tmp_path / "red.tif").series
    assert s.slice(0)[0, 0] == pytest.approx(round(0.299 * 200), abs=1)
    _write_png(tmp_path / "grey.jpg", np.full((10, 12), 128, np.uint8))
    (j,) = load_study(tmp_path / "grey.jpg").series
    assert abs(float(j.slice(0).mean()) - 128) < 2
