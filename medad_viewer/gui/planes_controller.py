"""The planes' controller: the main view in any plane, the 1×3 layout (the other two planes beside it, whose
viewers it owns), the crosshair that links them (Shift+move), scrolling each plane, and drawing each plane's
slice and map. The state (plane, layout, crosshair) lives in the viewer model (review/viewer_model.py); this controller
draws it when the model's plane, layout and crosshair events say so."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QHBoxLayout, QWidget

from ..io.planes import PLANES
from .slice_viewer import SliceViewer


class PlanesController:
    """`window` gives the main viewer, the model, the overlay panel, the plane actions and the slice drawing;
    `widget` is the window's central widget."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.viewer = window.viewer
        self._overlay_pending = False
        self.widget = self._build()
        ev = self.model.events
        ev.plane.connect(lambda _e: self.plane_changed())
        ev.layout.connect(lambda _e: self.plane_changed())
        ev.crosshair.connect(lambda _e: self.crosshair_changed())

    def _build(self) -> QWidget:
        """The central widget: the main viewer, and two more for the 1×3 layout (hidden in 1×1)."""
        from .slice_info_controller import probe_html

        box = QWidget()
        lay = QHBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(3)
        lay.addWidget(self.viewer, 1)
        self.side_viewers = [SliceViewer(), SliceViewer()]
        for v in self.side_viewers:
            lay.addWidget(v, 1)
            v.hide()
            v.placeholder.setText("")
            v.colorbar_enabled = False  # one colour bar, the main view's, for all three
            v.setMinimumSize(180, 200)
            v.scrollRequested.connect(lambda d, v=v: self.scroll(v, d))
            v.windowChanged.connect(lambda c, w: self.window.display.window_dragged(c, w))
            v.crosshairMoved.connect(lambda r, c, v=v: self.crosshair_from(v, r, c))
            v.probe_text = lambda row, col, v=v: probe_html(self.model.probe(row, col, plane=v.plane))
        self.viewer.crosshairMoved.connect(lambda r, c: self.crosshair_from(self.viewer, r, c))
        return box

    # ------------------------------------------------------------------------------------------------ gestures
    def main_is_acquired(self) -> bool:
        return self.model.series is None or self.model.plane_view().is_acquired

    def step(self, step: int) -> None:
        """The next (+) or previous (-) slice of the main view's plane (↑ / ↓, the wheel)."""
        if self.model.series is None:
            return
        if self.main_is_acquired():
            self.window.show_slice(self.model.index + step)
        else:
            self.model.show_plane_slice(self.model.plane, self.model.view_index() + step)

    def end(self, last: bool) -> None:
        """The first (Home) or last (End) slice of the main view's plane."""
        if self.model.series is None:
            return
        n = self.model.view_series().num_slices
        if self.main_is_acquired():
            self.window.show_slice(n - 1 if last else 0)
        else:
            self.model.show_plane_slice(self.model.plane, n - 1 if last else 0)

    def scroll(self, viewer: SliceViewer, step: int) -> None:
        if self.model.series is not None and viewer.plane:
            self.model.show_plane_slice(viewer.plane, self.model.view_index(viewer.plane) + step)

    def crosshair_from(self, viewer: SliceViewer, row: int, col: int) -> None:
        """Shift+move: the crosshair to the voxel under the cursor in that viewer's plane."""
        if self.model.series is None or not viewer.plane:
            return
        self.model.set_crosshair(viewer.plane, self.model.view_index(viewer.plane), row, col)

    def set_plane(self, plane: str) -> None:
        msg = self.model.set_plane(plane)
        if msg:
            self.window.statusBar().showMessage(msg, 5000)

    def toggle_layout(self) -> None:
        self.model.set_layout("1x1" if self.model.layout == "1x3" else "1x3")

    def toggle_crosshair(self) -> None:
        shown = not self.viewer.crosshair_shown
        for v in self.all_viewers():
            v.show_crosshair(shown)

    # ------------------------------------------------------------------------------------------------ drawing
    def all_viewers(self) -> list[SliceViewer]:
        return [self.viewer, *self.side_viewers]

    def visible_viewers(self) -> list[SliceViewer]:
        return [self.viewer, *(self.side_viewers if self.model.layout == "1x3" else [])]

    def _side_planes(self) -> list[str]:
        return [p for p in PLANES if p != self.model.plane]

    def plane_changed(self) -> None:
        """The main view's plane (or the series) changed: every viewer gets its plane, and is drawn anew."""
        if self.model.series is None:
            return
        self.viewer.plane = self.model.plane
        self.show_sides()
        if hasattr(self.window, "act_layout"):
            self.window.act_layout.setChecked(self.model.layout == "1x3")
            for p, a in self.window.plane_actions.items():
                a.setChecked(p == self.model.plane)
        self.window._fit_next = True
        if self.main_is_acquired():
            self.viewer.set_geometry((self.model.series.spacing[0], self.model.series.spacing[1]))
            self.window._slice_shown(self.model.index)
        else:
            self.draw(self.viewer, fit=True)
            self.window.slice_info.refresh()
            self.window._fit_next = False
        self.draw_sides(force=True)

    def show_sides(self) -> None:
        """The other two planes beside the main view in the 1x3 layout (a single image has only its own)."""
        three = self.model.layout == "1x3" and len(self.model.planes()) > 1
        for v, p in zip(self.side_viewers, self._side_planes()):
            v.plane = p
            v.setVisible(three)
        # three views share the width: the main one may then be as narrow as the others (a laptop screen)
        self.viewer.setMinimumWidth(180 if three else 320)

    def crosshair_changed(self) -> None:
        """The crosshair moved: reformatted views showing another slice are redrawn, every line moves."""
        if self.model.series is None:
            return
        for v in self.visible_viewers():
            # the acquired main view is redrawn on the "slice" event; the others when their slice changes
            acquired_main = v is self.viewer and self.main_is_acquired()
            if not acquired_main and getattr(v, "_drawn", None) != (v.plane, self.model.view_index(v.plane)):
                self.draw(v)
            else:
                _k, r, c = self.model.view_point(v.plane)
                v.set_crosshair((r, c))

    def draw_sides(self, force: bool = False) -> None:
        if self.model.layout != "1x3" or self.model.series is None:
            return
        for v in self.side_viewers:
            if v.isVisible():
                if force:
                    v._drawn = None
                self.draw(v)

    def refresh_overlays(self) -> None:
        """The scores changed (a slice scored, a threshold moved): overlays of the reformatted views follow."""
        if self.model.series is None or self.model.layout != "1x3":
            return
        for v in self.side_viewers:
            if v.isVisible() and v.plane:
                self.draw_overlay(v, v.plane, self.model.view_index(v.plane))

    def overlays_soon(self) -> None:
        """While scoring: the reformatted views' maps follow at most four times a second."""
        from PySide6.QtCore import QTimer

        if not self._overlay_pending:
            self._overlay_pending = True

            def run() -> None:
                self._overlay_pending = False
                self.refresh_overlays()
                if not self.main_is_acquired() and self.model.series is not None:
                    self.draw_overlay(self.viewer, self.model.plane, self.model.view_index())
            QTimer.singleShot(250, run)

    def draw(self, v: SliceViewer, fit: bool = False) -> None:
        """One viewer's slice of its plane through the crosshair: pixels, window, map, annotations, crosshair."""
        m = self.model
        plane = v.plane or m.plane
        pv = m.plane_view(plane)
        ps = pv.series
        k, r, c = m.view_point(plane)
        new_plane = getattr(v, "_geometry_of", None) != ps.uid
        if new_plane:
            v.set_geometry((ps.spacing[0], ps.spacing[1]))
            v._geometry_of = ps.uid
        v.units = ps.units
        cw, ww, name = m.display.window()
        if pv.is_acquired and not ps.is_loaded(k):
            v.show_loading(f"Loading slice {k + 1}…")
            ps.request(k)
            v._drawn = None  # drawn again when it has arrived
            return
        v.set_pixels(ps.slice(k), (cw, ww), fit=fit or new_plane)
        v.set_window(cw, ww, name)
        self.draw_overlay(v, plane, k)
        if pv.is_acquired:
            v.set_annotation_outline(None)
            v.set_annotations(self.model.session.review.get(m.series.uid, k).annotations)
        else:
            v.set_annotations(())
            v.set_annotation_outline(m.plane_annotations(plane, k))
        v.set_crosshair((r, c))
        v._drawn = (plane, k)

    def draw_overlay(self, v: SliceViewer, plane: str, k: int):
        m = self.model
        ov = self.window.analysis.overlay_state()
        res = m.results.get(m.series.uid)
        pm = m.plane_map(plane, k)
        pv = m.plane_view(plane)
        note = (" · <span style='color:#ffd166'>map interpolated between scored slices</span>"
                if pm is not None and pm.interpolated else "")
        tag = " (acquired)" if pv.is_acquired else ""
        if pv.uneven:  # reformatted at the mean slice spacing: distances along the slices are approximate
            note += " · <span style='color:#ffd166'>uneven slice spacing: shown at the mean</span>"
        if not pv.is_acquired and m.loading is not None:  # cut across slices that are not all read yet
            note += (f" · <span style='color:#ffd166'>loading: {m.loading[0]} of {m.loading[1]} slices read"
                     "</span>")
        if pv.is_acquired and not m.series.is_loaded(k):  # nothing drawn yet: no map over it either
            v.map_percentile = None
            v.set_overlay(None)
            return None
        if v is not self.viewer or not pv.is_acquired:  # the acquired main view has its own corner lines
            v.set_info(f"<b>{plane.capitalize()}</b>{tag} · slice {k + 1} / {pv.series.num_slices}{note}", "")
        if res is None or pm is None:
            v.map_percentile = None
            v.set_overlay(None)
            return pm
        thr = res.value_at(ov["threshold_pct"])
        v.map_percentile = res.pixel_percentile
        # A reformat has NaN where no slice was scored: transparent, as at or below the threshold.
        values = pm.values if pv.is_acquired else np.nan_to_num(pm.values, nan=0.0)
        # A fixed scale per threshold, so a colour means the same on every slice and plane: threshold .. threshold +
        # max(1, thr) (in units of the normal 99th percentile).
        v.set_overlay(values, thr, thr + max(1.0, thr), ov["opacity"], ov["colormap"], ov["contour"],
                      ov["visible"])
        return pm

    def windows_to_sides(self, c: float, w: float, name: str = "") -> None:
        for v in self.side_viewers:
            if v.isVisible():
                v.set_window(c, w, name)

