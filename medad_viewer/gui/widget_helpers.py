"""Small layout helpers shared by the side panels."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QPushButton, QWidget


def button_row(*buttons: tuple[str, object]) -> tuple[QHBoxLayout, list[QPushButton]]:
    """A row of push buttons, each (text, the signal its click emits)."""
    row = QHBoxLayout()
    made = []
    for text, signal in buttons:
        b = QPushButton(text)
        b.clicked.connect(signal)
        row.addWidget(b)
        made.append(b)
    return row, made


def bold(widget: QWidget) -> QWidget:
    f = widget.font()
    f.setBold(True)
    widget.setFont(f)
    return widget
