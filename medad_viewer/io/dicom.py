"""DICOM loading with SimpleITK/GDCM: headers, grouping into series, slice order, HU, geometry.

Each file is read on its own (headers first, then pixels into one preallocated array) so a
damaged file costs only its own slice. The headers of plain single-frame greyscale files come from
the structural scan (_dicomscan.py: the tags grouping and ordering need, with no value decoded
beyond them); GDCM reads the header of one reference file per series, and every file's pixels.
A series can be planned first and its pixels read later, in any order (`load_dicom_files(defer=
True)`, io/fill.py), so a viewer shows its first slice without waiting for the others.

Orientation rule for single-frame series with a known plane: axial slices are flipped in-plane
as needed so row 0 is anterior and column 0 is the patient's right (radiological view); coronal
and sagittal slices are shown head up, with the patient's right (coronal) or anterior (sagittal)
on the image left. Slices are ordered along the slice normal, pointed so its main component is
positive (axial: inferior to superior).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import struct
import threading
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ._util import (
    ReadFailure,
    SliceStack,
    check_size,
    compact_dtype,
    credible_expansion,
    human_bytes,
    natural_key,
    owned_view,
    storage_dtype_for,
)
from ._dicomscan import ScanResult, scan_dicom
from .deid import IDENTIFYING_TAGS
from .series import LoadError, Series

log = logging.getLogger(__name__)

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic", ".ima"})

# Non-identifying header fields copied into Series.metadata under their DICOM keywords.
METADATA_TAGS: dict[str, str] = {
    "0008|0008": "ImageType",
    "0008|0016": "SOPClassUID",
    "0008|0060": "Modality",
    "0008|0070": "Manufacturer",
    "0008|1090": "ManufacturerModelName",
    "0018|0015": "BodyPartExamined",
    "0018|0050": "SliceThickness",
    "0018|0060": "KVP",
    "0018|0080": "RepetitionTime",
    "0018|0081": "EchoTime",
    "0018|0087": "MagneticFieldStrength",
    "0018|0088": "SpacingBetweenSlices",
    "0018|1150": "ExposureTime",
    "0018|1151": "XRayTubeCurrent",
    "0018|1164": "ImagerPixelSpacing",
    "0018|1210": "ConvolutionKernel",
    "0018|5100": "PatientPosition",
    "0018|5101": "ViewPosition",
    "0020|0011": "SeriesNumber",
    "0020|0020": "PatientOrientation",
    "0020|0060": "Laterality",
    "0020|0062": "ImageLaterality",
    "0028|0004": "PhotometricInterpretation",
    "0028|0030": "PixelSpacing",
    "0028|0100": "BitsAllocated",
    "0028|0101": "BitsStored",
    "0028|0103": "PixelRepresentation",
    "0028|1050": "WindowCenter",
    "0028|1051": "WindowWidth",
    "0028|1052": "RescaleIntercept",
    "0028|1053": "RescaleSlope",
    "0028|1054": "RescaleType",
}
_INT_METADATA = frozenset({"BitsAllocated", "BitsStored", "PixelRepresentation", "SeriesNumber"})

# SOP classes that hold no pixels (reports, presentation states, RT structures and plans,
# encapsulated documents, waveforms, registrations): skipped without complaint.
_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",
    "1.2.840.10008.5.1.4.1.1.11.",
    "1.2.840.10008.5.1.4.1.1.104.",
    "1.2.840.10008.5.1.4.1.1.9.",
    "1.2.840.10008.5.1.4.1.1.66",
    "1.2.840.10008.5.1.4.1.1.481.3",
    "1.2.840.10008.5.1.4.1.1.481.4",
    "1.2.840.10008.5.1.4.1.1.481.5",
    "1.2.840.10008.5.1.4.1.1.481.6",
    "1.2.840.10008.5.1.4.1.1.481.7",
    "1.2.840.10008.5.1.4.1.1.481.8",
    "1.2.840.10008.5.1.4.1.1.481.9",
    "1.2.840.10008.1.3.10",  # DICOMDIR
)
_SEGMENTATION_SOP = "1.2.840.10008.5.1.4.1.1.66.4"

_VOLUME_MODALITIES = frozenset({"CT", "MR", "PT"})
# Positions closer than this (mm) are the same slice.
_SAME_POSITION_MM = 0.01

_SITK_TO_NUMPY = {
    sitk.sitkUInt8: np.uint8,
    sitk.sitkInt8: np.int8,
    sitk.sitkUInt16: np.uint16,
    sitk.sitkInt16: np.int16,
    sitk.sitkUInt32: np.uint32,
    sitk.sitkInt32: np.int32,
    sitk.sitkUInt64: np.uint64,
    sitk.sitkInt64: np.int64,
    sitk.sitkFloat32: np.float32,
    sitk.sitkFloat64: np.float64,
    sitk.sitkVectorUInt8: np.uint8,
    sitk.sitkVectorInt8: np.int8,
    sitk.sitkVectorUInt16: np.uint16,
    sitk.sitkVectorInt16: np.int16,
    sitk.sitkVectorUInt32: np.uint32,
    sitk.sitkVectorInt32: np.int32,
    sitk.sitkVectorFloat32: np.float32,
    sitk.sitkVectorFloat64: np.float64,
}


# ---------------------------------------------------------------------------------------------
# Recognising DICOM files


def has_dicom_magic(path: str) -> bool:
    """True when the file has the 'DICM' marker after the 128-byte preamble (Part 10 files)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


_META_BYTES = 16384  # where the file meta group ends, in any real file


def read_file_meta(path: str, data: bytes | None = None) -> dict[str, str]:
    """The group 0002 file-meta elements of a Part 10 file (always explicit VR little endian); `data`: the file's
    first bytes when already read.

    Read by hand because GDCM refuses files it cannot fully parse, and this is what tells a
    report (no pixels, skip) from a damaged image (report).
    """
    out: dict[str, str] = {}
    if data is None:
        try:
            with open(path, "rb") as fh:
                data = fh.read(_META_BYTES)
        except OSError:
            return out
    pos = 132
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4 : pos + 6]
        if vr in long_vrs:
            if pos + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8
        if length == 0xFFFFFFFF or pos + length > len(data):
            break
        value = data[pos : pos + length]
        pos += length
        if vr == b"UI" or vr in (b"SH", b"LO", b"AE", b"CS"):
            out[f"{group:04x}|{elem:04x}"] = value.rstrip(b"\0 ").decode("ascii", "replace")
    return out


def is_non_image_sop_class(sop_class_uid: str) -> bool:
    if not sop_class_uid or sop_class_uid == _SEGMENTATION_SOP:
        return False
    return sop_class_uid.startswith(_NON_IMAGE_SOP_PREFIXES)


def probe_is_dicom(path: str) -> bool:
    """Whether GDCM recognises a file with no 'DICM' marker (old or bare data sets)."""
    try:
        return sitk.ImageFileReader().GetImageIOFromFileName(path) == "GDCMImageIO"
    except RuntimeError:
        return False


# ---------------------------------------------------------------------------------------------
# Headers


@dataclass
class DicomHeader:
    path: str
    tags: dict[str, str]
    columns: int
    rows: int
    frames: int
    components: int
    dtype: np.dtype
    spacing: tuple[float, float, float]
    # False: only the structural scan read it (the tags grouping, ordering and MONOCHROME1 need; see _light_header):
    # its pixel type and spacing are then its series' reference file's, read by GDCM.
    full: bool = True

    def get(self, tag: str, default: str = "") -> str:
        return self.tags.get(tag, default)

    def floats(self, tag: str, count: int | None = None) -> list[float] | None:
        return _parse_floats(self.tags.get(tag, ""), count)

    def number(self, tag: str, default: float | None = None) -> float | None:
        vals = self.floats(tag)
        return vals[0] if vals else default


def read_header(path: str) -> DicomHeader:
    """Read one file's header (no pixel decoding); raise ReadFailure in plain words."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ReadFailure(_gdcm_reason(exc)) from None
    size = reader.GetSize()
    tags = {key: reader.GetMetaData(key).strip(" \0") for key in reader.GetMetaDataKeys()}
    frames = size[2] if len(size) > 2 else 1
    dtype = np.dtype(_SITK_TO_NUMPY.get(reader.GetPixelID(), np.float64))
    spacing = tuple(reader.GetSpacing()) + (1.0,) * (3 - len(reader.GetSpacing()))
    return DicomHeader(
        path=path,
        tags=tags,
        columns=int(size[0]),
        rows=int(size[1]),
        frames=int(frames),
        components=int(reader.GetNumberOfComponents()),
        dtype=dtype,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
    )


def _gdcm_reason(exc: Exception) -> str:
    text = str(exc)
    if "Unable to determine ImageIO" in text or "Cannot read requested file" in text:
        return "it could not be parsed as DICOM (the file may be truncated or damaged)"
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return f"it could not be read as a DICOM image ({last.split('ERROR:')[-1].strip()[:200]})"


def _parse_floats(text: str, count: int | None = None) -> list[float] | None:
    if not text:
        return None
    try:
        vals = [float(v) for v in text.replace(",", ".").split("\\") if v.strip()]
    except ValueError:
        return None
    if count is not None and len(vals) != count:
        return None
    if not all(np.isfinite(vals)):
        return None
    return vals


# ---------------------------------------------------------------------------------------------
# Loading


def _probe_file(path: str, named_dicom: bool) -> tuple[str, object]:
    """What one candidate file is: ("header", DicomHeader), ("damaged", (path, message, scan values)),
    ("error", LoadError) or ("skip", None). Runs in a reader thread."""
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(_META_BYTES)  # emptiness, the DICM marker and the file meta, in one read
    except OSError as exc:
        return "error", LoadError(path, f"{name}: could not be opened ({exc.strerror or exc})")
    empty = not head
    magic = len(head) >= 132 and head[128:132] == b"DICM"
    scan_values: dict[str, str] = {}
    scan: ScanResult | None = None
    if magic:
        sop_class = read_file_meta(path, head).get("0002|0002", "")
        if is_non_image_sop_class(sop_class):
            log.debug("skipping non-image DICOM %s (%s)", path, sop_class)
            return "skip", None
        scan = scan_dicom(path)
        scan_values = scan.values
        if scan.truncated:
            # Checked before GDCM, which can take many seconds over a truncated file.
            return "damaged", (path, f"{name}: the file is truncated (it ends before its data does)", scan_values)
        # Before GDCM too: it allocates gigabytes for such files (or crashes) before giving up, or fills the
        # pixels a header claims beyond the data with zeros.
        problem = scan.damage or _pixel_size_problem(lambda tag: scan_values.get(tag, ""), scan.pixel_bytes,
                                                     scan.encapsulated)
        if problem:
            return "damaged", (path, f"{name}: the file is damaged ({problem})", scan_values)
        light = _light_header(path, scan)
        if light is not None:
            return "header", light
    try:
        header = read_header(path)
    except ReadFailure as exc:
        if magic:
            return "damaged", (path, f"{name}: {exc}", scan_values)
        if named_dicom:
            if empty:
                return "error", LoadError(path, f"{name}: the file is empty")
            return "error", LoadError(path, f"{name}: named like a DICOM file but is not DICOM (no DICOM header found)")
        log.debug("ignoring %s: not DICOM", path)
        return "skip", None
    if scan is None:  # no Part 10 header: a bare data set, always uncompressed, its pixels within the file
        problem = _pixel_size_problem(header.get, os.path.getsize(path), False, bare=True)
        if problem:
            return "damaged", (path, f"{name}: the file is damaged ({problem})", scan_values)
    return "header", header


def _light_header(path: str, scan: ScanResult) -> DicomHeader | None:
    """A header from the structural scan alone, for a plain single-frame greyscale image: GDCM's own header read
    (about 0.5 ms a file) is left to one reference file per series, and the rest of GDCM's checks to the pixel read.
    None when the scan did not find what grouping and ordering need (GDCM reads the header then)."""
    if not (scan.parsed and scan.has_pixel_data) or scan.truncated or scan.damage:
        return None
    values = scan.values

    def number(tag: str) -> int | None:
        try:
            return int(float(values.get(tag, "").split("\\")[0]))
        except (ValueError, OverflowError):
            return None

    rows, columns, bits = number("0028|0010"), number("0028|0011"), number("0028|0100")
    frames, samples = number("0028|0008") or 1, number("0028|0002") or 1
    photometric = values.get("0028|0004", "").strip().upper()
    if not rows or not columns or not bits or frames != 1 or samples != 1 or \
            photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    return DicomHeader(path=path, tags=dict(values), columns=columns, rows=rows, frames=1, components=1,
                       dtype=np.dtype(np.int16), spacing=(1.0, 1.0, 1.0), full=False)


def _pixel_size_problem(
    get: Callable[[str], str], have: int | None, encapsulated: bool, bare: bool = False
) -> str | None:
    """Why `have` bytes of pixel data (of file, when `bare`) cannot hold the image the header tags (`get`) describe,
    or None: GDCM allocates the image a header describes and fills what the data lacks with zeros (a header claiming
    16384 x 16384 pixels over 512 KB loads as a huge, nearly empty image), or decodes into it and fails."""

    def number(tag: str, default: int) -> int:
        try:
            return int(float(get(tag).split("\\")[0]))
        except (ValueError, OverflowError):
            return default

    bits = number("0028|0100", 0)
    if bits <= 0 or have is None:
        return None
    rows, columns = number("0028|0010", 0), number("0028|0011", 0)
    frames, samples = max(number("0028|0008", 1), 1), max(number("0028|0002", 1), 1)
    if get("0028|0004").strip().upper() in ("YBR_FULL_422", "YBR_PARTIAL_422"):
        samples = 2  # two samples a pixel stored, whatever SamplesPerPixel says
    needed = (rows * columns * frames * samples * bits + 7) // 8
    image = f"{columns} x {rows} pixels" + (f" x {frames} frames" if frames > 1 else "")
    if not encapsulated and needed > have:
        holder = f"the whole file ({human_bytes(have)}) holds" if bare else f"its {human_bytes(have)} of pixel data hold"
        return f"its header describes {image}, more than {holder}"
    if encapsulated and not credible_expansion(needed, have):
        return f"its header describes {image}, far more than its {human_bytes(have)} of compressed pixel data can hold"
    return None


# GDCM releases the GIL while it reads and parses, so a few threads read a large series faster (the consumer keeps
# the order, and at most a few files are in flight).
READ_THREADS = max(1, min(4, os.cpu_count() or 1))
_PROBE_CHUNK = 32


def _in_order(fn: Callable, items: list, workers: int | None = None):
    """Yield (item, (fn(item), None)) or (item, (None, exception)) in the order of `items`, computed in threads."""
    def call(x):
        try:
            return fn(x), None
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which decides
            return None, exc

    workers = READ_THREADS if workers is None else workers
    if workers <= 1 or len(items) < 8:
        for x in items:
            yield x, call(x)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="medad-dicom") as pool:
        pending: deque = deque()
        it = iter(items)
        for x in itertools.islice(it, 4 * workers):
            pending.append((x, pool.submit(call, x)))
        while pending:
            x, fut = pending.popleft()
            nxt = next(it, pending)  # `pending` stands for "no more"
            if nxt is not pending:
                pending.append((nxt, pool.submit(call, nxt)))
            yield x, fut.result()


def load_dicom_files(
    candidates: Iterable[tuple[str, bool]],
    *,
    tick: Callable[[], None] | None = None,
    defer: bool = False,
) -> tuple[list[Series], list[LoadError]]:
    """Load (path, named_like_dicom) candidates into series; errors in plain words, never raises.

    `defer`: single-frame series with a SeriesInstanceUID come back planned but not read (Series.complete False,
    their readers in `Series._pending`, for an io.fill.SliceFill); the others are read before this returns."""
    tick = tick or (lambda: None)
    headers: list[DicomHeader] = []
    damaged: list[tuple[str, str, dict[str, str]]] = []
    errors: list[LoadError] = []
    items = list(candidates)
    # Probed in chunks: most of a probe is Python (the structural scan), so a thread per file would mostly trade the
    # GIL back and forth; a few threads over chunks still overlap the reads of a cold disk.
    chunks = [items[i : i + _PROBE_CHUNK] for i in range(0, len(items), _PROBE_CHUNK)]
    for _chunk, (outcomes, exc) in _in_order(lambda chunk: [_probe_file(*c) for c in chunk], chunks):
        if exc is not None:
            raise exc
        for kind, value in outcomes:
            if kind == "error":
                errors.append(value)
            elif kind == "damaged":
                damaged.append(value)
            elif kind == "header":
                headers.append(value)
            tick()

    series: list[Series] = []
    by_base: dict[tuple, Series] = {}
    for group_uid, base, group in _group(headers):
        try:
            built = _build_group(group_uid, group, errors, tick, damaged, defer)
        except MemoryError:
            errors.append(LoadError(_group_source(group), f"{_describe(group)}: not enough memory to open this series"))
            continue
        except ReadFailure as exc:
            errors.append(LoadError(_group_source(group), str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one odd series must not stop the others loading
            log.exception("unexpected error building %s", _describe(group))
            errors.append(LoadError(_group_source(group), f"{_describe(group)}: unexpected error while loading "
                                                          f"({type(exc).__name__}: {exc})"))
            continue
        series.extend(built)
        if built and base not in by_base:
            by_base[base] = built[0]

    by_folder: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        folder = s.source if os.path.isdir(s.source) else os.path.dirname(s.source)
        by_folder[os.path.normpath(folder)].append(s)
    for path, message, values in damaged:
        owner = by_base.get(_base_key(lambda tag: values.get(tag, ""), path))
        if owner is None:
            # Tags unreadable: a folder holding exactly one series is almost surely its owner.
            in_folder = by_folder.get(os.path.normpath(os.path.dirname(path)), [])
            owner = in_folder[0] if len(in_folder) == 1 else None
        if owner is not None:
            owner.warnings.append(
                f"slice file {os.path.basename(path)} could not be read and was skipped: {message.split(': ', 1)[1]}"
            )
        else:
            errors.append(LoadError(path, message))
    return series, errors


def _base_key(get: Callable[[str], str], path: str) -> tuple:
    """What makes two single-frame files the same series: the SeriesInstanceUID, or when it is
    missing, the folder plus study, frame of reference, number, description and modality."""
    uid = get("0020|000e")
    if uid:
        return (uid,)
    return (
        "no-uid",
        os.path.realpath(os.path.dirname(path)),
        get("0020|000d"),
        get("0020|0052"),
        get("0020|0011"),
        get("0008|103e"),
        get("0008|0060"),
    )


def _group(headers: list[DicomHeader]) -> list[tuple[str, tuple, list[DicomHeader]]]:
    """Group by series (see _base_key), then split by image size, colour and orientation; each
    multi-frame file stands alone. Returns (uid, series key, headers) per group."""
    by_key: dict[tuple, list[DicomHeader]] = defaultdict(list)
    for h in headers:
        base = ("multiframe", h.path) if h.frames > 1 else _base_key(h.get, h.path)
        iop = h.floats("0020|0037", 6)
        iop_key = tuple(round(v, 3) for v in iop) if iop else None
        by_key[(base, h.rows, h.columns, h.components > 1, iop_key)].append(h)

    by_base: dict[tuple, list[list[DicomHeader]]] = defaultdict(list)
    for key, group in by_key.items():
        by_base[key[0]].append(group)
    out: list[tuple[str, tuple, list[DicomHeader]]] = []
    for base, groups in by_base.items():
        groups.sort(key=lambda g: (-len(g), natural_key(g[0].path)))
        if base[0] == "multiframe":
            uid = groups[0][0].get("0020|000e") or _hash_uid(base)
        elif base[0] == "no-uid":
            uid = _hash_uid(base)
        else:
            uid = base[0]
        for i, group in enumerate(groups):
            out.append((uid if i == 0 else f"{uid}#part{i + 1}", base, group))
    return out


def _hash_uid(base: tuple) -> str:
    return "dicom:" + hashlib.sha1(repr(base).encode("utf-8", "surrogateescape")).hexdigest()[:24]


def _group_source(group: list[DicomHeader]) -> str:
    if len(group) == 1:
        return os.path.abspath(group[0].path)
    folders = {os.path.dirname(h.path) for h in group}  # a series' files share one or a few folders
    return os.path.abspath(os.path.commonpath([os.path.abspath(f) for f in folders]))


def _describe(group: list[DicomHeader]) -> str:
    h = group[0]
    desc = h.get("0008|103e") or f"{h.get('0008|0060') or 'DICOM'} series"
    return f"series '{desc}' in {_group_source(group)}"


def _build_group(
    uid: str, group: list[DicomHeader], errors: list[LoadError], tick: Callable[[], None],
    damaged: list[tuple[str, str, dict[str, str]]], defer: bool = False,
) -> list[Series]:
    if group[0].frames > 1:
        series = _build_multiframe(uid, group[0])
        tick()
        return [series]
    stacks, notes = _order_and_split(group)
    out = []
    for i, (stack, positions, geometry) in enumerate(stacks):
        # '#' cannot occur in a DICOM UID, so these never collide with a real series.
        stack_uid = uid if i == 0 else f"{uid}#stack{i + 1}"
        stack, positions = _with_reference(stack, positions, damaged)
        if not stack:
            continue
        try:
            deferred = defer and not stack_uid.startswith("dicom:")
            fill = _StackFill(stack_uid, stack, positions, geometry, notes, keep_numbering=deferred)
            if deferred:
                # Read later, while the series is browsed; one without a UID of its own is read now: its uid is
                # made from its pixels.
                out.append(fill.series)
                continue
            from .fill import SliceFill

            ticked = [0]

            def report(done: int, _total: int) -> None:
                for _ in range(done - ticked[0]):
                    tick()
                ticked[0] = max(ticked[0], done)

            SliceFill([fill]).run(report=report)
            series = fill.finish()
        except ReadFailure as exc:
            errors.append(LoadError(_group_source(stack), str(exc)))
            continue
        out.append(series)
    return out


def _with_reference(
    stack: list[DicomHeader], positions: np.ndarray | None, damaged: list[tuple[str, str, dict[str, str]]]
) -> tuple[list[DicomHeader], np.ndarray | None]:
    """The stack from its first file whose header GDCM reads (the series' reference: pixel type, spacing, metadata);
    files before it that GDCM cannot read are damaged (reported as if their own header read had failed)."""
    for i, h in enumerate(stack):
        if not h.full:
            try:
                stack[i] = h = read_header(h.path)
            except ReadFailure as exc:
                damaged.append((h.path, f"{os.path.basename(h.path)}: {exc}", h.tags))
                continue
        return stack[i:], (positions[i:] if positions is not None else None)
    return [], None


@dataclass
class _Geometry:
    row_dir: np.ndarray  # direction of increasing column index, as stored (IOP first triplet)
    col_dir: np.ndarray  # direction of increasing row index, as stored
    normal: np.ndarray
    flip_columns: bool
    flip_rows: bool


def _order_and_split(
    group: list[DicomHeader],
) -> tuple[list[tuple[list[DicomHeader], np.ndarray | None, _Geometry | None]], list[str]]:
    """Sort a series along its normal; split into stacks when several images share a position."""
    notes: list[str] = []
    first = group[0]
    iop = first.floats("0020|0037", 6)
    ipps = [h.floats("0020|0032", 3) for h in group]
    if iop is None or any(p is None for p in ipps):
        ordered = sorted(group, key=lambda h: (h.number("0020|0013", 0.0), natural_key(h.path)))
        return [(ordered, None, None)], notes

    row_dir = np.array(iop[:3], dtype=np.float64)
    col_dir = np.array(iop[3:], dtype=np.float64)
    row_dir /= np.linalg.norm(row_dir) or 1.0
    col_dir /= np.linalg.norm(col_dir) or 1.0
    normal = np.cross(row_dir, col_dir)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        ordered = sorted(group, key=lambda h: (h.number("0020|0013", 0.0), natural_key(h.path)))
        return [(ordered, None, None)], ["image orientation in the files is invalid; slices are in file order"]
    normal /= norm
    if normal[np.argmax(np.abs(normal))] < 0:
        normal = -normal
    flip_c, flip_r = _display_flips(row_dir, col_dir, normal)
    geometry = _Geometry(row_dir, col_dir, normal, flip_c, flip_r)

    keyed = sorted(
        ((float(np.dot(ipp, normal)), h) for ipp, h in zip(ipps, group)),
        key=lambda ph: (ph[0], ph[1].number("0018|0086", 0.0), ph[1].number("0020|0013", 0.0), natural_key(ph[1].path)),
    )
    # Same SOP instance twice (a copied file) is one image, not two.
    seen_sop: set[str] = set()
    unique = []
    for pos, h in keyed:
        sop = h.get("0008|0018")
        if sop and sop in seen_sop:
            notes.append(f"file {os.path.basename(h.path)} duplicates another image of this series and was skipped")
            continue
        seen_sop.add(sop)
        unique.append((pos, h))

    # The k-th image at each position goes to stack k (echoes, phases, repeated acquisitions).
    stacks: list[list[tuple[float, DicomHeader]]] = []
    i = 0
    while i < len(unique):
        j = i
        while j + 1 < len(unique) and unique[j + 1][0] - unique[i][0] < _SAME_POSITION_MM:
            j += 1
        for k, item in enumerate(unique[i : j + 1]):
            if k == len(stacks):
                stacks.append([])
            stacks[k].append(item)
        i = j + 1
    if len(stacks) > 1:
        notes.append(
            f"several images share slice positions; the series was split into {len(stacks)} stacks"
        )
    return [([h for _, h in st], np.array([p for p, _ in st]), geometry) for st in stacks], notes


def _display_flips(row_dir: np.ndarray, col_dir: np.ndarray, normal: np.ndarray) -> tuple[bool, bool]:
    """In-plane flips (columns, rows) that give the standard view of an axial/coronal/sagittal
    plane; oblique-enough or rotated planes are left as stored."""
    plane = int(np.argmax(np.abs(normal)))
    across, down = int(np.argmax(np.abs(row_dir))), int(np.argmax(np.abs(col_dir)))
    if plane == 2 and (across, down) == (0, 1):  # axial: patient's right on image left, anterior up
        return bool(row_dir[0] < 0), bool(col_dir[1] < 0)
    if plane == 1 and (across, down) == (0, 2):  # coronal: patient's right on image left, head up
        return bool(row_dir[0] < 0), bool(col_dir[2] > 0)
    if plane == 0 and (across, down) == (1, 2):  # sagittal: anterior on image left, head up
        return bool(row_dir[1] < 0), bool(col_dir[2] > 0)
    return False, False


class _StackFill:
    """One single-frame DICOM stack, planned (files ordered, geometry known): its Series exists at once over one
    zeroed array, and `read(k)` fills slot k, in any order and from any thread (io.fill.SliceFill schedules them).
    `finish()` makes the series complete.

    A slice that cannot be read (found only now: GDCM failing on pixels whose header it read) is left out, as it
    always was: `finish()` then gives a new series without it. With `keep_numbering` (a series shown while it
    fills in, whose slices may already carry review decisions, references and drawings by their numbers) its slot
    stays, empty (zeros), with a warning, and the series keeps every number."""

    def __init__(self, uid: str, headers: list[DicomHeader], positions: np.ndarray | None,
                 geometry: _Geometry | None, notes: list[str], keep_numbering: bool = False) -> None:
        self.keep_numbering = keep_numbering
        ref = headers[0]
        check_size(_describe(headers), (len(headers), ref.rows, ref.columns), 2)
        for h in headers[1:]:
            if not h.full:  # its pixel type and spacing are the reference file's
                h.dtype, h.spacing = ref.dtype, ref.spacing
        self.uid, self.headers, self.positions, self.geometry = uid, headers, positions, geometry
        self.notes = list(notes)
        self.num = len(headers)
        planned = storage_dtype_for(ref.dtype) if ref.components == 1 else np.dtype(np.int16)
        self.stack = SliceStack(self.num, ref.rows, ref.columns, planned, zeroed=True)
        self.stack.on_widen = self._widened
        self.claimed = np.zeros(self.num, dtype=bool)  # taken by a reader thread (the scheduler's)
        self.done = np.zeros(self.num, dtype=bool)  # read, or failed
        self.loaded = np.zeros(self.num, dtype=bool)  # read: its pixels are in the array
        self.failed: dict[int, str] = {}
        self.scheduler = None
        self.source = _group_source(headers)
        self._lock = threading.Lock()
        self.series = _assemble(uid, headers, positions, geometry, self.stack.data[:], list(self.notes))
        self._warnings_at_start = len(self.series.warnings)
        self.series._pending = self

    def request(self, index: int) -> None:
        if self.scheduler is not None:
            self.scheduler.request(self, index)

    def _widened(self, data: np.ndarray) -> None:
        # A slice did not fit the planned pixel type: the series shows the wider copy from now on.
        view = data[:]
        view.flags.writeable = False
        self.series._volume = view
        self.series._cache.clear()  # reformatted views of the old array

    def read(self, k: int) -> None:
        h = self.headers[k]
        try:
            plane = _read_plane(h)
            if self.geometry is not None:
                if self.geometry.flip_rows:
                    plane = plane[::-1, :]
                if self.geometry.flip_columns:
                    plane = plane[:, ::-1]
            with self._lock:
                self.stack.put(k, plane)
            self.loaded[k] = True
        except (ReadFailure, RuntimeError) as exc:
            reason = _gdcm_reason(exc) if isinstance(exc, RuntimeError) else str(exc)
            what = ("its slice is left empty (zeros)" if self.keep_numbering else "was skipped")
            self.failed[k] = f"slice file {os.path.basename(h.path)} could not be read and {what}: {reason}"
            if self.keep_numbering:
                self.loaded[k] = True  # shown as it is (empty) rather than "loading" for ever
        finally:
            self.done[k] = True

    def finish(self) -> Series:
        """Every slot read: the series, complete. When some could not be read: with `keep_numbering` the same series
        with a warning per empty slice; else a new series without them (the array compacted in place: the old
        Series must not be used after). ReadFailure when none could be read."""
        if not self.done.all():
            raise RuntimeError("finish() before every slice was read")
        skipped = [self.failed[k] for k in sorted(self.failed)]
        if not self.failed or (self.keep_numbering and len(self.failed) < self.num):
            self.series.warnings.extend(skipped)
            self.series._pending = None
            return self.series
        kept = [k for k in range(self.num) if k not in self.failed]
        if not kept:
            raise ReadFailure(
                f"{_describe(self.headers)}: none of its {self.num} files could be read "
                f"({skipped[0].split(': ', 1)[-1]})"
            )
        data = self.stack.data
        for j, k in enumerate(kept):  # in place, front to back: no second copy
            if j != k:
                data[j] = data[k]
        headers = [self.headers[k] for k in kept]
        if not headers[0].full:
            headers[0] = _full_header(headers[0])
        later = self.series.warnings[self._warnings_at_start:]  # added since planning (damaged files)
        series = _assemble(self.uid, headers, None if self.positions is None else self.positions[kept],
                           self.geometry, data[: len(kept)], self.notes + skipped)
        series.warnings.extend(later)
        return series


def _full_header(h: DicomHeader) -> DicomHeader:
    """GDCM's header of a file only scanned so far (its own if GDCM reads it, else the scanned one)."""
    try:
        return read_header(h.path)
    except ReadFailure:
        return h


def _assemble(
    uid: str,
    headers: list[DicomHeader],
    positions: np.ndarray | None,
    geometry: _Geometry | None,
    volume: np.ndarray,
    warnings: list[str],
) -> Series:
    """The Series of a single-frame stack over `volume` (one slice per header, in order): spacing, origin and
    direction from the headers' positions and the reference (first) header."""
    ref = headers[0]
    spacing_x, spacing_y = ref.spacing[0], ref.spacing[1]
    thickness = ref.number("0018|0050")
    if geometry is not None and positions is not None:
        pos = positions
        diffs = np.diff(pos)
        spacing_z = float(np.median(diffs)) if len(diffs) else float(
            ref.number("0018|0088") or thickness or 1.0
        )
        if len(diffs) and diffs.max() > 1.5 * spacing_z:
            gaps = int(np.sum(diffs > 1.5 * spacing_z))
            warnings.append(
                f"slice spacing is irregular: {gaps} gap(s), the largest {diffs.max():.2f} mm where "
                f"{spacing_z:.2f} mm is usual; slices may be missing"
            )
        col_axis = -geometry.row_dir if geometry.flip_columns else geometry.row_dir
        row_axis = -geometry.col_dir if geometry.flip_rows else geometry.col_dir
        ipp0 = np.array(ref.floats("0020|0032", 3), dtype=np.float64)
        # After a flip the first displayed pixel is the stored last one.
        origin = ipp0.copy()
        if geometry.flip_columns:
            origin += (ref.columns - 1) * spacing_x * geometry.row_dir
        if geometry.flip_rows:
            origin += (ref.rows - 1) * spacing_y * geometry.col_dir
        # The slice axis runs from the first slice's position: with gantry tilt this is
        # the normal, and positions along it stay the measured ones.
        origin = origin + (pos[0] - float(np.dot(ipp0, geometry.normal))) * geometry.normal
        matrix = np.column_stack([col_axis, row_axis, geometry.normal])
        direction = tuple(float(v) for v in matrix.ravel())
        three_d = True
    else:
        spacing_z = float(ref.number("0018|0088") or thickness or 1.0)
        pos = np.arange(volume.shape[0], dtype=np.float64) * spacing_z
        origin = np.array(ref.floats("0020|0032", 3) or (0.0, 0.0, 0.0), dtype=np.float64)
        direction = _direction_from_iop(ref)
        three_d = False

    return _make_series(
        uid=uid,
        headers=headers,
        volume=volume,
        positions=pos,
        spacing=(spacing_x, spacing_y, spacing_z),
        origin=tuple(float(v) for v in origin),
        direction=direction,
        three_d=three_d and volume.shape[0] > 1,
        warnings=warnings,
    )


def _direction_from_iop(h: DicomHeader) -> tuple[float, ...]:
    iop = h.floats("0020|0037", 6)
    if iop is None:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    r, c = np.array(iop[:3]), np.array(iop[3:])
    n = np.cross(r, c)
    if np.linalg.norm(n) < 1e-6:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return tuple(float(v) for v in np.column_stack([r, c, n / np.linalg.norm(n)]).ravel())


def _read_plane(h: DicomHeader) -> np.ndarray:
    """One file's pixels as a 2-D array in modality units, MONOCHROME1 inverted, colour as grey."""
    image = sitk.ReadImage(h.path, imageIO="GDCMImageIO")
    arr = sitk.GetArrayViewFromImage(image)
    if arr.ndim == 2 + (image.GetNumberOfComponentsPerPixel() > 1):
        arr = arr[np.newaxis]
    if arr.shape[0] != 1:
        raise ReadFailure(f"expected one frame, found {arr.shape[0]}")
    plane = _to_grey(arr[0])
    if plane.shape != (h.rows, h.columns):
        raise ReadFailure(f"its image size {plane.shape[1]} x {plane.shape[0]} differs from the header")
    plane = _invert_if_monochrome1(plane, h)
    # Copy out of the SimpleITK buffer before `image` is freed.
    return np.array(plane, copy=True)


def _to_grey(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.shape[-1] >= 3:
        grey = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
        if arr.dtype.kind in "iu":
            grey = np.rint(grey).astype(arr.dtype)
        return grey
    return arr[..., 0]


def _monochrome1_range(h: DicomHeader) -> tuple[float, float]:
    full = h.dtype.itemsize * 8
    bits = int(h.number("0028|0101") or full)
    if not 1 <= bits <= full:  # a damaged BitsStored (up to 65535): the pixels hold no more than their type does
        bits = full
    signed = int(h.number("0028|0103") or 0) == 1
    raw_lo, raw_hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    slope = h.number("0028|1053", 1.0) or 1.0
    intercept = h.number("0028|1052", 0.0) or 0.0
    a, b = raw_lo * slope + intercept, raw_hi * slope + intercept
    return min(a, b), max(a, b)


def _invert_if_monochrome1(plane: np.ndarray, h: DicomHeader) -> np.ndarray:
    # MONOCHROME1 means "low values are white"; inverting within the stored range keeps the
    # numbers in the same range while making bone bright like every other image.
    if h.get("0028|0004").upper() != "MONOCHROME1":
        return plane
    lo, hi = _monochrome1_range(h)
    if plane.dtype.kind in "iu" and float(lo).is_integer() and float(hi).is_integer() and abs(lo + hi) < 2**62:
        return (int(lo + hi) - plane.astype(np.int64)).astype(np.int64)
    return (lo + hi) - plane.astype(np.float64)


def _build_multiframe(uid: str, h: DicomHeader) -> Series:
    """A multi-frame file: frames become slices, in stored order, with SimpleITK's geometry."""
    check_size(f"{os.path.basename(h.path)}", (h.frames, h.rows, h.columns), 2)
    try:
        image = sitk.ReadImage(h.path, imageIO="GDCMImageIO")
    except RuntimeError as exc:
        raise ReadFailure(f"{os.path.basename(h.path)}: {_gdcm_reason(exc)}") from None
    spacing = tuple(float(s) for s in image.GetSpacing())
    origin = tuple(float(s) for s in image.GetOrigin())
    direction = tuple(float(s) for s in image.GetDirection())
    arr = owned_view(image)
    if arr.ndim == 4 or h.get("0028|0004").upper() == "MONOCHROME1":
        stack = SliceStack(arr.shape[0], h.rows, h.columns, storage_dtype_for(arr.dtype))
        for frame in arr:
            stack.append(_invert_if_monochrome1(_to_grey(frame), h))
        volume = stack.result()
    else:
        volume = arr
        target = compact_dtype(volume)
        if volume.dtype != target:
            volume = volume.astype(target)
    del arr, image
    modality = h.get("0008|0060").upper()
    series = _make_series(
        uid=uid,
        headers=[h],
        volume=volume,
        positions=None,  # evenly spaced along the normal from the origin (Series.from_array)
        spacing=spacing,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        direction=direction,
        three_d=modality in _VOLUME_MODALITIES,
        warnings=[],
    )
    series.metadata["NumberOfFrames"] = h.frames
    return series


def _make_series(
    *,
    uid: str,
    headers: list[DicomHeader],
    volume: np.ndarray,
    positions: np.ndarray | None,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    direction: tuple[float, ...],
    three_d: bool,
    warnings: list[str],
) -> Series:
    ref = headers[0]
    modality = ref.get("0008|0060").upper() or "OT"
    photometric = ref.get("0028|0004").upper() or "MONOCHROME2"
    if ref.components > 1:
        warnings.append("colour image converted to greyscale")
    metadata: dict = {"format": "DICOM", "NumberOfFiles": len(headers)}
    for tag, keyword in METADATA_TAGS.items():
        value = ref.get(tag)
        if value:
            metadata[keyword] = _maybe_int(value) if keyword in _INT_METADATA else value
    identifiers: dict = {"SourceFiles": [os.path.basename(h.path) for h in headers]}
    for tag, value in ref.tags.items():
        if not value:
            continue
        if tag in IDENTIFYING_TAGS:
            identifiers[IDENTIFYING_TAGS[tag]] = value
        elif tag.startswith("0010|"):
            identifiers[tag] = value
    window = _file_window(ref)
    series_number = ref.get("0020|0011")
    description = ref.get("0008|103e") or (
        f"{modality} series {series_number}" if series_number else f"{modality} image"
    )
    source = _group_source(headers)
    return Series.from_array(
        volume,
        uid=uid,
        modality=modality,
        description=description,
        source=source,
        spacing=spacing,
        origin=origin,
        direction=direction,
        is_volume=three_d,
        positions=positions,
        slice_thickness=ref.number("0018|0050"),
        file_window=window,
        photometric=photometric,
        metadata=metadata,
        identifiers=identifiers,
        warnings=warnings,
    )


def _file_window(h: DicomHeader) -> tuple[float, float] | None:
    centres, widths = h.floats("0028|1050"), h.floats("0028|1051")
    if not centres or not widths or widths[0] <= 0:
        return None
    centre, width = centres[0], widths[0]
    if h.get("0028|0004").upper() == "MONOCHROME1":
        lo, hi = _monochrome1_range(h)
        centre = lo + hi - centre
    return (float(centre), float(width))


def _maybe_int(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


__all__ = [
    "DICOM_EXTENSIONS",
    "DicomHeader",
    "has_dicom_magic",
    "is_non_image_sop_class",
    "load_dicom_files",
    "probe_is_dicom",
    "read_file_meta",
    "read_header",
]
