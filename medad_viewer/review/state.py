"""Review state: per-slice decisions, notes and annotations, with undo/redo of every review action.

Each action is a command holding the slice's review before and after (reviews are immutable values), so undo and
redo are exact and a note typed letter by letter is one step. The steps go into the session's one history
(`review.history`), shared with the measurements, so Ctrl+Z undoes whatever was done last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Iterable, Mapping

from .history import History, Step, UsesHistory

Key = tuple[str, int]  # (series uid, slice index)


class Decision(str, Enum):
    UNREVIEWED = "unreviewed"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


@dataclass(frozen=True)
class Ellipse:
    """An ellipse in slice pixel coordinates (x = column, y = row)."""

    cx: float
    cy: float
    rx: float
    ry: float
    kind: str = field(default="ellipse", init=False)

    def to_dict(self) -> dict:
        return {"kind": "ellipse", "cx": self.cx, "cy": self.cy, "rx": self.rx, "ry": self.ry}


@dataclass(frozen=True)
class Stroke:
    """A brush stroke: a polyline of (x, y) slice pixel coordinates painted with a round brush of `width` pixels."""

    points: tuple[tuple[float, float], ...]
    width: float = 4.0
    kind: str = field(default="stroke", init=False)

    def to_dict(self) -> dict:
        return {"kind": "stroke", "points": [list(p) for p in self.points], "width": self.width}


Annotation = Ellipse | Stroke


def annotation_from_dict(d: Mapping) -> Annotation:
    if d.get("kind") == "ellipse":
        return Ellipse(float(d["cx"]), float(d["cy"]), float(d["rx"]), float(d["ry"]))
    if d.get("kind") == "stroke":
        return Stroke(tuple((float(x), float(y)) for x, y in d["points"]), float(d.get("width", 4.0)))
    raise ValueError(f"unknown annotation kind {d.get('kind')!r}")


@dataclass(frozen=True)
class SliceReview:
    decision: Decision = Decision.UNREVIEWED
    note: str = ""
    annotations: tuple[Annotation, ...] = ()

    @property
    def is_empty(self) -> bool:
        return self.decision == Decision.UNREVIEWED and not self.note and not self.annotations

    def to_dict(self) -> dict:
        return {"decision": self.decision.value, "note": self.note,
                "annotations": [a.to_dict() for a in self.annotations]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "SliceReview":
        return cls(Decision(d.get("decision", "unreviewed")), str(d.get("note", "")),
                   tuple(annotation_from_dict(a) for a in d.get("annotations", [])))


@dataclass
class Command:
    """One review action: what the slice's review was and became."""

    key: Key
    before: SliceReview
    after: SliceReview
    label: str
    time: float = field(default_factory=time.monotonic)


Listener = Callable[[Key], None]


class ReviewState(UsesHistory):
    """Reviews keyed by (series uid, slice index); every change goes through `_do`, so it can be undone."""

    # Note edits on the same slice within this many seconds merge into one undo step.
    NOTE_MERGE_S = 2.0

    def __init__(self) -> None:
        self._reviews: dict[Key, SliceReview] = {}
        # Undo and redo: its own history until a `Session` gives it the one it shares with the measurements.
        self.history = History()
        self._listeners: list[Listener] = []

    # --------------------------------------------------------------------------------------------------- reading
    def get(self, series_uid: str, index: int) -> SliceReview:
        return self._reviews.get((series_uid, int(index)), SliceReview())

    def items(self, series_uid: str | None = None) -> list[tuple[Key, SliceReview]]:
        return sorted((k, v) for k, v in self._reviews.items() if series_uid is None or k[0] == series_uid)

    def counts(self, series_uid: str) -> dict[Decision, int]:
        out = {d: 0 for d in Decision}
        for (_uid, _i), r in self.items(series_uid):
            out[r.decision] += 1
        return out

    # ---------------------------------------------------------------------------------------------------- actions
    def set_decision(self, series_uid: str, index: int, decision: Decision | str) -> bool:
        decision = Decision(decision)
        cur = self.get(series_uid, index)
        return self._do((series_uid, int(index)), replace(cur, decision=decision), f"Mark {decision.value}")

    def set_note(self, series_uid: str, index: int, note: str) -> bool:
        key = (series_uid, int(index))
        cur = self.get(*key)
        step = self.history.last
        last = step.record if step is not None and step.source == "review" else None
        if (last is not None and last.key == key and last.label == "Edit note" and not self.history.can_redo
                and time.monotonic() - last.time < self.NOTE_MERGE_S):
            # Typing continues the previous note edit: one undo step for the whole burst.
            self.history.drop_last()
            return self._do(key, replace(cur, note=note), "Edit note", before=last.before)
        return self._do(key, replace(cur, note=note), "Edit note")

    def add_annotation(self, series_uid: str, index: int, annotation: Annotation) -> bool:
        cur = self.get(series_uid, index)
        return self._do((series_uid, int(index)), replace(cur, annotations=cur.annotations + (annotation,)),
                        f"Add {annotation.kind}")

    def remove_annotation(self, series_uid: str, index: int, position: int) -> bool:
        cur = self.get(series_uid, index)
        if not 0 <= position < len(cur.annotations):
            return False
        anns = cur.annotations[:position] + cur.annotations[position + 1:]
        return self._do((series_uid, int(index)), replace(cur, annotations=anns), "Remove annotation")

    def clear_annotations(self, series_uid: str, index: int) -> bool:
        cur = self.get(series_uid, index)
        return self._do((series_uid, int(index)), replace(cur, annotations=()), "Clear annotations")

    def _do(self, key: Key, after: SliceReview, label: str, before: SliceReview | None = None) -> bool:
        cur = self.get(*key)
        before = cur if before is None else before
        if after == cur and before == cur:
            return False  # nothing changes: no undo step either
        if after != before:  # a merged note edit typed back to where it started leaves no step
            self._push(Command(key, before, after, label))
        if after != cur:
            self._put(key, after)
        return True

    def _put(self, key: Key, review: SliceReview) -> None:
        if review.is_empty:
            self._reviews.pop(key, None)
        else:
            self._reviews[key] = review
        for listener in list(self._listeners):
            listener(key)

    # -------------------------------------------------------------------------------------------------- undo/redo
    def _push(self, cmd: Command) -> None:
        self.history.push(Step("review", cmd.label, cmd, self._undo_command, self._redo_command))

    def _undo_command(self, cmd: Command) -> Key:
        self._put(cmd.key, cmd.before)
        return cmd.key

    def _redo_command(self, cmd: Command) -> Key:
        # A fresh timestamp: a redone note edit must not merge with typing that follows much later.
        cmd.time = 0.0
        self._put(cmd.key, cmd.after)
        return cmd.key

    # -------------------------------------------------------------------------------------------------- listening
    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # ------------------------------------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """Reviews only: the undo history belongs to one sitting."""
        return {"reviews": [{"series_uid": uid, "index": i, **r.to_dict()} for (uid, i), r in self.items()]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ReviewState":
        st = cls()
        for item in d.get("reviews", []):
            review = SliceReview.from_dict(item)
            if not review.is_empty:
                st._reviews[(str(item["series_uid"]), int(item["index"]))] = review
        return st


# ------------------------------------------------------------------------------------------------- flagged slices
def flagged(percentiles: Mapping[int, float], threshold_pct: float) -> list[int]:
    """Slice indices whose score is at or above `threshold_pct` (percentile of normal), in slice order."""
    return sorted(i for i, p in percentiles.items() if p == p and p >= threshold_pct)


def next_flagged(percentiles: Mapping[int, float], threshold_pct: float, current: int, step: int = 1,
                 wrap: bool = True) -> int | None:
    """The next (step=+1) or previous (step=-1) flagged slice from `current`; wraps around by default."""
    marks = flagged(percentiles, threshold_pct)
    if not marks:
        return None
    if step > 0:
        after = [i for i in marks if i > current]
        return after[0] if after else (marks[0] if wrap else None)
    before = [i for i in marks if i < current]
    return before[-1] if before else (marks[-1] if wrap else None)


def annotations_mask(annotations: Iterable[Annotation], shape: tuple[int, int]) -> "np.ndarray":
    """Rasterise ellipses (filled) and brush strokes (round brush) into a boolean mask of `shape` (rows, cols)."""
    import cv2
    import numpy as np

    m = np.zeros(shape, np.uint8)
    for a in annotations:
        if isinstance(a, Ellipse):
            cv2.ellipse(m, (int(round(a.cx)), int(round(a.cy))), (max(1, int(round(a.rx))), max(1, int(round(a.ry)))),
                        0, 0, 360, 1, thickness=-1)
            continue
        pts = np.round(np.asarray(a.points, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        thick = max(1, int(round(a.width)))
        if len(pts) == 1:
            cv2.circle(m, (int(pts[0, 0, 0]), int(pts[0, 0, 1])), max(1, thick // 2), 1, thickness=-1)
        else:
            cv2.polylines(m, [pts], False, 1, thickness=thick)
    return m.astype(bool)
