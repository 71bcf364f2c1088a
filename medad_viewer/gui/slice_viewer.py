"""SliceViewer: one slice with window/level, the anomaly overlay with its colour bar, annotations and corner text.

The viewer only displays and forwards gestures; the main window decides what slice, window and overlay to show.
Scene coordinates are millimetres (each image item is scaled by the pixel spacing), so the aspect is always true.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QGuiApplication, QPainterPath, QPen, QTransform
from PySide6.QtWidgets import (QGraphicsEllipseItem, QGraphicsPathItem, QLabel, QSizePolicy, QVBoxLayout,
                               QWidget)

from ..io.colormaps import DEFAULT_COLORMAP, overlay_lut
from ..review.measurements import EllipseROI, Length, length_mm
from ..review.state import Ellipse, Stroke

ANNOTATION_COLOR = QColor(80, 220, 255)
MEASURE_COLOR = QColor(255, 214, 10)  # lengths and ROIs: yellow, apart from the cyan drawings
DRAW_TOOLS = ("ellipse", "brush", "length", "roi")  # the tools whose left-drag draws rather than windows


class ViewerBox(pg.ViewBox):
    """ViewBox with the viewer's gestures: wheel scrolls slices (Ctrl+wheel zooms), left-drag windows or draws,
    Shift+left-drag, middle-drag pan, right-drag zooms, double-click fits, right-click asks for the context menu."""

    wheelSlices = Signal(int)
    windowDrag = Signal(float, float)  # screen pixels moved: dx (width), dy (level)
    draw = Signal(str, object)  # phase ("start", "move", "finish"), QPointF in scene coordinates
    contextRequested = Signal(object)  # QPoint, screen position
    fitRequested = Signal()
    clicked = Signal(object)  # QPointF in scene coordinates: a plain left click with the window/level tool

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.02)
        self.tool = "window"  # "window" | "ellipse" | "brush" | "length" | "roi"
        self._wheel_acc = 0.0

    def wheelEvent(self, ev, axis=None) -> None:
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        # Trackpads send small deltas: accumulate to whole notches (120 units each).
        self._wheel_acc += delta
        steps = int(self._wheel_acc / 120)
        if steps:
            self._wheel_acc -= steps * 120
            self.wheelSlices.emit(-steps)  # wheel towards the user = next slice
        ev.accept()

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)  # middle pans, right zooms: pyqtgraph's own
            return
        ev.accept()
        if ev.modifiers() & Qt.KeyboardModifier.ShiftModifier:  # Shift+drag pans, as in Slicer
            d = self.mapToView(ev.pos()) - self.mapToView(ev.lastPos())
            self.translateBy(x=-d.x(), y=-d.y())
            self.sigRangeChangedManually.emit(self.state["mouseEnabled"])
            return
        if self.tool in DRAW_TOOLS:
            phase = "start" if ev.isStart() else ("finish" if ev.isFinish() else "move")
            if phase == "start":
                self.draw.emit("start", ev.buttonDownScenePos())
            self.draw.emit("finish" if phase == "finish" else "move", ev.scenePos())
            return
        d = ev.screenPos() - ev.lastScreenPos()
        self.windowDrag.emit(float(d.x()), float(d.y()))

    def mouseClickEvent(self, ev) -> None:
        if ev.double():
            ev.accept()
            self.fitRequested.emit()
        elif ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            sp = ev.screenPos()
            self.contextRequested.emit(QPoint(int(sp.x()), int(sp.y())))
        elif ev.button() == Qt.MouseButton.LeftButton and self.tool == "brush":
            ev.accept()  # a click is a single dab
            self.draw.emit("start", ev.scenePos())
            self.draw.emit("finish", ev.scenePos())
        elif ev.button() == Qt.MouseButton.LeftButton and self.tool == "window" and not ev.modifiers():
            ev.accept()
            self.clicked.emit(ev.scenePos())
        else:
            super().mouseClickEvent(ev)


class _Corner(QLabel):
    def __init__(self, parent: QWidget, align: Qt.AlignmentFlag) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setTextFormat(Qt.TextFormat.RichText)
        self.setAlignment(align)
        self.setStyleSheet("QLabel { color: #f0f0f0; background: rgba(0,0,0,110); padding: 3px 6px;"
                           " border-radius: 3px; font-size: 12px; }")
        self.hide()

    def set(self, html: str) -> None:
        if html == self.text() and self.isVisible() == bool(html):
            return
        self.setText(html)
        self.setVisible(bool(html))


class SliceViewer(QWidget):
    """Displays a slice and its overlay. Signals forward the user's gestures."""

    scrollRequested = Signal(int)  # slice steps
    windowChanged = Signal(float, float)  # centre, width (after a drag)
    contextMenuRequested = Signal(object)  # QPoint
    annotationDrawn = Signal(object)  # Ellipse | Stroke in slice pixel coordinates
    measurementDrawn = Signal(object)  # Length | EllipseROI in slice pixel coordinates (not yet placed on a slice)
    cursorMoved = Signal(object)  # (row, col) or None
    crosshairMoved = Signal(int, int)  # (row, col) under the cursor while Shift is held
    pointClicked = Signal(int, int)  # (row, col) of a plain left click (no drag) with the window/level tool

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
        self.glw = pg.GraphicsLayoutWidget()
        self.glw.setBackground("#101010")
        self.glw.ci.setContentsMargins(2, 2, 2, 2)
        self.vb = ViewerBox()
        self.glw.addItem(self.vb, 0, 0, rowspan=2)
        self.image = pg.ImageItem()
        self.overlay = pg.ImageItem()
        self.overlay.setZValue(10)
        self.contour = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255, 230), width=1.5), connect="pairs")
        self.contour.setZValue(20)
        self.annotations = pg.ItemGroup()
        self.annotations.setZValue(30)
        # The drawn annotations where a reformatted plane cuts them (a mask's outline, not the shapes)
        self.annotation_outline = pg.PlotCurveItem(pen=pg.mkPen(ANNOTATION_COLOR, width=2), connect="pairs")
        self.annotation_outline.setZValue(29)
        self.measurements = pg.ItemGroup()  # lengths and ROIs with their labels, in slice pixels
        self.measurements.setZValue(35)
        self.measure_labels: list[pg.TextItem] = []
        self.crosshair = pg.PlotCurveItem(pen=pg.mkPen((110, 235, 130, 170), width=1), connect="pairs")
        self.crosshair.setZValue(40)
        self.crosshair_point: tuple[int, int] | None = None
        self.crosshair_shown = True
        self.rotation = 0  # quarter turns clockwise
        self.plane = ""  # which plane this viewer shows (the window sets it)
        self.colorbar_enabled = True  # the views beside the main one share its colour bar
        self.viewer_mm = True  # the image records its pixel size (else lengths are in pixels)
        self._pixel_items = [self.image, self.overlay, self.contour, self.annotations, self.annotation_outline,
                             self.crosshair, self.measurements]
        for item in self._pixel_items:
            self.vb.addItem(item)
        self._live: QGraphicsPathItem | QGraphicsEllipseItem | None = None
        self._live_points: list[tuple[float, float]] = []
        self._draw_start: tuple[float, float] | None = None
        self.brush_width = 6.0  # pixels of the slice

        self.colorbar = pg.ColorBarItem(values=(1.0, 3.0), width=14, colorMap=overlay_colormap(DEFAULT_COLORMAP)[0],
                                        interactive=False, colorMapMenu=False)
        self.colorbar.axis.setTickFont(self.font())
        # The scale's unit: map values are multiples of the normal references' 99th percentile.
        self.colorbar_title = pg.LabelItem("× normal p99", size="8pt", color="#cccccc", justify="center")
        self.colorbar_title.setMaximumHeight(24)
        self._colorbar_shown = False

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.glw)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(320, 280)

        self.top_left = _Corner(self, Qt.AlignmentFlag.AlignLeft)
        self.top_right = _Corner(self, Qt.AlignmentFlag.AlignRight)
        self.bottom_left = _Corner(self, Qt.AlignmentFlag.AlignLeft)
        self.bottom_right = _Corner(self, Qt.AlignmentFlag.AlignRight)
        self.placeholder = QLabel(self)
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.placeholder.setStyleSheet("QLabel { color: #9a9a9a; font-size: 15px; }")
        self.placeholder.setText("Open a study: File → Open folder… / Open file…, or drop it here.\n\n"
                                 "Or try the demo: medad-viewer --demo")

        # "Loading slice …": a slice shown before its pixels are read (a large series filling in)
        self.loading_label = QLabel(self)
        self.loading_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.loading_label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.loading_label.setStyleSheet("QLabel { color: #9a9a9a; font-size: 15px; }")
        self.loading_label.hide()

        self._pixels: np.ndarray | None = None
        self._map: np.ndarray | None = None
        self._spacing = (1.0, 1.0)
        self._shape = (0, 0)
        self.window = (0.0, 1.0)
        self.units = ""
        self.map_percentile = None  # callable value -> percentile, for the cursor readout
        # (row, column) -> the cursor readout's HTML; the window sets it to show its model's data probe.
        self.probe_text = None
        self._cursor: tuple[int, int] | None = None
        self._info_left = ""
        self._info_right = ""
        self._window_name = ""
        self._bar_state: tuple | None = None
        self._corners_pending = False

        self.vb.wheelSlices.connect(self.scrollRequested)
        self.vb.sigRangeChangedManually.connect(lambda *_a: setattr(self, "_fitted", False))
        # Not zoomed or panned since the last fit: stay fitted as the view changes size (a view of the 1x3 layout
        # shown, a dock opened beside it).
        self.vb.sigResized.connect(lambda *_a: self._fitted and self.fit())
        self.vb.windowDrag.connect(self._on_window_drag)
        self.vb.contextRequested.connect(self.contextMenuRequested)
        self.vb.fitRequested.connect(self.fit)
        self.vb.draw.connect(self._on_draw)
        self.vb.clicked.connect(lambda pos: (p := self.pixel_at(pos)) is not None and self.pointClicked.emit(*p))
        self.glw.scene().sigMouseMoved.connect(self._on_mouse_moved)

    # ---------------------------------------------------------------------------------------------- layout
    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        self._place_corners_now()
        self.placeholder.setGeometry(self.rect())
        self.loading_label.setGeometry(self.rect())

    def _place_corners(self) -> None:
        """Placed once per event-loop turn, however many texts changed (adjustSize is not free)."""
        if not self._corners_pending:
            self._corners_pending = True
            QTimer.singleShot(0, self._place_corners_now)

    def _place_corners_now(self) -> None:
        self._corners_pending = False
        m = 8
        w, h = self.width(), self.height()
        cb = 80 if self._colorbar_shown else 0
        for lab in (self.top_left, self.top_right, self.bottom_left, self.bottom_right):
            lab.adjustSize()
        tl, tr, bl, br = self.top_left, self.top_right, self.bottom_left, self.bottom_right
        tl.move(m, m)
        # A narrow view (three planes side by side): the right-hand texts go under / over the left-hand ones
        # rather than across them.
        shown = lambda lab: lab.isVisible() and bool(lab.text())  # noqa: E731
        narrow_top = shown(tl) and tl.width() + tr.width() + 3 * m + cb > w
        narrow_bottom = shown(bl) and bl.width() + br.width() + 3 * m + cb > w
        tr.move(w - tr.width() - m - cb, m + (tl.height() + 4 if narrow_top else 0))
        bl.move(m, h - bl.height() - m)
        br.move(w - br.width() - m - cb, h - br.height() - m - (bl.height() + 4 if narrow_bottom else 0))

    # ------------------------------------------------------------------------------------------------ content
    def show_loading(self, text: str) -> None:
        """A slice whose pixels are not read yet: nothing of the previous slice stays (image, map, drawings), `text`
        says what is awaited; the view keeps its zoom and pan for when the pixels come (`set_pixels`)."""
        self._pixels = None
        self._map = None
        self.image.clear()
        self.overlay.clear()
        self.contour.setData([], [])
        self.annotation_outline.setData([], [])
        self.set_annotations(())
        self.set_measurements(())
        self._show_colorbar(False)
        self.placeholder.hide()
        self.loading_label.setText(text)
        self.loading_label.setGeometry(self.rect())
        self.loading_label.show()
        self.loading_label.raise_()
        self._update_cursor_text()

    @property
    def is_loading(self) -> bool:
        return not self.loading_label.isHidden() and self._pixels is None

    def clear(self) -> None:
        self.loading_label.hide()
        self._pixels = None
        self._map = None
        self._shape = (0, 0)
        self.image.clear()
        self.overlay.clear()
        self.contour.setData([], [])
        self.crosshair.setData([], [])
        self.annotation_outline.setData([], [])
        self.set_annotations(())
        self.set_measurements(())
        self._show_colorbar(False)
        for lab in (self.top_left, self.top_right, self.bottom_left, self.bottom_right):
            lab.set("")
        self.placeholder.show()

    def set_geometry(self, spacing_xy: tuple[float, float]) -> None:
        """Pixel spacing (x = columns, y = rows) in mm: each item is scaled so the scene is in mm."""
        sx, sy = (float(v) if v and v > 0 else 1.0 for v in spacing_xy)
        self._spacing = (sx, sy)
        self._apply_transform()

    def _apply_transform(self) -> None:
        """Pixels to scene millimetres, then the view's rotation (about the origin; fit() finds the image)."""
        sx, sy = self._spacing
        tr = QTransform.fromScale(sx, sy) * QTransform().rotate(90.0 * self.rotation)
        for item in self._pixel_items:
            item.setTransform(tr)

    def set_rotation(self, quarter_turns: int) -> None:
        quarter_turns %= 4
        if quarter_turns != self.rotation:
            self.rotation = quarter_turns
            self._apply_transform()
            self.fit()

    def set_pixels(self, pixels: np.ndarray, window: tuple[float, float], fit: bool = False) -> None:
        self.placeholder.hide()
        self.loading_label.hide()
        new_shape = pixels.shape != self._shape
        self._pixels = pixels
        self._shape = pixels.shape
        self.window = (float(window[0]), float(window[1]))
        self.image.setImage(pixels, levels=self._levels(), autoLevels=False)
        if fit or new_shape:
            self.fit()
        self._update_cursor_text()

    def _levels(self) -> tuple[float, float]:
        c, w = self.window
        w = max(w, 1e-6)
        return (c - w / 2.0, c + w / 2.0)

    def set_display(self, inverted: bool, flip_h: bool, flip_v: bool) -> None:
        """Grey scale inverted, image flipped left-right / up-down; the overlay and drawings flip with it (they share
        the view), the pixel coordinates of gestures and the probe stay those of the slice."""
        self.image.setLookupTable(np.arange(255, -1, -1, dtype=np.uint8) if inverted else None)
        self.vb.invertX(bool(flip_h))
        self.vb.invertY(not flip_v)  # row 0 at the top is the plain view
        self.inverted, self.flip_h, self.flip_v = bool(inverted), bool(flip_h), bool(flip_v)

    inverted = flip_h = flip_v = False

    def set_window(self, center: float, width: float, name: str = "") -> None:
        self.window = (float(center), max(float(width), 1e-6))
        self._window_name = name
        if self._pixels is not None:
            self.image.setLevels(self._levels())
        self._update_window_text()

    _fitted = False

    def fit(self) -> None:
        self._fitted = True
        if self._shape[0]:
            h, w = self._shape
            self.vb.setRange(self.image.transform().mapRect(QRectF(0, 0, w, h)), padding=0.02)

    def set_crosshair(self, point: tuple[int, int] | None) -> None:
        """Lines through pixel (row, column) across the image: where the other planes cut this one."""
        self.crosshair_point = point
        if point is None or not self.crosshair_shown or not self._shape[0]:
            self.crosshair.setData([], [])
            return
        h, w = self._shape
        r, c = point[0] + 0.5, point[1] + 0.5
        self.crosshair.setData([c, c, 0, w], [0, h, r, r], connect="pairs")

    def show_crosshair(self, shown: bool) -> None:
        self.crosshair_shown = bool(shown)
        self.set_crosshair(self.crosshair_point)

    def set_annotation_outline(self, mask: np.ndarray | None) -> None:
        """The outline of a mask of drawn annotations (a reformatted plane's cut through them)."""
        xs, ys = _outline(mask) if mask is not None else ([], [])
        self.annotation_outline.setData(xs, ys, connect="pairs")

    def set_overlay(self, amap: np.ndarray | None, threshold: float = 1.0, vmax: float = 3.0, opacity: float = 0.6,
                    colormap: str = DEFAULT_COLORMAP, contour: bool = False, visible: bool = True) -> None:
        """Map values at or below `threshold` are transparent; the colour scale runs threshold..vmax."""
        self._map = amap
        show = amap is not None and visible
        vmax = max(float(vmax), float(threshold) + 1e-3)
        if not show:
            self.overlay.clear()
            self.contour.setData([], [])
            self._show_colorbar(False)
            self._place_corners()
            self._update_cursor_text()
            return
        cmap, lut = overlay_colormap(colormap)
        self.overlay.setImage(amap, levels=(float(threshold), vmax), lut=lut, autoLevels=False)
        self.overlay.setOpacity(float(opacity))
        # The colour bar only changes with the colour map or the scale: redrawing it per slice costs.
        bar = (colormap, round(float(threshold), 6), round(vmax, 6))
        if bar != self._bar_state:
            if bar[0] != (self._bar_state or ("",))[0]:
                self.colorbar.setColorMap(cmap)
            self.colorbar.setLevels((float(threshold), vmax))
            self._bar_state = bar
        self._show_colorbar(self.colorbar_enabled)
        if contour:
            self._draw_contour(amap >= threshold)
        else:
            self.contour.setData([], [])
        self._place_corners()
        self._update_cursor_text()

    @property
    def colorbar_visible(self) -> bool:
        return self._colorbar_shown

    def _show_colorbar(self, show: bool) -> None:
        """Added to the layout only while shown, so a hidden bar leaves no empty column."""
        if show == self._colorbar_shown:
            return
        layout = self.glw.ci
        if show:
            layout.addItem(self.colorbar, 0, 1)
            layout.addItem(self.colorbar_title, 1, 1)
            layout.layout.setColumnFixedWidth(1, 76)
        else:
            layout.removeItem(self.colorbar)
            layout.removeItem(self.colorbar_title)
            layout.layout.setColumnFixedWidth(1, 0)
        self._colorbar_shown = show

    def _draw_contour(self, mask: np.ndarray) -> None:
        xs, ys = _outline(mask)
        self.contour.setData(xs, ys, connect="pairs")

    def set_annotations(self, annotations) -> None:
        _clear_children(self.annotations)
        for a in annotations:
            annotation_item(a).setParentItem(self.annotations)

    def set_measurements(self, items) -> None:
        """Draw (measurement, label text) pairs: yellow lines and ellipses, each label on a dark box so it reads on
        any image, upright whatever the view's flips and rotation."""
        _clear_children(self.measurements)
        self.measure_labels = []
        for m, text in items:
            measure_item(m).setParentItem(self.measurements)
            if text:
                self._measure_label(m, text)

    def _measure_label(self, m, text: str) -> pg.TextItem:
        # The label goes on the side of the shape towards the middle of the view, so a finding near an edge (or a
        # narrow view of the 1x3 layout) does not push it off the screen; sides are the screen's, whatever the
        # view's flips and rotation.
        centre = self.vb.mapViewToScene(self.vb.viewRect().center())
        if isinstance(m, Length):
            ends = sorted((m.p0, m.p1), key=lambda p: self.image.mapToScene(QPointF(*p)).x())
            right_side = self.image.mapToScene(QPointF(*ends[1])).x() < centre.x()
            x, y = ends[1] if right_side else ends[0]
            pos = QPointF(x, y)
        else:
            right_side = self.image.mapToScene(QPointF(m.cx, m.cy)).x() < centre.x()
            pos = None
        label = pg.TextItem(text, color=MEASURE_COLOR, fill=pg.mkBrush(0, 0, 0, 170),
                            anchor=(0, 1) if right_side else (1, 1))
        if pos is None:  # the ellipse's upper corner on that side of the screen
            corners = [QPointF(m.cx + dx * m.rx * 0.72, m.cy + dy * m.ry * 0.72) for dx in (-1, 1) for dy in (-1, 1)]
            scene = [self.image.mapToScene(q) for q in corners]
            pick = min(range(4), key=lambda i: (scene[i].y(), -scene[i].x() if right_side else scene[i].x()))
            pos = corners[pick]
        label.setPos(pos)
        label.setParentItem(self.measurements)
        self.measure_labels.append(label)
        return label

    # ------------------------------------------------------------------------------------------- corner text
    def set_info(self, top_left: str, top_right: str = "") -> None:
        self.top_left.set(top_left)
        self.top_right.set(top_right)
        self._place_corners()

    def _update_window_text(self) -> None:
        c, w = self.window
        name = f" · {self._window_name}" if self._window_name else ""
        self.bottom_left.set(f"W {w:.0f} &nbsp;L {c:.0f}{name}" if self._pixels is not None else "")
        self._place_corners()

    def _update_cursor_text(self) -> None:
        self._update_window_text()
        if self._cursor is None or self._pixels is None:
            self.bottom_right.set("")
            return
        r, c = self._cursor
        if self.probe_text is not None:
            self.bottom_right.set(self.probe_text(r, c))
            self._place_corners()
            return
        v = float(self._pixels[r, c])
        units = f" {self.units}" if self.units else ""
        text = f"x {c}, y {r} &nbsp;<b>{v:.0f}{units}</b>" if abs(v) >= 100 or self.units == "HU" \
            else f"x {c}, y {r} &nbsp;<b>{v:.4g}{units}</b>"
        if self._map is not None and self._map.shape == self._pixels.shape:
            m = float(self._map[r, c])
            pct = f" ({self.map_percentile(m):.1f}th pct)" if self.map_percentile is not None else ""
            text += f"<br>anomaly {m:.2f}{pct}"
        self.bottom_right.set(text)
        self._place_corners()

    def pixel_at(self, scene_pos: QPointF) -> tuple[int, int] | None:
        if self._pixels is None:
            return None
        p = self.image.mapFromScene(scene_pos)
        r, c = int(math.floor(p.y())), int(math.floor(p.x()))
        if 0 <= r < self._shape[0] and 0 <= c < self._shape[1]:
            return r, c
        return None

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        cur = self.pixel_at(scene_pos)
        if cur != self._cursor:
            self._cursor = cur
            self._update_cursor_text()
            self.cursorMoved.emit(cur)
            if cur is not None and QGuiApplication.keyboardModifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.crosshairMoved.emit(*cur)

    # --------------------------------------------------------------------------------------------- gestures
    def _on_window_drag(self, dx: float, dy: float) -> None:
        if self._pixels is None:
            return
        c, w = self.window
        # A drag across ~500 screen pixels doubles the width: fine control for narrow windows, fast for wide.
        w = max(w * math.exp(dx / 500.0), 1e-3)
        c = c - dy * w / 300.0
        self.set_window(c, w, "")
        self.windowChanged.emit(c, w)

    def set_tool(self, tool: str) -> None:
        self.vb.tool = tool
        self.vb.setCursor(Qt.CursorShape.CrossCursor if tool in DRAW_TOOLS else Qt.CursorShape.ArrowCursor)

    def _on_draw(self, phase: str, scene_pos: QPointF) -> None:
        if self._pixels is None:
            return
        p = self.image.mapFromScene(scene_pos)
        x = min(max(p.x(), 0.0), float(self._shape[1]))
        y = min(max(p.y(), 0.0), float(self._shape[0]))
        if phase == "start":
            self._remove_live()
            self._draw_start = (x, y)
            self._live_points = [(x, y)]
            return
        if self._draw_start is None:
            return
        if self.vb.tool in ("length", "roi"):
            self._on_measure(phase, x, y)
            return
        if self.vb.tool == "brush":
            if not self._live_points or (x, y) != self._live_points[-1]:
                self._live_points.append((x, y))
            shape = Stroke(tuple(self._live_points), self.brush_width)
        else:
            x0, y0 = self._draw_start
            shape = Ellipse((x0 + x) / 2, (y0 + y) / 2, abs(x - x0) / 2, abs(y - y0) / 2)
        self._remove_live()
        self._live = annotation_item(shape)
        self._live.setParentItem(self.annotations)
        if phase == "finish":
            self._remove_live()
            self._draw_start = None
            if isinstance(shape, Ellipse) and (shape.rx < 1 or shape.ry < 1):
                return  # a click, not an ellipse
            self.annotationDrawn.emit(shape)

    def _on_measure(self, phase: str, x: float, y: float) -> None:
        """A length from where the drag began to where it is; an ellipse ROI in the drag's box. The live length
        shows its mm as it goes."""
        x0, y0 = self._draw_start
        if self.vb.tool == "length":
            shape = Length((x0, y0), (x, y))
            text = f"{length_mm(shape, self._spacing):.1f} {'mm' if self.viewer_mm else 'px'}"
            big_enough = math.hypot(x - x0, y - y0) >= 1.0
        else:
            shape = EllipseROI((x0 + x) / 2, (y0 + y) / 2, abs(x - x0) / 2, abs(y - y0) / 2)
            text = ""
            big_enough = shape.rx >= 1 and shape.ry >= 1
        self._remove_live()
        self._live = measure_item(shape)
        self._live.setParentItem(self.measurements)
        if text:
            self._live_label = self._measure_label(shape, text)
        if phase == "finish":
            self._remove_live()
            self._draw_start = None
            if big_enough:  # else a click, not a measurement
                self.measurementDrawn.emit(shape)

    _live_label: pg.TextItem | None = None

    def _remove_live(self) -> None:
        if self._live_label is not None:
            if self._live_label in self.measure_labels:
                self.measure_labels.remove(self._live_label)
            self._live_label.setParentItem(None)
            if self._live_label.scene() is not None:
                self._live_label.scene().removeItem(self._live_label)
            self._live_label = None
        if self._live is not None:
            self._live.setParentItem(None)
            if self._live.scene() is not None:
                self._live.scene().removeItem(self._live)
            self._live = None


def _outline(mask: np.ndarray) -> tuple[np.ndarray | list, np.ndarray | list]:
    """The outer outline of a mask through pixel centres, as point pairs for connect="pairs"."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    xs, ys = [], []
    for c in contours:
        pts = c[:, 0, :].astype(np.float64) + 0.5  # pixel centres
        if len(pts) < 2:
            continue
        closed = np.vstack([pts, pts[:1]])
        seg = np.repeat(closed, 2, axis=0)[1:-1]  # consecutive pairs for connect="pairs"
        xs.append(seg[:, 0])
        ys.append(seg[:, 1])
    if not xs:
        return [], []
    return np.concatenate(xs), np.concatenate(ys)


@functools.lru_cache(maxsize=None)
def overlay_colormap(name: str):
    """The colour map and its overlay LUT, whose entry 0 (at or below the threshold) is transparent."""
    # The overlay part of the map (io.colormaps: its near-black start left out), the report's colours too.
    rgba = np.empty((256, 4), np.uint8)
    rgba[:, :3] = overlay_lut(name)
    rgba[:, 3] = 255
    cmap = pg.ColorMap(np.linspace(0.0, 1.0, 256), rgba)
    lut = rgba.copy()
    lut[0, 3] = 0
    return cmap, lut


def annotation_item(a):
    """A drawn annotation (ellipse outline or translucent brush stroke) as a graphics item in slice pixels."""
    if isinstance(a, Ellipse):
        item = QGraphicsEllipseItem(a.cx - a.rx, a.cy - a.ry, 2 * a.rx, 2 * a.ry)
        pen = QPen(ANNOTATION_COLOR, 2)
        pen.setCosmetic(True)
        item.setPen(pen)
        item.setBrush(QBrush(Qt.BrushStyle.NoBrush))
        return item
    path = QPainterPath()
    pts = a.points
    path.moveTo(QPointF(*pts[0]))
    for p in pts[1:]:
        path.lineTo(QPointF(*p))
    if len(pts) == 1:
        path.lineTo(QPointF(pts[0][0] + 0.01, pts[0][1]))
    item = QGraphicsPathItem(path)
    c = QColor(ANNOTATION_COLOR)
    c.setAlpha(120)
    pen = QPen(c, a.width, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin)
    item.setPen(pen)
    return item


def measure_item(m):
    """A measurement (yellow line or ellipse) as a graphics item in slice pixels."""
    pen = QPen(MEASURE_COLOR, 2)
    pen.setCosmetic(True)
    if isinstance(m, Length):
        item = QGraphicsPathItem()
        path = QPainterPath(QPointF(*m.p0))
        path.lineTo(QPointF(*m.p1))
        item.setPath(path)
    else:
        item = QGraphicsEllipseItem(m.cx - m.rx, m.cy - m.ry, 2 * m.rx, 2 * m.ry)
        item.setBrush(QBrush(Qt.BrushStyle.NoBrush))
    item.setPen(pen)
    return item


def _clear_children(parent) -> None:
    """Remove every child item of a graphics item (drawn again from the model)."""
    for child in list(parent.childItems()):
        child.setParentItem(None)
        if child.scene() is not None:
            child.scene().removeItem(child)
