"""Findings that open in PACS viewers: a DICOM Segmentation of the flagged map region and the reviewer's confirmed
findings, and a DICOM Parametric Map of the anomaly map, both referencing the source DICOM series (highdicom).

Both objects are built on the *source files'* own pixel grid: io shows axial DICOM slices flipped in-plane (row 0
anterior, column 0 the patient's right) and ordered along the slice normal, so each displayed slice is mapped back to
its file (`Series.identifiers["SourceFiles"]`, one name per displayed slice, in display order) and the flips are
undone from the displayed direction against the file's ImageOrientationPatient. highdicom then takes the plane
positions, pixel spacing, orientation, frame of reference and the referenced SOP instances from the source headers.

Segments of the SEG (BINARY, frames only where a segment has pixels):
    1  AUTOMATIC  pixels of scored slices whose map value is above the heatmap threshold (the PDF's and the viewer's
                  rule: `ReportData.pixel_threshold`, i.e. `report --threshold P` percentile of normal pixels; a pixel
                  exactly at the threshold is not coloured, so not segmented); algorithm identification = method,
                  backbone and weights of the run.
    2  MANUAL     the reviewer's annotations on slices they CONFIRMED (present only when there are any).

The parametric map holds the float32 anomaly map of every *scored* slice (unscored slices are left out, not written as
zeros: a zero would read as "normal"), upsampled to the source rows and columns; real-world value mapping: unitless
anomaly score, 0 = typical normal tissue, 1 = the 99th percentile of normal pixels.

De-identification follows the PDF's rule: patient name, ID, birth date and the other identifying attributes are
replaced (name and ID by the pseudonymous study label) unless identifiers are included on request. The UIDs that tie
the object to the source images (study, series, SOP instances, frame of reference) are kept either way: without them
no viewer can lay the object over the original images (DICOM PS3.15's "Retain UIDs" option). A de-identified object
therefore still belongs to the original study; a PACS that checks the patient ID against the study may refuse it:
export with identifiers for a PACS, de-identified for research.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.jobs import CancelToken, no_progress
from ..io.atomic import atomic_output
from ..io.deid import IDENTIFYING_TAGS
from ..review.state import Decision
from .data import Progress, ReportData, ReportError, full_maps

MANUFACTURER = "MedAD Viewer"
SEG_SERIES_NUMBER = 9701
PMAP_SERIES_NUMBER = 9702
AUTOMATIC_SEGMENT, MANUAL_SEGMENT = 1, 2
# DICOM keeps Type 1 attributes present and non-empty: these UIDs are what lets a viewer lay the object over the
# source images, so de-identification keeps them (PS3.15 "Retain UIDs").
_KEPT_UIDS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"})
# The object's own (Type 1 in these objects): when it was made (highdicom sets now) and our "device serial number";
# not the patient's.
_OURS = frozenset({"ContentDate", "ContentTime", "DeviceSerialNumber"})
_PSEUDONYM_FIELDS = ("PatientName", "PatientID")
_SAME_MM = 0.05  # a file's ImagePositionPatient within this of the displayed slice's is that slice


class DicomExportError(ReportError, ValueError):
    """A DICOM SEG / parametric map cannot be made from this series (not DICOM, files gone, no UIDs, ...)."""


class NotDicomSeries(DicomExportError):
    """The series was not loaded from DICOM files."""


# -------------------------------------------------------------------------------------------- source instances
@dataclass
class SourceGrid:
    """The source files of a displayed series: one header per displayed slice (display order), and the in-plane
    flips io applied for display (undo them to get back to the files' pixel orientation)."""

    datasets: list  # pydicom Datasets without pixel data, datasets[k] is displayed slice k
    paths: list[str]
    flip_rows: bool
    flip_columns: bool

    def to_file(self, plane: np.ndarray) -> np.ndarray:
        """A displayed-orientation (rows, columns) array in the files' own pixel orientation."""
        out = plane[::-1] if self.flip_rows else plane
        return out[:, ::-1] if self.flip_columns else out


def _kind(series) -> str:
    fmt = str(series.metadata.get("format") or "").strip()
    if fmt:
        return f"a {fmt} file"
    return "not from DICOM files"


def require_dicom(series) -> None:
    """Raise NotDicomSeries with a plain message unless `series` was loaded from DICOM files."""
    if series is None:
        raise DicomExportError("DICOM SEG/parametric map exports need the source DICOM files, and the scored study "
                               "could not be loaded (pass its location with --source PATH)")
    if str(series.metadata.get("format") or "") != "DICOM":
        src = os.path.basename(str(series.source)) or "this series"
        raise NotDicomSeries(f"DICOM SEG/parametric map exports need a DICOM series; this one ({src}) is "
                             f"{_kind(series)}. Export the maps as a volume (.nii.gz or .nrrd) instead")


def source_grid(series) -> SourceGrid:
    """Find the file of every displayed slice of a DICOM `series` and the flips between display and file."""
    import pydicom

    require_dicom(series)
    if int(series.metadata.get("NumberOfFrames") or 1) > 1:
        raise DicomExportError("DICOM SEG/parametric map exports support series of single-frame DICOM files; "
                               "this series is one multi-frame file")
    names = [str(n) for n in series.identifiers.get("SourceFiles") or []]
    if len(names) != series.num_slices:
        raise DicomExportError(f"the series does not record its {series.num_slices} source files "
                               f"({len(names)} known); open the study again and export from there")
    source = str(series.source)
    folder = os.path.dirname(source) if os.path.isfile(source) else source
    index: dict[str, list[str]] | None = None
    d = np.asarray(series.direction, dtype=np.float64).reshape(3, 3)
    col_axis, row_axis = d[:, 0], d[:, 1]
    datasets, paths, flips = [], [], None
    for k, name in enumerate(names):
        candidates = [os.path.join(folder, name)]
        if not os.path.isfile(candidates[0]):
            if index is None:
                index = _files_by_name(folder, set(names))
            candidates = index.get(name, [])
        if not candidates:
            raise DicomExportError(f"the source file {name} of slice {k + 1} is no longer in {folder}; "
                                   "the exports reference the original DICOM files")
        found = None
        for path in candidates:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is the same plain error
                raise DicomExportError(f"the source file {name} could not be read again ({exc})") from None
            f = _flips(ds, col_axis, row_axis)
            if f is not None and _position_matches(ds, series, k, f):
                found = (path, ds, f)
                break
        if found is None:
            raise DicomExportError(f"the source file {name} no longer matches slice {k + 1} of the series "
                                   "(changed since it was loaded?)")
        path, ds, f = found
        if flips is not None and f != flips:
            raise DicomExportError("the source files of this series are not all stored in the same orientation")
        flips = f
        _check_uids(ds, name)
        datasets.append(ds)
        paths.append(path)
    assert flips is not None
    if len({str(ds.SOPInstanceUID) for ds in datasets}) != len(datasets):
        raise DicomExportError("two slices of this series share one SOP Instance UID; a DICOM SEG cannot tell them "
                               "apart")
    return SourceGrid(datasets, paths, flips[0], flips[1])


def _files_by_name(folder: str, wanted: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for root, _dirs, files in os.walk(folder):
        for f in files:
            if f in wanted:
                out.setdefault(f, []).append(os.path.join(root, f))
    for v in out.values():
        v.sort()
    return out


def _flips(ds, col_axis: np.ndarray, row_axis: np.ndarray) -> tuple[bool, bool] | None:
    """(flip_rows, flip_columns) between the file (ImageOrientationPatient) and the displayed axes; None when the
    file is not the displayed grid up to in-plane flips."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    along_row = np.array([float(v) for v in iop[:3]])  # direction of increasing column index in the file
    along_col = np.array([float(v) for v in iop[3:]])  # direction of increasing row index
    c, r = float(np.dot(along_row, col_axis)), float(np.dot(along_col, row_axis))
    if abs(abs(c) - 1.0) > 1e-3 or abs(abs(r) - 1.0) > 1e-3:
        return None
    return r < 0, c < 0


def _position_matches(ds, series, k: int, flips: tuple[bool, bool]) -> bool:
    """Whether the file's first stored pixel lies where displayed slice k puts it (along the slice normal, which is
    what orders the slices; in-plane offsets can differ with gantry tilt)."""
    ipp = ds.get("ImagePositionPatient")
    if ipp is None or len(ipp) != 3 or int(ds.get("Rows", 0)) != series.rows \
            or int(ds.get("Columns", 0)) != series.columns:
        return False
    d = np.asarray(series.direction, dtype=np.float64).reshape(3, 3)
    r0 = series.rows - 1 if flips[0] else 0
    c0 = series.columns - 1 if flips[1] else 0
    expected = np.asarray(series.voxel_position(k, r0, c0))
    delta = np.array([float(v) for v in ipp]) - expected
    return abs(float(np.dot(delta, d[:, 2]))) < _SAME_MM + 0.01 * float(series.spacing[2])


def _check_uids(ds, name: str) -> None:
    for key in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if not str(ds.get(key, "") or "").strip():
            raise DicomExportError(f"the source file {name} has no {key} (anonymised without UIDs?); a DICOM SEG or "
                                   "parametric map must reference the source images by their UIDs, so it cannot be "
                                   "made for this series. Export the maps as a volume (.nii.gz or .nrrd) instead")


# ------------------------------------------------------------------------------------------------- shared bits
def _detector(data: ReportData) -> dict[str, str]:
    run = data.run.run
    weights = str(run.get("weights") or "")
    if not data.privacy.include_identifiers and os.sep in weights:
        weights = os.path.basename(weights)  # a local path shows whose machine it was
    return {"method": str(run.get("method") or "unknown"), "backbone": str(run.get("backbone") or "unknown"),
            "weights": weights or "unknown", "software": str(run.get("software") or _software())}


def _software() -> str:
    from .. import __version__

    return f"medad-viewer {__version__}"


def _version(software: str) -> str:
    return software.split()[-1] if software.split() else "unknown"


def algorithm_identification(data: ReportData):
    """highdicom AlgorithmIdentificationSequence naming the method, backbone and weights of the run."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    det = _detector(data)
    params = {"method": det["method"], "backbone": det["backbone"], "weights": det["weights"],
              "threshold_percentile_of_normal": f"{data.threshold_pct:g}",
              "map_threshold": f"{data.pixel_threshold:.4g}"}
    return hd.AlgorithmIdentificationSequence(
        name=_lo(f"MedAD {det['method']} anomaly map, {det['backbone']}"),
        family=codes.cid7162.ArtificialIntelligence, version=_lo(_version(det["software"])),
        source=MANUFACTURER, parameters=params)


def _lo(text: str) -> str:
    """A DICOM LO value: at most 64 characters, no backslash."""
    text = str(text).replace("\\", "/")
    return text if len(text) <= 64 else text[:63] + "…"


def _deidentify(ds, data: ReportData) -> None:
    """Apply the PDF's privacy rule to a finished object (in place): identifiers only when asked for."""
    if data.privacy.include_identifiers:
        return
    label = data.privacy.label
    for keyword in set(IDENTIFYING_TAGS.values()) - _KEPT_UIDS - _OURS:
        if keyword in ds:
            ds[keyword].value = label if keyword in _PSEUDONYM_FIELDS else None
    for keyword in _PSEUDONYM_FIELDS:
        setattr(ds, keyword, label)
    for keyword in ("OtherPatientIDsSequence", "ReferencedPatientSequence", "ClinicalTrialSponsorName"):
        if keyword in ds:
            del ds[keyword]
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = _lo("MedAD Viewer: patient identifiers removed; UIDs kept")
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113110", "DCM", "Retain UIDs Option"
    ds.DeidentificationMethodCodeSequence = [item]


def _save(ds, path: str | os.PathLike, cancel: CancelToken | None) -> Path:
    with atomic_output(path, cancel) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)


def _common(data: ReportData) -> dict[str, Any]:
    det = _detector(data)
    return {"manufacturer": MANUFACTURER, "manufacturer_model_name": "medad-viewer",
            "software_versions": _lo(_version(det["software"])), "device_serial_number": "0"}


def _check_grid(data: ReportData) -> None:
    s = data.series
    require_dicom(s)
    t = data.target
    if t and (t.get("num_slices"), t.get("rows"), t.get("columns")) != (s.num_slices, s.rows, s.columns):
        raise DicomExportError("the loaded series no longer has the scored run's size")


# ----------------------------------------------------------------------------------------------------- the SEG
def segmentation_masks(data: ReportData) -> tuple[np.ndarray, np.ndarray | None]:
    """(automatic, manual) uint8 (slices, rows, columns) masks on the displayed grid: the scored slices' map above
    the threshold, and the reviewer's annotations on confirmed slices (None when there are none)."""
    from .volumes import rasterize

    s = data.series
    n, rows, cols = s.num_slices, s.rows, s.columns
    maps = full_maps(data.run, n, rows, cols)
    auto = (maps > data.pixel_threshold).astype(np.uint8)
    scored = np.zeros(n, dtype=bool)
    idx = np.asarray(data.run.indices, dtype=np.int64)
    scored[idx[(idx >= 0) & (idx < n)]] = True
    auto[~scored] = 0
    manual = np.zeros((n, rows, cols), dtype=np.uint8)
    for i, r in data.reviews.items():
        if r.decision == Decision.CONFIRMED and r.annotations and 0 <= int(i) < n:
            manual[int(i)] = rasterize(r.annotations, rows, cols)
    return auto, (manual if manual.any() else None)


def build_dicom_seg(data: ReportData, progress: Progress = no_progress, cancel: CancelToken | None = None):
    """The highdicom Segmentation of a run on its DICOM series (not yet written)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    _check_grid(data)
    progress(0.05, "Finding the source DICOM files")
    grid = source_grid(data.series)
    if cancel is not None:
        cancel.raise_if_cancelled()
    progress(0.3, "Building the segments")
    auto, manual = segmentation_masks(data)
    pct = f"{data.threshold_pct:g}"
    descriptions = [hd.seg.SegmentDescription(
        segment_number=AUTOMATIC_SEGMENT, segment_label=_lo(f"Anomaly map above p{pct} of normal"),
        segmented_property_category=codes.SCT.Finding, segmented_property_type=codes.SCT.Abnormal,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(data),
        display_color=hd.color.CIELabColor(70.0, 40.0, 70.0))]
    planes = [auto]
    if manual is not None:
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=MANUAL_SEGMENT, segment_label="Reviewer-confirmed finding",
            segmented_property_category=codes.SCT.Finding, segmented_property_type=codes.SCT.Abnormal,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            display_color=hd.color.CIELabColor(80.0, -40.0, -20.0)))
        planes.append(manual)
    # (frames, rows, columns, segments) in the files' pixel orientation, frame k = source file k.
    stack = np.stack([np.stack([grid.to_file(p[k]) for p in planes], axis=-1) for k in range(len(auto))])
    if not stack.any():
        # highdicom needs one non-empty frame; an empty SEG says nothing a viewer could show.
        raise DicomExportError(f"nothing to segment: no pixel of a scored slice is above the {pct}th percentile of "
                               "normal and no confirmed finding has an annotation")
    progress(0.6, "Encoding the segmentation")
    det = _detector(data)
    seg = hd.seg.Segmentation(
        source_images=grid.datasets, pixel_array=stack, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1,
        series_description=_lo(f"MedAD anomaly SEG p{pct} ({det['method']}, {det['backbone']})"),
        content_label="MEDAD_SEG", content_description=_lo(f"Anomaly map > p{pct} of normal; confirmed findings"),
        omit_empty_frames=True, **_common(data))
    _deidentify(seg, data)
    return seg


def write_dicom_seg(data: ReportData, path: str | os.PathLike, progress: Progress = no_progress,
                    cancel: CancelToken | None = None) -> Path:
    """Write the DICOM Segmentation of `data` (see the module docstring), atomically."""
    return _build_and_save(build_dicom_seg, "DICOM Segmentation", data, path, progress, cancel)


# ------------------------------------------------------------------------------------------- the parametric map
def build_dicom_pmap(data: ReportData, progress: Progress = no_progress, cancel: CancelToken | None = None):
    """The highdicom ParametricMap of a run's anomaly maps on its DICOM series (scored slices only)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    _check_grid(data)
    progress(0.05, "Finding the source DICOM files")
    grid = source_grid(data.series)
    s = data.series
    idx = sorted({int(i) for i in np.asarray(data.run.indices) if 0 <= int(i) < s.num_slices})
    if not idx:
        raise DicomExportError("this run scored no slice: there is no anomaly map to export")
    if cancel is not None:
        cancel.raise_if_cancelled()
    progress(0.3, "Assembling the anomaly maps")
    maps = full_maps(data.run, s.num_slices, s.rows, s.columns)
    frames = np.ascontiguousarray(np.stack([grid.to_file(maps[i]) for i in idx]), dtype=np.float32)
    lo, hi = float(frames.min()), float(frames.max())
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ANOMALY", lut_explanation="anomaly score, 0 = typical normal, 1 = normal 99th percentile",
        unit=codes.UCUM.NoUnits, value_range=(lo, max(hi, lo + 1e-6)), slope=1.0, intercept=0.0)
    det = _detector(data)
    progress(0.6, "Encoding the parametric map")
    pm = hd.pm.ParametricMap(
        source_images=[grid.datasets[i] for i in idx], pixel_array=frames, series_instance_uid=hd.UID(),
        series_number=PMAP_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=1.0, window_width=2.0)],
        series_description=_lo(f"MedAD anomaly map ({det['method']}, {det['backbone']})"),
        content_label="MEDAD_MAP", content_description=_lo("Anomaly score; 1 = 99th percentile of normal pixels"),
        **_common(data))
    _deidentify(pm, data)
    return pm


def write_dicom_pmap(data: ReportData, path: str | os.PathLike, progress: Progress = no_progress,
                     cancel: CancelToken | None = None) -> Path:
    """Write the DICOM Parametric Map of `data` (see the module docstring), atomically."""
    return _build_and_save(build_dicom_pmap, "DICOM parametric map", data, path, progress, cancel)


def _build_and_save(build, what: str, data: ReportData, path: str | os.PathLike, progress: Progress,
                    cancel: CancelToken | None) -> Path:
    ds = build(data, progress, cancel)
    progress(0.9, f"Writing {Path(path).name}")
    out = _save(ds, path, cancel)
    progress(1.0, f"{what} written")
    return out


def describe_choice(include_identifiers: bool) -> str:
    """One sentence for an export dialog: what the de-identification of these objects does and does not remove."""
    if include_identifiers:
        return ("The DICOM objects carry the patient's name, ID and birth date from the source files, and reference "
                "the original images by their UIDs.")
    return ("Patient name and ID are replaced by a study label and the other identifiers removed, but the DICOM "
            "objects keep the original study, series and image UIDs: without them no viewer could lay them over the "
            "original images. A PACS may refuse a de-identified object for a known study; include identifiers to "
            "send it to a PACS.")


__all__ = ["DicomExportError", "NotDicomSeries", "SourceGrid", "algorithm_identification", "build_dicom_pmap",
           "build_dicom_seg", "describe_choice", "require_dicom", "segmentation_masks", "source_grid",
           "write_dicom_pmap", "write_dicom_seg"]
