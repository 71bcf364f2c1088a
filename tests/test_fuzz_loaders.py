"""Fuzzing the loaders: a fixed subset of the seeded mutations of benchmarks/fuzz_loaders.py, run in-process, and a
regression test for each bug that benchmark found. Broken input must come back as an error naming the file and
saying what is wrong (never an exception, a crash, gigabytes of memory or a padded image), and `info` must exit 1.
The mutation code is the benchmark's own (one copy)."""

from __future__ import annotations

import contextlib
import io
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import fuzz_loaders as fz  # noqa: E402

from medad_viewer import cli  # noqa: E402
from medad_viewer.io import load_study  # noqa: E402

SUBSET_SEED, SUBSET_CASES = 0, 30
GIB = 1 << 30
_RLE = b"1.2.840.10008.1.2.5\0"


@pytest.fixture(scope="module")
def sources(sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str, bytes]]:
    return fz.prepare_sources(tmp_path_factory.mktemp("fuzz-sources"), sample_data)


@pytest.mark.parametrize("index", range(SUBSET_CASES))
def test_fuzz_subset(sources: dict, tmp_path: Path, index: int) -> None:
    name, suffix, data, desc = fz.make_case(sources, SUBSET_SEED, index)
    path = tmp_path / f"fuzz{index:05d}_{name}{suffix}"
    path.write_bytes(data)
    result = fz.check_file(str(path), json_output=index % 2 == 1)
    assert result["tracebacks"] == [], desc
    assert result["problems"] == [], desc


def test_mutations_are_deterministic(sources: dict) -> None:
    cases = [fz.make_case(sources, 3, i) for i in range(40)]
    assert cases == [fz.make_case(sources, 3, i) for i in range(40)]
    assert cases != [fz.make_case(sources, 4, i) for i in range(40)]
    assert all(len(data) < fz.MAX_FILE for _, _, data, _ in cases)


# ---------------------------------------------------------------------------------------------
# Regressions: one per bug found


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _peak_growth(fn) -> int:
    """Bytes the process's peak RSS grew by while `fn` ran (0 where the peak cannot be reset: not Linux)."""
    if not os.path.exists("/proc/self/clear_refs"):
        fn()
        return 0
    fz._reset_peak()
    before = fz._rss_kb("VmRSS")
    fn()
    return max(fz._rss_kb("VmHWM") - before, 0) * 1024


def _broken(path: Path, *words: str) -> str:
    """Assert `path` loads as one error naming it (with `words`), in well under a gigabyte, and `info` exits 1."""
    studies = []
    grew = _peak_growth(lambda: studies.append(load_study(path)))
    (study,) = studies
    assert study.series == []
    (err,) = study.errors
    assert path.name in err.message
    for w in words:
        assert w in err.message, err.message
    assert grew < GIB, f"{grew / 2**20:.0f} MB for a {path.stat().st_size} byte file"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["info", str(path)]) == 1
    assert path.name in out.getvalue()
    return err.message


class _Fixed(random.Random):
    """A Random whose random() is fixed, to take one branch of a mutator."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


# PNG: images._probe / check_expansion


def test_png_decompression_bomb_is_refused(tmp_path: Path) -> None:
    # 2 MB of valid PNG decoding to 2 GB of RGBA 16-bit pixels (was: 4 GB peak, 8 s, and loaded).
    path = _write(tmp_path, "bomb.png", fz.png_bomb(16384, 16384, 16, 6))
    _broken(path, "the file is damaged", "16384 x 16384 pixels", "2.0 GB")


def test_jpeg_header_claiming_a_huge_image_is_refused(tmp_path: Path) -> None:
    # Same check, at the header (images._probe), for every format: 5 KB of JPEG whose frame header says
    # 16384 x 16384 decoded as 768 MB of grey fill and loaded (3.5 s, 1.7 GB peak).
    import cv2

    _, buf = cv2.imencode(".jpg", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 16384, 16384)
    _broken(_write(tmp_path, "huge.jpg", bytes(data)), "the file is damaged", "16384 x 16384 pixels")


def test_png_bomb_simpleitk_cannot_read_is_refused_before_decoding(tmp_path: Path) -> None:
    # 16-bit grey+alpha: SimpleITK cannot read its header, so the file went to OpenCV unchecked (was: 1 GB decoded,
    # over 10 s). images.decode_image now reads the IHDR itself first.
    path = _write(tmp_path, "bomb-ga.png", fz.png_bomb(16384, 16384, 16, 4))
    _broken(path, "the file is damaged", "16384 x 16384 pixels")


def test_blank_png_within_the_limits_still_loads(tmp_path: Path) -> None:
    # Highly compressible but small: below the floor the expansion rule does not apply.
    path = _write(tmp_path, "blank.png", fz.png_bomb(4096, 4096, 8, 0))
    study = load_study(path)
    assert study.errors == [] and [(s.rows, s.columns) for s in study.series] == [(4096, 4096)]


# DICOM: _dicomscan (damage found before GDCM), dicom._probe_file / _pixel_size_problem, dicom._monochrome1_range


def test_dicom_junk_after_pixel_data_is_damage_not_gigabytes(sources: dict, tmp_path: Path) -> None:
    # GDCM read the junk as elements and allocated the lengths it found: 2.5 GB, then "could not be parsed".
    junk = bytes(random.Random(7).randrange(256) for _ in range(100))
    path = _write(tmp_path, "junk.dcm", sources["ct-j2k"][2] + junk)
    _broken(path, "the file is damaged", "claims more data than the file holds")


def test_dicom_wrong_element_length_is_damage(sources: dict, tmp_path: Path) -> None:
    # StudyInstanceUID's length 0 -> 1: the next bytes are no element header; GDCM took 3 s and 1.8 GB.
    data = sources["ct-j2k"][2]
    e = next(e for e in fz.dicom_elements(data) if e.tag == (0x0020, 0x000D))
    data = data[: e.length_at] + struct.pack("<H", 1) + data[e.length_at + 2 :]
    _broken(_write(tmp_path, "uid.dcm", data), "the file is damaged", "claims more data")


def test_dicom_bytes_inserted_in_a_fragment_is_damage(sources: dict, tmp_path: Path) -> None:
    # The fragment no longer ends where its length says: where the next item should start there is JPEG data,
    # whose made-up length GDCM allocated (4 GB).
    data = sources["xray"][2]
    data = data[:44476] + bytes(random.Random(1).randrange(256) for _ in range(100)) + data[44476:]
    _broken(_write(tmp_path, "fragment.dcm", data), "the file is damaged", "claims more data")


def test_dicom_zero_pixel_length_is_damage(sources: dict, tmp_path: Path) -> None:
    # Pixel data of length 0 and its fragments left behind at the top level: 3.7 GB in GDCM's header read.
    data = fz.dicom_set(sources["ct-j2k"][2], (0x0028, 0x0100), fz._us(8))
    pixel = fz.dicom_elements(data)[-1]
    data = data[: pixel.length_at] + struct.pack("<I", 0) + data[pixel.length_at + 4 :]
    _broken(_write(tmp_path, "nopixels.dcm", data), "the file is damaged", "512 x 512 pixels", "0 bytes")


def test_dicom_rle_frame_without_segments_does_not_crash(sources: dict, tmp_path: Path) -> None:
    # GDCM divides by the segment count of an RLE frame header: a zeroed header killed the process (SIGFPE) in
    # ReadImageInformation. Run in a child so a regression fails this test instead of the whole run.
    data = fz.dicom_set(sources["ct-j2k"][2], (0x0002, 0x0010), _RLE)
    data, _ = fz.mut_dicom_zero_pixels(_Fixed(0.5), data)  # fragments zeroed, items kept
    path = _write(tmp_path, "rle.dcm", data)
    code = (
        "import sys; from medad_viewer.io import load_study; from medad_viewer import cli\n"
        "s = load_study(sys.argv[1]); print(len(s.series), [e.message for e in s.errors])\n"
        "sys.exit(10 + cli.main(['info', sys.argv[1]]))"
    )
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode == 11, run.stdout + run.stderr[-2000:]
    assert "0 [" in run.stdout and "rle.dcm: the file is damaged (its RLE-compressed pixel data" in run.stdout


def test_dicom_valid_rle_still_loads(sources: dict, tmp_path: Path) -> None:
    # The check reads the RLE frame header; a valid one (one literal-run segment of zeros) goes through.
    data = fz.dicom_set(sources["ct-raw"][2], (0x0028, 0x0100), fz._us(8))
    data = fz.dicom_set(data, (0x0028, 0x0101), fz._us(8))
    data = fz.dicom_set(data, (0x0028, 0x0102), fz._us(7))
    data = fz.dicom_set(data, (0x0002, 0x0010), _RLE)
    pixel = fz.dicom_elements(data)[-1]
    segment = (b"\x7f" + bytes(128)) * (512 * 512 // 128)
    frame = struct.pack("<16I", 1, 64, *[0] * 14) + segment
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 0) + struct.pack("<HHI", 0xFFFE, 0xE000, len(frame)) + frame
    data = (data[: pixel.start] + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + items
            + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    study = load_study(_write(tmp_path, "rle-ok.dcm", data))
    assert study.errors == []
    (s,) = study.series
    assert s.volume().shape == (1, 512, 512)


def test_dicom_header_claiming_more_pixels_than_stored_is_refused(sources: dict, tmp_path: Path) -> None:
    # Uncompressed 512 KB of pixels, header 16384 x 16384: GDCM padded with zeros and it loaded (8 s, 1.7 GB).
    data = fz.dicom_set(sources["ct-raw"][2], (0x0028, 0x0010), fz._us(16384))
    data = fz.dicom_set(data, (0x0028, 0x0011), fz._us(16384))
    _broken(_write(tmp_path, "lie.dcm", data), "the file is damaged", "16384 x 16384 pixels", "512.0 KB of pixel data")
    data = fz.dicom_set(data, (0x0028, 0x0010), fz._us(512))  # 20 frames of 512 x 16384
    data = fz.dicom_set(data, (0x0028, 0x0008), b"20")
    _broken(_write(tmp_path, "frames.dcm", data), "16384 x 512 pixels x 20 frames")


def test_compressed_dicom_claiming_gigabytes_is_refused(sources: dict, tmp_path: Path) -> None:
    # 150 KB of JPEG 2000 said to be 3 frames of 16384 x 16384 (GDCM: 1.7 GB, then an obscure error).
    data = fz.dicom_set(sources["ct-j2k"][2], (0x0028, 0x0010), fz._us(16384))
    data = fz.dicom_set(data, (0x0028, 0x0011), fz._us(16384))
    data = fz.dicom_set(data, (0x0028, 0x0008), b"3")
    _broken(_write(tmp_path, "j2k.dcm", data), "the file is damaged", "16384 x 16384 pixels x 3 frames",
            "compressed pixel data")


def test_bare_dicom_data_set_claiming_more_pixels_than_the_file_is_refused(sources: dict, tmp_path: Path) -> None:
    # No preamble or file meta (no scan): the file's size bounds the pixels.
    data = sources["ct-raw"][2]
    data = data[next(e for e in fz.dicom_elements(data) if e.tag[0] != 0x0002).start :]
    assert len(load_study(_write(tmp_path, "bare.dcm", data)).series) == 1
    data = fz.dicom_set(fz.dicom_set(data, (0x0028, 0x0010), fz._us(4096)), (0x0028, 0x0011), fz._us(4096))
    _broken(_write(tmp_path, "bare-lie.dcm", data), "the file is damaged", "4096 x 4096 pixels", "the whole file")


def test_monochrome1_with_impossible_bits_stored_loads(sources: dict, tmp_path: Path) -> None:
    # BitsStored 64 over 8-bit pixels overflowed the inversion ("unexpected error ... OverflowError").
    good = load_study(_write(tmp_path, "xray.dcm", sources["xray"][2])).series[0]
    for bits in (64, 65535):
        data = fz.dicom_set(sources["xray"][2], (0x0028, 0x0101), fz._us(bits))
        study = load_study(_write(tmp_path, f"bits{bits}.dcm", data))
        assert study.errors == []
        (s,) = study.series
        assert np.array_equal(s.volume(), good.volume())


# NRRD / MetaImage: volumes._check_data_size; volumes.read_volume (no voxels)


@pytest.mark.parametrize("source, field, suffix, damage", [
    ("nrrd-raw", b"sizes", ".nrrd", None), ("nrrd-gz", b"sizes", ".nrrd", "1.9 GB of voxels"),
    ("mha", b"DimSize", ".mha", None), ("mha-gz", b"DimSize", ".mha", "")])
def test_volume_sizes_beyond_its_data_are_refused_before_allocating(sources: dict, tmp_path: Path, source: str,
                                                                    field: bytes, suffix: str, damage) -> None:
    # 1.9 GB claimed (under the size limit) over 2-3 MB: ITK allocated and touched it all (2.1 GB) before failing.
    edit = fz._nrrd_field if suffix == ".nrrd" else fz._mha_field
    path = _write(tmp_path, f"{source}{suffix}", edit(sources[source][2], field, b"4096 4096 60"))
    if damage is None:  # raw data: it ends before the claimed size
        assert _broken(path) == f"{path.name}: the file is truncated (it ends before its data does)"
    else:
        _broken(path, "the file is damaged", "compressed data", *([damage] if damage else []))


def test_volume_without_voxels_is_an_error(sources: dict, tmp_path: Path) -> None:
    # DimSize 0 0 0 loaded as a series of 0 slices, and reading a slice raised IndexError.
    path = _write(tmp_path, "empty.mha", fz._mha_field(sources["mha"][2], b"DimSize", b"0 0 0"))
    _broken(path, "holds no voxels", "0 x 0 x 0")


def test_label_map_compressing_far_beyond_the_ratio_still_loads(sample_data: Path) -> None:
    # 6.5 MB of labels in 7.5 KB of gzip (870x): below the floor, credible.
    study = load_study(sample_data / "mr-brain" / "brain1_label.nrrd")
    assert study.errors == [] and study.series[0].volume().shape == (25, 256, 256)
