"""The review of the open study, Qt-free: each slice's decision, note and drawings, and the measurements, under the
session's one undo history (review/history.py), recorded on the slice the viewer shows.

Events (`review.events`): changed (ReviewChanged: a slice's decision, note or drawings changed), measurements
(MeasurementsChanged: a measurement was added or removed, or came back by undo or redo).

`viewer` is what is shown, as the viewer model gives it: `session`, `series`, `index`, `plane`, `plane_view()`,
`acquired_plane()`, `view_series()`, `view_index()`, `plane_map()`, `row_of()`, `select_series()`,
`show_slice()`, `say()`, `save()` and `saving`.
"""

from __future__ import annotations

from typing import Any

from ..io.planes import PLANES
from .events import EmitterGroup, MeasurementsChanged, ReviewChanged
from .measurements import ACQUIRED, Measured, Measurement, measure, placed
from .state import Decision


class ReviewModel:
    def __init__(self, viewer: Any):
        self.viewer = viewer
        self._session = None
        self.events = EmitterGroup(changed=ReviewChanged, measurements=MeasurementsChanged)

    def attach(self, session) -> None:
        """Follow the review of `session` (a study was opened: its session replaces the last one)."""
        if self._session is not None:
            self._session.review.unsubscribe(self._review_changed)
        self._session = session
        session.review.subscribe(self._review_changed)

    def _here(self) -> tuple[str, int] | None:
        v = self.viewer
        return (v.series.uid, v.index) if v.series is not None else None

    def set_decision(self, decision: Decision) -> None:
        if (k := self._here()) is not None:
            self.viewer.session.review.set_decision(*k, decision)

    def set_note(self, text: str) -> None:
        if (k := self._here()) is not None:
            self.viewer.session.review.set_note(*k, text)

    def add_annotation(self, shape) -> None:
        if (k := self._here()) is None:
            return
        if not self.viewer.plane_view().is_acquired:  # drawings belong to acquired slices, in their pixels
            self.viewer.say(f"Findings are drawn on the acquired ({self.viewer.acquired_plane()}) slices: switch the main "
                              f"view back with Ctrl+{PLANES.index(self.viewer.acquired_plane()) + 1}.")
            return
        self.viewer.session.review.add_annotation(*k, shape)

    def clear_annotations(self) -> None:
        if (k := self._here()) is not None:
            self.viewer.session.review.clear_annotations(*k)

    def undo(self) -> None:
        """Undo the last review action or measurement step, whichever came last (the session's one history)."""
        self._after_step(self.viewer.session.history.undo())

    def redo(self) -> None:
        self._after_step(self.viewer.session.history.redo())

    def _after_step(self, done) -> None:
        if done is None:
            return
        step, touched = done
        if step.source == "measurements":
            self._measurement_step(touched)  # the review's own steps tell the model through its listener
        else:
            self._show_touched(touched)

    @property
    def can_undo(self) -> bool:
        return self.viewer.session.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.viewer.session.history.can_redo

    def undo_label(self) -> str:
        return self.viewer.session.history.undo_label()

    def redo_label(self) -> str:
        return self.viewer.session.history.redo_label()

    def _show_touched(self, key) -> None:
        """Show the slice an undo or redo changed."""
        if key is None or self.viewer.series is None:
            return
        uid, index = key
        if uid != self.viewer.series.uid:
            row = self.viewer.row_of(uid)
            if row is None:
                return
            self.viewer.select_series(row)
        if index != self.viewer.index:
            self.viewer.show_slice(index)

    # ------------------------------------------------------------------------------------------------ measurements
    def measure_place(self) -> tuple[Any, str, int] | None:
        """Where a measurement drawn now lies: (the Series the main view shows, its plane as measurements record
        it, "acquired" for the series' own, and the slice index in that plane)."""
        if self.viewer.series is None or self.viewer.index < 0:
            return None
        if self.viewer.plane == self.viewer.acquired_plane():
            return self.viewer.series, ACQUIRED, self.viewer.index
        return self.viewer.view_series(), self.viewer.plane, self.viewer.view_index()

    def add_measurement(self, shape: Measurement) -> Measurement | None:
        """Record `shape` (a Length or EllipseROI in the shown slice's pixels) on the slice shown."""
        if (place := self.measure_place()) is None:
            return None
        m = placed(shape, self.viewer.series.uid, place[2], place[1])
        self.viewer.session.measurements.add(m)
        self._measurement_step(m)
        return m

    def remove_measurement(self, position: int) -> Measurement | None:
        """Remove the session's measurement at `position` (as measurements_here numbers them)."""
        m = self.viewer.session.measurements.remove(position)
        if m is not None:
            self._measurement_step(m)
        return m

    def measurements_here(self) -> list[tuple[int, Measurement]]:
        """(position in the session's list, measurement) of those on the slice shown, in the plane shown."""
        if (place := self.measure_place()) is None:
            return []
        return self.viewer.session.measurements.on_slice(self.viewer.series.uid, place[2], place[1])

    def measured_here(self) -> list[tuple[int, Measurement, Measured]]:
        """The measurements on the slice shown with their numbers (and the map's, when the slice is scored)."""
        here = self.measurements_here()
        if not here:
            return []
        s, plane, index = self.measure_place()
        if plane == ACQUIRED and not s.is_loaded(index):
            return []  # shown as "loading": measured once the slice is there
        pixels = s.slice(index)
        pm = self.viewer.plane_map(None, index)
        amap = None if pm is None else pm.values
        return [(k, m, measure(m, pixels, s.spacing, amap, s.units)) for k, m in here]

    def _measurement_step(self, m: Measurement | None) -> None:
        if m is None:
            return
        if self.viewer.series is not None and m.plane == ACQUIRED and (m.series_uid, m.index) != self._here():
            self._show_touched((m.series_uid, m.index))  # an undo shows the slice it changed
        self.events.measurements.emit(MeasurementsChanged(m))
        self.viewer.save()  # at once, like drawings

    def _review_changed(self, key) -> None:
        self.events.changed.emit(ReviewChanged(key))
        # Notes are saved after a pause in typing; decisions and drawings at once.
        if self.viewer.session.review.undo_label() == "Edit note":
            self.viewer.saving.schedule()
        else:
            self.viewer.save()
