"""The "Why is this hot?" dock (View → Why is this hot?, key Y): click a point of the image with the window/level
tool and it shows the query patch beside the nearest normal reference patch the memory bank matched, both at the
viewer's window, with the distance against the normal spread and, for adapted runs, the head's share beside the
bank's. The logic is review/why.py's; this file only shows its answers, runs it in the one worker (gui/worker.py)
and marks the point on the main viewer."""

from __future__ import annotations


import numpy as np
from PySide6.QtCore import QObject, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (QDockWidget, QGraphicsRectItem, QGridLayout, QLabel, QSizePolicy, QVBoxLayout,
                               QWidget)

from ..io.windowing import to_uint8
from ..review.why import Crop, WhyAnswer, WhyExplainer, WhyRequest, describe
from .study_browser import pixmap_from_gray
from .worker import Worker

MARK_COLOR = QColor(255, 140, 0)  # the patch outline, in the crops and on the viewer: apart from drawings and lengths
CROP_PX = 180
HINT = ("Click a point of the image (window/level tool) to see the normal reference patch it was compared with.")


def crop_pixmap(crop: Crop, window: tuple[float, float], inverted: bool = False, size: int = CROP_PX) -> QPixmap:
    """A crop at the viewer's window (outside the slice black), scaled to `size`, its patch outlined."""
    inside = np.isfinite(crop.pixels)
    gray = to_uint8(np.where(inside, crop.pixels, 0.0), window[0], window[1])
    if inverted:
        gray = 255 - gray
    gray[~inside] = 0
    pm = pixmap_from_gray(gray).scaled(size, size, Qt.AspectRatioMode.IgnoreAspectRatio,
                                       Qt.TransformationMode.SmoothTransformation)
    k = size / crop.pixels.shape[0]
    y0, x0, y1, x1 = crop.box
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QPen(MARK_COLOR, 2))
    p.drawRect(QRectF(x0 * k, y0 * k, (x1 - x0) * k, (y1 - y0) * k))
    p.end()
    return pm


def _label(text: str = "", bold: bool = False, small: bool = False) -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    f = lab.font()
    f.setBold(bold)
    if small:
        f.setPointSizeF(f.pointSizeF() * 0.92)
    lab.setFont(f)
    return lab


class WhyPanel(QWidget):
    """Two crops with their captions, the distance in words, the components' shares."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = _label(HINT)
        self.query_image, self.reference_image = QLabel(), QLabel()
        for img in (self.query_image, self.reference_image):
            img.setFixedSize(CROP_PX, CROP_PX)
            img.setAlignment(Qt.AlignmentFlag.AlignCenter)
            img.setStyleSheet("QLabel { background: #101010; color: #9a9a9a; border: 1px solid #3a3a3a; }")
        self.query_title = _label("This point", bold=True)
        self.reference_title = _label("Nearest normal patch", bold=True)
        self.query_caption, self.reference_caption = _label(small=True), _label(small=True)
        self.distance = _label()
        self.components = _label()
        self.components.setTextFormat(Qt.TextFormat.RichText)

        grid = QGridLayout()
        grid.setHorizontalSpacing(10)
        grid.addWidget(self.query_title, 0, 0)
        grid.addWidget(self.reference_title, 0, 1)
        grid.addWidget(self.query_image, 1, 0)
        grid.addWidget(self.reference_image, 1, 1)
        grid.addWidget(self.query_caption, 2, 0, Qt.AlignmentFlag.AlignTop)
        grid.addWidget(self.reference_caption, 2, 1, Qt.AlignmentFlag.AlignTop)
        for col in (0, 1):
            grid.setColumnMinimumWidth(col, CROP_PX)
        lay = QVBoxLayout(self)
        lay.addWidget(self.message)
        lay.addLayout(grid)
        lay.addWidget(self.distance)
        lay.addWidget(self.components)
        lay.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.answer: WhyAnswer | None = None
        self.clear()

    def clear(self, message: str = HINT) -> None:
        self.answer = None
        self.message.setText(message)
        for img in (self.query_image, self.reference_image):
            img.clear()
        self.query_caption.setText("")
        self.reference_caption.setText("")
        self.distance.setText("")
        self.components.setText("")

    def show_busy(self) -> None:
        self.message.setText("Explaining…")

    def show_answer(self, ans: WhyAnswer, window: tuple[float, float], inverted: bool = False) -> None:
        self.answer = ans
        t = describe(ans)
        self.message.setText(t.message or "")
        self.message.setVisible(bool(t.message))
        self.query_caption.setText(t.query)
        self.reference_caption.setText(t.reference or "")
        self.distance.setText(t.distance)
        if t.components:
            rows = "".join(f"<tr><td>{n}</td><td align='right'>{v}</td><td align='right'>× {w}</td>"
                           f"<td align='right'><b>{c}</b></td></tr>" for n, v, w, c in t.components)
            total = ans.explanation.map_value
            self.components.setText(
                "<table width='100%' cellspacing='0' cellpadding='3'><tr><td><i>component</i></td>"
                "<td align='right'><i>normal scale</i></td><td align='right'><i>weight</i></td>"
                "<td align='right'><i>share</i></td></tr>" + rows +
                f"<tr><td colspan='3'>Map value (sum)</td><td align='right'><b>{total:+.2f}</b></td></tr></table>"
                "<br><small>On the normal scale 0 is the normal references' median, 1 their 99th percentile."
                "</small>")
        else:
            self.components.setText("")
        self.render(window, inverted)

    def render(self, window: tuple[float, float], inverted: bool = False) -> None:
        """The crops again at another window (the viewer's changed)."""
        ans = self.answer
        if ans is None:
            return
        for img, crop, none in ((self.query_image, ans.query, ""),
                                (self.reference_image, ans.reference_crop, "not available")):
            if crop is None:
                img.clear()
                img.setText(none)
            else:
                img.setPixmap(crop_pixmap(crop, window, inverted))


class WhyDock(QObject):
    """The dock, its toggle action, the clicks it explains (in the window's worker) and the mark on the viewer."""

    explained = Signal(object)  # WhyAnswer, once shown
    refused = Signal(str)  # the reason a click could not be explained, once shown

    def __init__(self, win, action=None) -> None:
        super().__init__(win)
        self.win = win
        self.model = win.model
        self.panel = WhyPanel()
        self.dock = QDockWidget("Why is this hot?", win)
        self.dock.setObjectName("why")
        self.dock.setWidget(self.panel)
        self.dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                              | QDockWidget.DockWidgetFeature.DockWidgetFloatable
                              | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.dock.setMinimumWidth(2 * CROP_PX + 40)
        win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        ranking = getattr(win, "ranking_dock", None)
        if ranking is not None:
            win.tabifyDockWidget(ranking, self.dock)
        self.dock.hide()
        self.action = action
        if action is not None:
            action.setCheckable(True)
            self.dock.visibilityChanged.connect(lambda _v: action.setChecked(self.dock.isVisible()))
        self.explainer = WhyExplainer()
        self._worker: Worker | None = None
        self._pending: tuple[WhyRequest, tuple] | None = None
        self._mark_at: tuple | None = None  # (plane, view slice) of the marked point
        self.marker = QGraphicsRectItem()
        pen = QPen(MARK_COLOR, 2)
        pen.setCosmetic(True)
        self.marker.setPen(pen)
        self.marker.setZValue(45)
        self.marker.hide()
        win.viewer.vb.addItem(self.marker)
        win.viewer.pointClicked.connect(self.clicked)
        for v in win.planes.side_viewers:  # the 1x3 layout's other planes: their voxel is explained
            v.pointClicked.connect(lambda r, c, v=v: self.clicked(r, c, plane=v.plane))
        ev = self.model.events
        shown = self.model.display.events
        for emitter in (shown.window, shown.changed):
            emitter.connect(self._view_changed)
        for emitter in (ev.slice, ev.plane, ev.series, shown.changed, ev.layout):
            emitter.connect(lambda _e: self._update_marker())
        self.model.scoring.events.scores.connect(self._scores_replaced)

    # ----------------------------------------------------------------------------------------------- showing
    def toggle(self) -> None:
        if self.dock.isVisible():
            self.dock.hide()
            self.marker.hide()
        else:
            self.dock.show()
            self.dock.raise_()
            self._update_marker()

    def _window(self) -> tuple[tuple[float, float], bool]:
        c, w, _name = self.model.display.window()
        return (c, w), bool(getattr(self.model.display, "inverted", False))

    def _view_changed(self, _event) -> None:
        if self.panel.answer is not None and self.model.series is not None:
            self.panel.render(*self._window())

    def _scores_replaced(self, event) -> None:
        if self.panel.answer is not None and event.series_uid == self.panel.answer.series_uid:
            self.panel.clear("The scores of this series changed: click a point to explain the new map.")
            self._mark_at = None
            self._update_marker()

    # ----------------------------------------------------------------------------------------------- clicks
    def _view_key(self) -> tuple:
        m = self.model
        plane = getattr(m, "plane", "")
        return (plane, m.view_index() if hasattr(m, "view_index") else m.index)

    def clicked(self, row: int, column: int, plane: str | None = None) -> None:
        """A plain click on the main viewer (or, with `plane`, a view of the 1x3 layout): explained while the panel
        is shown."""
        if not self.dock.isVisible():
            return
        if plane is None or plane == getattr(self.model, "plane", None):
            self._mark(row, column)
        req = self.explainer.request(self.model, row, column, plane)
        if isinstance(req, str):
            self.panel.clear(req)
            self.refused.emit(req)
            return
        if self._worker is not None and self._worker.is_running:
            self._pending = (req, (row, column))  # the latest click wins; explained when this one ends
            return
        self._start(req)

    def _start(self, req: WhyRequest) -> None:
        self.panel.show_busy()
        w = self._worker = Worker(lambda progress, cancel, emit: self.explainer.explain(req), "why", self.win)
        w.finished.connect(self._answered)
        w.failed.connect(lambda msg: self.panel.clear(f"⚠ Could not explain this point: {msg}"))
        w.done.connect(self._next)
        self.win._start_loader(w)

    def _next(self) -> None:
        self._worker = None
        if self._pending is not None:
            req, _ = self._pending
            self._pending = None
            self._start(req)

    def _answered(self, ans: WhyAnswer) -> None:
        if self._pending is not None or self.model.series is None or ans.series_uid != self.model.series.uid:
            return  # a later click is on its way, or another series is shown
        self.panel.show_answer(ans, *self._window())
        e = ans.explanation
        if e is not None and self._is_acquired():
            y0, x0, y1, x1 = e.box
            self._mark_rect(QRectF(x0, y0, x1 - x0, y1 - y0))
        self.explained.emit(ans)

    # ----------------------------------------------------------------------------------------------- the mark
    def _is_acquired(self) -> bool:
        m = self.model
        return not hasattr(m, "acquired_plane") or getattr(m, "plane", "") == m.acquired_plane()

    def _mark(self, row: int, column: int) -> None:
        """A small square at the clicked pixel (the patch's box replaces it once explained)."""
        self._mark_rect(QRectF(column - 3.5, row - 3.5, 8.0, 8.0))

    def _mark_rect(self, rect: QRectF) -> None:
        self.marker.setRect(rect)
        self._mark_at = self._view_key()
        self._update_marker()

    def _update_marker(self) -> None:
        shown = (self._mark_at is not None and self.dock.isVisible() and self.model.series is not None
                 and self._view_key() == self._mark_at)
        if shown:
            self.marker.setTransform(self.win.viewer.image.transform())
        self.marker.setVisible(shown)


def attach_why_panel(win, action=None) -> WhyDock:
    """Create the dock on the main window; `action` (View → Why is this hot?, Y) toggles it."""
    return WhyDock(win, action)
