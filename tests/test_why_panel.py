"""The "Why is this hot?" dock on the real window: the demo study scored (adapted, a tiny budget), Y opens the dock,
a click on the hottest point shows the reference slice and distance that engine.explain gives for that point, with
the head's share beside the bank's; after reopening the study the cached adaptation explains it without a refit."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSettings, Qt

from medad_viewer.engine.detector import DetectorSettings
from medad_viewer.engine.explain import explain_point
from medad_viewer.engine.series_scores import volume_midline_angle
from medad_viewer.engine.preprocess import normalizer_for_series
from medad_viewer.gui.main_window import MainWindow
from medad_viewer.review.why import SCORE_FIRST

from test_gui_main_window import TINY, app_data  # noqa: F401 - the tiny adaptation budget, a private data folder


def make_window(qtbot, tmp_path) -> MainWindow:
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w.scoring.settings_hook = lambda d: DetectorSettings(modality=d["modality"], method="adapted", **TINY)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_demo()
    return w


def close_window(qtbot, w: MainWindow) -> None:
    w.close()
    qtbot.waitUntil(lambda: not w._loaders and w.scoring.job is None, timeout=30_000)


def click_pixel(qtbot, w: MainWindow, row: int, column: int) -> None:
    """A real left click on the viewer at the centre of slice pixel (row, column), once what is on screen has settled
    (a dock just shown resizes the view, which then fits again: a user clicks on what they see)."""
    qtbot.wait(20)
    v = w.viewer
    scene = v.image.mapToScene(QPointF(column + 0.5, row + 0.5))
    pos = v.glw.mapFromScene(scene)
    qtbot.mouseClick(v.glw.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def hottest(w: MainWindow) -> tuple[int, int, int]:
    res = w.model.results[w.model.series.uid]
    top = res.ranked()[0].index
    m = res.get(top).map
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    return top, int(r), int(c)


def test_click_explains_the_point_as_the_engine_does(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    why = w.why
    assert not why.dock.isVisible()
    w.viewer.setFocus()
    qtbot.keyClick(w.viewer, Qt.Key.Key_Y)
    assert why.dock.isVisible() and w.act_why.isChecked()

    # Before scoring the panel says what to do.
    with qtbot.waitSignal(why.refused, timeout=5_000) as refused:
        click_pixel(qtbot, w, 120, 120)
    assert refused.args[0] == SCORE_FIRST and "Score the series first" in why.panel.message.text()

    with qtbot.waitSignal(w.scoringFinished, timeout=120_000) as blocker:
        w.scoring.run()
    outcome = blocker.args[0]
    qtbot.waitUntil(lambda: w.scoring.job is None, timeout=10_000)
    top, r, c = hottest(w)
    w.show_slice(top)
    with qtbot.waitSignal(why.explained, timeout=30_000) as got:
        click_pixel(qtbot, w, r, c)
    ans = got.args[0]
    assert (ans.index, ans.row, ans.column) == (top, r, c)

    # The same point through the engine, with the run's own detector and references.
    s = w.model.series
    norm = normalizer_for_series(s)
    e = explain_point(outcome.fitted, norm(s.slice(top)), r, c, volume_midline_angle(outcome.fitted, s, norm))
    ref = outcome.normals[e.reference]
    assert ans.explanation.entry == e.entry and ans.reference_slice_number == ref.index + 1
    assert ans.explanation.map_value == pytest.approx(e.map_value, abs=1e-6)  # with the volume's axis angle
    p = why.panel
    assert f"reference slice {ref.index + 1}" in p.reference_caption.text()
    assert f"{e.distance:.3f}" in p.distance.text()
    assert ("mirrored" in p.reference_caption.text()) == e.mirrored
    # Adapted: the head's share beside the bank's, adding up to the map value shown.
    assert "Memory bank" in p.components.text() and "Learned head" in p.components.text()
    assert f"{e.map_value:+.2f}" in p.components.text()
    assert abs(e.map_value - float(w.model.results[s.uid].get(top).map[r, c])) < 0.05  # the map kept is float16
    for img in (p.query_image, p.reference_image):
        assert img.pixmap() is not None and img.pixmap().width() >= 160
    # The point is marked on the viewer, with the patch's box; another slice hides the mark.
    assert why.marker.isVisible()
    _y0, x0, _y1, x1 = e.box
    assert why.marker.rect().contains(QPointF(c + 0.5, r + 0.5))
    assert why.marker.rect().width() == pytest.approx(x1 - x0)
    w.show_slice(top + 1 if top + 1 < s.num_slices else top - 1)
    assert not why.marker.isVisible()
    w.show_slice(top)

    # On a reformatted plane a click explains the acquired voxel under it.
    m = w.model
    m.set_crosshair(m.acquired_plane(), top, r, c)
    assert m.set_plane("coronal") == ""
    k, vr, vc = m.plane_view().to_plane(top, r, c)
    assert m.view_index() == k
    with qtbot.waitSignal(why.explained, timeout=30_000) as got:
        click_pixel(qtbot, w, vr, vc)
    assert (got.args[0].index, got.args[0].row, got.args[0].column) == (top, r, c)
    assert got.args[0].explanation.entry == e.entry and why.marker.isVisible()
    m.set_plane(m.acquired_plane())
    assert not why.marker.isVisible()  # marked in the coronal view

    # In the 1x3 layout a click on the sagittal view beside explains the acquired voxel under it too.
    m.set_layout("1x3")
    sag = next(v for v in w.planes.side_viewers if v.plane == "sagittal")
    k, sr, sc = m.plane_view("sagittal").to_plane(top, r, c)
    assert m.view_index("sagittal") == k
    qtbot.waitUntil(lambda: sag.isVisible() and sag.glw.viewport().width() > 100, timeout=5_000)
    qtbot.wait(100)  # laid out
    with qtbot.waitSignal(why.explained, timeout=30_000) as got:
        scene = sag.image.mapToScene(QPointF(sc + 0.5, sr + 0.5))
        qtbot.mouseClick(sag.glw.viewport(), Qt.MouseButton.LeftButton, pos=sag.glw.mapFromScene(scene))
    assert (got.args[0].index, got.args[0].row, got.args[0].column) == (top, r, c)
    m.set_layout("1x1")

    # Air outside the head: nothing to explain there.
    with qtbot.waitSignal(why.explained, timeout=30_000) as got:
        click_pixel(qtbot, w, 0, 0)
    assert "outside the scored region" in why.panel.message.text()

    # Hidden, the panel leaves clicks alone.
    qtbot.keyClick(w.viewer, Qt.Key.Key_Y)
    assert not why.dock.isVisible()
    with qtbot.assertNotEmitted(why.explained, wait=300), qtbot.assertNotEmitted(why.refused, wait=0):
        click_pixel(qtbot, w, r, c)
    close_window(qtbot, w)

    # Reopened: the scores come from disk, the detector from the adaptation cache (nothing is fitted again).
    w2 = make_window(qtbot, tmp_path)
    assert w2.model.run is None and len(w2.model.results[w2.model.series.uid]) == s.num_slices
    w2.show_slice(top)
    w2.why.toggle()
    with qtbot.waitSignal(w2.why.explained, timeout=60_000) as got:
        click_pixel(qtbot, w2, r, c)
    again = got.args[0]
    assert again.explanation.entry == e.entry and again.reference_slice_number == ref.index + 1
    assert f"{e.distance:.3f}" in w2.why.panel.distance.text()
    close_window(qtbot, w2)
