"""QPainter helpers shared by the PDF report and the PNG view export: images from numpy, colour bar, annotation
outlines, orientation letters. Paints on any QPaintDevice (QPdfWriter, QImage) with QtGui only (no widgets), works
offscreen."""

from __future__ import annotations

import math
import os
import sys
from typing import Iterable, Sequence

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QImage, QPainter, QPainterPath, QPen, QTransform

from .overlay import colorbar_rgb

ANNOTATION_COLOR = QColor(80, 220, 255)  # the viewer's annotation colour (gui.slice_viewer)
FONT_FAMILIES = ["DejaVu Sans", "Segoe UI", "Helvetica Neue", "Arial", "Liberation Sans", "Noto Sans"]


def register_fonts() -> int:
    """Make the fonts shipped in resources/fonts (DejaVu Sans) available to Qt, so reports look the same on every
    machine, the app bundle included. Needs a Qt application object; returns how many were added."""
    from PySide6.QtGui import QFontDatabase

    from ..paths import FONTS

    if getattr(register_fonts, "_done", False):
        return 0
    n = sum(QFontDatabase.addApplicationFont(str(p)) >= 0 for p in sorted(FONTS.glob("*.ttf")))
    register_fonts._done = True  # type: ignore[attr-defined]
    return n


def ensure_qt_app() -> None:
    """Fonts need a Qt application; make one for headless use (offscreen on Linux without a display).

    A QGuiApplication is all QPdfWriter and QImage painting need, and keeps `medad-viewer report` free of widgets.
    Only one application object can ever exist, though, and widgets need a QApplication: when QtWidgets is already
    imported (the viewer, pytest-qt), widgets may come later in this process, so a QApplication is made instead.
    """
    if QGuiApplication.instance() is not None:
        return
    argv = ["medad-viewer"]
    if (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        argv += ["-platform", "offscreen"]
    app_class = QGuiApplication
    widgets = sys.modules.get("PySide6.QtWidgets")
    if widgets is not None:
        app_class = widgets.QApplication
    # Kept on the function: an application that is garbage collected takes the font database with it.
    ensure_qt_app._app = app_class(argv)  # type: ignore[attr-defined]


def font(point_size: float, bold: bool = False, italic: bool = False) -> QFont:
    register_fonts()
    f = QFont()
    f.setFamilies(FONT_FAMILIES)
    f.setStyleHint(QFont.StyleHint.SansSerif)
    f.setPointSizeF(point_size)
    f.setBold(bold)
    f.setItalic(italic)
    # No ligatures: 'fi' as one glyph copies and searches as 'ﬁ' in PDF readers ("efficientnet" not found).
    for tag in ("liga", "clig"):
        f.setFeature(QFont.Tag(tag), 0)
    return f


def qimage_gray(a: np.ndarray) -> QImage:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    h, w = a.shape
    return QImage(a.data, w, h, w, QImage.Format.Format_Grayscale8).copy()  # copy: own the pixels


def qimage_rgb(a: np.ndarray) -> QImage:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    h, w, _ = a.shape
    return QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def draw_image(p: QPainter, rect: QRectF, img: QImage, min_dpi: float = 150.0) -> None:
    """Draw `img` into `rect` (device units); upsampled smoothly first if it would print below `min_dpi`.

    Native pixels are kept when they already give `min_dpi`: the PDF then holds the original image, and the reader
    scales it. Below that, a smooth upscale to ~200 dpi keeps print from showing blocky pixels.
    """
    dev = p.device()
    dpi = float(dev.logicalDpiX()) if dev is not None else 96.0
    inches = rect.width() / dpi
    native_dpi = img.width() / max(inches, 1e-6)
    if native_dpi < min_dpi:
        factor = 200.0 / native_dpi
        img = img.scaled(int(math.ceil(img.width() * factor)), int(math.ceil(img.height() * factor)),
                         Qt.AspectRatioMode.IgnoreAspectRatio, Qt.TransformationMode.SmoothTransformation)
    p.save()
    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
    # Qt's PDF writer stores images as JPEG unless told otherwise: no compression artefacts in medical images.
    p.setRenderHint(QPainter.RenderHint.LosslessImageRendering, True)
    p.drawImage(rect, img)
    p.restore()


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values within [lo, hi] (1, 2, 2.5, 5 x 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, v = [], first
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def fmt_tick(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:.0f}"


def draw_colorbar(p: QPainter, rect: QRectF, cmap: str, vmin: float, vmax: float, label: str, label_font: QFont,
                  tick_font: QFont, text_color: QColor = QColor(30, 30, 30), line_width: float = 1.0) -> float:
    """A horizontal colour bar in `rect` (the strip), ticks and values below, label under them.

    The lowest value is the threshold: below it the overlay is transparent, so it is ticked and marked '≥'.
    Returns the y of the bottom of what was drawn.
    """
    strip = qimage_rgb(colorbar_rgb(512, cmap))
    p.save()
    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
    p.setRenderHint(QPainter.RenderHint.LosslessImageRendering, True)
    p.drawImage(rect, strip)
    pen = QPen(text_color, line_width)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    p.drawRect(rect)
    p.setFont(tick_font)
    fm = p.fontMetrics()
    tick_len = rect.height() * 0.35
    ticks = [t for t in nice_ticks(vmin, vmax, 4) if t - vmin > 0.12 * (vmax - vmin)]
    values = [vmin] + ticks
    y_text = rect.bottom() + tick_len + fm.ascent() * 0.15
    for k, v in enumerate(values):
        x = rect.left() + (v - vmin) / max(vmax - vmin, 1e-9) * rect.width()
        p.drawLine(QPointF(x, rect.bottom()), QPointF(x, rect.bottom() + tick_len))
        text = ("≥ " if k == 0 else "") + fmt_tick(v)
        w = fm.horizontalAdvance(text)
        left = min(max(x - w / 2, rect.left() - w / 2), rect.right() - w / 2 + w / 2)
        p.drawText(QRectF(left, y_text, w + 2, fm.height()), Qt.AlignmentFlag.AlignLeft, text)
    y = y_text + fm.height()
    p.setFont(label_font)
    fm2 = p.fontMetrics()
    p.drawText(QRectF(rect.left(), y, rect.width(), fm2.height()), Qt.AlignmentFlag.AlignHCenter, label)
    p.restore()
    return y + fm2.height()


def annotation_paths(annotations: Iterable) -> list[tuple[str, QPainterPath, float]]:
    """(kind, path in slice pixel coordinates, brush width) for each annotation."""
    out = []
    for a in annotations:
        kind = getattr(a, "kind", "")
        path = QPainterPath()
        if kind == "ellipse":
            path.addEllipse(QPointF(a.cx, a.cy), a.rx, a.ry)
            out.append((kind, path, 0.0))
        elif kind in ("stroke", "polygon") and getattr(a, "points", None):
            pts = list(a.points)
            path.moveTo(QPointF(*pts[0]))
            for q in pts[1:]:
                path.lineTo(QPointF(*q))
            if len(pts) == 1:
                path.lineTo(QPointF(pts[0][0] + 0.01, pts[0][1]))
            if kind == "polygon":
                path.closeSubpath()
            out.append((kind, path, float(getattr(a, "width", 0.0))))
    return out


def slice_to_rect(rect: QRectF, shape: tuple[int, int], offset: tuple[float, float] = (0.0, 0.0)) -> QTransform:
    """Slice pixel coordinates -> an image drawn in `rect` (a slice of `shape` rows x cols, or a crop of it whose
    top-left pixel is `offset` (x, y))."""
    rows, cols = shape
    return (QTransform().translate(rect.left(), rect.top()).scale(rect.width() / cols, rect.height() / rows)
            .translate(-offset[0], -offset[1]))


def draw_annotations(p: QPainter, rect: QRectF, shape: tuple[int, int], annotations: Sequence,
                     outline_width: float, offset: tuple[float, float] = (0.0, 0.0)) -> None:
    """The reviewer's annotations over an image drawn in `rect` (slice of `shape` rows x cols, or a crop of it whose
    top-left pixel is `offset` (x, y)), as the viewer shows them: ellipse outlines, brush strokes as translucent
    round-capped lines."""
    if not annotations:
        return
    to_rect = slice_to_rect(rect, shape, offset)
    p.save()
    p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    p.setClipRect(rect)
    p.setBrush(Qt.BrushStyle.NoBrush)
    for kind, path, width in annotation_paths(annotations):
        if kind == "stroke":
            c = QColor(ANNOTATION_COLOR)
            c.setAlpha(140)
            pen = QPen(c, max(width, 1.0) * (to_rect.m11() + to_rect.m22()) / 2, Qt.PenStyle.SolidLine,
                       Qt.PenCapStyle.RoundCap,
                       Qt.PenJoinStyle.RoundJoin)
        else:
            pen = QPen(ANNOTATION_COLOR, outline_width)
        p.setPen(pen)
        p.drawPath(to_rect.map(path))
    p.restore()


def orientation_letters(direction: Sequence[float]) -> dict[str, str]:
    """Patient direction letters at the image edges {'left', 'right', 'top', 'bottom'} from an ITK (LPS) direction.

    Columns run along the first direction column, rows along the second; '' when a direction is too oblique to name.
    """
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    plus, minus = "LPS", "RAI"

    def letters(v: np.ndarray) -> tuple[str, str]:
        k = int(np.argmax(np.abs(v)))
        if abs(v[k]) < 0.8:
            return "", ""
        return (plus[k], minus[k]) if v[k] > 0 else (minus[k], plus[k])

    right, left = letters(d[:, 0])
    bottom, top = letters(d[:, 1])
    return {"left": left, "right": right, "top": top, "bottom": bottom}


def draw_orientation(p: QPainter, rect: QRectF, direction: Sequence[float], f: QFont) -> None:
    """Orientation letters just inside the image edges, white with a dark halo so they read on any background."""
    letters = orientation_letters(direction)
    p.save()
    p.setFont(f)
    fm = p.fontMetrics()
    pad = fm.height() * 0.25
    h = fm.height()
    spots = {
        "left": (QRectF(rect.left() + pad, rect.center().y() - h / 2, h * 2, h), Qt.AlignmentFlag.AlignLeft),
        "right": (QRectF(rect.right() - pad - h * 2, rect.center().y() - h / 2, h * 2, h), Qt.AlignmentFlag.AlignRight),
        "top": (QRectF(rect.center().x() - h, rect.top() + pad, h * 2, h), Qt.AlignmentFlag.AlignHCenter),
        "bottom": (QRectF(rect.center().x() - h, rect.bottom() - pad - h, h * 2, h), Qt.AlignmentFlag.AlignHCenter),
    }
    for where, (r, align) in spots.items():
        text = letters[where]
        if not text:
            continue
        p.setPen(QColor(0, 0, 0, 200))
        for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            off = h * 0.06
            p.drawText(r.translated(dx * off, dy * off), align | Qt.AlignmentFlag.AlignVCenter, text)
        p.setPen(QColor(255, 255, 255))
        p.drawText(r, align | Qt.AlignmentFlag.AlignVCenter, text)
    p.restore()
