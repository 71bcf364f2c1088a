"""The measuring tools' controller: the Length (M) and Ellipse ROI (O) tools forward what is drawn to the review model,
and the measurements of the slice shown are drawn with their numbers (mm; mean ± SD in modality units; the map's
mean and max once the slice is scored). The numbers come from the model (review/review_model.py,
review/measurements.py); this controller listens to the events after which they may differ."""

from __future__ import annotations

from ..review.measurements import label

HINTS = {
    "length": "Length: drag from one end to the other. Delete removes the last measurement on this slice.",
    "roi": "Ellipse ROI: drag the ellipse's box. Delete removes the last measurement on this slice.",
}


class MeasureController:
    """Owns the main viewer's measurement drawing; `window` gives the viewer, the status bar and the tool choice."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.viewer = window.viewer
        self._measures_at: tuple | None = None
        self.viewer.measurementDrawn.connect(self.model.review.add_measurement)
        # After these the measurements of the slice shown (or their map numbers) may differ.
        ev = self.model.events
        for emitter in (ev.series, ev.slice, ev.plane, self.model.scoring.events.scores):
            emitter.connect(lambda _e: self.refresh())
        self.model.review.events.measurements.connect(self._changed)
        ev.crosshair.connect(self._crosshair_moved)
        self.model.scoring.events.slice_score.connect(self._slice_scored)

    def choose(self, tool: str) -> None:
        """Choose the "length" or "roi" tool, saying how it works."""
        self.window.review.set_tool(tool)
        self.window.statusBar().showMessage(HINTS[tool], 6000)

    def delete_last(self) -> None:
        """Delete removes the newest measurement on the slice shown (Ctrl+Z brings it back)."""
        here = self.model.review.measurements_here()
        if not here:
            self.window.statusBar().showMessage("No measurement on this slice", 3000)
            return
        m = self.model.review.remove_measurement(here[-1][0])
        name = "length" if m.kind == "length" else "ellipse ROI"
        self.window.statusBar().showMessage(f"Removed the {name} (Ctrl+Z brings it back)", 4000)

    def refresh(self) -> None:
        self._measures_at = self._slice()
        series = self.model.series
        if series is None:
            self.viewer.set_measurements(())
            return
        mm = series.spacing_known
        self.viewer.viewer_mm = mm
        self.viewer.set_measurements([(m, label(r, "\n", mm)) for _k, m, r in self.model.review.measured_here()])

    def _changed(self, _event) -> None:
        self.window.slice_info.refresh()  # the Undo / Redo buttons and what they would undo
        self.refresh()

    def _crosshair_moved(self, _event) -> None:
        if self._measures_at != self._slice():  # not a move within the slice shown (Shift+move)
            self.refresh()

    def _slice_scored(self, event) -> None:
        if event.result.index == self.model.index or not self.model.plane_view().is_acquired:
            self.refresh()  # the map shown changed

    def _slice(self) -> tuple | None:
        place = self.model.review.measure_place()
        return None if place is None else (self.model.series.uid, *place[1:])
