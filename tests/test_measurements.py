"""Measurements: a length in mm and an ellipse ROI with the raw values (HU on the CT) and the anomaly map inside,
checked against hand computations on the sample data; saved with the session; listed in the PDF report; drawn with
the M and O tools on the real window."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSettings, Qt

from medad_viewer.io import load_study
from medad_viewer.io.series import Series
from medad_viewer.review.export import ExportContext
from medad_viewer.review.measurements import (ACQUIRED, EllipseROI, Length, Measurements, length_mm, measure,
                                              measure_on, roi_mask)
from medad_viewer.review.references import ReferenceSet
from medad_viewer.engine.records import SliceScore
from medad_viewer.review.results import ScoreResults
from medad_viewer.review.session import SessionStore
from medad_viewer.review.state import Decision, Ellipse, ReviewState
from medad_viewer.review.viewer_model import ViewerModel


@pytest.fixture(autouse=True)
def app_data(tmp_path, monkeypatch):
    d = tmp_path / "appdata"
    monkeypatch.setenv("MEDAD_VIEWER_DATA_DIR", str(d))
    return d


@pytest.fixture(scope="module")
def ct(sample_data):
    return load_study(sample_data / "ct-dicom").series[0]


def hand_mask(shape, cx, cy, rx, ry):
    """Pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) is: written out pixel by pixel."""
    out = np.zeros(shape, bool)
    for r in range(int(cy - ry) - 1, int(cy + ry) + 2):
        for c in range(int(cx - rx) - 1, int(cx + rx) + 2):
            if 0 <= r < shape[0] and 0 <= c < shape[1]:
                out[r, c] = ((c + 0.5 - cx) / rx) ** 2 + ((r + 0.5 - cy) / ry) ** 2 <= 1.0
    return out


def opened_model(path) -> ViewerModel:
    study = load_study(path)
    store = SessionStore.for_study(study, path)
    m = ViewerModel()
    m.load_finished(m.begin_load(), {"path": str(path), "study": study, "thumbs": [], "store": store,
                                     "session": store.load(study), "scores": {}, "notes": []})
    m.select_series(0)
    return m


# ------------------------------------------------------------------------------------------------------- lengths
def test_length_in_mm_with_anisotropic_spacing(ct):
    s = Series.from_array(np.zeros((3, 40, 60), np.int16), uid="aniso", spacing=(0.5, 2.0, 3.0))
    # 30 columns at 0.5 mm and 20 rows at 2 mm: a 15 by 40 mm right triangle.
    line = Length((10.0, 5.0), (40.0, 25.0))
    assert measure_on(line, s).length_mm == pytest.approx(math.sqrt(15.0 ** 2 + 40.0 ** 2))
    assert length_mm(Length((0, 0), (10, 0)), s.spacing) == pytest.approx(5.0)  # along a row: columns, 0.5 mm
    assert length_mm(Length((0, 0), (0, 10)), s.spacing) == pytest.approx(20.0)  # down a column: rows, 2 mm
    # The CT's own pixel size (0.9765625 mm): 200 pixels are 195.3125 mm.
    assert ct.spacing[:2] == (0.9765625, 0.9765625)
    assert measure_on(Length((100.0, 100.0), (100.0, 300.0), index=10), ct).length_mm == pytest.approx(195.3125)


# ---------------------------------------------------------------------------------------------------------- ROIs
def test_roi_stats_are_those_of_the_pixels_inside_in_hu(ct):
    roi = EllipseROI(256.3, 240.7, 40.2, 25.5, index=10)
    pixels = ct.slice(10)
    mask = hand_mask(pixels.shape, roi.cx, roi.cy, roi.rx, roi.ry)
    assert np.array_equal(roi_mask(roi, pixels.shape), mask)
    # About as many pixels as the ellipse's area.
    assert mask.sum() == pytest.approx(math.pi * roi.rx * roi.ry, rel=0.02)
    r = measure_on(roi, ct)
    v = pixels[mask].astype(np.float64)
    assert r.units == "HU" and r.pixels == int(mask.sum())
    assert r.mean == pytest.approx(v.mean()) and r.sd == pytest.approx(v.std())
    assert (r.min, r.max) == (v.min(), v.max())
    assert r.area_mm2 == pytest.approx(math.pi * 40.2 * 25.5 * 0.9765625 ** 2)
    assert r.map_mean is None  # no map given
    # Outside the body, in the corner: air, about -1000 HU (the rescale was applied).
    air = measure_on(EllipseROI(20, 20, 10, 10, index=10), ct)
    assert air.mean == pytest.approx(-1024.0, abs=30.0)


def test_roi_stats_on_the_mr_sample_and_an_empty_roi(sample_data):
    mr = load_study(sample_data / "mr-brain" / "brain1_image.nrrd").series[0]
    k = mr.num_slices // 2
    roi = EllipseROI(128.0, 110.0, 30.0, 45.0, index=k)
    pixels = mr.slice(k)
    mask = hand_mask(pixels.shape, 128.0, 110.0, 30.0, 45.0)
    r = measure_on(roi, mr)
    assert r.units == "" and r.pixels == int(mask.sum()) > 0
    assert r.mean == pytest.approx(pixels[mask].mean(), rel=1e-6)
    assert r.sd == pytest.approx(pixels[mask].std(), rel=1e-6)
    sx, sy = mr.spacing[:2]
    assert r.area_mm2 == pytest.approx(math.pi * 30.0 * 45.0 * sx * sy)
    # An ellipse too thin to hold a pixel centre: sizes, but no values.
    thin = measure_on(EllipseROI(10.0, 10.0, 3.0, 0.4, index=k), mr)
    assert thin.pixels == 0 and thin.mean is None


def test_map_stats_inside_the_roi(ct):
    rows, cols = ct.rows, ct.columns
    yy, xx = np.mgrid[0:rows, 0:cols]
    amap = (xx / cols * 2.0 + yy / rows).astype(np.float32)  # a smooth ramp: 0 .. 3
    r_slice = SliceScore(10, 1.5, 97.0, amap)
    full = r_slice.map  # the full-size map the viewer shows (stored compact, given back at slice size)
    roi = EllipseROI(300.0, 200.0, 50.0, 30.0, index=10)
    mask = hand_mask((rows, cols), 300.0, 200.0, 50.0, 30.0)
    r = measure(roi, ct.slice(10), ct.spacing, full, "HU")
    assert r.map_mean == pytest.approx(full[mask].mean(), rel=1e-6)
    assert r.map_sd == pytest.approx(full[mask].std(), rel=1e-5)
    assert r.map_max == pytest.approx(full[mask].max())
    # The ramp rises to the right and down: its mean inside is the ramp at the centre.
    assert r.map_mean == pytest.approx(300.5 / cols * 2 + 200.5 / rows, abs=0.01)


# --------------------------------------------------------------------------------------- the model and the session
def test_model_measures_the_slice_shown_and_the_session_keeps_them(sample_data, tmp_path):
    path = tmp_path / "ct"
    shutil.copytree(sample_data / "ct-dicom", path)
    m = opened_model(path)
    events = []
    m.review.events.measurements.connect(events.append)
    s = m.series
    m.show_slice(7)
    line = m.review.add_measurement(Length((100.0, 100.0), (250.0, 180.0)))
    assert (line.series_uid, line.plane, line.index) == (s.uid, ACQUIRED, 7)
    assert [e.measurement for e in events] == [line]
    m.show_slice(12)
    roi = m.review.add_measurement(EllipseROI(256.0, 256.0, 40.0, 30.0))
    assert [x for _k, x in m.review.measurements_here()] == [roi]
    # With the slice scored, the ROI gets the map's numbers.
    res = ScoreResults(s.uid, s.num_slices)
    res.add(12, 2.0, 99.5, np.full((s.rows, s.columns), 1.25, np.float32))
    m.results[s.uid] = res
    (_k, got, r), = m.review.measured_here()
    assert got == roi and r.map_mean == pytest.approx(1.25) and r.map_max == pytest.approx(1.25)
    assert r.mean == pytest.approx(s.slice(12)[roi_mask(roi, (s.rows, s.columns))].mean())

    # Saved at once, and found again by a new store (a new sitting).
    saved = SessionStore.for_study(load_study(path), path).load()
    assert list(saved.measurements) == [line, roi]

    # Delete, then undo and redo it: one history, steps undone in the order they were done, whatever their kind.
    m.review.set_decision(Decision.CONFIRMED)
    assert m.review.remove_measurement(1) == roi and len(m.session.measurements) == 1
    assert m.review.undo_label() == "Remove ellipse ROI"
    m.review.undo()
    assert list(m.session.measurements) == [line, roi]
    assert m.review.undo_label() == "Mark confirmed"
    m.review.undo()  # the confirmation, done before the removal
    assert m.session.review.get(s.uid, 12).decision == Decision.UNREVIEWED
    assert list(m.session.measurements) == [line, roi]
    m.review.undo()  # the add of the ROI
    assert list(m.session.measurements) == [line]
    m.review.redo()
    assert list(m.session.measurements) == [line, roi]
    m.review.redo()
    assert m.session.review.get(s.uid, 12).decision == Decision.CONFIRMED
    m.review.set_decision(Decision.DISMISSED)
    m.review.undo()  # the review's step
    assert m.session.review.get(s.uid, 12).decision == Decision.CONFIRMED
    assert list(m.session.measurements) == [line, roi]


def test_one_history_undoes_reviews_and_measurements_in_the_order_they_were_done(sample_data, tmp_path):
    """Confirm slice A, draw a measurement M, confirm slice B; undo three times: B, then M, then A (issue 21: with
    two undo stacks it was B, A, M). Redo goes forward in the same order, and each step shows its slice."""
    path = tmp_path / "ct"
    shutil.copytree(sample_data / "ct-dicom", path)
    m = opened_model(path)
    uid = m.series.uid
    m.show_slice(3)
    m.review.set_decision(Decision.CONFIRMED)  # A
    m.show_slice(5)
    line = m.review.add_measurement(Length((10.0, 10.0), (40.0, 30.0)))  # M
    m.show_slice(8)
    m.review.set_decision(Decision.CONFIRMED)  # B

    def state():
        return (m.session.review.get(uid, 3).decision == Decision.CONFIRMED, list(m.session.measurements) == [line],
                m.session.review.get(uid, 8).decision == Decision.CONFIRMED)

    assert state() == (True, True, True)
    undone = []
    for _ in range(3):
        label = m.review.undo_label()
        m.review.undo()
        undone.append((label, m.index, state()))
    assert undone == [("Mark confirmed", 8, (True, True, False)),  # B
                      ("Add length", 5, (True, False, False)),  # M, shown on its slice
                      ("Mark confirmed", 3, (False, False, False))]  # A
    assert not m.review.can_undo
    m.review.redo()
    assert state() == (True, False, False) and m.index == 3
    m.review.redo()
    assert state() == (True, True, False) and m.index == 5
    assert m.review.redo_label() == "Mark confirmed"
    m.show_slice(1)
    m.review.set_decision(Decision.DISMISSED)  # a new step: nothing left to redo
    assert not m.review.can_redo


def test_an_older_session_without_measurements_still_loads(sample_data, tmp_path):
    path = tmp_path / "ct"
    shutil.copytree(sample_data / "ct-dicom", path)
    m = opened_model(path)
    m.show_slice(4)
    m.review.set_decision(Decision.CONFIRMED)
    m.review.add_measurement(Length((1.0, 2.0), (3.0, 4.0)))
    file = m.saving.store.session_file
    d = json.loads(file.read_text())
    assert len(d["measurements"]) == 1
    del d["measurements"]
    file.write_text(json.dumps(d))
    again = opened_model(path)
    assert len(again.session.measurements) == 0
    assert again.session.review.get(again.series.uid, 4).decision == Decision.CONFIRMED
    # A damaged entry is left out, the rest kept.
    d["measurements"] = [{"kind": "length", "p0": [1, 2], "p1": [3, 4], "series_uid": "x", "index": 2},
                         {"kind": "hexagon"}, {"kind": "roi", "cx": 1}]
    file.write_text(json.dumps(d))
    assert list(opened_model(path).session.measurements) == [Length((1.0, 2.0), (3.0, 4.0), "x", ACQUIRED, 2)]


def test_measurements_undo_and_redo_alone():
    ms = Measurements()
    a, b = Length((0, 0), (1, 1)), EllipseROI(5, 5, 2, 2)
    ms.add(a)
    ms.add(b)
    ms.remove(0)
    assert list(ms) == [b]
    ms.undo()
    assert list(ms) == [a, b]
    ms.undo()
    ms.undo()
    assert list(ms) == [] and not ms.can_undo
    ms.redo()
    ms.redo()
    assert list(ms) == [a, b]
    assert Measurements.from_list(ms.to_list()) == ms


def test_a_measurement_in_a_reformatted_plane(sample_data, tmp_path):
    from medad_viewer.io.planes import plane_view
    from medad_viewer.report import _data_from_context

    path = tmp_path / "brain1_image.nrrd"
    shutil.copy(sample_data / "mr-brain" / "brain1_image.nrrd", path)
    m = opened_model(path)
    s = m.series
    assert m.set_plane("coronal") == ""
    cor = plane_view(s, "coronal").series
    assert cor.spacing[:2] == pytest.approx((s.spacing[0], s.spacing[2]))  # rows of the coronal run across slices
    line = m.review.add_measurement(Length((100.0, 2.0), (100.0, 6.0)))
    k = m.view_index()
    assert (line.plane, line.index) == ("coronal", k)
    roi = m.review.add_measurement(EllipseROI(128.0, 12.0, 30.0, 3.0))
    (_a, _l, r_line), (_b, _r, r_roi) = m.review.measured_here()
    assert r_line.length_mm == pytest.approx(4 * s.spacing[2])  # four rows of 6.5 mm
    mask = hand_mask((cor.rows, cor.columns), 128.0, 12.0, 30.0, 3.0)
    assert r_roi.pixels == int(mask.sum()) > 0
    assert r_roi.mean == pytest.approx(cor.slice(k)[mask].mean())
    # Back in the axial plane, neither is on the slice shown; the report still measures them in their plane.
    m.set_plane("axial")
    assert m.review.measurements_here() == []
    res = ScoreResults(s.uid, s.num_slices)
    for i in range(s.num_slices):
        res.add(i, 1.0, 50.0, np.full((s.rows, s.columns), 0.7, np.float32))
    ctx = ExportContext(str(path), s, res, ReviewState(), ReferenceSet(), 50.0, measurements=[line, roi])
    rows = _data_from_context(ctx).measurements
    assert rows[0].measured.length_mm == pytest.approx(r_line.length_mm)
    assert rows[1].measured.mean == pytest.approx(r_roi.mean)
    assert rows[1].measured.map_mean == pytest.approx(0.7, abs=1e-3)


# ------------------------------------------------------------------------------------------------------ the report
def test_the_pdf_report_lists_the_measurements(ct, tmp_path):
    from medad_viewer.report import _data_from_context, export_pdf_report

    res = ScoreResults(ct.uid, ct.num_slices)
    rows, cols = ct.rows, ct.columns
    rng = np.random.default_rng(0)
    for i in range(ct.num_slices):
        hot = i == 10  # flagged, so it gets a page of its own
        amap = rng.random((rows, cols), dtype=np.float32) * (3.0 if hot else 0.5)
        res.add(i, float(i), 99.5 if hot else float(i), amap)
    line = Length((100.0, 100.0), (100.0, 300.0), ct.uid, ACQUIRED, 10)
    roi = EllipseROI(256.0, 256.0, 40.0, 30.0, ct.uid, ACQUIRED, 10)
    other = Length((0.0, 0.0), (5.0, 5.0), "another-series", ACQUIRED, 3)
    ctx = ExportContext(str(ct.source), ct, res, ReviewState(), ReferenceSet(), 50.0, current_index=10,
                        flag_pct=90.0, measurements=[line, roi, other])
    data = _data_from_context(ctx)
    assert [mr.measurement for mr in data.measurements] == [line, roi]  # only the scored series'
    r = data.measurements[1].measured
    mask = hand_mask((rows, cols), 256.0, 256.0, 40.0, 30.0)
    assert r.mean == pytest.approx(ct.slice(10)[mask].mean())
    assert r.map_mean == pytest.approx(res.get(10).map[mask].mean(), rel=1e-3)
    out = export_pdf_report(ctx, str(tmp_path / "report.pdf"))
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", "-layout", str(out), "-"], capture_output=True,
                          encoding="utf-8", check=True).stdout
    assert "Measurements (2)" in text
    table = text[text.index("Measurements (2)"):]
    assert "195.3 mm" in table  # the length
    assert f"{r.mean:.0f} ± {r.sd:.0f} HU" in table  # the ROI's raw values
    assert f"{r.map_mean:.2f} / {r.map_max:.2f}" in table  # and its map
    assert "M1" in table and "M2" in table
    assert "ellipse ROI" in text[text.index("Slice 11 of 20"):]  # on the slice's page too

    # The JSON score table lists them too, without the series uid (de-identified).
    from medad_viewer.report import export_scores_json

    doc = json.loads(export_scores_json(ctx, str(tmp_path / "scores.json")).read_text())
    got = doc["measurements"]
    assert [(g["kind"], g["slice_index"], g["plane"]) for g in got] == [("length", 10, ACQUIRED), ("roi", 10, ACQUIRED)]
    assert got[0]["length_mm"] == pytest.approx(195.3125) and got[0]["slice_number"] == 11
    assert got[1]["mean"] == pytest.approx(r.mean) and got[1]["map_max"] == pytest.approx(r.map_max)
    assert got[1]["units"] == "HU" and "series_uid" not in got[1]


# ----------------------------------------------------------------------------------------------------- the window
def test_the_m_and_o_tools_on_the_real_window(qtbot, tmp_path, sample_data):
    from medad_viewer.gui.main_window import MainWindow

    path = tmp_path / "ct"
    shutil.copytree(sample_data / "ct-dicom", path)
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(path))
    w.show_slice(10)

    def drag(p0, p1):
        """A left-drag from slice pixel p0 to p1, as the view box reports it."""
        to_scene = w.viewer.image.mapToScene
        w.viewer.vb.draw.emit("start", to_scene(QPointF(*p0)))
        w.viewer.vb.draw.emit("move", to_scene(QPointF((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2)))
        w.viewer.vb.draw.emit("finish", to_scene(QPointF(*p1)))

    w.viewer.setFocus()
    qtbot.keyClick(w.viewer, Qt.Key.Key_M)
    assert w.viewer.vb.tool == "length"
    drag((100.0, 100.0), (100.0, 300.0))
    (_k, line), = w.model.review.measurements_here()
    assert isinstance(line, Length) and line.index == 10
    assert line.p0 == pytest.approx((100.0, 100.0)) and line.p1 == pytest.approx((100.0, 300.0))
    assert [t.toPlainText() for t in w.viewer.measure_labels] == ["195.3 mm"]
    assert w.act_undo.isEnabled() and w.review_panel.undo_button.isEnabled()  # Ctrl+Z would take it back

    qtbot.keyClick(w.viewer, Qt.Key.Key_O)
    assert w.viewer.vb.tool == "roi"
    drag((216.0, 226.0), (296.0, 286.0))
    roi = w.model.review.measurements_here()[1][1]
    assert isinstance(roi, EllipseROI)
    assert (roi.cx, roi.cy, roi.rx, roi.ry) == pytest.approx((256.0, 256.0, 40.0, 30.0))
    r = measure_on(roi, w.model.series)
    label = w.viewer.measure_labels[1].toPlainText()
    assert label.splitlines()[0] == f"{r.mean:.0f} ± {r.sd:.0f} HU"
    assert "map" not in label  # not scored

    # Delete removes the last one on the slice; Ctrl+Z brings it back.
    qtbot.keyClick(w.viewer, Qt.Key.Key_Delete)
    assert [m for _k, m in w.model.review.measurements_here()] == [line]
    assert len(w.viewer.measure_labels) == 1
    qtbot.keyClick(w.viewer, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert [m for _k, m in w.model.review.measurements_here()] == [line, roi]
    assert w.exports.context().snapshot().measurements == [line, roi]  # what File → Export reports
    # Another slice shows none of them.
    w.show_slice(11)
    assert w.viewer.measure_labels == []
    # Drawing annotations is unchanged: the ellipse tool still makes an annotation, not a measurement.
    qtbot.keyClick(w.viewer, Qt.Key.Key_E)
    drag((50.0, 50.0), (90.0, 80.0))
    assert w.model.review.measurements_here() == []
    assert isinstance(w.model.session.review.get(w.model.series.uid, 11).annotations[0], Ellipse)
    w.close()
    qtbot.waitUntil(lambda: not w._loaders and w.scoring.job is None, timeout=30_000)


def test_sizes_on_a_plain_image_are_in_pixels(sample_data):
    """A PNG records no pixel size (it is given 1 mm): its lengths and areas say px, a DICOM's say mm."""
    from medad_viewer.review.measurements import label, measure

    png = load_study(sample_data / "xray" / "00000001_000.png").series[0]
    assert not png.spacing_known and load_study(sample_data / "ct-dicom").series[0].spacing_known
    r = measure(Length((10.0, 10.0), (40.0, 50.0), png.uid), png.slice(0), png.spacing)
    assert label(r, mm=png.spacing_known) == "50.0 px"
    roi = measure(EllipseROI(100.0, 100.0, 20.0, 10.0, png.uid), png.slice(0), png.spacing)
    assert label(roi, mm=False).endswith("px²") and "mm" not in label(roi, mm=False)
