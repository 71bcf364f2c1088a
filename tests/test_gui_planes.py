"""The real window's planes and reading-room gestures: Ctrl+1/2/3 planes, the 1×3 layout (L), the crosshair with
Shift+move, scrolling each plane, PgUp/PgDn series, Shift+↑/↓ ten slices, Home/End, rotation (Ctrl+R), Shift+drag
pan, Ctrl+wheel zoom, and the map reformatted (and marked when interpolated) in the other planes."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from medad_viewer.engine.records import SliceScore
from medad_viewer.review.events import ScoresReplaced
from medad_viewer.review.results import ScoreResults
from medad_viewer.review.state import Ellipse
from tests.test_gui_main_window import REPO, close_window, key, make_window, open_study, wheel

DEMO = REPO / "resources" / "demo" / "brain1_image.nrrd"


@pytest.fixture(autouse=True)
def app_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAD_VIEWER_DATA_DIR", str(tmp_path / "appdata"))


def shown(v) -> np.ndarray:
    return v._pixels


def test_plane_keys_show_the_reformatted_slice_and_scroll_it(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, DEMO)
    m = w.model
    acquired = w.model.index
    key(qtbot, w, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    assert m.plane == "coronal" and w.plane_actions["coronal"].isChecked()
    np.testing.assert_array_equal(shown(w.viewer), m.view_series().slice(m.view_index()))
    assert shown(w.viewer).shape == (m.series.num_slices, m.series.columns)
    assert "Coronal" in w.viewer.top_left.text()
    k = m.view_index()
    wheel(w, -1)  # next coronal slice: the crosshair moves, the acquired slice stays
    assert m.view_index() == k + 1 and w.model.index == acquired
    np.testing.assert_array_equal(shown(w.viewer), m.view_series().slice(k + 1))
    key(qtbot, w, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    assert m.view_index() == k + 11
    key(qtbot, w, Qt.Key.Key_End)
    assert m.view_index() == m.view_series().num_slices - 1
    key(qtbot, w, Qt.Key.Key_Home)
    assert m.view_index() == 0
    key(qtbot, w, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    assert m.plane == "sagittal" and shown(w.viewer).shape == (m.series.num_slices, m.series.rows)
    key(qtbot, w, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    assert m.plane == "axial"
    np.testing.assert_array_equal(shown(w.viewer), m.series.slice(w.model.index))
    key(qtbot, w, Qt.Key.Key_Up)
    assert w.model.index == acquired - 1
    close_window(qtbot, w)


def test_three_planes_and_the_crosshair_follow_a_shift_move(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, DEMO)
    m = w.model
    key(qtbot, w, Qt.Key.Key_L)
    assert m.layout == "1x3" and w.act_layout.isChecked()
    cor, sag = w.planes.side_viewers
    assert cor.isVisible() and sag.isVisible() and (cor.plane, sag.plane) == ("coronal", "sagittal")
    np.testing.assert_array_equal(shown(cor), m.view_series("coronal").slice(m.view_index("coronal")))
    np.testing.assert_array_equal(shown(sag), m.view_series("sagittal").slice(m.view_index("sagittal")))
    # Shift held, the mouse moves over the coronal view: the axial slice and the sagittal one follow
    qtbot.keyPress(cor, Qt.Key.Key_Shift, Qt.KeyboardModifier.ShiftModifier)
    target_row, target_col = 5, 60  # coronal row 5 = acquired slice n-1-5; column 60 = the sagittal slice
    scene = cor.image.mapToScene(QPointF(target_col + 0.5, target_row + 0.5))
    pos = cor.glw.mapFromScene(scene)
    cor.glw.scene().sigMouseMoved.emit(cor.glw.mapToScene(pos))
    if QApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier:
        pass  # the real path: Shift is down
    else:  # a platform whose test events do not set the modifier state: the signal the move would send
        cor.crosshairMoved.emit(target_row, target_col)
    qtbot.keyRelease(cor, Qt.Key.Key_Shift)
    assert w.model.index == m.series.num_slices - 1 - target_row
    assert m.view_index("sagittal") == target_col
    np.testing.assert_array_equal(shown(w.viewer), m.series.slice(w.model.index))
    np.testing.assert_array_equal(shown(sag), m.view_series("sagittal").slice(target_col))
    # the crosshair lines cross at the point in every view
    assert cor.crosshair_point == (target_row, target_col)
    assert w.viewer.crosshair_point == m.crosshair
    key(qtbot, w, Qt.Key.Key_X)
    xs = w.viewer.crosshair.getData()[0]
    assert not w.viewer.crosshair_shown and (xs is None or len(xs) == 0)
    # scrolling the sagittal view moves the axial crosshair column
    sag_k = m.view_index("sagittal")
    w.planes.scroll(sag, 3)
    assert m.view_index("sagittal") == sag_k + 3
    key(qtbot, w, Qt.Key.Key_L)
    assert m.layout == "1x1" and not cor.isVisible()
    close_window(qtbot, w)


def test_the_map_and_drawings_are_reformatted_and_interpolation_is_marked(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, DEMO)
    m = w.model
    s = m.series
    w.show_slice(12)
    m.review.add_annotation(Ellipse(128.0, 120.0, 20.0, 12.0))
    res = ScoreResults(s.uid, s.num_slices)
    for k in (10, 14):
        amap = np.zeros((s.rows, s.columns), np.float32)
        amap[100:140, 100:160] = 5.0
        res.put(SliceScore(k, 3.0, 99.0, amap))
    m.results[s.uid] = res
    m.scoring.events.scores.emit(ScoresReplaced(s.uid))
    key(qtbot, w, Qt.Key.Key_L)
    m.set_crosshair("axial", 12, 120, 128)
    cor = w.planes.side_viewers[0]
    assert cor._map is not None and "interpolated" in cor.top_left.text()
    rows = np.nonzero(np.nan_to_num(cor._map).max(axis=1) > 4.0)[0]
    assert set(rows) == {s.num_slices - 1 - k for k in (10, 11, 12, 13, 14)}  # slices 11-13 interpolated
    assert len(cor.annotation_outline.getData()[0]) > 0  # the ellipse on slice 12 is cut by the coronal plane
    # fully scored between: no mark
    for k in (11, 12, 13):
        res.put(SliceScore(k, 3.0, 99.0, np.zeros((s.rows, s.columns), np.float32)))
    m.scoring.events.scores.emit(ScoresReplaced(s.uid))
    assert "interpolated" not in cor.top_left.text()
    close_window(qtbot, w)


def test_series_keys_rotation_pan_and_zoom(qtbot, tmp_path, sample_data):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, sample_data / "mr-brain")
    assert w.browser.series_count() >= 2
    assert w.model.series_row == 0
    key(qtbot, w, Qt.Key.Key_PageDown)
    assert w.model.series_row == 1
    key(qtbot, w, Qt.Key.Key_PageUp)
    assert w.model.series_row == 0
    key(qtbot, w, Qt.Key.Key_PageUp)  # stays on the first
    assert w.model.series_row == 0
    key(qtbot, w, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert w.model.display.rotation == 1 and w.viewer.rotation == 1
    # a quarter turn: the image's columns now run down the screen
    t = w.viewer.image.transform()
    p0, p1 = t.map(QPointF(0, 0)), t.map(QPointF(10, 0))
    assert abs(p1.x() - p0.x()) < 1e-6 and p1.y() > p0.y()
    key(qtbot, w, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert w.model.display.rotation == 0
    key(qtbot, w, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    key(qtbot, w, Qt.Key.Key_Space)
    assert w.model.display.rotation == 0 and w.viewer.rotation == 0
    # Shift+drag pans
    vb = w.viewer.vb
    before = vb.viewRect()
    vp = w.viewer.glw.viewport()
    centre = QPoint(vp.width() // 2, vp.height() // 2)
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, centre)
    for dx in (10, 20, 40, 60):
        qtbot.mouseMove(vp, centre + QPoint(dx, 0))
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier, centre + QPoint(60, 0))
    after = vb.viewRect()
    assert after.width() == pytest.approx(before.width())
    assert after.left() < before.left() - 1.0  # the image moved right: the view's left edge moved left
    assert w.viewer.window == pytest.approx(w.model.display.window()[:2])  # a pan is not a window drag
    # Ctrl+wheel zooms
    c = QPointF(vp.width() / 2, vp.height() / 2)
    ev = QWheelEvent(c, QPointF(vp.mapToGlobal(c.toPoint())), QPoint(0, 0), QPoint(0, 240), Qt.MouseButton.NoButton,
                     Qt.KeyboardModifier.ControlModifier, Qt.ScrollPhase.NoScrollPhase, False)
    index = w.model.index
    QApplication.sendEvent(vp, ev)
    assert vb.viewRect().width() < after.width() * 0.95 and w.model.index == index
    close_window(qtbot, w)


def test_cine_runs_through_the_main_views_plane(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, DEMO)
    m = w.model
    key(qtbot, w, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    acquired, k = w.model.index, m.view_index()
    key(qtbot, w, Qt.Key.Key_K)
    assert m.display.cine and w.display.cine_timer.isActive()
    qtbot.waitUntil(lambda: m.view_index() >= k + 3, timeout=5_000)  # 10 slices a second
    assert w.model.index == acquired  # coronal slices advance; the acquired slice stays
    np.testing.assert_array_equal(shown(w.viewer), m.view_series().slice(m.view_index()))
    key(qtbot, w, Qt.Key.Key_K)
    assert not w.display.cine_timer.isActive()
    close_window(qtbot, w)
