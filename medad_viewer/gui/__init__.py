"""Qt widgets and the background worker.

The rule for Qt: widgets (PySide6.QtWidgets, and pyqtgraph, which is built on them) are imported only here in gui/;
report/ may use QtCore and QtGui (QPdfWriter, QPainter on a QImage) but no widgets, so `medad-viewer report` runs on
a QGuiApplication; io/, engine/ and review/ import no Qt at all.
"""

from ._compat import guard_none_refcount

guard_none_refcount()
