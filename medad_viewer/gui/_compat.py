"""Work around a PySide6 bug on CPython < 3.12: void methods return None without taking a reference to it.

Each call (QWidget.move, QLabel.setText, QPoint.setX, ...) then lowers None's reference count by one, and after a
few minutes of use CPython aborts with "Fatal Python error: none_dealloc: deallocating None". From 3.12 None is
immortal and the missing reference is harmless. Seen with PySide6 6.12 on Python 3.11.
"""

from __future__ import annotations

import ctypes
import sys

_done = False


def _void_calls_leak_none() -> bool:
    from PySide6.QtCore import QPoint

    p = QPoint(1, 2)
    before = sys.getrefcount(None)
    for _ in range(64):
        p.setX(3)
    return sys.getrefcount(None) <= before - 64


def guard_none_refcount() -> bool:
    """Give None a reference count no session can exhaust, as 3.12's immortal objects have; only where the bug
    shows (probed), on a release build of CPython (whose object header starts with the count). True if applied."""
    global _done
    if _done:
        return True
    if (sys.implementation.name != "cpython" or sys.version_info >= (3, 12) or hasattr(sys, "gettotalrefcount")
            or not _void_calls_leak_none()):
        return False
    big = 1 << 48 if ctypes.sizeof(ctypes.c_ssize_t) == 8 else 1 << 28
    # True and False go the same way through other calls (seen at interpreter exit), so they get the same.
    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += big
    _done = True
    return True
