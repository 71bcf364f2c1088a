"""RankingPanel: slices ordered by anomaly score (thumbnail, score bar, review mark) and a score-by-slice plot.

Clicking a row or a point of the plot asks to show that slice.
"""

from __future__ import annotations

import bisect
from typing import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QModelIndex, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
from PySide6.QtWidgets import (QDoubleSpinBox, QGraphicsView, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QStyle, QStyledItemDelegate,
                               QStyleOptionViewItem, QVBoxLayout, QWidget)

from ..review.state import Decision

INDEX_ROLE = Qt.ItemDataRole.UserRole + 1
SCORE_ROLE = Qt.ItemDataRole.UserRole + 2
PCT_ROLE = Qt.ItemDataRole.UserRole + 3

FLAG_COLOR = QColor(240, 120, 40)
BAR_COLOR = QColor(120, 130, 150)
DECISION_MARK = {Decision.CONFIRMED: ("✔", QColor(220, 60, 60)), Decision.DISMISSED: ("✘", QColor(130, 130, 130))}


class _RowDelegate(QStyledItemDelegate):
    THUMB = 40

    def __init__(self, panel: "RankingPanel") -> None:
        super().__init__(panel)
        self.panel = panel

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex) -> QSize:
        return QSize(200, self.THUMB + 8)

    def paint(self, p: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        p.save()
        r = option.rect
        if option.state & QStyle.StateFlag.State_Selected:
            p.fillRect(r, option.palette.highlight())
        i = int(index.data(INDEX_ROLE))
        score = float(index.data(SCORE_ROLE))
        pct = float(index.data(PCT_ROLE))
        pm = self.panel.thumbnail(i)
        t = self.THUMB
        if pm is not None:
            p.drawPixmap(QRect(r.left() + 4, r.top() + 4, t, t), pm)
        x = r.left() + t + 12
        w = max(r.right() - x - 28, 20)
        flagged = pct == pct and pct >= self.panel.threshold_pct
        f = QFont(option.font)
        f.setBold(True)
        p.setFont(f)
        p.setPen(option.palette.text().color())
        p.drawText(QRect(x, r.top() + 3, w, 16), Qt.AlignmentFlag.AlignLeft, f"Slice {i + 1}")
        f.setBold(False)
        f.setPointSizeF(max(f.pointSizeF() - 1, 7))
        p.setFont(f)
        pct_txt = "—" if pct != pct else f"{pct:.1f}th pct"
        p.drawText(QRect(x, r.top() + 3, w, 16), Qt.AlignmentFlag.AlignRight, f"{score:.2f} · {pct_txt}")
        top = max(self.panel.max_score, 1e-6)
        frac = min(max(score / top, 0.0), 1.0)
        p.fillRect(QRect(x, r.top() + 24, w, 8), QColor(60, 60, 60, 80))
        p.fillRect(QRect(x, r.top() + 24, int(w * frac), 8), FLAG_COLOR if flagged else BAR_COLOR)
        mark = DECISION_MARK.get(self.panel.decisions.get(i, Decision.UNREVIEWED))
        if mark:
            f.setPointSizeF(f.pointSizeF() + 3)
            p.setFont(f)
            p.setPen(mark[1])
            p.drawText(QRect(r.right() - 24, r.top(), 22, r.height()), Qt.AlignmentFlag.AlignCenter, mark[0])
        p.restore()


class RankingPanel(QWidget):
    sliceClicked = Signal(int)
    flagThresholdChanged = Signal(float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.threshold_pct = 95.0  # slices are flagged at or above this percentile of normal slices
        self.max_score = 0.0
        self.decisions: dict[int, Decision] = {}
        self._thumb_fn: Callable[[int], QPixmap | None] | None = None
        self._thumbs: dict[int, QPixmap] = {}
        self._keys: list[tuple[float, int]] = []  # (-score, index), sorted, parallel to the list rows
        self._scores: dict[int, tuple[float, float]] = {}
        self._num_slices = 0

        self.plot = pg.PlotWidget(background=None)
        self.plot.setMinimumHeight(120)
        self.plot.setMaximumHeight(170)
        self.plot.setMenuEnabled(False)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setLabel("bottom", "slice")
        self.plot.setLabel("left", "score")
        self.plot.showGrid(y=True, alpha=0.2)
        self.plot.getAxis("left").enableAutoSIPrefix(False)  # scores near 1 must not read "300 (x0.001)"

        self.bars = pg.BarGraphItem(x=[], height=[], width=0.8)
        self.plot.addItem(self.bars)
        self.current_line = pg.InfiniteLine(0, angle=90, pen=pg.mkPen((80, 200, 255), width=1.5))
        self.current_line.hide()
        self.plot.addItem(self.current_line)
        self.plot.scene().sigMouseClicked.connect(self._plot_clicked)
        # Moving the current-slice line must not repaint the axes every slice.
        self.plot.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)

        # Slices have their own threshold: a slice's percentile compares its score with whole normal slices,
        # a different distribution from the pixels the overlay threshold is about.
        self.flag_spin = QDoubleSpinBox()
        self.flag_spin.setRange(1.0, 99.99)
        self.flag_spin.setDecimals(1)
        self.flag_spin.setSingleStep(5.0)
        self.flag_spin.setValue(self.threshold_pct)
        self.flag_spin.setSuffix("th percentile of normal slices")
        self.flag_spin.setToolTip("Slices scoring at or above this are flagged (orange); N / P step through them")
        self.flag_spin.valueChanged.connect(self._flag_spin_changed)
        flag_row = QHBoxLayout()
        flag_row.addWidget(QLabel("Flag at ≥"))
        flag_row.addWidget(self.flag_spin, 1)
        self.summary = QLabel("Not scored yet. Pick normal references, then Adapt & score.")
        self.summary.setWordWrap(True)
        self.list = QListWidget()
        self.list.setItemDelegate(_RowDelegate(self))
        self.list.setUniformItemSizes(True)
        self.list.setVerticalScrollMode(QListWidget.ScrollMode.ScrollPerPixel)
        self.list.itemClicked.connect(lambda it: self.sliceClicked.emit(int(it.data(INDEX_ROLE))))
        self.list.itemActivated.connect(lambda it: self.sliceClicked.emit(int(it.data(INDEX_ROLE))))

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.plot)
        lay.addLayout(flag_row)
        lay.addWidget(self.summary)
        lay.addWidget(self.list, 1)

    # ---------------------------------------------------------------------------------------------- content
    def set_series(self, num_slices: int, thumbnail_fn: Callable[[int], QPixmap | None] | None) -> None:
        self._num_slices = num_slices
        self._thumb_fn = thumbnail_fn
        self._thumbs.clear()
        self.clear_scores()
        self.plot.setXRange(-0.5, max(num_slices, 1) - 0.5, padding=0.02)

    def clear_scores(self, message: str = "Not scored yet. Pick normal references, then Adapt & score.") -> None:
        self.list.clear()
        self._keys.clear()
        self._scores.clear()
        self.max_score = 0.0
        self.summary.setText(message)
        self._update_plot()

    def thumbnail(self, index: int) -> QPixmap | None:
        pm = self._thumbs.get(index)
        if pm is None and self._thumb_fn is not None:
            pm = self._thumb_fn(index)
            if pm is not None:
                self._thumbs[index] = pm
        return pm

    def set_scores(self, scores: dict[int, tuple[float, float]]) -> None:
        """All scores at once: {index: (score, percentile)}."""
        self.list.clear()
        self._keys.clear()
        self._scores = dict(scores)
        self.max_score = max((s for s, _ in scores.values()), default=0.0)
        for i in sorted(scores, key=lambda k: (-scores[k][0], k)):
            self._insert_row(i, *scores[i])
        self._update_plot()
        self._update_summary()

    def add_score(self, index: int, score: float, percentile: float) -> None:
        """One slice as it arrives; rows stay sorted, most anomalous first."""
        if index in self._scores:
            row = self._keys.index((-self._scores[index][0], index))
            self._keys.pop(row)
            self.list.takeItem(row)
        self._scores[index] = (score, percentile)
        self.max_score = max(self.max_score, score)
        self._insert_row(index, score, percentile)
        self._update_plot()
        self._update_summary()
        self.list.viewport().update()

    def _insert_row(self, index: int, score: float, percentile: float) -> None:
        key = (-float(score), int(index))
        row = bisect.bisect_left(self._keys, key)
        self._keys.insert(row, key)
        item = QListWidgetItem()
        item.setData(INDEX_ROLE, int(index))
        item.setData(SCORE_ROLE, float(score))
        item.setData(PCT_ROLE, float(percentile))
        item.setToolTip(f"Slice {index + 1}: score {score:.3f}, {percentile:.1f}th percentile of normal")
        self.list.insertItem(row, item)

    def ranked_indices(self) -> list[int]:
        return [i for _, i in self._keys]

    def _flag_spin_changed(self, value: float) -> None:
        self.set_threshold(value)
        self.flagThresholdChanged.emit(float(value))

    def set_threshold(self, pct: float) -> None:
        self.threshold_pct = float(pct)
        if abs(self.flag_spin.value() - self.threshold_pct) > 1e-9:
            self.flag_spin.blockSignals(True)
            self.flag_spin.setValue(self.threshold_pct)
            self.flag_spin.blockSignals(False)
        self._update_plot()
        self._update_summary()
        self.list.viewport().update()

    def set_decisions(self, decisions: dict[int, Decision]) -> None:
        self.decisions = dict(decisions)
        self.list.viewport().update()

    def set_current(self, index: int) -> None:
        self.current_line.setValue(index)
        self.current_line.show()
        row = next((r for r, (_, i) in enumerate(self._keys) if i == index), None)
        self.list.blockSignals(True)
        if row is None:
            self.list.clearSelection()
        else:
            self.list.setCurrentRow(row)
        self.list.blockSignals(False)

    def _update_summary(self) -> None:
        n = len(self._scores)
        flagged = sum(1 for _, p in self._scores.values() if p == p and p >= self.threshold_pct)
        total = f" of {self._num_slices}" if self._num_slices and n < self._num_slices else ""
        self.summary.setText(f"{n}{total} slices scored · {flagged} flagged")

    def _update_plot(self) -> None:
        if not self._scores:
            self.bars.setOpts(x=[], height=[], brushes=[])
            return
        idx = np.array(sorted(self._scores))
        h = np.array([self._scores[i][0] for i in idx])
        brushes = [pg.mkBrush(FLAG_COLOR if (p == p and p >= self.threshold_pct) else BAR_COLOR)
                   for p in (self._scores[i][1] for i in idx)]
        self.bars.setOpts(x=idx, height=h, width=0.8, brushes=brushes, pens=[None] * len(idx))
        self.plot.setYRange(0, max(float(h.max()), 1e-3) * 1.05, padding=0)

    def _plot_clicked(self, ev) -> None:
        vb = self.plot.getViewBox()
        if not self._num_slices or not vb.sceneBoundingRect().contains(ev.scenePos()):
            return
        x = vb.mapSceneToView(ev.scenePos()).x()
        i = int(round(x))
        if 0 <= i < self._num_slices:
            self.sliceClicked.emit(i)
