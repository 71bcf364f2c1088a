"""The worker and single widgets on their own: signals, ranking order, threshold slider, tray cards."""

from __future__ import annotations

import os

import threading
import time

import numpy as np
import pytest
from PySide6.QtGui import QPixmap

from medad_viewer.gui.analysis_panel import THRESHOLDS, AnalysisPanel, pct_to_slider, slider_to_pct
from medad_viewer.gui.ranking_panel import RankingPanel
from medad_viewer.gui.reference_tray import ReferenceTray
from medad_viewer.gui.slice_viewer import SliceViewer
from medad_viewer.gui.worker import Worker
from medad_viewer.review.state import Decision, Stroke


def test_worker_delivers_progress_partials_and_result_in_the_ui_thread(qtbot):
    main = threading.get_ident()
    seen = {"progress": [], "partial": [], "threads": set()}

    def job(progress, cancel, emit):
        for i in range(3):
            progress((i + 1) / 3, f"step {i}")
            emit(i)
            time.sleep(0.06)  # beyond the progress coalescing interval
        return "ok"

    w = Worker(job, "t")
    w.progress.connect(lambda f, m: (seen["progress"].append(m), seen["threads"].add(threading.get_ident())))
    w.partial.connect(lambda x: (seen["partial"].append(x), seen["threads"].add(threading.get_ident())))
    with qtbot.waitSignal(w.finished, timeout=5000) as b:
        w.start()
    assert b.args == ["ok"]
    qtbot.waitUntil(lambda: not w.is_running, timeout=5000)
    assert seen["partial"] == [0, 1, 2] and seen["progress"][-1] == "step 2"
    assert seen["threads"] == {main}


def test_worker_failure_and_cancel(qtbot):
    def boom(progress, cancel, emit):
        raise ValueError("the file is damaged")

    w = Worker(boom)
    with qtbot.waitSignal(w.failed, timeout=5000) as b:
        w.start()
    assert b.args == ["the file is damaged"]
    w.wait()

    def slow(progress, cancel, emit):
        while True:
            cancel.raise_if_cancelled()
            time.sleep(0.01)

    w2 = Worker(slow)
    w2.start()
    with qtbot.waitSignal(w2.cancelled, timeout=5000):
        w2.cancel()
    assert w2.wait(5000)

    def oom(progress, cancel, emit):
        raise RuntimeError("CUDA error: out of memory")

    w3 = Worker(oom)
    with qtbot.waitSignal(w3.failed, timeout=5000) as b:
        w3.start()
    assert b.args[0].startswith("Out of memory") and "CUDA error: out of memory" in b.args[0]
    w3.wait()


def test_threshold_slider_round_trip():
    for p in THRESHOLDS:
        assert slider_to_pct(pct_to_slider(p)) == p
    assert slider_to_pct(pct_to_slider(99.01)) == 99.0


def test_analysis_panel_overlay_state(qtbot):
    p = AnalysisPanel()
    qtbot.addWidget(p)
    p.restore_overlay_state({"visible": False, "opacity": 0.3, "threshold_pct": 97.0, "colormap": "viridis",
                             "contour": True})
    assert p.overlay_state() == {"visible": False, "opacity": 0.3, "threshold_pct": 97.0, "colormap": "viridis",
                                 "contour": True}
    p.show_progress(0.5, "Adapting", 75)
    assert "1 min 15 s left" in p.stage.text()


def test_ranking_stays_sorted_as_scores_arrive(qtbot):
    r = RankingPanel()
    qtbot.addWidget(r)
    r.set_series(6, lambda i: QPixmap(8, 8))
    clicked = []
    r.sliceClicked.connect(clicked.append)
    for i, s in [(0, 0.2), (1, 0.9), (2, 0.5), (3, 0.9), (4, 0.1)]:
        r.add_score(i, s, s * 100)
    assert r.ranked_indices() == [1, 3, 2, 0, 4]
    r.add_score(4, 2.0, 100.0)  # rescored: moves to the top, no duplicate
    assert r.ranked_indices() == [4, 1, 3, 2, 0]
    assert r.list.count() == 5
    r.set_threshold(80.0)
    assert "3 flagged" in r.summary.text() and r.flag_spin.value() == 80.0
    r.set_decisions({1: Decision.CONFIRMED})
    r.list.itemClicked.emit(r.list.item(1))
    assert clicked == [1]
    r.set_current(3)
    assert r.list.currentRow() == 2


def test_tray_cards(qtbot):
    t = ReferenceTray()
    qtbot.addWidget(t)
    removed, shown = [], []
    t.removeRequested.connect(removed.append)
    t.showRequested.connect(shown.append)
    cards = [{"pixmap": QPixmap(10, 10), "caption": f"slice {i}", "kind": k, "tooltip": ""}
             for i, k in ((1, "normal"), (4, "abnormal"))]
    t.set_references("Set", cards, current=1)
    assert t.card_count() == 2 and "1 normal, 1 abnormal" in t.title.text()
    t.cards_layout.itemAt(0).widget().remove.click()
    assert removed == [0]
    t.set_references("Set", [], None)
    assert t.card_count() == 0 and not t.save_button.isEnabled()


def test_viewer_overlay_contour_and_drawing(qtbot):
    v = SliceViewer()
    qtbot.addWidget(v)
    v.resize(400, 400)
    v.set_geometry((0.5, 1.0))
    img = np.random.default_rng(0).normal(0, 100, (40, 60)).astype(np.float32)
    v.set_pixels(img, (0.0, 400.0), fit=True)
    amap = np.zeros((40, 60), np.float32)
    amap[10:20, 30:45] = 3.0
    v.set_overlay(amap, threshold=1.0, vmax=4.0, opacity=0.5, colormap="viridis", contour=True)
    assert v.colorbar_visible and v.overlay.opacity() == 0.5
    # The viewer's colours are pyqtgraph's map without its darkest quarter, entry 0 (the threshold) transparent.
    import pyqtgraph as pg

    expected = pg.colormap.get("viridis").getLookupTable(0.25, 1.0, 256, alpha=True)
    expected[0, 3] = 0
    np.testing.assert_array_equal(v.overlay.lut, expected)
    np.testing.assert_array_equal(v.colorbar.colorMap().getLookupTable(0.0, 1.0, 256, alpha=False), expected[:, :3])
    x, y = v.contour.getData()
    assert len(x) > 0 and x.min() >= 30 and x.max() <= 45.5
    v.set_overlay(None)
    assert not v.colorbar_visible
    drawn = []
    v.annotationDrawn.connect(drawn.append)
    v.set_tool("ellipse")
    scene = lambda c, r: v.image.mapToScene(c, r)  # noqa: E731
    v._on_draw("start", scene(10, 10))
    v._on_draw("move", scene(20, 16))
    v._on_draw("finish", scene(30, 20))
    e = drawn[-1]
    assert (e.cx, e.cy, e.rx, e.ry) == pytest.approx((20, 15, 10, 5))
    v.set_tool("brush")
    v._on_draw("start", scene(1, 1))
    v._on_draw("move", scene(5, 1))
    v._on_draw("finish", scene(5, 6))
    assert isinstance(drawn[-1], Stroke) and drawn[-1].points[0] == pytest.approx((1, 1))
    v.set_annotations(drawn)
    assert len(v.annotations.childItems()) == 2
    # Pixel spacing: the scene is in mm, so 60 columns of 0.5 mm span 30 mm.
    assert v.image.mapToParent(60, 40).x() == pytest.approx(30.0)


def test_none_survives_many_void_qt_calls():
    """PySide6 6.12 on CPython 3.11 drops a reference to None on every void call; the gui package guards it.

    Run in a child process: without the guard, CPython aborts ("deallocating None") once the count reaches zero.
    The installed PySide6 may not have the bug, so the leak is also simulated and the guard forced on."""
    import subprocess
    import sys

    code = ("import ctypes, sys\n"
            "import medad_viewer.gui as g; from medad_viewer.gui import _compat\n"
            "from PySide6.QtCore import QPoint\n"
            "p = QPoint(0, 0); n = 3 * sys.getrefcount(None) + 100_000\n"
            "for _ in range(n): p.setX(1)\n"  # the real calls: more than None has references
            "if sys.version_info < (3, 12):\n"
            "    _compat._void_calls_leak_none = lambda: True\n"
            "    assert _compat.guard_none_refcount(), 'guard not applied'\n"
            "    ctypes.c_ssize_t.from_address(id(None)).value -= 10 * n\n"  # a long session's leaked calls
            "    assert sys.getrefcount(None) > 1 << 27, sys.getrefcount(None)\n"
            "    print([None] * 1000 == [None] * 1000)\n"
            "print('survived', n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "survived" in out.stdout
