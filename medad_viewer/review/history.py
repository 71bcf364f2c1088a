"""One undo history for a review sitting.

The slice reviews (decisions, notes, drawings: `review.state.ReviewState`) and the measurements
(`review.measurements.Measurements`) each record their actions as steps in the same `History`, so Ctrl+Z undoes the
last thing done, whichever store it belongs to, and Ctrl+Y redoes in the same order. Each step knows how to undo and
redo itself and says what it touched (a slice key, or a measurement), so the viewer can show it. No Qt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Step:
    """One undoable action of one store."""

    source: str  # "review" or "measurements": which store the step belongs to
    label: str  # for the Edit menu: "Mark confirmed", "Add length", ...
    record: Any  # the store's own record of the action (review: a Command; measurements: (what, position, m))
    apply_undo: Callable[[Any], Any]  # record -> what it touched
    apply_redo: Callable[[Any], Any]


class History:
    """Undo and redo stacks of `Step`s shared by the stores of one session. A new step clears the redo stack."""

    def __init__(self) -> None:
        self._undo: list[Step] = []
        self._redo: list[Step] = []

    def push(self, step: Step) -> None:
        self._undo.append(step)
        self._redo.clear()

    @property
    def last(self) -> Step | None:
        """The step Ctrl+Z would undo (a store may merge into it: a note typed letter by letter is one step)."""
        return self._undo[-1] if self._undo else None

    def drop_last(self) -> Step:
        return self._undo.pop()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo_label(self) -> str:
        return self._undo[-1].label if self._undo else ""

    def redo_label(self) -> str:
        return self._redo[-1].label if self._redo else ""

    def undo(self) -> tuple[Step, Any] | None:
        """Undo the last step: (the step, what it touched), or None when there is nothing to undo."""
        return self._move(self._undo, self._redo, undo=True)

    def redo(self) -> tuple[Step, Any] | None:
        return self._move(self._redo, self._undo, undo=False)

    @staticmethod
    def _move(source: list, target: list, undo: bool) -> tuple[Step, Any] | None:
        if not source:
            return None
        step = source.pop()
        target.append(step)
        return step, (step.apply_undo if undo else step.apply_redo)(step.record)


class UsesHistory:
    """For a store whose steps go into `self.history`: undo and redo through it. On its own the store's history is
    its own; in a `Session`, both stores share the session's, so these undo the other store's steps too."""

    history: History

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    def undo_label(self) -> str:
        return self.history.undo_label()

    def redo_label(self) -> str:
        return self.history.redo_label()

    def undo(self) -> Any:
        """Undo the last step; returns what it touched (a slice key, a measurement), or None."""
        done = self.history.undo()
        return None if done is None else done[1]

    def redo(self) -> Any:
        done = self.history.redo()
        return None if done is None else done[1]
