"""ReferenceTray: thumbnails of the chosen reference slices (from any series), with add, remove, save and load."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QMenu, QPushButton, QScrollArea, QSizePolicy,
                               QToolButton, QVBoxLayout, QWidget)

KIND_STYLE = {"normal": ("#2e8b57", "N"), "abnormal": ("#c0392b", "A")}


class _Card(QFrame):
    clicked = Signal()
    removeClicked = Signal()

    def __init__(self, pixmap: QPixmap | None, caption: str, kind: str, tooltip: str, current: bool) -> None:
        super().__init__()
        color, letter = KIND_STYLE.get(kind, ("#777", "?"))
        self._color = color
        self.setObjectName("card")
        self.set_current(current)
        self.setToolTip(tooltip)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(3, 3, 3, 3)
        lay.setSpacing(2)
        top = QHBoxLayout()
        top.setSpacing(2)
        badge = QLabel(letter)
        badge.setStyleSheet(f"QLabel {{ background: {color}; color: white; border-radius: 3px; padding: 0 4px;"
                            " font-weight: bold; }")
        badge.setToolTip("Normal reference" if kind == "normal" else "Known abnormal example (with a mask)")
        top.addWidget(badge)
        top.addStretch(1)
        self.remove = QToolButton()
        self.remove.setText("✕")
        self.remove.setAutoRaise(True)
        self.remove.setToolTip("Remove this reference")
        self.remove.setFixedSize(18, 18)
        self.remove.clicked.connect(self.removeClicked)
        top.addWidget(self.remove)
        lay.addLayout(top)
        img = QLabel()
        img.setFixedSize(72, 72)
        img.setAlignment(Qt.AlignmentFlag.AlignCenter)
        if pixmap is not None:
            img.setPixmap(pixmap.scaled(72, 72, Qt.AspectRatioMode.KeepAspectRatio,
                                        Qt.TransformationMode.SmoothTransformation))
        else:
            img.setText("missing")
        lay.addWidget(img)
        cap = QLabel(caption)
        cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
        cap.setStyleSheet("QLabel { font-size: 11px; }")
        lay.addWidget(cap)

    def set_current(self, current: bool) -> None:
        """The card of the slice on screen gets a bright frame."""
        border = "#4fc3f7" if current else self._color
        width = 3 if current else 2
        self.setStyleSheet(f"QFrame#card {{ border: {width}px solid {border}; border-radius: 4px; }}")

    def mouseReleaseEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit()
        super().mouseReleaseEvent(ev)


class ReferenceTray(QWidget):
    addRequested = Signal()
    addAbnormalRequested = Signal()
    removeRequested = Signal(int)
    showRequested = Signal(int)  # position in the set
    saveRequested = Signal()
    saveAsFileRequested = Signal()
    loadNamedRequested = Signal(str)
    loadFileRequested = Signal()
    clearRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        # The title gives way (clipped, whole in its tooltip) rather than widening the window: with the docks
        # either side, the tray's row decides how narrow a screen the app fits.
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.title.setMinimumWidth(60)
        self.add_button = QPushButton("Add normal (R)")
        self.add_button.setToolTip("Add the current slice as a normal reference: an example of normal anatomy")
        self.add_button.clicked.connect(self.addRequested)
        self.abnormal_button = QPushButton("Add abnormal")
        self.abnormal_button.setToolTip("Use the current slice as a known abnormal example; its mask is the "
                                        "ellipses and brush strokes drawn on it (Review panel)")
        self.abnormal_button.clicked.connect(self.addAbnormalRequested)
        self.save_button = QPushButton("Save set…")
        self.save_button.clicked.connect(self.saveRequested)
        self.load_button = QPushButton("Load set")
        self.load_menu = QMenu(self)
        self.load_menu.aboutToShow.connect(self._fill_load_menu)
        self.load_button.setMenu(self.load_menu)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clearRequested)
        self._named: list[str] = []
        self._current: int | None = None

        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        for b in (self.add_button, self.abnormal_button, self.save_button, self.load_button, self.clear_button):
            head.addWidget(b)

        self.cards = QWidget()
        self.cards_layout = QHBoxLayout(self.cards)
        self.cards_layout.setContentsMargins(2, 2, 2, 2)
        self.cards_layout.setSpacing(6)
        self.cards_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidget(self.cards)
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setFixedHeight(140)
        self.empty = QLabel("No references yet. Browse to a slice with normal anatomy and press R "
                            "(or right-click → Add as normal reference). A few slices from normal studies of the "
                            "same modality and body region work best.")
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("QLabel { color: #888; }")

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(head)
        lay.addWidget(self.empty)
        lay.addWidget(self.scroll)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.set_references("Untitled", [], None)

    def set_named_sets(self, names: list[str]) -> None:
        self._named = list(names)

    def _fill_load_menu(self) -> None:
        self.load_menu.clear()
        for name in self._named:
            self.load_menu.addAction(name, lambda n=name: self.loadNamedRequested.emit(n))
        if self._named:
            self.load_menu.addSeparator()
        else:
            a = self.load_menu.addAction("No saved sets yet")
            a.setEnabled(False)
        self.load_menu.addAction("From file…", self.loadFileRequested)
        self.load_menu.addAction("Save to file…", self.saveAsFileRequested)

    def set_references(self, name: str, cards: list[dict], current: int | None) -> None:
        """cards: dicts with pixmap, caption, kind, tooltip (one per reference, in set order)."""
        while self.cards_layout.count() > 1:
            w = self.cards_layout.takeAt(0).widget()
            if w is not None:
                w.hide()  # deleteLater alone leaves it painted where it was until the next event loop turn
                w.setParent(None)
                w.deleteLater()
        normals = sum(1 for c in cards if c["kind"] == "normal")
        abn = len(cards) - normals
        extra = f", {abn} abnormal" if abn else ""
        self.title.setText(f"<b>References</b> — {name}: {normals} normal{extra}")
        self.title.setToolTip(f"{name}: {normals} normal{extra}")
        for pos, c in enumerate(cards):
            card = _Card(c.get("pixmap"), c["caption"], c["kind"], c.get("tooltip", ""), pos == current)
            card.clicked.connect(lambda p=pos: self.showRequested.emit(p))
            card.removeClicked.connect(lambda p=pos: self.removeRequested.emit(p))
            self.cards_layout.insertWidget(pos, card)
        self._current = current
        self.empty.setVisible(not cards)
        self.scroll.setVisible(bool(cards))
        self.save_button.setEnabled(bool(cards))
        self.clear_button.setEnabled(bool(cards))

    def set_current(self, current: int | None) -> None:
        # Called on every slice change: restyle only the cards whose state changes (style sheets are slow).
        if current == self._current:
            return
        for pos in (self._current, current):
            if pos is not None and 0 <= pos < self.card_count():
                card = self.cards_layout.itemAt(pos).widget()
                if isinstance(card, _Card):
                    card.set_current(pos == current)
        self._current = current

    def card_count(self) -> int:
        return self.cards_layout.count() - 1

    def sizeHint(self) -> QSize:
        return QSize(600, 180)
