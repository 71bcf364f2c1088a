"""DICOM Segmentation and Parametric Map exports (report/dicom_objects.py), read back with pydicom and highdicom and
checked against the source files: referenced UIDs, per-frame positions, spacing, orientation, and every pixel.

The sample CT was anonymised without UIDs (no SOP Instance, Series or Study UID), so a SEG cannot reference it; the
tests export from copies of it with UIDs added: one stored as the sample is, one stored mirrored (rows and columns
reversed, ImageOrientationPatient -1,0,0,0,-1,0), which io shows exactly like the original. A flip or a slice-order
mistake between the displayed slices and the files would move the pixels of the mirrored copy's objects.
"""

from __future__ import annotations

import json
import os

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medad_viewer.cli import main
from medad_viewer.io import load_study
from medad_viewer.report import ReportData, read_score_dir, write_score_dir
from medad_viewer.report.dicom_objects import (DicomExportError, NotDicomSeries, write_dicom_pmap,
                                               write_dicom_seg)
from medad_viewer.report.synthetic import synthetic_run
from medad_viewer.report.volumes import rasterize
from medad_viewer.review.state import Ellipse, ReviewState

SCORED = list(range(0, 20, 2))
NAME, PID = "DOE^JANE", "PID-4711"


def _copy_with_uids(src, out, mirrored: bool) -> None:
    os.makedirs(out)
    study, series = generate_uid(), generate_uid()
    for f in sorted(f for f in os.listdir(src) if f.endswith(".dcm")):  # not the folder's SOURCE.md
        ds = pydicom.dcmread(os.path.join(src, f))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f[3:-4]  # the file name is the UID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, "19580314"
        if mirrored:
            hu = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(src, f)))[0]
            raw = np.rint((hu - float(ds.RescaleIntercept)) / float(ds.RescaleSlope)).astype(np.uint16)
            ipp = np.array([float(v) for v in ds.ImagePositionPatient])
            ipp += [(ds.Columns - 1) * float(ds.PixelSpacing[1]), (ds.Rows - 1) * float(ds.PixelSpacing[0]), 0.0]
            ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
            ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
            ds.PixelData = np.ascontiguousarray(raw[::-1, ::-1]).tobytes()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(os.path.join(out, f), enforce_file_format=True)


@pytest.fixture(scope="module")
def copies(sample_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom-with-uids")
    for kind in ("plain", "mirrored"):
        _copy_with_uids(str(sample_data / "ct-dicom"), str(root / kind), kind == "mirrored")
    return root


@pytest.fixture(scope="module")
def loaded(copies, sample_data):
    out = {k: load_study(copies / k).series[0] for k in ("plain", "mirrored")}
    original = load_study(sample_data / "ct-dicom").series[0]
    for s in out.values():  # io shows both copies exactly as the sample
        assert np.array_equal(s.volume(), original.volume())
        np.testing.assert_allclose(s.origin, original.origin, atol=1e-4)
    return out


def _to_file(plane: np.ndarray, kind: str) -> np.ndarray:
    """How the test made the copy: the mirrored files store each displayed slice reversed both ways."""
    return plane[::-1, ::-1] if kind == "mirrored" else plane


def _sources(folder) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in
            (pydicom.dcmread(os.path.join(folder, f), stop_before_pixels=True) for f in os.listdir(folder))}


def _asymmetric_run(series):
    """Scored slices SCORED; blocks at different, off-centre places on slices 4 and 10, a faint (0.8) block on 8 that
    only a lower threshold segments, and a pixel exactly at the p99 map value (1.0, not above it) on 4."""
    run = synthetic_run(series, (), scored=SCORED)
    run.maps[:] = 0.1
    k4, k8, k10 = SCORED.index(4), SCORED.index(8), SCORED.index(10)
    run.maps[k4, 100:140, 300:420] = 2.0
    run.maps[k4, 50, 60] = 1.0
    run.maps[k10, 350:380, 40:100] = 3.0
    run.maps[k8, 200:230, 250:260] = 0.8
    return run


def _review(uid: str) -> ReviewState:
    rs = ReviewState()
    rs.add_annotation(uid, 6, Ellipse(60.5, 80.5, 10, 6))
    rs.set_decision(uid, 6, "confirmed")
    rs.add_annotation(uid, 12, Ellipse(200.5, 200.5, 8, 8))  # a dismissed slice's drawing is no finding
    rs.set_decision(uid, 12, "dismissed")
    return rs


def _frames(ds):
    """(referenced SOP Instance UID, segment number or None, ImagePositionPatient) of every frame."""
    out = []
    for item in ds.PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        seg = item.SegmentIdentificationSequence[0].ReferencedSegmentNumber if "SegmentIdentificationSequence" \
            in item else None
        out.append((str(ref), seg, [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]))
    return out


def _check_geometry(ds, sources, series_uid: str) -> None:
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    assert {str(i.ReferencedSOPInstanceUID) for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence} \
        <= set(sources)
    any_src = next(iter(sources.values()))
    assert ds.StudyInstanceUID == any_src.StudyInstanceUID
    assert ds.FrameOfReferenceUID == any_src.FrameOfReferenceUID
    shared = ds.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose([float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing],
                               [float(v) for v in any_src.PixelSpacing])
    np.testing.assert_allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient],
                               [float(v) for v in any_src.ImageOrientationPatient])
    assert (ds.Rows, ds.Columns) == (any_src.Rows, any_src.Columns)
    for ref, _seg, ipp in _frames(ds):
        np.testing.assert_allclose(ipp, [float(v) for v in sources[ref].ImagePositionPatient], atol=1e-4)


# ------------------------------------------------------------------------------------------------------- the SEG
@pytest.mark.parametrize("kind", ["plain", "mirrored"])
def test_seg_references_the_source_and_segments_the_map_and_the_findings(kind, loaded, copies, tmp_path):
    series = loaded[kind]
    sources = _sources(copies / kind)
    run = _asymmetric_run(series)
    data = ReportData.build(run, series, _review(series.uid), threshold_pct=95.0)  # map value 0.62 (calibration)
    assert data.pixel_threshold == pytest.approx(0.62)
    out = write_dicom_seg(data, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.SegmentationType == "BINARY"
    _check_geometry(ds, sources, series.uid)
    file_of = dict(zip(series.identifiers["SourceFiles"], range(series.num_slices)))
    slice_of = {uid: file_of[f"CT.{uid}.dcm"] for uid in sources}  # source instance -> displayed slice

    # Expected masks, displayed grid: map > threshold on the scored slices; the confirmed slice's ellipse.
    auto = np.zeros((20, 512, 512), np.uint8)
    for k, i in enumerate(SCORED):
        auto[i] = run.maps[k] > 0.62
    manual = np.zeros_like(auto)
    manual[6] = rasterize(_review(series.uid).get(series.uid, 6).annotations, 512, 512)
    expected = {(i, 1) for i in range(20) if auto[i].any()} | {(6, 2)}
    assert expected == {(4, 1), (8, 1), (10, 1), (6, 2)}
    frames = _frames(ds)
    assert ds.NumberOfFrames == len(frames) == len(expected)
    assert {(slice_of[ref], seg) for ref, seg, _ in frames} == expected
    pixels = ds.pixel_array
    for f, (ref, seg, _ipp) in enumerate(frames):
        i = slice_of[ref]
        want = _to_file((auto if seg == 1 else manual)[i], kind)
        assert np.array_equal(pixels[f], want), (kind, i, seg)
    # The ellipse centre (displayed row 80, column 60) in the files' own pixel orientation.
    f6 = next(f for f, (ref, seg, _) in enumerate(frames) if seg == 2)
    r, c = (511 - 80, 511 - 60) if kind == "mirrored" else (80, 60)
    assert pixels[f6][r, c] == 1 and pixels[f6][511 - r, 511 - c] == 0

    seg = hd.seg.segread(out)
    d1, d2 = seg.get_segment_description(1), seg.get_segment_description(2)
    assert d1.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    assert d2.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.MANUAL
    alg = d1.algorithm_identification[0]
    assert "efficientnet-lite2" in alg.AlgorithmName and "memory" in alg.AlgorithmName
    assert "backbone=efficientnet-lite2" in alg.AlgorithmParameters and "ImageNet" in alg.AlgorithmParameters
    # highdicom's own lookup by source instance agrees with the frames read above.
    uid4 = next(u for u, i in slice_of.items() if i == 4)
    by_source = seg.get_pixels_by_source_instance([uid4], segment_numbers=[1])
    assert np.array_equal(by_source[0, ..., 0], _to_file(auto[4], kind))


def test_seg_threshold_and_privacy(loaded, copies, tmp_path):
    series = loaded["mirrored"]
    run = _asymmetric_run(series)
    # The run's threshold (p99, map value 1.0): the faint block and the pixel at exactly 1.0 stay out.
    out = write_dicom_seg(ReportData.build(run, series), tmp_path / "seg99.dcm")
    ds = pydicom.dcmread(out)
    slices = {dict(zip(series.identifiers["SourceFiles"], range(20)))[f"CT.{ref}.dcm"] for ref, _s, _p in _frames(ds)}
    assert slices == {4, 10}
    assert int(ds.pixel_array.sum()) == 40 * 120 + 30 * 60
    # De-identified by default (the PDF's rule), the source UIDs kept; identifiers on request.
    raw = out.read_bytes()
    assert b"DOE" not in raw and PID.encode() not in raw and b"19580314" not in raw
    assert str(ds.PatientName).startswith("Study-") and ds.PatientIdentityRemoved == "YES"
    assert ds.StudyInstanceUID == pydicom.dcmread(series.source + "/" + series.identifiers["SourceFiles"][0]).StudyInstanceUID
    named = pydicom.dcmread(write_dicom_seg(ReportData.build(run, series, include_identifiers=True),
                                            tmp_path / "named.dcm"))
    assert (str(named.PatientName), named.PatientID, named.PatientBirthDate) == (NAME, PID, "19580314")
    assert named.get("PatientIdentityRemoved") != "YES"


# ----------------------------------------------------------------------------------------------- parametric map
def test_parametric_map_holds_the_scored_maps_on_the_source_grid(loaded, copies, tmp_path):
    kind = "mirrored"
    series = loaded[kind]
    sources = _sources(copies / kind)
    run = _asymmetric_run(series)
    out = write_dicom_pmap(ReportData.build(run, series), tmp_path / "map.dcm")
    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    _check_geometry(ds, sources, series.uid)
    file_of = dict(zip(series.identifiers["SourceFiles"], range(20)))
    refs = [str(i.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            for i in ds.PerFrameFunctionalGroupsSequence]
    assert sorted(file_of[f"CT.{u}.dcm"] for u in refs) == SCORED  # unscored slices are left out
    arr = ds.pixel_array
    assert arr.dtype == np.float32 and arr.shape == (len(SCORED), 512, 512)
    for f, u in enumerate(refs):
        i = file_of[f"CT.{u}.dcm"]
        assert np.array_equal(arr[f], _to_file(run.maps[SCORED.index(i)], kind)), i
    rwvm = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert "99th percentile" in rwvm.LUTExplanation and rwvm.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    # A second reading, through highdicom's volume API: the affine puts voxel (0, 0, 0) of the lowest slice at the
    # first stored pixel of its file. (SimpleITK/GDCM 2.5 cannot read float Parametric Maps: "Cannot read
    # requested file".)
    vol = hd.imread(str(out)).get_volume()
    assert vol.spatial_shape == (len(SCORED), 512, 512)
    lowest = min(sources.values(), key=lambda d: float(d.ImagePositionPatient[2]))
    corners = [vol.affine @ np.array([k, 0, 0, 1.0]) for k in (0, len(SCORED) - 1)]
    assert any(np.allclose(c[:3], [float(v) for v in lowest.ImagePositionPatient], atol=1e-3) for c in corners)
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(out))


# ------------------------------------------------------------------------------------------ viewer and command line
def test_viewer_exports_and_the_plain_error_for_other_sources(loaded, sample_data, tmp_path):
    from medad_viewer import report
    from medad_viewer.review.export import ExportContext
    from medad_viewer.review.references import ReferenceSet
    from medad_viewer.review.results import ScoreResults

    series = loaded["mirrored"]
    run = _asymmetric_run(series)
    results = ScoreResults(series.uid, 20, {"method": "memory", "backbone": "efficientnet-lite2",
                                            "weights": "efficientnet-lite2 (ImageNet)"})
    for k, i in enumerate(run.indices):
        results.add(int(i), run.scores[k], run.percentiles[k], run.maps[k])  # kept compact, 256 px float16
    ctx = ExportContext(series.source, series, results, _review(series.uid), ReferenceSet("N", "CT"), 99.0,
                        results.detector, 4)
    seg = pydicom.dcmread(report.export_dicom_seg(ctx, str(tmp_path / "seg.dcm")))
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC", "MANUAL"}
    pm = pydicom.dcmread(report.export_dicom_pmap(ctx, str(tmp_path / "map.dcm")))
    k4 = [str(i.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
          for i in pm.PerFrameFunctionalGroupsSequence].index(series.identifiers["SourceFiles"][4][3:-4])
    np.testing.assert_allclose(pm.pixel_array[k4], results.get(4).map[::-1, ::-1], atol=1e-6)  # upsampled to 512

    mr = load_study(sample_data / "mr-brain" / "brain1_image.nrrd").series[0]
    mr_results = ScoreResults(mr.uid, mr.num_slices)
    mr_results.add(3, 0.5, 99.5, np.ones((mr.rows, mr.columns), np.float32))
    other = ExportContext(mr.source, mr, mr_results, ReviewState(), ReferenceSet("N", "MR"), 99.0)
    for fn in (report.export_dicom_seg, report.export_dicom_pmap):
        with pytest.raises(ValueError, match="need a DICOM series; this one .* is a NRRD file"):
            fn(other, str(tmp_path / "x.dcm"))
    assert not (tmp_path / "x.dcm").exists()


def test_cli_report_writes_seg_and_map_of_a_score_run(copies, loaded, sample_data, tmp_path, capsys):
    src = str(copies / "mirrored")
    run_dir = tmp_path / "run"
    assert main(["score", src, "--refs", f"{src}:2,6,12", "--out", str(run_dir), "--method", "memory",
                 "--input-size", "128", "--slices", "0-5"]) == 0
    series = loaded["mirrored"]
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"review": _review(series.uid).to_dict()}), encoding="utf-8")
    seg_path, map_path = tmp_path / "out" / "seg.dcm", tmp_path / "out" / "map.dcm"
    (tmp_path / "out").mkdir()
    capsys.readouterr()
    # The sample CT is normal: at p99 no pixel is above the threshold. A low one (p20, map value 20/99, outside the
    # run's calibrated range) gives the AUTOMATIC segment real pixels of a real map to check.
    rc = main(["report", str(run_dir), "--dicom-seg", str(seg_path), "--dicom-pmap", str(map_path),
               "--threshold", "20", "--review", str(session)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"wrote {seg_path}" in err and f"wrote {map_path}" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["map.dcm", "seg.dcm"]  # no PDF asked, none made
    sources = _sources(src)
    seg, pm = pydicom.dcmread(seg_path), pydicom.dcmread(map_path)
    _check_geometry(seg, sources, series.uid)
    _check_geometry(pm, sources, series.uid)
    run = read_score_dir(run_dir)
    data = ReportData.build(run, series, threshold_pct=20.0)
    assert data.pixel_threshold == pytest.approx(20 / 99)
    file_of = dict(zip(series.identifiers["SourceFiles"], range(20)))
    frames = _frames(seg)
    assert (6, 2) in {(file_of[f"CT.{r}.dcm"], s) for r, s, _ in frames}  # the confirmed finding, from --review
    assert [s for _r, s, _ in frames].count(1) >= 1
    for f, (ref, s, _) in enumerate(frames):
        if s == 1:
            i = file_of[f"CT.{ref}.dcm"]
            assert np.array_equal(seg.pixel_array[f], (run.maps[list(run.indices).index(i)] >
                                                       data.pixel_threshold)[::-1, ::-1])
    assert pm.NumberOfFrames == 6


def test_cli_plain_errors_for_nifti_and_uid_less_dicom(sample_data, tmp_path, capsys):
    nifti = load_study(sample_data / "ct-nifti" / "example_ct_sm.nii.gz").series[0]
    run_dir = write_score_dir(tmp_path / "nifti-run", synthetic_run(nifti, (2,), scored=[1, 2, 3]))
    rc = main(["report", str(run_dir), "--dicom-seg", str(tmp_path / "s.dcm")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "DICOM SEG/parametric map exports need a DICOM series; this one (example_ct_sm.nii.gz) is a NIfTI file" \
        in err
    # The sample CT itself carries no UIDs: nothing could reference it, and the message says why.
    ct = load_study(sample_data / "ct-dicom").series[0]
    run_dir = write_score_dir(tmp_path / "ct-run", synthetic_run(ct, (4,)))
    rc = main(["report", str(run_dir), "--dicom-pmap", str(tmp_path / "m.dcm")])
    err = capsys.readouterr().err
    assert rc == 1 and "has no SOPInstanceUID" in err and "reference the source images by their UIDs" in err
    assert not any(p.suffix == ".dcm" for p in tmp_path.iterdir())
    with pytest.raises(DicomExportError):
        write_dicom_seg(ReportData.build(synthetic_run(ct, (4,)), ct), tmp_path / "s.dcm")
    assert issubclass(NotDicomSeries, ValueError)
