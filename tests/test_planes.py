"""Axial, coronal and sagittal views (io/planes.py) and the viewer model's planes, crosshair and reformatted maps:
geometry against the acquired series on real data, the radiological orientation of each plane, no copy of the
volume, and maps interpolated (and said to be) between scored slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medad_viewer.io import Series, load_study
from medad_viewer.io.planes import PLANES, acquired_plane, available_planes, plane_view
from medad_viewer.engine.records import SliceScore
from medad_viewer.review.events import CrosshairMoved, PlaneChanged
from medad_viewer.review.results import ScoreResults
from medad_viewer.review.state import Ellipse
from medad_viewer.review.viewer_model import ViewerModel

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "resources" / "demo" / "brain1_image.nrrd"


@pytest.fixture(autouse=True)
def app_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAD_VIEWER_DATA_DIR", str(tmp_path / "appdata"))


def _columns(series: Series) -> np.ndarray:
    return np.asarray(series.direction).reshape(3, 3)


@pytest.mark.parametrize("where", ["ct-dicom", "ct-nifti/example_ct_sm.nii.gz", "demo"])
def test_every_plane_shows_the_same_voxels_at_the_same_place(sample_data, where):
    path = DEMO if where == "demo" else sample_data / where
    s = load_study(path).series[0]
    assert acquired_plane(s) == "axial" and available_planes(s) == PLANES
    rng = np.random.default_rng(1)
    for plane in PLANES:
        pv = plane_view(s, plane)
        ps = pv.series
        assert np.shares_memory(ps.volume(), s.volume()), "a reformat must not copy the volume"
        assert sorted(ps.volume().shape) == sorted(s.volume().shape)
        for _ in range(50):
            k, r, c = (int(rng.integers(n)) for n in ps.volume().shape)
            acq = pv.from_plane(k, r, c)
            assert pv.to_plane(*acq) == (k, r, c)
            assert ps.volume()[k, r, c] == s.volume()[acq]
            np.testing.assert_allclose(ps.voxel_position(k, r, c), s.voxel_position(*acq), atol=1e-4)
        # a cut of the acquired-layout volume is the plane's slice
        np.testing.assert_array_equal(pv.take(s.volume(), 2), ps.volume()[2])
        d = _columns(ps)
        right, down, through = d[:, 0], d[:, 1], d[:, 2]
        if plane == "axial":
            assert right[0] > 0.9 and down[1] > 0.9  # patient right on the left (L to the right), anterior up
        elif plane == "coronal":
            assert right[0] > 0.9 and down[2] < -0.9 and through[1] < -0.9  # head up; slices posterior → anterior
        else:
            assert right[1] > 0.9 and down[2] < -0.9 and through[0] > 0.9  # anterior on the left, head up


def test_a_sagittal_acquisition_is_reformatted_to_axial_with_the_usual_orientation():
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 1000, size=(12, 30, 40)).astype(np.int16)  # slices L, rows -S (head up), columns P
    direction = (0.0, 0.0, 1.0,   # columns run along P (LPS y) ... as the 3x3 row-major: rows are L, P, S
                 1.0, 0.0, 0.0,
                 0.0, -1.0, 0.0)
    s = Series.from_array(vol, uid="sag", modality="MR", spacing=(0.5, 0.7, 3.0), origin=(10.0, -20.0, 30.0),
                          direction=direction)
    assert acquired_plane(s) == "sagittal"
    assert plane_view(s, "sagittal").series is s  # the acquired plane is shown as stored
    ax = plane_view(s, "axial").series
    d = _columns(ax)
    assert d[0, 0] > 0.9 and d[1, 1] > 0.9 and d[2, 2] > 0.9
    assert ax.volume().shape == (30, 40, 12) and ax.spacing == (3.0, 0.5, 0.7)
    k, r, c = 5, 7, 3
    acq = plane_view(s, "axial").from_plane(k, r, c)
    np.testing.assert_allclose(ax.voxel_position(k, r, c), s.voxel_position(*acq), atol=1e-6)
    # axial slices run inferior → superior: the next slice lies 0.7 mm higher
    assert ax.voxel_position(k + 1, r, c)[2] - ax.voxel_position(k, r, c)[2] == pytest.approx(0.7)


def test_a_single_image_has_only_its_own_plane():
    s = Series.from_array(np.zeros((20, 30), np.float32), uid="png")
    assert available_planes(s) == ("axial",)
    assert plane_view(s, "coronal").series is s


def _model(path=DEMO) -> ViewerModel:
    from tests.test_viewer_model import payload  # the load job's payload, without Qt

    m = ViewerModel()
    assert m.load_finished(m.begin_load(), payload(path))
    m.select_series(0)
    return m


def test_scrolling_a_reformatted_plane_moves_the_crosshair_and_the_acquired_slice():
    m = _model()
    events = []
    m.events.connect_all(events.append)
    s = m.series
    assert m.plane == "axial" and m.view_series() is s
    assert m.set_plane("coronal") == "" and m.plane == "coronal" and PlaneChanged("coronal") in events
    start = m.index
    k0, r0, c0 = m.view_point()
    m.show_plane_slice("coronal", k0 + 5)  # coronal slices run posterior → anterior: the row moves up
    assert m.index == start and m.crosshair == (m.crosshair[0], c0) and m.view_index() == k0 + 5
    assert m.crosshair[0] == s.rows - 1 - (k0 + 5)
    # Shift+move in the sagittal view: the acquired slice follows the sagittal row (superior is up)
    m.set_crosshair("sagittal", m.view_index("sagittal"), 3, 100)
    assert m.index == s.num_slices - 1 - 3 and CrosshairMoved(m.index, *m.crosshair) in events
    assert m.view_point("axial") == (m.index, *m.crosshair)
    # the plane and layout are kept with the session
    m.set_layout("1x3")
    assert m.session.view["plane"] == "coronal" and m.session.view["layout"] == "1x3"


def test_a_reformatted_map_is_interpolated_between_scored_slices_and_says_so():
    m = _model()
    s = m.series
    res = ScoreResults(s.uid, s.num_slices)
    h, w = 64, 64
    for k in (4, 8):  # two scored slices, three unscored between them
        compact = np.full((h, w), float(k), dtype=np.float16)
        res.put(SliceScore(k, float(k), 50.0, compact, (s.rows, s.columns)))
    m.results[s.uid] = res
    pm = m.plane_map("coronal")
    assert pm is not None and pm.interpolated
    assert pm.values.shape == (m.view_series("coronal").rows, m.view_series("coronal").columns)
    # coronal rows run head (last acquired slice) to feet: acquired slice k is row num_slices - 1 - k
    rows = {k: s.num_slices - 1 - k for k in (4, 5, 6, 8)}
    col = pm.values.shape[1] // 2
    assert pm.values[rows[4], col] == pytest.approx(4.0)
    assert pm.values[rows[6], col] == pytest.approx(6.0, abs=1e-3)  # halfway: linear between 4 and 8
    assert pm.values[rows[5], col] == pytest.approx(5.0, abs=1e-3)
    assert np.isnan(pm.values[s.num_slices - 1 - 12, col])  # outside the scored range: no map
    assert not m.plane_map("axial", 4).interpolated
    assert m.plane_map("axial", 5) is None
    # all slices between scored: nothing interpolated
    for k in (5, 6, 7):
        res.put(SliceScore(k, float(k), 50.0, np.full((h, w), float(k), np.float16), (s.rows, s.columns)))
    assert not m.plane_map("coronal").interpolated
    p = m.probe(rows[6], col, plane="coronal")
    assert p.index == 6 and p.map_value == pytest.approx(6.0, abs=1e-3)


def test_annotations_are_cut_by_the_other_planes():
    m = _model()
    s = m.series
    m.show_slice(10)
    m.review.add_annotation(Ellipse(120.0, 100.0, 20.0, 10.0))
    m.set_crosshair("axial", 10, 100, 120)  # through the ellipse's centre
    cor = m.plane_annotations("coronal")
    assert cor is not None
    rows, cols = np.nonzero(cor)
    assert set(rows) == {s.num_slices - 1 - 10}  # only acquired slice 10, which is coronal row n-1-10
    assert cols.min() == pytest.approx(100, abs=1) and cols.max() == pytest.approx(139, abs=1)
    sag = m.plane_annotations("sagittal")
    r2, c2 = np.nonzero(sag)
    assert set(r2) == {s.num_slices - 1 - 10} and c2.min() == pytest.approx(90, abs=1) and c2.max() == pytest.approx(109, abs=1)
    assert m.plane_annotations("axial") is None  # the acquired plane draws the shapes themselves


def test_drawing_on_a_reformatted_plane_is_refused_with_a_reason():
    m = _model()
    said = []
    m.events.say.connect(lambda e: said.append(e.text))
    m.set_plane("sagittal")
    m.review.add_annotation(Ellipse(10.0, 10.0, 5.0, 5.0))
    assert not m.session.review.get(m.series.uid, m.index).annotations
    assert said and "Ctrl+1" in said[-1]
    m.set_plane("axial")
    m.review.add_annotation(Ellipse(10.0, 10.0, 5.0, 5.0))
    assert len(m.session.review.get(m.series.uid, m.index).annotations) == 1


def test_a_reformat_across_uneven_slices_says_so():
    vol = np.zeros((5, 8, 8), np.int16)
    even = Series.from_array(vol, uid="even", spacing=(1.0, 1.0, 2.0))
    uneven = Series.from_array(vol, uid="uneven", spacing=(1.0, 1.0, 2.0),
                               positions=np.array([0.0, 2.0, 4.0, 7.0, 9.0]))
    assert not plane_view(even, "coronal").uneven
    pv = plane_view(uneven, "coronal")
    assert pv.uneven and pv.series.spacing[1] == pytest.approx(2.25)  # the mean step, along the coronal rows


def test_lines_of_each_slice_make_the_same_cut_as_the_volume():
    """What the viewer and the report cut line by line (no map volume) equals the plane's cut of the volume, at full
    and at a coarser (compact map) resolution, for an axial and a sagittal acquisition."""
    rng = np.random.default_rng(0)
    for direction in ((1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 1, 1, 0, 0, 0, -1, 0)):
        s = Series.from_array(np.zeros((7, 9, 11), np.int16), uid="x", direction=direction)
        for vol in (rng.random((7, 9, 11)), rng.random((7, 4, 5))):
            for plane in PLANES:
                pv = plane_view(s, plane)
                if pv.is_acquired:
                    continue
                for i in range(pv.series.num_slices):
                    lines = np.stack([pv.line_of(vol[k], i) for k in range(7)])
                    np.testing.assert_array_equal(pv.orient(lines), pv.take(vol, i))
