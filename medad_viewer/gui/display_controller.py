"""The display's controller: the grey-scale window (presets, mouse drags), inversion, flips, rotation and the cine
loop, drawn on every viewer as the display model's events (review/display.py) say."""

from __future__ import annotations

from PySide6.QtCore import QTimer


class DisplayController:
    """`window` gives the main viewer, the planes and the status bar."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.viewer = window.viewer
        self.cine_timer = QTimer(window)
        self.cine_timer.timeout.connect(self.model.cine_step)
        ev = self.model.display.events
        ev.window.connect(lambda e: self._window_shown((e.centre, e.width, e.name)))
        ev.changed.connect(lambda e: self._display_changed(e.display))
        self.viewer.windowChanged.connect(self.window_dragged)

    def set_window(self, c: float, w: float, name: str) -> None:
        self.model.display.set_window(c, w, name)

    def window_dragged(self, c: float, w: float) -> None:
        self.model.display.set_window(c, w, "", shown=True)
        self.viewer.set_window(c, w, "")
        self.window.planes.windows_to_sides(c, w)

    def _window_shown(self, w) -> None:
        self.viewer.set_window(*w)
        self.window.planes.windows_to_sides(*w)

    def _display_changed(self, d) -> None:
        self.viewer.set_display(d.inverted, d.flip_h, d.flip_v)
        self.viewer.set_rotation(d.rotation)
        for v in self.window.planes.side_viewers:  # the other planes share the grey scale, not the main view's flips
            v.set_display(d.inverted, False, False)
        if d.cine:
            self.cine_timer.start(int(round(1000 / d.cine_fps)))
        else:
            self.cine_timer.stop()

    def cine_speed(self, factor: float) -> None:
        self.window.statusBar().showMessage(f"Cine: {self.model.display.cine_speed(factor):g} slices a second", 3000)

    def reset_view(self) -> None:
        self.model.display.reset()
        self.viewer.fit()
