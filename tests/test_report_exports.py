"""Score tables, map/annotation volumes on the source grid (SimpleITK round trip), overlay colours, view PNG, CLI
and the viewer's export actions."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from medad_viewer.engine.jobs import CancelToken, Cancelled
from medad_viewer.io import load_study
from medad_viewer.report import ReportData, read_score_dir, write_score_dir
from medad_viewer.cli_report import add_report_parser
from medad_viewer.report.overlay import (COLORMAPS, OVERLAY_CMAP_START, blend, colorize, compose, default_vmax,
                                         overlay_lut)
from medad_viewer.report.synthetic import synthetic_run
from medad_viewer.report.tables import write_scores_csv, write_scores_json
from medad_viewer.report.view_png import render_view, save_view_png
from medad_viewer.report.volumes import rasterize, write_annotation_volume, write_map_volume
from medad_viewer.review.state import Ellipse, ReviewState, Stroke

SCORED = list(range(0, 20, 2))  # half the CT slices scored: the rest must export as zeros


@pytest.fixture(scope="module")
def ct(sample_data):
    return load_study(sample_data / "ct-dicom").series[0]


@pytest.fixture(scope="module")
def mr(sample_data):
    return load_study(sample_data / "mr-brain" / "brain1_image.nrrd").series[0]


def _source_image_ct(sample_data) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(sample_data / "ct-dicom")))
    return reader.Execute()


def _same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)


def _physical(series, k: int, r: float, c: float) -> tuple[float, float, float]:
    """LPS mm of displayed voxel (k, r, c), from the geometry the Series reports."""
    d = np.array(series.direction).reshape(3, 3)
    sx, sy, sz = series.spacing
    return tuple(np.array(series.origin) + d @ np.array([c * sx, r * sy, k * sz]))


def _review(uid: str, k: int) -> ReviewState:
    rs = ReviewState()
    rs.add_annotation(uid, k, Ellipse(60.5, 80.5, 10, 6))
    rs.add_annotation(uid, k, Stroke(((150, 40), (170, 40)), 5))
    rs.set_decision(uid, k, "confirmed")
    rs.set_note(uid, k, "Check against the prior study.")
    return rs


# ------------------------------------------------------------------------------------------------------- volumes
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_ct_map_volume_round_trip(ct, sample_data, tmp_path, suffix):
    run = synthetic_run(ct, (4, 10), scored=SCORED)
    data = ReportData.build(read_score_dir(write_score_dir(tmp_path / "run", run)), None)  # geometry from run.json
    out = write_map_volume(data, tmp_path / f"maps{suffix}")
    img = sitk.ReadImage(str(out))
    _same_geometry(img, _source_image_ct(sample_data))
    assert img.GetPixelID() == sitk.sitkFloat32
    arr = sitk.GetArrayFromImage(img)
    for k, i in enumerate(SCORED):
        np.testing.assert_allclose(arr[i], run.maps[k], atol=1e-6)
    unscored = [i for i in range(20) if i not in SCORED]
    assert not arr[unscored].any()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_mr_map_volume_on_the_file_grid(mr, tmp_path):
    """io shows the NRRD flipped to LPS; the export goes back to the file's own grid, voxel for voxel."""
    assert mr.metadata["reoriented"]
    run = synthetic_run(mr, (12,))
    data = ReportData.build(run, mr)
    out = write_map_volume(data, tmp_path / "maps.nii.gz")
    img, src = sitk.ReadImage(str(out)), sitk.ReadImage(mr.source)
    _same_geometry(img, src)
    # The blob lands where it lies in the displayed slice, in physical space.
    k = 12
    r, c = np.unravel_index(int(np.argmax(run.maps[k])), run.maps[k].shape)
    idx = img.TransformPhysicalPointToIndex(_physical(mr, k, r, c))
    assert img[idx] == pytest.approx(float(run.maps[k][r, c]), abs=1e-5)
    back = sitk.GetArrayFromImage(sitk.DICOMOrient(img, "LPS"))
    np.testing.assert_allclose(back[k], run.maps[k], atol=1e-6)


@pytest.mark.parametrize("which", ["ct", "mr"])
def test_annotation_label_volume(which, ct, mr, sample_data, tmp_path):
    series = ct if which == "ct" else mr
    k = 5
    data = ReportData.build(synthetic_run(series, ()), series, _review(series.uid, k))
    out = write_annotation_volume(data, tmp_path / "labels.nrrd")
    img = sitk.ReadImage(str(out))
    _same_geometry(img, _source_image_ct(sample_data) if which == "ct" else sitk.ReadImage(mr.source))
    assert img.GetPixelID() == sitk.sitkUInt8
    arr = sitk.GetArrayFromImage(img)
    assert set(np.unique(arr)) == {0, 1}
    # The ellipse centre (pixel 60, 80 of displayed slice k) is labelled, at the right physical place.
    assert img[img.TransformPhysicalPointToIndex(_physical(series, k, 80, 60))] == 1
    assert img[img.TransformPhysicalPointToIndex(_physical(series, k, 80, 100))] == 0
    labelled = np.nonzero(arr.reshape(arr.shape[0], -1).any(axis=1))[0]
    assert len(labelled) == 1


def test_rasterize_shapes():
    m = rasterize([Ellipse(50.0, 40.0, 10.0, 5.0)], 100, 100)
    assert m.sum() == pytest.approx(np.pi * 10 * 5, rel=0.08)
    ys, xs = np.nonzero(m)
    assert xs.mean() == pytest.approx(49.5, abs=0.3) and ys.mean() == pytest.approx(39.5, abs=0.3)
    s = rasterize([Stroke(((10.0, 10.0), (30.0, 10.0)), 4.0)], 50, 50)
    assert s[9, 20] == 1 and s[20, 20] == 0 and 70 <= s.sum() <= 110
    dot = rasterize([Stroke(((5.0, 5.0),), 6.0)], 20, 20)
    assert dot[4, 4] == 1 and dot.sum() > 10


def test_volume_export_cancel_and_bad_name(ct, tmp_path):
    data = ReportData.build(synthetic_run(ct, (3,)), ct)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        write_map_volume(data, tmp_path / "maps.nii.gz", cancel=token)
    from medad_viewer.report import ReportError

    with pytest.raises(ReportError, match="volume file name"):
        write_map_volume(data, tmp_path / "maps.png")
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------------------- tables
def test_csv_and_json(ct, tmp_path):
    run = synthetic_run(ct, (4, 10), references=[(ct.source, ct.uid, 1)])
    run.percentiles[0] = np.nan  # no calibration for this one: not flagged, and still valid JSON
    run.run["timings"]["odd_s"] = float("inf")
    data = ReportData.build(run, ct, _review(ct.uid, 5))
    csv_path = write_scores_csv(data, tmp_path / "scores.csv")
    json_path = write_scores_json(data, tmp_path / "scores.json")
    umask = os.umask(0)
    os.umask(umask)
    assert csv_path.stat().st_mode & 0o777 == 0o666 & ~umask  # a normal file, not mkstemp's owner-only one
    text = csv_path.read_text(encoding="utf-8")
    meta = [line for line in text.splitlines() if line.startswith("#")]
    assert any(line.startswith(f"# study: {data.privacy.label}") for line in meta)
    assert any("not a diagnosis" in line for line in meta)
    rows = list(csv.DictReader(io.StringIO("\n".join(l for l in text.splitlines() if not l.startswith("#")))))
    assert [int(r["slice_index"]) for r in rows] == list(range(20))
    assert [int(r["slice_number"]) for r in rows] == list(range(1, 21))
    by = {int(r["slice_index"]): r for r in rows}
    assert by[4]["flagged"] == "1" and by[4]["above_threshold"] == "1" and by[3]["flagged"] == "0"
    assert by[5]["flagged"] == "1" and by[5]["decision"] == "confirmed" and by[5]["annotations"] == "2"
    assert float(by[4]["score"]) == pytest.approx(run.scores[4], abs=1e-6)

    doc = json.loads(json_path.read_text(encoding="utf-8"))
    assert doc["deidentified"] is True and doc["study"] == data.privacy.label
    assert doc["run"]["method"] == "memory" and doc["run"]["target"]["label"] == data.privacy.label
    assert doc["run"]["target"]["num_slices"] == 20
    dumped = json.dumps(doc)
    # Paths and UIDs identify (a folder named after the patient, hospital UIDs): none in a de-identified export.
    assert ct.source not in dumped and ct.uid not in dumped and "uid" not in json.dumps(doc["run"])
    assert "patient" not in doc
    assert doc["slices"][5]["annotations"][0] == {"kind": "ellipse", "cx": 60.5, "cy": 80.5, "rx": 10, "ry": 6}
    assert doc["slices"][4]["flagged"] is True
    assert doc["slices"][0]["percentile"] is None and doc["slices"][0]["flagged"] is False
    assert doc["run"]["timings"]["odd_s"] is None
    assert by[0]["percentile"] == ""


# ------------------------------------------------------------------------------------------------------- overlay
def _pyqtgraph_tables() -> dict[str, np.ndarray]:
    """pyqtgraph's maps from OVERLAY_CMAP_START, read under a UTF-8 locale: writing DICOM with SimpleITK (as io tests
    do) leaves the C locale behind, under which pyqtgraph cannot read its cividis.csv."""
    import locale

    import pyqtgraph as pg

    saved = locale.setlocale(locale.LC_CTYPE)
    try:
        for name in ("C.UTF-8", "C.utf8", "en_US.UTF-8", "UTF-8"):
            try:
                locale.setlocale(locale.LC_CTYPE, name)
                break
            except locale.Error:
                continue
        return {n: pg.colormap.get(n).getLookupTable(OVERLAY_CMAP_START, 1.0, 256, alpha=False) for n in COLORMAPS}
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


def test_colours_match_the_viewer():
    # The fixed tables (io.colormaps, no pyqtgraph needed) are pyqtgraph's maps without their near-black start.
    for name, table in _pyqtgraph_tables().items():
        np.testing.assert_array_equal(overlay_lut(name), table)
    lut = overlay_lut("inferno")
    assert default_vmax(1.0) == 2.0 and default_vmax(1.5) == 3.0  # the viewer's threshold + max(1, threshold)
    amap = np.array([[0.5, 1.0, 2.0, 3.0, np.nan, 9.0]], dtype=np.float32)
    rgba = colorize(amap, 1.0, 3.0)
    assert list(rgba[0, :, 3]) == [0, 0, 255, 255, 0, 255]  # at or below the threshold, and NaN: transparent
    np.testing.assert_array_equal(rgba[0, 3, :3], lut[255])
    np.testing.assert_array_equal(rgba[0, 5, :3], lut[255])  # clipped above vmax
    gray = np.full((1, 6), 100, np.uint8)
    np.testing.assert_array_equal(blend(gray, rgba, 0.0), np.full((1, 6, 3), 100))
    full = blend(gray, rgba, 1.0)
    np.testing.assert_array_equal(full[0, 3], lut[255])
    np.testing.assert_array_equal(full[0, 0], [100, 100, 100])
    half = compose(gray, amap, threshold=1.0, vmax=3.0, opacity=0.5)
    np.testing.assert_allclose(half[0, 3], (100 + lut[255].astype(float)) / 2, atol=1)
    with pytest.raises(ValueError):
        overlay_lut("rainbow")


def test_view_png(ct, tmp_path):
    pixels = ct.slice(7)
    amap = np.zeros(pixels.shape, np.float32)
    amap[200:260, 300:360] = 2.5
    img = render_view(pixels, amap, (40, 400), threshold=1.0, spacing=ct.spacing[:2],
                      annotations=[Ellipse(100, 100, 20, 20)], direction=ct.direction, caption="Slice 8 of 20")
    assert img.width() == 512 and img.height() > 512  # colour bar and caption below/above the slice
    path = save_view_png(tmp_path / "view.png", pixels, amap, (40, 400), threshold=1.0)
    bgr = cv2.imread(str(path))
    assert bgr is not None and bgr.shape[1] == 512
    rgb = bgr[..., ::-1].astype(int)
    lut = overlay_lut("inferno").astype(int)
    # 2.5 is above the default top of the scale (threshold 1 -> 2): the brightest colour.
    expected = 0.4 * np.clip((pixels[230, 330] - (40 - 200)) / 400 * 255, 0, 255) + 0.6 * lut[255]
    np.testing.assert_allclose(rgb[230, 330], expected, atol=3)  # overlay pixel: 60 % colour over the slice
    assert rgb[100, 20, 0] == rgb[100, 20, 1] == rgb[100, 20, 2]  # no overlay there: grey


# ------------------------------------------------------------------------------------------------------------ CLI
def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="medad-viewer")
    add_report_parser(parser.add_subparsers())
    args = parser.parse_args(["report", *argv])
    return args.func(args)


def test_cli_report(ct, tmp_path, capsys):
    folder = write_score_dir(tmp_path / "run", synthetic_run(ct, (4,)))
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"format": "medad-viewer-session/1", "review": _review(ct.uid, 6).to_dict()}))
    rc = _cli(str(folder), "--csv", str(tmp_path / "t.csv"), "--json", str(tmp_path / "t.json"), "--maps",
              str(tmp_path / "m.nrrd"), "--annotations", str(tmp_path / "a.nii.gz"), "--review", str(session),
              "--threshold", "99.5")
    assert rc == 0, capsys.readouterr().err
    for name in ("t.csv", "t.json", "m.nrrd", "a.nii.gz"):
        assert (tmp_path / name).is_file()
    doc = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert doc["threshold_percentile"] == 99.5
    assert [s["slice_index"] for s in doc["slices"] if s["flagged"]] == [4, 6]
    assert doc["flag_percentile"] == 99.5
    # Slices flagged at another percentile than the heatmap's: the flags move, the pixel threshold does not.
    assert _cli(str(folder), "--json", str(tmp_path / "f.json"), "--threshold", "99.5", "--flag-at", "50") == 0
    assert "flagged at the 50th percentile" in capsys.readouterr().err
    doc_flag = json.loads((tmp_path / "f.json").read_text(encoding="utf-8"))
    assert doc_flag["flag_percentile"] == 50 and doc_flag["threshold_percentile"] == 99.5
    assert doc_flag["pixel_threshold"] == doc["pixel_threshold"]
    above = {s["slice_index"] for s in doc_flag["slices"] if s["percentile"] is not None and s["percentile"] >= 50}
    assert {s["slice_index"] for s in doc_flag["slices"] if s["above_threshold"]} == above and len(above) > 1
    assert _cli(str(folder), "--csv", str(tmp_path / "g.csv"), "--flag-at", "100") == 2
    assert "--flag-at" in capsys.readouterr().err
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a.nii.gz")))[6].sum() > 0

    # Problems are one line on stderr and a status, never a traceback.
    assert _cli(str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pdf")) == 2
    assert "no scoring run folder" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    assert _cli(str(tmp_path / "half"), "--out", str(tmp_path / "x.pdf")) == 2
    assert "not a finished scoring run" in capsys.readouterr().err
    run_json = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    run_json["target"]["source"] = str(tmp_path / "moved-away")
    (folder / "run.json").write_text(json.dumps(run_json))
    assert _cli(str(folder), "--out", str(tmp_path / "x.pdf")) == 2
    err = capsys.readouterr().err
    assert "no longer at" in err and "--source" in err and "Traceback" not in err
    assert not (tmp_path / "x.pdf").exists()
    assert _cli(str(folder), "--csv", str(tmp_path / "still.csv")) == 0  # tables do without the images
    assert _cli(str(folder), "--out", str(tmp_path / "x.pdf"), "--source", ct.source) == 0
    assert (tmp_path / "x.pdf").stat().st_size > 10_000
    assert _cli(str(folder)) == 2
    assert "nothing to write" in capsys.readouterr().err


def test_cli_report_needs_no_widgets(ct, tmp_path):
    """`medad-viewer report` paints with QtGui alone: no QtWidgets, no pyqtgraph (a QGuiApplication is enough)."""
    folder = write_score_dir(tmp_path / "run", synthetic_run(ct, (4,), references=[(ct.source, ct.uid, 2)]))
    out = tmp_path / "r.pdf"
    script = ("import sys\n"
              "from medad_viewer.cli import main\n"
              f"rc = main(['report', {str(folder)!r}, '--out', {str(out)!r}, '--maps', {str(tmp_path / 'm.nrrd')!r}])\n"
              "from PySide6.QtGui import QGuiApplication\n"
              "print('app', type(QGuiApplication.instance()).__name__)\n"
              "print('loaded', [m for m in ('PySide6.QtWidgets', 'pyqtgraph') if m in sys.modules])\n"
              "sys.exit(rc)\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "app QGuiApplication" in done.stdout and "loaded []" in done.stdout, done.stdout
    assert out.read_bytes().startswith(b"%PDF") and (tmp_path / "m.nrrd").is_file()


# ------------------------------------------------------------------------------------------- the viewer's exports
def test_viewer_export_actions(ct, tmp_path):
    from medad_viewer import report
    from medad_viewer.review.export import EXPORTS, ExportContext
    from medad_viewer.review.references import ReferenceSet, ReferenceSlice
    from medad_viewer.review.results import ScoreResults

    for _text, fn_name, _filt in EXPORTS:
        assert callable(getattr(report, fn_name))  # every File → Export action finds its function
    run = synthetic_run(ct, (9,))
    results = ScoreResults(ct.uid, ct.num_slices, {"method": "memory", "backbone": "efficientnet-lite2"})
    for k, i in enumerate(run.indices):
        results.add(int(i), run.scores[k], run.percentiles[k], run.maps[k])
    refs = ReferenceSet("Normals", "CT", [ReferenceSlice(ct.source, ct.uid, 1), ReferenceSlice(ct.source, ct.uid, 3)])
    ctx = ExportContext(ct.source, ct, results, _review(ct.uid, 9), refs, 99.0, {"method": "memory"}, 9)
    report.export_pdf_report(ctx, str(tmp_path / "r.pdf"))
    report.export_scores_csv(ctx, str(tmp_path / "r.csv"))
    report.export_scores_json(ctx, str(tmp_path / "r.json"))
    report.export_map_volume(ctx, str(tmp_path / "m.nrrd"))
    report.export_annotation_volume(ctx, str(tmp_path / "a.nrrd"))
    report.export_view_png(ctx, str(tmp_path / "v.png"))
    for name in ("r.pdf", "r.csv", "r.json", "m.nrrd", "a.nrrd", "v.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert [s["slice_index"] for s in doc["slices"] if s["flagged"]] == [9]
    assert doc["run"]["reference_set_name"] == "Normals" and len(doc["run"]["references"]) == 2
    # The viewer's "Flag at" travels in the context, apart from the overlay's threshold.
    ctx.flag_pct = 50.0
    report.export_scores_json(ctx, str(tmp_path / "r50.json"))
    doc50 = json.loads((tmp_path / "r50.json").read_text(encoding="utf-8"))
    assert doc50["pixel_threshold"] == doc["pixel_threshold"] and doc50["flag_percentile"] == 50.0
    assert {s["slice_index"] for s in doc50["slices"] if s["above_threshold"]} == {
        int(i) for k, i in enumerate(run.indices) if run.percentiles[k] >= 50.0}
    empty = ExportContext(ct.source, ct, None, ReviewState(), refs, 99.0)
    with pytest.raises(report.ReportError, match="Adapt & score"):
        report.export_pdf_report(empty, str(tmp_path / "none.pdf"))
