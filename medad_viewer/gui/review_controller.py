"""The review's controller: decisions, tools, undo and redo, and stepping through the flagged slices, forwarded to the
review model (review/review_model.py) and shown as its events say: the ranking's decisions, the slice's lines and
drawings, the Undo / Redo actions."""

from __future__ import annotations

from ..review.state import Decision


class ReviewController:
    """`window` gives the viewers, the Review panel, the ranking, the planes and the undo actions."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        rp = window.review_panel
        rp.decisionRequested.connect(lambda d: self.set_decision(Decision(d)))
        rp.noteEdited.connect(lambda text: self.model.review.set_note(text))
        rp.toolChanged.connect(self.set_tool)
        rp.brushSizeChanged.connect(lambda v: setattr(window.viewer, "brush_width", float(v)))
        rp.clearAnnotationsRequested.connect(lambda: self.model.review.clear_annotations())
        rp.undoRequested.connect(self.undo)
        rp.redoRequested.connect(self.redo)
        rp.nextFlaggedRequested.connect(lambda: self.goto_flagged(+1))
        rp.previousFlaggedRequested.connect(lambda: self.goto_flagged(-1))
        window.viewer.annotationDrawn.connect(lambda shape: self.model.review.add_annotation(shape))
        self.model.review.events.changed.connect(lambda e: self._changed(e.key))

    def set_decision(self, decision: Decision) -> None:
        self.model.review.set_decision(decision)

    def set_tool(self, tool: str) -> None:
        self.window.viewer.set_tool(tool)
        self.window.review_panel.set_tool(tool)

    def undo(self) -> None:
        self.model.review.undo()

    def redo(self) -> None:
        self.model.review.redo()

    def _changed(self, key) -> None:
        if self.model.series is not None and key[0] == self.model.series.uid:
            self.update_ranking_decisions()
            if key[1] == self.model.index:
                self.window.slice_info.refresh()
            if self.model.layout == "1x3" or not self.window.planes.main_is_acquired():
                self.window.planes.draw_sides(force=True)
                if not self.window.planes.main_is_acquired():
                    self.window.planes.draw(self.viewer)
        self.window.act_undo.setEnabled(self.model.review.can_undo)
        self.window.act_redo.setEnabled(self.model.review.can_redo)

    def update_ranking_decisions(self) -> None:
        if self.model.series is not None:
            self.window.ranking.set_decisions({i: r.decision for (_u, i), r in self.model.session.review.items(self.model.series.uid)})

    def goto_flagged(self, step: int) -> None:
        pct = self.window.ranking.threshold_pct
        nxt = self.model.flagged(step, pct)
        if nxt == "no-scores":
            self.window.statusBar().showMessage("No scores yet: run Adapt & score first", 4000)
        elif nxt is None:
            self.window.statusBar().showMessage(f"No slice is flagged at the {pct:g}th percentile of normal slices; lower "
                                         "'Flag at' in the Slice ranking panel", 6000)
        else:
            self.window.show_slice(nxt)
