"""Seeded mutation fuzzing of the loaders and of `medad-viewer info`:

    python benchmarks/fuzz_loaders.py [--cases 400] [--seed 0] [--timeout 10] [--verbose]

Each case takes one sample file (a CT DICOM slice as stored (JPEG 2000) and re-encoded uncompressed, the X-ray
DICOM, the CT NIfTI gzipped and plain and as MetaImage, the MR NRRD gzipped and raw, a grey and a colour PNG) and
applies one to three mutations: truncation, flipped or overwritten bytes, inserted or deleted bytes, and header lies (NIfTI dim[],
datatype, bitpix, vox_offset, pixdim, scaling; the NRRD `sizes:`, `type:`, `dimension:`, `encoding:` and other
fields; PNG IHDR width/height/depth/colour type and chunk lengths, a tiny file decoding to gigabytes; DICOM
Rows/Columns, NumberOfFrames, bits, samples, transfer syntax, geometry strings, element lengths, zeroed pixel data).
The mutated file is written to a temporary folder and, in a child process, opened with `load_study` (then a middle
slice of each series is read and its default window computed) and with `cli.main(["info", path])`.

Counted: a *traceback* is an exception escaping `load_study`, the slice/window calls or `info` (or a child that
dies); the loaders' last-resort catch-alls ("unexpected error while loading", logged with a traceback) count too,
as they mean a reader raised something it should have turned into a plain-words message. A *hang* is a case
taking more than --timeout seconds (the child is killed and a new one started). *over_2gb* counts cases during
which the child's peak RSS went above 2 GiB (all files are under 10 MB; the child idles at about 150 MB), or that
ended in "not enough memory". With --verbose each failing case (mutation, file, traceback) goes to stderr, and so do cases
breaking the message rule (an error that does not name the file, nothing loaded and nothing said, a wrong exit
status), which are not counted. Prints one JSON line:
{"cases": N, "tracebacks": T, "hangs": H, "max_rss_mb": M, "over_2gb": K, "seconds": S}.

The same mutation is made for a given (seed, case) on any machine: tests/test_fuzz_loaders.py runs a few in-process
through `make_case` and `check_file`.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import logging
import multiprocessing as mp
import os
import queue
import random
import shutil
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SAMPLE_DATA = Path(os.environ.get("MEDAD_SAMPLE_DATA") or REPO / "tests" / "data")  # in the repository
GIB = 1 << 30
MAX_FILE = 10 * (1 << 20)  # every mutated file stays under this

Mutator = Callable[[random.Random, bytes], tuple[bytes, str]]

# ---------------------------------------------------------------------------------------------
# Sources


def prepare_sources(
    workdir: str | os.PathLike[str], sample_data: str | os.PathLike[str] | None = None
) -> dict[str, tuple[str, str, bytes]]:
    """name -> (kind, file suffix, bytes) for every source file; derived ones are made in memory (`workdir` holds
    temporaries)."""
    samples = Path(sample_data or SAMPLE_DATA)
    ct = sorted((samples / "ct-dicom").glob("*.dcm"))[10].read_bytes()
    nii_gz = (samples / "ct-nifti" / "example_ct_sm.nii.gz").read_bytes()
    nrrd = (samples / "mr-brain" / "brain1_image.nrrd").read_bytes()
    return {
        "ct-j2k": ("dicom", ".dcm", ct),
        "ct-raw": ("dicom", ".dcm", _uncompressed_dicom(ct, workdir)),
        "xray": ("dicom", ".dcm", (samples / "xray" / "Fake_MONOHR1.dcm").read_bytes()),
        "nifti-gz": ("nifti", ".nii.gz", nii_gz),
        "nifti": ("nifti", ".nii", gzip.decompress(nii_gz)),
        "nrrd-gz": ("nrrd", ".nrrd", nrrd),
        "nrrd-raw": ("nrrd", ".nrrd", _raw_nrrd(nrrd)),
        "mha": ("mha", ".mha", _metaimage(nii_gz, workdir, compress=False)),
        "mha-gz": ("mha", ".mha", _metaimage(nii_gz, workdir, compress=True)),
        "png": ("png", ".png", (samples / "xray" / "00027426_000.png").read_bytes()),
        "png-rgb": ("png", ".png", (samples / "xray" / "tbx11k_h0001_healthy.png").read_bytes()),
    }


def _uncompressed_dicom(data: bytes, workdir: str | os.PathLike[str]) -> bytes:
    """The CT slice with its pixels stored uncompressed (explicit VR little endian, 16-bit unsigned)."""
    import numpy as np
    import SimpleITK as sitk

    tmp = Path(workdir) / "ct-source.dcm"
    tmp.write_bytes(data)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp), imageIO="GDCMImageIO"))[0]
    tmp.unlink()
    stored = np.clip(np.rint(hu.astype(np.float64) + 1024), 0, 4095).astype("<u2")
    pixel = next(e for e in dicom_elements(data) if e.tag == (0x7FE0, 0x0010))
    head = dicom_set(data[: pixel.start], (0x0002, 0x0010), b"1.2.840.10008.1.2.1\0")
    return head + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, stored.nbytes) + stored.tobytes()


def _metaimage(nii_gz: bytes, workdir: str | os.PathLike[str], compress: bool) -> bytes:
    """The CT NIfTI as a MetaImage file (header and data in one .mha), compressed or not."""
    import SimpleITK as sitk

    src, dst = Path(workdir) / "mha-source.nii.gz", Path(workdir) / "mha-source.mha"
    src.write_bytes(nii_gz)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # NIfTI fields MetaImage has no place for
    sitk.WriteImage(sitk.ReadImage(str(src)), str(dst), useCompression=compress)
    sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    data = dst.read_bytes()
    src.unlink()
    dst.unlink()
    return data


def _raw_nrrd(data: bytes) -> bytes:
    head, _, body = data.partition(b"\n\n")
    head = head.replace(b"encoding: gzip", b"encoding: raw")
    return head + b"\n\n" + gzip.decompress(body)


# ---------------------------------------------------------------------------------------------
# Generic byte mutations


def mut_truncate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return data, "truncate (empty)"
    if rng.random() < 0.4:
        cut = rng.randrange(0, min(len(data), 2048))  # inside the header, where parsers decide things
    else:
        cut = rng.randrange(0, len(data))
    return data[:cut], f"truncate at {cut}/{len(data)}"


def mut_flip(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    buf = bytearray(data)
    n = rng.choice([1, 2, 4, 16, 64])
    span = min(len(buf), 2048) if rng.random() < 0.6 else len(buf)
    if not span:
        return data, "flip (empty)"
    where = sorted(rng.randrange(span) for _ in range(n))
    for i in where:
        buf[i] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
    return bytes(buf), f"flip {n} byte(s) in the first {span} (first at {where[0]})"


def mut_overwrite(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if not data:
        return data, "overwrite (empty)"
    start = rng.randrange(len(data))
    n = min(rng.choice([4, 64, 1024, 65536]), len(data) - start)
    fill = rng.choice([b"\x00", b"\xff", b"\x7f"])
    return data[:start] + fill * n + data[start + n :], f"overwrite {n} bytes at {start} with {fill!r}"


def mut_insert_delete(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    pos = rng.randrange(len(data) + 1)
    n = rng.choice([1, 3, 8, 100])
    if rng.random() < 0.5:
        return data[:pos] + bytes(rng.randrange(256) for _ in range(n)) + data[pos:], f"insert {n} bytes at {pos}"
    return data[:pos] + data[pos + n :], f"delete {n} bytes at {pos}"


def mut_append(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    n = rng.choice([1, 100, 4096, 1 << 20])
    return data + bytes(rng.randrange(256) for _ in range(min(n, 4096))) * max(n // 4096, 1), f"append {n} junk bytes"


def mut_stub(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    n = rng.choice([0, 1, 4, 8, 132, 348])
    return data[:n], f"keep only the first {n} bytes"


GENERIC: list[Mutator] = [mut_truncate, mut_truncate, mut_flip, mut_flip, mut_overwrite, mut_insert_delete,
                          mut_append, mut_stub]

# ---------------------------------------------------------------------------------------------
# DICOM (explicit VR little endian data sets, as the samples are)

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class _Element:
    def __init__(self, tag: tuple[int, int], vr: bytes, start: int, value: int, length: int) -> None:
        self.tag, self.vr, self.start, self.value, self.length = tag, vr, start, value, length

    @property
    def long(self) -> bool:
        return self.vr in _LONG_VRS

    @property
    def length_at(self) -> int:
        return self.start + (8 if self.long else 6)


def dicom_elements(data: bytes) -> list[_Element]:
    """The top-level elements of a Part 10 file (explicit VR little endian); stops at pixel data or damage."""
    out: list[_Element] = []
    pos = 132 if data[128:132] == b"DICM" else 0
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, pos + 8)
            value = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            value = pos + 8
        out.append(_Element((group, elem), vr, pos, value, length))
        if (group, elem) == (0x7FE0, 0x0010) or length == 0xFFFFFFFF:
            break
        pos = value + length
    return out


def _encode(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH2sHI", tag[0], tag[1], vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag[0], tag[1], vr, min(len(value), 0xFFFF)) + value[:0xFFFF]


_VR_OF = {
    (0x0002, 0x0002): b"UI", (0x0002, 0x0010): b"UI", (0x0008, 0x0016): b"UI", (0x0008, 0x0060): b"CS",
    (0x0018, 0x0050): b"DS", (0x0020, 0x0032): b"DS", (0x0020, 0x0037): b"DS", (0x0020, 0x0013): b"IS",
    (0x0028, 0x0002): b"US", (0x0028, 0x0004): b"CS", (0x0028, 0x0006): b"US", (0x0028, 0x0008): b"IS",
    (0x0028, 0x0010): b"US", (0x0028, 0x0011): b"US", (0x0028, 0x0030): b"DS", (0x0028, 0x0100): b"US",
    (0x0028, 0x0101): b"US", (0x0028, 0x0102): b"US", (0x0028, 0x0103): b"US", (0x0028, 0x1050): b"DS",
    (0x0028, 0x1051): b"DS", (0x0028, 0x1052): b"DS", (0x0028, 0x1053): b"DS",
}


def dicom_set(data: bytes, tag: tuple[int, int], value: bytes | None) -> bytes:
    """Replace (or insert, or with None remove) one top-level element, keeping the file-meta group length right."""
    elements = dicom_elements(data)
    found = next((e for e in elements if e.tag == tag), None)
    vr = found.vr if found is not None else _VR_OF.get(tag, b"UN")
    new = b"" if value is None else _encode(tag, vr, value)
    if found is not None:
        end = len(data) if found.length == 0xFFFFFFFF else found.value + found.length
        out = data[: found.start] + new + data[end:]
        delta = len(new) - (end - found.start)
    else:
        after = next((e for e in elements if e.tag > tag), None)
        at = after.start if after is not None else len(data)
        out = data[:at] + new + data[at:]
        delta = len(new)
    if tag[0] == 0x0002 and delta:
        meta = next((e for e in elements if e.tag == (0x0002, 0x0000)), None)
        if meta is not None and meta.length == 4:
            (old,) = struct.unpack_from("<I", out, meta.value)
            out = out[: meta.value] + struct.pack("<I", max(old + delta, 0)) + out[meta.value + 4 :]
    return out


def _us(v: int) -> bytes:
    return struct.pack("<H", v & 0xFFFF)


def mut_dicom_size(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    sizes = [0, 1, 2, 7, 255, 256, 511, 513, 1024, 4096, 16384, 16385, 32768, 65535, rng.randrange(65536)]
    which = rng.choice(["rows", "columns", "both"])
    rows, cols = rng.choice(sizes), rng.choice(sizes)
    if which != "columns":
        data = dicom_set(data, (0x0028, 0x0010), _us(rows))
    if which != "rows":
        data = dicom_set(data, (0x0028, 0x0011), _us(cols))
    return data, f"DICOM {which}: Rows={rows if which != 'columns' else '-'} Columns={cols if which != 'rows' else '-'}"


def mut_dicom_huge(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    frames = rng.choice([b"5000", b"100000", b"2147483647", b"99999999999", b"-1", b"0", b"abc", b"3"])
    side = rng.choice([65535, 16384, 4096])
    data = dicom_set(data, (0x0028, 0x0010), _us(side))
    data = dicom_set(data, (0x0028, 0x0011), _us(side))
    return dicom_set(data, (0x0028, 0x0008), frames), f"DICOM Rows=Columns={side}, NumberOfFrames={frames.decode()}"


def mut_dicom_frames(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    frames = rng.choice([b"0", b"1", b"2", b"3", b"20", b"5000", b"-5", b"1e9", b"x", b"", b"2.5"])
    return dicom_set(data, (0x0028, 0x0008), frames), f"DICOM NumberOfFrames={frames!r}"


def mut_dicom_bits(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    tag, name, values = rng.choice([
        ((0x0028, 0x0100), "BitsAllocated", [0, 1, 7, 8, 12, 16, 24, 32, 64, 255, 65535]),
        ((0x0028, 0x0101), "BitsStored", [0, 1, 8, 12, 16, 17, 32, 64, 65535]),
        ((0x0028, 0x0102), "HighBit", [0, 7, 11, 15, 16, 31, 65535]),
        ((0x0028, 0x0103), "PixelRepresentation", [0, 1, 2, 65535]),
        ((0x0028, 0x0002), "SamplesPerPixel", [0, 2, 3, 4, 255, 65535]),
        ((0x0028, 0x0006), "PlanarConfiguration", [0, 1, 2, 65535]),
    ])
    v = rng.choice(values)
    return dicom_set(data, tag, _us(v)), f"DICOM {name}={v}"


def mut_dicom_photometric(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    v = rng.choice([b"MONOCHROME1", b"MONOCHROME2", b"RGB", b"PALETTE COLOR", b"YBR_FULL", b"YBR_FULL_422",
                    b"", b"GARBAGE\0\0"])
    return dicom_set(data, (0x0028, 0x0004), v), f"DICOM PhotometricInterpretation={v!r}"


_SYNTAXES = [b"1.2.840.10008.1.2", b"1.2.840.10008.1.2.1", b"1.2.840.10008.1.2.2", b"1.2.840.10008.1.2.1.99",
             b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.70", b"1.2.840.10008.1.2.4.80",
             b"1.2.840.10008.1.2.4.90", b"1.2.840.10008.1.2.5", b"1.2.3", b""]


def mut_dicom_syntax(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    v = rng.choice(_SYNTAXES)
    return dicom_set(data, (0x0002, 0x0010), v + b"\0"), f"DICOM TransferSyntaxUID={v.decode() or 'empty'}"


_TEXTS = [b"nan", b"inf", b"-inf", b"1e308", b"1e400", b"0", b"-1", b"", b"abc", b"0\\0", b"0\\0\\0\\0\\0\\0",
          b"1\\0\\0\\1\\0\\0", b"1\\0\\0\\0\\1", b"nan\\nan\\nan", b"-0.0\\1e-300", b"1\\0\\0\\0\\1\\0\\0\\0\\1",
          b"99999999999999999999"]


def mut_dicom_text(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    tag, name = rng.choice([
        ((0x0020, 0x0032), "ImagePositionPatient"), ((0x0020, 0x0037), "ImageOrientationPatient"),
        ((0x0028, 0x0030), "PixelSpacing"), ((0x0018, 0x0050), "SliceThickness"),
        ((0x0028, 0x1052), "RescaleIntercept"), ((0x0028, 0x1053), "RescaleSlope"),
        ((0x0028, 0x1050), "WindowCenter"), ((0x0028, 0x1051), "WindowWidth"),
        ((0x0020, 0x0013), "InstanceNumber"), ((0x0008, 0x0060), "Modality"),
    ])
    v = rng.choice(_TEXTS)
    return dicom_set(data, tag, v), f"DICOM {name}={v!r}"


def mut_dicom_length(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    elements = dicom_elements(data)
    if not elements:
        return data, "DICOM length lie skipped (no elements)"
    e = elements[-1] if rng.random() < 0.3 else rng.choice(elements)
    if e.long:
        v = rng.choice([0, 1, 2, 0xFFFFFFFF, 0xFFFFFFFE, 0x7FFFFFFF, e.length * 2 & 0xFFFFFFFF,
                        max(e.length - 1, 0), rng.randrange(1 << 32)])
        packed = struct.pack("<I", v)
    else:
        v = rng.choice([0, 1, 0xFFFF, e.length + 1, max(e.length - 1, 0), rng.randrange(1 << 16)])
        packed = struct.pack("<H", v)
    at = e.length_at
    return data[:at] + packed + data[at + len(packed) :], f"DICOM length of ({e.tag[0]:04x},{e.tag[1]:04x}) := {v}"


def mut_dicom_zero_pixels(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    pixel = next((e for e in dicom_elements(data) if e.tag == (0x7FE0, 0x0010)), None)
    if pixel is None:
        return data, "DICOM zero pixel data (none found)"
    buf = bytearray(data)
    if pixel.length != 0xFFFFFFFF:
        buf[pixel.value : pixel.value + pixel.length] = bytes(min(pixel.length, len(buf) - pixel.value))
        return bytes(buf), "DICOM pixel data zeroed"
    if rng.random() < 0.3:
        return bytes(buf[: pixel.value]) + bytes(len(buf) - pixel.value), "DICOM encapsulated pixel data all zeroed"
    pos = pixel.value  # keep the item structure, zero each fragment
    while pos + 8 <= len(buf):
        group, elem, length = struct.unpack_from("<HHI", buf, pos)
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            break
        if pos != pixel.value:  # the first item is the offset table
            buf[pos + 8 : pos + 8 + length] = bytes(min(length, len(buf) - pos - 8))
        pos += 8 + length
    return bytes(buf), "DICOM fragments zeroed (items kept)"


def mut_dicom_remove(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    tag = rng.choice([(0x0028, 0x0010), (0x0028, 0x0011), (0x0028, 0x0100), (0x0028, 0x0002), (0x0028, 0x0004),
                      (0x7FE0, 0x0010), (0x0002, 0x0010), (0x0020, 0x0037)])
    return dicom_set(data, tag, None), f"DICOM remove ({tag[0]:04x},{tag[1]:04x})"


def mut_dicom_sop(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    v = rng.choice([b"1.2.840.10008.5.1.4.1.1.88.11", b"1.2.840.10008.5.1.4.1.1.66.4", b"1.2.840.10008.1.3.10",
                    b"1.2.3.4", b""])
    data = dicom_set(data, (0x0002, 0x0002), v + b"\0")
    return dicom_set(data, (0x0008, 0x0016), v + b"\0"), f"DICOM SOPClassUID={v.decode() or 'empty'}"


DICOM: list[Mutator] = [mut_dicom_size, mut_dicom_size, mut_dicom_huge, mut_dicom_frames, mut_dicom_bits,
                        mut_dicom_bits, mut_dicom_photometric, mut_dicom_syntax, mut_dicom_text, mut_dicom_text,
                        mut_dicom_length, mut_dicom_zero_pixels, mut_dicom_remove, mut_dicom_sop]

# ---------------------------------------------------------------------------------------------
# NIfTI-1 (header mutations act on the uncompressed bytes; a gzipped file is unpacked and packed again)


def _on_payload(data: bytes, fn: Callable[[bytearray], str]) -> tuple[bytes, str]:
    gz = data[:2] == b"\x1f\x8b"
    if gz:
        try:
            payload = bytearray(gzip.decompress(data))
        except (OSError, EOFError, zlib.error):
            gz, payload = False, bytearray(data)  # an earlier mutation broke the stream: lie in the raw bytes
    else:
        payload = bytearray(data)
    if len(payload) < 348:
        return data, "NIfTI header mutation skipped (header gone)"
    desc = fn(payload)
    return (gzip.compress(bytes(payload), compresslevel=1, mtime=0) if gz else bytes(payload)), desc


def _nifti_dims(rng: random.Random, hdr: bytearray) -> str:
    dims = list(struct.unpack_from("<8h", hdr, 40))
    style = rng.choice(["huge", "one", "negative", "zero", "ndim", "time", "random"])
    if style == "huge":
        dims[:5] = rng.choice([[3, 32767, 32767, rng.choice([5000, 32767, 1]), 1], [3, 1024, 1024, 1000, 1],
                               [3, 4096, 4096, 60, 1]])
    elif style == "one":
        i = rng.randrange(1, 4)
        dims[i] = rng.choice([dims[i] * 2, dims[i] + 1, dims[i] * 100 % 32768, 32767])
    elif style == "negative":
        dims[rng.randrange(1, 5)] = rng.choice([-1, -2, -32768])
    elif style == "zero":
        dims[rng.randrange(1, 5)] = 0
    elif style == "ndim":
        dims[0] = rng.choice([-1, 0, 1, 2, 4, 5, 7, 8, 9, 300, -32768])
    elif style == "time":
        dims[0], dims[4] = 4, rng.choice([2, 1000, 32767])
    else:
        dims = [rng.randrange(-3, 9)] + [rng.randrange(-5, 32768) for _ in range(7)]
    dims = [max(-32768, min(v, 32767)) for v in dims]
    struct.pack_into("<8h", hdr, 40, *dims)
    return f"NIfTI dim={dims}"


def _nifti_datatype(rng: random.Random, hdr: bytearray) -> str:
    code = rng.choice([0, 1, 2, 3, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304,
                       9999, -1])
    bitpix = rng.choice([struct.unpack_from("<h", hdr, 72)[0], 0, 1, 8, 16, 32, 64, 128, 7, -8])
    struct.pack_into("<hh", hdr, 70, code, bitpix)
    return f"NIfTI datatype={code} bitpix={bitpix}"


def _nifti_float(rng: random.Random, hdr: bytearray) -> str:
    name, offset = rng.choice([("vox_offset", 108), ("scl_slope", 112), ("scl_inter", 116), ("cal_max", 124),
                               ("cal_min", 128), ("pixdim[0]", 76), ("pixdim[1]", 80), ("pixdim[3]", 88),
                               ("quatern_b", 256), ("qoffset_x", 268), ("srow_x[0]", 280), ("srow_z[3]", 316)])
    v = rng.choice([float("nan"), float("inf"), -float("inf"), 0.0, -1.0, 1e30, -1e30, 3.5, 1e-30, 2.0**31,
                    348.0, 352.0, 10.0 * 1e6])
    struct.pack_into("<f", hdr, offset, v)
    return f"NIfTI {name}={v}"


def _nifti_codes(rng: random.Random, hdr: bytearray) -> str:
    name, offset, fmt, values = rng.choice([
        ("sizeof_hdr", 0, "<i", [540, 0, -348, 0x5C010000, 1 << 30]),
        ("qform_code", 252, "<h", [0, 1, 2, 3, 4, 5, -1, 32767]),
        ("sform_code", 254, "<h", [0, 1, 2, 4, 5, -1, 32767]),
        ("dim_info", 39, "<B", [0, 255]),
        ("xyzt_units", 123, "<B", [0, 1, 3, 255]),
        ("intent_code", 68, "<h", [0, 1002, 2001, 32767, -1]),
    ])
    v = rng.choice(values)
    struct.pack_into(fmt, hdr, offset, v)
    return f"NIfTI {name}={v}"


def _nifti_magic(rng: random.Random, hdr: bytearray) -> str:
    magic = rng.choice([b"ni1\0", b"n+2\0", b"\0\0\0\0", b"n+1x", b"NII\0"])
    hdr[344:348] = magic
    return f"NIfTI magic={magic!r}"


def _nifti_swap(rng: random.Random, hdr: bytearray) -> str:
    # Byte-swap sizeof_hdr only: the reader takes the file as big-endian and every other field becomes a lie.
    hdr[0:4] = hdr[0:4][::-1]
    return "NIfTI sizeof_hdr byte-swapped (claims big-endian)"


def _nifti(fn: Callable[[random.Random, bytearray], str]) -> Mutator:
    def mutate(rng: random.Random, data: bytes) -> tuple[bytes, str]:
        return _on_payload(data, lambda hdr: fn(rng, hdr))
    mutate.__name__ = fn.__name__
    return mutate


NIFTI: list[Mutator] = [_nifti(f) for f in (_nifti_dims, _nifti_dims, _nifti_dims, _nifti_datatype, _nifti_datatype,
                                             _nifti_float, _nifti_float, _nifti_codes, _nifti_magic, _nifti_swap)]

# ---------------------------------------------------------------------------------------------
# NRRD (text header, a blank line, then the data)


def _nrrd_field(data: bytes, key: bytes, value: bytes | None) -> bytes:
    head, sep, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    out, done = [], False
    for line in lines:
        if line.split(b":", 1)[0].strip().lower() == key:
            done = True
            if value is not None:
                out.append(key + b": " + value)
        else:
            out.append(line)
    if not done and value is not None:
        out.append(key + b": " + value)
    return b"\n".join(out) + sep + body


def mut_nrrd_sizes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    v = rng.choice([b"100000 100000 5000", b"256 256 -25", b"0 0 0", b"256 256", b"256 256 25 4", b"a b c",
                    b"256.5 256 25", b"256 256 2500", b"512 512 25", b"256 256 26", b"65536 65536 65536",
                    b"256 256 24", b"18446744073709551615 1 1", b"9223372036854775807 2 2", b"1 1 1",
                    b"4096 4096 1024", b"256 256 0", b"4096 4096 60", b"2048 2048 250", b"16384 16384 3"])
    return _nrrd_field(data, b"sizes", v), f"NRRD sizes: {v.decode()}"


def mut_nrrd_field(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    key, values = rng.choice([
        (b"type", [b"uchar", b"signed char", b"ushort", b"int", b"uint", b"longlong", b"ulonglong", b"float",
                   b"double", b"block", b"garbage", b""]),
        (b"dimension", [b"0", b"1", b"2", b"4", b"16", b"17", b"-3", b"x", b"99999999999"]),
        (b"encoding", [b"raw", b"gzip", b"bzip2", b"hex", b"ascii", b"text", b"zrl", b"garbage"]),
        (b"endian", [b"big", b"middle", b""]),
        (b"space directions", [b"none (1,0,0) (0,1,0)", b"(0,0,0) (0,0,0) (0,0,0)", b"(nan,0,0) (0,1,0) (0,0,1)",
                               b"(1e308,0,0) (0,1e308,0) (0,0,1e308)", b"garbage", b"(1,0,0) (1,0,0) (1,0,0)",
                               b"(1,0) (0,1) (0,0)"]),
        (b"space origin", [b"(nan,nan,nan)", b"(1e308,0,0)", b"garbage", b"(0,0)"]),
        (b"space", [b"right-anterior-superior", b"garbage", b"3D-right-handed-time"]),
        (b"kinds", [b"RGB-color domain domain", b"3-vector domain domain", b"garbage garbage garbage",
                    b"list domain domain"]),
        (b"data file", [b"missing.raw", b"LIST", b"./slice%03d.raw 1 100 1 2", b"/nonexistent/x.raw", b""]),
        (b"byte skip", [b"-1", b"100000000", b"-2", b"999999999999999999999"]),
        (b"line skip", [b"1000000", b"-1"]),
        (b"block size", [b"0", b"-1", b"4"]),
        (b"spacings", [b"0 0 0", b"nan nan nan", b"-1 1 1"]),
    ])
    v = rng.choice(values)
    if rng.random() < 0.15:
        return _nrrd_field(data, key, None), f"NRRD remove field {key.decode()!r}"
    return _nrrd_field(data, key, v), f"NRRD {key.decode()}: {v.decode()}"


def mut_nrrd_structure(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    head, sep, body = data.partition(b"\n\n")
    style = rng.choice(["magic", "no-blank", "crlf", "header-only", "zero-data"])
    if style == "magic":
        magic = rng.choice([b"NRRD0009", b"NRRD", b"NRRD0001", b"nrrd0004"])
        return magic + head[8:] + sep + body, f"NRRD magic {magic.decode()}"
    if style == "no-blank":
        return head + b"\n" + body, "NRRD without the blank line ending the header"
    if style == "crlf":
        return head.replace(b"\n", b"\r\n") + b"\r\n\r\n" + body, "NRRD with CRLF line ends"
    if style == "header-only":
        return head + sep, "NRRD header without data"
    return head + sep + bytes(len(body)), "NRRD data zeroed"


NRRD: list[Mutator] = [mut_nrrd_sizes, mut_nrrd_sizes, mut_nrrd_sizes, mut_nrrd_field, mut_nrrd_field,
                       mut_nrrd_field, mut_nrrd_structure]

# ---------------------------------------------------------------------------------------------
# PNG


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, type, length) of each chunk that fits in the file."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((pos, data[pos + 4 : pos + 8], length))
        if length > len(data):
            break
        pos += 12 + length
    return out


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_ihdr(data: bytes, rng: random.Random, **fields: int) -> bytes:
    if len(data) < 33 or data[12:16] != b"IHDR":
        return data
    w, h, depth, colour, comp, filt, lace = struct.unpack_from(">IIBBBBB", data, 16)
    values = {"w": w, "h": h, "depth": depth, "colour": colour, "comp": comp, "filt": filt, "lace": lace, **fields}
    ihdr = struct.pack(">IIBBBBB", *(values[k] for k in ("w", "h", "depth", "colour", "comp", "filt", "lace")))
    crc = zlib.crc32(b"IHDR" + ihdr) if rng.random() < 0.85 else struct.unpack_from(">I", data, 29)[0]
    return data[:16] + ihdr + struct.pack(">I", crc) + data[33:]


_PNG_SIDES = [0, 1, 2, 511, 513, 1024, 16384, 16385, 65535, 100000, 2**31 - 1, 2**31, 2**32 - 1]


def mut_png_size(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    which = rng.choice(["w", "h", "both"])
    w, h = rng.choice(_PNG_SIDES + [rng.randrange(1 << 32)]), rng.choice(_PNG_SIDES)
    fields = {"w": w, "h": h} if which == "both" else {which: w}
    return _png_ihdr(data, rng, **fields), f"PNG IHDR {fields}"


def mut_png_format(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    field = rng.choice(["depth", "colour", "comp", "filt", "lace"])
    v = rng.choice({"depth": [0, 1, 2, 3, 4, 7, 8, 16, 32, 255], "colour": [0, 1, 2, 3, 4, 5, 6, 7, 255]}.get(
        field, [0, 1, 2, 255]))
    return _png_ihdr(data, rng, **{field: v}), f"PNG IHDR {field}={v}"


def mut_png_chunks(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    chunks = png_chunks(data)
    if not chunks:
        return data, "PNG chunk mutation skipped (no chunks)"
    style = rng.choice(["length", "remove", "duplicate-ihdr", "zero-idat", "text", "no-iend"])
    if style == "length":
        pos, kind, length = rng.choice(chunks)
        v = rng.choice([0, 1, length + 1, max(length - 1, 0), 2**31 - 1, 2**32 - 1, rng.randrange(1 << 32)])
        return data[:pos] + struct.pack(">I", v) + data[pos + 4 :], f"PNG {kind!r} length := {v}"
    if style == "remove":
        pos, kind, length = rng.choice(chunks)
        return data[:pos] + data[pos + 12 + length :], f"PNG remove chunk {kind!r}"
    if style == "duplicate-ihdr":
        ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 16, 6, 0, 0, 0))
        return data[:33] + ihdr + data[33:], "PNG second IHDR claiming 100000 x 100000 RGBA 16-bit"
    if style == "zero-idat":
        buf = bytearray(data)
        for pos, kind, length in chunks:
            if kind == b"IDAT":
                buf[pos + 8 : pos + 8 + length] = bytes(min(length, len(buf) - pos - 8))
                if rng.random() < 0.7 and pos + 12 + length <= len(buf):
                    struct.pack_into(">I", buf, pos + 8 + length, zlib.crc32(bytes(buf[pos + 4 : pos + 8 + length])))
        return bytes(buf), "PNG IDAT data zeroed"
    if style == "text":
        text = _chunk(b"zTXt", b"k\0\0" + zlib.compress(b"A" * (1 << 22)))
        return data[:33] + text + data[33:], "PNG with a zTXt chunk inflating to 4 MB"
    iend = next((p for p, k, _ in chunks if k == b"IEND"), None)
    return (data[:iend] if iend is not None else data), "PNG without IEND"


_BOMBS: dict[tuple[int, int, int, int], bytes] = {}


def png_bomb(width: int, height: int, depth: int, colour: int) -> bytes:
    """A valid PNG of zeros whose pixels take far more memory than the file (cached: making one takes seconds)."""
    key = (width, height, depth, colour)
    if key not in _BOMBS:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        total = height * (1 + width * channels * depth // 8)  # every byte zero: filter type 0 and the pixels
        # After a full flush deflate starts afresh, so the same input block always compresses to the same
        # bytes: compress one 16 MB block and repeat it. The zlib checksum of n zero bytes is (n % 65521) << 16 | 1.
        block = 1 << 24
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        unit = comp.compress(bytes(block)) + comp.flush(zlib.Z_FULL_FLUSH)
        tail = comp.compress(bytes(total % block)) + comp.flush()
        idat = b"\x78\xda" + unit * (total // block) + tail + struct.pack(">I", (total % 65521) << 16 | 1)
        ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
        _BOMBS[key] = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return _BOMBS[key]


def mut_png_bomb(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    width, height, depth, colour = rng.choice([(16384, 16384, 16, 6), (16384, 16384, 16, 2), (16384, 16384, 8, 0),
                                               (16000, 12000, 16, 6)])
    kind = {0: "grey", 2: "RGB", 6: "RGBA"}[colour]
    return png_bomb(width, height, depth, colour), f"PNG of zeros {width} x {height} {kind} {depth}-bit (valid data)"


def _mha_field(data: bytes, key: bytes, value: bytes | None) -> bytes:
    at = data.find(b"ElementDataFile")
    end = data.find(b"\n", at) + 1 if at >= 0 else 0
    lines = data[:end].split(b"\n")
    out = [line for line in lines if line.split(b"=", 1)[0].strip() != key]
    if value is not None:
        out.insert(max(len(out) - 2, 0), key + b" = " + value)  # before ElementDataFile, which must stay last
    return b"\n".join(out) + data[end:]


def mut_mha_field(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    key, values = rng.choice([
        (b"DimSize", [b"100000 100000 5000", b"122 101 31", b"4096 4096 60", b"0 0 0", b"-1 101 30", b"122 101",
                      b"a b c", b"1024 1024 1000"]),
        (b"NDims", [b"0", b"2", b"4", b"99", b"-1"]),
        (b"ElementType", [b"MET_UCHAR", b"MET_DOUBLE", b"MET_LONG_LONG", b"MET_FLOAT_ARRAY", b"GARBAGE"]),
        (b"CompressedData", [b"True", b"False"]),
        (b"CompressedDataSize", [b"1", b"999999999999"]),
        (b"ElementNumberOfChannels", [b"3", b"0", b"1000"]),
        (b"HeaderSize", [b"-1", b"100000000", b"0"]),
        (b"ElementSpacing", [b"0 0 0", b"nan nan nan", b"-1 1 1"]),
        (b"TransformMatrix", [b"0 0 0 0 0 0 0 0 0", b"nan 0 0 0 1 0 0 0 1"]),
    ])
    if rng.random() < 0.1:
        return _mha_field(data, key, None), f"MetaImage remove {key.decode()}"
    v = rng.choice(values)
    return _mha_field(data, key, v), f"MetaImage {key.decode()} = {v.decode()}"


def mut_mha_datafile(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    v = rng.choice([b"missing.raw", b"LIST", b"/nonexistent/x.raw", b""])
    at = data.find(b"ElementDataFile")
    end = data.find(b"\n", at) + 1 if at >= 0 else 0
    return data[:at] + b"ElementDataFile = " + v + b"\n" + data[end:], f"MetaImage ElementDataFile = {v.decode()}"


MHA: list[Mutator] = [mut_mha_field, mut_mha_field, mut_mha_field, mut_mha_datafile]

PNG: list[Mutator] = [mut_png_size, mut_png_size, mut_png_size, mut_png_format, mut_png_format, mut_png_chunks,
                      mut_png_chunks, mut_png_bomb]

FORMAT_MUTATORS: dict[str, list[Mutator]] = {"dicom": DICOM, "nifti": NIFTI, "nrrd": NRRD, "mha": MHA, "png": PNG}

# ---------------------------------------------------------------------------------------------
# Cases


def make_case(sources: dict[str, tuple[str, str, bytes]], seed: int, index: int) -> tuple[str, str, bytes, str]:
    """(source name, file suffix, mutated bytes, description) of case `index` for `seed`; the same on every run."""
    rng = random.Random(f"medad-fuzz:{seed}:{index}")
    name = rng.choice(sorted(sources))
    kind, suffix, data = sources[name]
    steps = []
    for _ in range(rng.choices([1, 2, 3], weights=[70, 25, 5])[0]):
        pool = FORMAT_MUTATORS[kind] if rng.random() < 0.6 else GENERIC
        mutate = rng.choice(pool)
        try:
            data, desc = mutate(rng, data)
        except (ValueError, IndexError, struct.error, OverflowError) as exc:  # an earlier step left nothing to mutate
            desc = f"{mutate.__name__} skipped ({type(exc).__name__}: {exc})"
        steps.append(desc)
    if len(data) >= MAX_FILE:
        data = data[: MAX_FILE - 1]
        steps.append("cut to 10 MB")
    return name, suffix, data, f"{name}: " + "; ".join(steps)


class _LogCapture(logging.Handler):
    """Collects the tracebacks the loaders' catch-alls log (log.exception)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record.getMessage() + "\n" + "".join(traceback.format_exception(*record.exc_info)))


def check_file(path: str, json_output: bool = False) -> dict:
    """Open `path` as the viewer and `info` do; returns {"tracebacks": [...], "problems": [...], "memory": bool}.

    tracebacks: exceptions that escaped (or reached the loaders' catch-alls); problems: messages that break the
    rule (name the file, say what is wrong), a wrong exit status, or "not enough memory" (memory: True).
    """
    from medad_viewer import cli
    from medad_viewer.io import default_window, load_study

    name = os.path.basename(path)
    tracebacks: list[str] = []
    problems: list[str] = []
    capture = _LogCapture()
    logger = logging.getLogger("medad_viewer")
    logger.addHandler(capture)
    memory = False
    loaded = None
    try:
        try:
            study = load_study(path)
            loaded = bool(study.series)
            for s in study.series:
                s.slice(s.num_slices // 2)
                default_window(s)
            for e in study.errors:
                if name not in e.message:
                    problems.append(f"error message does not name the file: {e.message!r}")
                if "not enough memory" in e.message:
                    memory = True
                    problems.append(f"a file under 10 MB ran out of memory: {e.message!r}")
            if not study.series and not study.errors:
                problems.append("nothing loaded and no error given")
        except Exception:  # noqa: BLE001
            tracebacks.append("load_study: " + traceback.format_exc())
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                rc = cli.main(["info", path] + (["--json"] if json_output else []))
            if not isinstance(rc, int):
                problems.append(f"info returned {rc!r}, not an exit status")
            elif loaded is not None and rc != (0 if loaded else 1):
                problems.append(f"info exit status {rc} but load_study {'loaded' if loaded else 'loaded nothing'}")
        except BaseException as exc:  # SystemExit too: info must return, not exit
            if isinstance(exc, KeyboardInterrupt):
                raise
            tracebacks.append("info: " + traceback.format_exc())
    finally:
        logger.removeHandler(capture)
    tracebacks.extend("caught by a catch-all: " + r for r in capture.records)
    return {"tracebacks": tracebacks, "problems": problems, "memory": memory}


# ---------------------------------------------------------------------------------------------
# Child process and driver


def _rss_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux; the peak since start elsewhere


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _worker(tasks: mp.Queue, results: mp.Queue, quiet: bool) -> None:
    logging.getLogger("medad_viewer").propagate = False  # the catch-alls' logs are collected, not printed
    import SimpleITK as sitk

    import medad_viewer.cli  # imported before the first case, so its time is not the case's
    import medad_viewer.io  # noqa: F401

    if quiet:  # ITK warnings and libpng/GDCM complaints about the damaged files go to the C stderr
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)

    results.put(("ready", None))
    while True:
        task = tasks.get()
        if task is None:
            return
        index, path, json_output = task
        _reset_peak()
        before = _rss_kb("VmRSS")
        start = time.perf_counter()
        result = check_file(path, json_output)
        result["seconds"] = time.perf_counter() - start
        result["peak_kb"] = _rss_kb("VmHWM")
        result["growth_kb"] = max(result["peak_kb"] - before, 0)
        results.put((index, result))


class _Child:
    def __init__(self, ctx: mp.context.BaseContext, quiet: bool = True) -> None:
        self.tasks, self.results = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_worker, args=(self.tasks, self.results, quiet), daemon=True)
        self.proc.start()
        self.results.get(timeout=120)  # "ready": imports done

    def run(self, index: int, path: str, json_output: bool, timeout: float) -> dict | str:
        """The case's result, or 'hang' / 'died (exit code N)'."""
        self.tasks.put((index, path, json_output))
        deadline = time.monotonic() + timeout
        while True:
            try:
                got, result = self.results.get(timeout=min(0.5, max(deadline - time.monotonic(), 0.01)))
                if got == index:
                    return result
            except queue.Empty:
                pass
            if not self.proc.is_alive():
                return f"died (exit code {self.proc.exitcode})"
            if time.monotonic() > deadline:
                return "hang"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()

    def close(self) -> None:
        if self.proc.is_alive():
            self.tasks.put(None)
            self.proc.join(5)
            if self.proc.is_alive():
                self.kill()


def run(cases: int, seed: int, timeout: float = 10.0, verbose: bool = False) -> dict:
    start = time.perf_counter()
    ctx = mp.get_context("spawn")
    workdir = tempfile.mkdtemp(prefix="medad-fuzz-")
    totals = {"cases": 0, "tracebacks": 0, "hangs": 0, "max_rss_mb": 0.0, "over_2gb": 0}
    child: _Child | None = None
    try:
        sources = prepare_sources(workdir)
        for index in range(cases):
            source, suffix, data, desc = make_case(sources, seed, index)
            case_dir = os.path.join(workdir, f"case{index:05d}")
            os.mkdir(case_dir)
            path = os.path.join(case_dir, f"fuzz{index:05d}_{source}{suffix}")
            with open(path, "wb") as fh:
                fh.write(data)
            if child is None:
                child = _Child(ctx)
            result = child.run(index, path, json_output=index % 2 == 1, timeout=timeout)
            totals["cases"] += 1
            failures: list[str] = []
            if result == "hang":
                totals["hangs"] += 1
                failures.append(f"HANG: more than {timeout:g} s")
                child.kill()
                child = None
            elif isinstance(result, str):
                totals["tracebacks"] += 1
                failures.append(f"TRACEBACK: the worker process {result}")
                child = None
            else:
                if result["tracebacks"]:
                    totals["tracebacks"] += 1
                    failures.extend("TRACEBACK: " + t for t in result["tracebacks"])
                totals["max_rss_mb"] = max(totals["max_rss_mb"], result["peak_kb"] / 1024)
                if result["peak_kb"] * 1024 > 2 * GIB or result["memory"]:
                    totals["over_2gb"] += 1
                    failures.append(f"MEMORY: peak RSS {result['peak_kb'] / 1024:.0f} MB "
                                    f"(grew {result['growth_kb'] / 1024:.0f} MB) for a {len(data)} byte file")
                if verbose:
                    failures.extend("PROBLEM: " + p for p in result["problems"])
                    if GIB < result["peak_kb"] * 1024 <= 2 * GIB:
                        failures.append(f"PROBLEM: peak RSS {result['peak_kb'] / 1024:.0f} MB (under the limit)")
                    if result["seconds"] > timeout / 4:
                        failures.append(f"PROBLEM: slow ({result['seconds']:.1f} s)")
            if verbose and failures:
                print(f"--- case {index} ({len(data)} bytes) {desc}\n    file: {path}", file=sys.stderr)
                for f in failures:
                    print("    " + f.rstrip().replace("\n", "\n    "), file=sys.stderr)
            shutil.rmtree(case_dir, ignore_errors=True)
    finally:
        if child is not None:
            child.close()
        shutil.rmtree(workdir, ignore_errors=True)
    totals["max_rss_mb"] = round(totals["max_rss_mb"], 1)
    totals["seconds"] = round(time.perf_counter() - start, 1)
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds after which a case is a hang")
    parser.add_argument("--verbose", action="store_true", help="print each failing case to stderr")
    args = parser.parse_args(argv)
    totals = run(args.cases, args.seed, args.timeout, args.verbose)
    print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
