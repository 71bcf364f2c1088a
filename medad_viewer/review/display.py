"""How the series shown is drawn, Qt-free: its grey-scale window (one per series, kept with the session), and the
view's inversion, flips, rotation and cine loop.

Events (`display.events`): window (WindowChanged: the window of the series shown changed), changed (DisplayChanged:
inversion, flips, rotation or cine changed; its `display` is this model).
"""

from __future__ import annotations

from typing import Any, Callable

from ..io.windowing import default_window
from .events import DisplayChanged, EmitterGroup, WindowChanged

CINE_FPS_RANGE = (1.0, 40.0)
FLAGS = ("inverted", "flip_h", "flip_v", "cine")


class DisplayModel:
    """shown(): the series on screen (or None); remember(key, value): keep a view setting with the session."""

    def __init__(self, shown: Callable[[], Any], remember: Callable[[str, Any], None]):
        self._shown = shown
        self._remember = remember
        self.inverted = False
        self.flip_h = False
        self.flip_v = False
        self.cine = False
        self.cine_fps = 10.0
        self.rotation = 0  # quarter turns clockwise
        self.windows: dict[str, tuple[float, float, str]] = {}  # series uid -> (centre, width, preset name)
        self.events = EmitterGroup(window=WindowChanged, changed=DisplayChanged)

    # ------------------------------------------------------------------------------------------ flips, cine
    def toggle(self, what: str) -> None:
        """Toggle "inverted", "flip_h", "flip_v" or "cine" (cine only with a series of more than one slice)."""
        if what not in FLAGS:
            raise ValueError(f"unknown display flag {what!r}")
        series = self._shown()
        if what == "cine" and (series is None or series.num_slices < 2):
            self.cine = False
        else:
            setattr(self, what, not getattr(self, what))
        self._changed()

    def reset(self) -> None:
        """Back to the plain view: not inverted, not flipped or rotated, cine stopped (its speed is kept)."""
        self.inverted = self.flip_h = self.flip_v = self.cine = False
        self.rotation = 0
        self._changed()

    def rotate(self, quarter_turns: int = 1) -> int:
        """Turn the view by quarter turns clockwise (negative: anticlockwise); returns the rotation in degrees."""
        self.rotation = (self.rotation + int(quarter_turns)) % 4
        self._changed()
        return self.rotation * 90

    def cine_speed(self, factor: float) -> float:
        lo, hi = CINE_FPS_RANGE
        self.cine_fps = float(min(max(self.cine_fps * factor, lo), hi))
        self._changed()
        return self.cine_fps

    def _changed(self) -> None:
        self.events.changed.emit(DisplayChanged(self))

    # ----------------------------------------------------------------------------------------------- windows
    def window(self) -> tuple[float, float, str]:
        """The window of the series shown."""
        return self.windows[self._shown().uid]

    def set_window(self, c: float, w: float, name: str = "", *, shown: bool = False) -> None:
        """The display window of the series shown; `shown`: the viewer already shows it (a mouse drag), so no
        window event."""
        series = self._shown()
        if series is None:
            return
        self.windows[series.uid] = (float(c), float(w), name)
        self._remember("windows", {uid: list(v) for uid, v in self.windows.items()})
        if not shown:
            self.events.window.emit(WindowChanged(*self.windows[series.uid]))

    def restore(self, saved: dict) -> None:
        """The windows a session kept (series uid -> [centre, width, name]), replacing those of the last study."""
        self.windows = {uid: (float(w[0]), float(w[1]), str(w[2]) if len(w) > 2 else "") for uid, w in saved.items()}

    def ensure_window(self, series) -> None:
        """A series shown for the first time gets its default window (the DICOM's own, or one from its values)."""
        if series.uid not in self.windows:
            w = default_window(series)
            self.windows[series.uid] = (w.center, w.width, w.name)
