"""The window's measuring tools: the Length (M) and Ellipse ROI (O) tools forward what is drawn to the viewer model,
and the measurements of the slice shown are drawn with their numbers (mm; mean ± SD in modality units; the map's
mean and max once the slice is scored). The numbers come from the model (review/viewer.py, review/measurements.py)."""

from __future__ import annotations


from ..review.measurements import label

HINTS = {
    "length": "Length: drag from one end to the other. Delete removes the last measurement on this slice.",
    "roi": "Ellipse ROI: drag the ellipse's box. Delete removes the last measurement on this slice.",
}



class MeasureToolsMixin:
    """The main window's measurement methods (self is the MainWindow)."""

    def _build_measure_tools(self) -> None:
        self.viewer.measurementDrawn.connect(self.model.review.add_measurement)
        # After these the measurements of the slice shown (or their map numbers) may differ.
        ev = self.model.events
        for emitter in (ev.series, ev.slice, ev.plane, self.model.scoring.events.scores):
            emitter.connect(lambda _e: self.refresh_measurements())
        self.model.review.events.measurements.connect(self._measurements_changed)
        ev.crosshair.connect(self._crosshair_moved_measures)
        self.model.scoring.events.slice_score.connect(self._slice_scored_measures)

    def measure_tool(self, tool: str) -> None:
        """Choose the "length" or "roi" tool, saying how it works."""
        self.set_tool(tool)
        self.statusBar().showMessage(HINTS[tool], 6000)

    def delete_measurement(self) -> None:
        """Delete removes the newest measurement on the slice shown (Ctrl+Z brings it back)."""
        here = self.model.review.measurements_here()
        if not here:
            self.statusBar().showMessage("No measurement on this slice", 3000)
            return
        m = self.model.review.remove_measurement(here[-1][0])
        name = "length" if m.kind == "length" else "ellipse ROI"
        self.statusBar().showMessage(f"Removed the {name} (Ctrl+Z brings it back)", 4000)

    def _measurements_changed(self, _event) -> None:
        self._refresh_slice_info()  # the Undo / Redo buttons and what they would undo
        self.refresh_measurements()

    def _crosshair_moved_measures(self, _event) -> None:
        if self._measures_at != self._measure_slice():  # not a move within the slice shown (Shift+move)
            self.refresh_measurements()

    def _slice_scored_measures(self, event) -> None:
        if event.result.index == self.model.index or not self.model.plane_view().is_acquired:
            self.refresh_measurements()  # the map shown changed

    _measures_at: tuple | None = None

    def _measure_slice(self) -> tuple | None:
        place = self.model.review.measure_place()
        return None if place is None else (self.model.series.uid, *place[1:])

    def refresh_measurements(self) -> None:
        self._measures_at = self._measure_slice()
        if self.model.series is None:
            self.viewer.set_measurements(())
            return
        mm = self.model.series.spacing_known
        self.viewer.viewer_mm = mm
        self.viewer.set_measurements([(m, label(r, "\n", mm)) for _k, m, r in self.model.review.measured_here()])
