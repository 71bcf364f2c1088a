"""The reference slices picked for Adapt & score, Qt-free: adding the slice shown as a normal reference or, with its
drawing as the mask, as an abnormal example; removing one; a saved set replacing them; and the studies they come
from, loaded beside the open one.

Events (`references.events`): changed (ReferencesChanged: the set, or the studies its slices come from, changed).

`viewer` is what is shown, as the viewer model gives it: `session`, `series`, `index`, `study_path`, `studies`,
`say()` and `save()`.
"""

from __future__ import annotations

import os
from typing import Any

from .events import EmitterGroup, ReferencesChanged
from .references import ReferenceSet, ReferenceSlice, resolve_series
from .state import annotations_mask


class ReferencesModel:
    def __init__(self, viewer: Any):
        self.viewer = viewer
        self.events = EmitterGroup(changed=ReferencesChanged)

    @property
    def reference_set(self) -> ReferenceSet:
        return self.viewer.session.reference_set

    def add(self, kind: str = "normal") -> str:
        """Add the slice shown as a reference; returns a message for the user ("" when nothing happened)."""
        v = self.viewer
        s = v.series
        if s is None or v.study_path is None:
            return ""
        rs = self.reference_set
        mask = None
        if kind == "abnormal":
            anns = v.session.review.get(s.uid, v.index).annotations
            if not anns:
                v.say("To add a known abnormal example, first draw the finding on this slice with the Ellipse or Brush "
                      "tool (Review panel); the drawing becomes its mask.")
                return ""
            mask = annotations_mask(anns, (s.rows, s.columns))
        if rs.modality and rs.modality != s.modality:
            v.say(f"Note: the references so far are {rs.modality}; this slice is {s.modality}. Mixing modalities "
                  "usually hurts the detector.")
        if not rs.modality:
            rs.modality = s.modality
        rs.add(ReferenceSlice(v.study_path, s.uid, v.index, kind, mask, s.description))
        self._changed()
        what = "a normal reference" if kind == "normal" else "an abnormal example"
        return f"Slice {v.index + 1} added as {what} ({len(rs.normals())} normal references)"

    def remove(self, pos: int) -> str:
        rs = self.reference_set
        if not 0 <= pos < len(rs):
            return ""
        r = rs.remove(pos)
        if not rs.references:
            rs.modality = ""
        self._changed()
        return f"Removed reference slice {r.index + 1}"

    def replace(self, rs: ReferenceSet) -> None:
        """A saved reference set instead of the slices picked so far."""
        self.viewer.session.reference_set = rs
        self._changed()

    def _changed(self) -> None:
        self.events.changed.emit(ReferencesChanged())
        self.viewer.save()

    def series_of(self, r: ReferenceSlice) -> Any:
        """The loaded series a reference slice is from, or None (its study is not loaded)."""
        return resolve_series(r, self.viewer.studies)

    def missing_sources(self) -> list[str]:
        """Studies the references come from that are not loaded yet (and still exist)."""
        missing = sorted({r.source for r in self.reference_set if r.source not in self.viewer.studies})
        return [m for m in missing if os.path.exists(m)]

    def add_studies(self, studies: dict[str, Any]) -> None:
        """Studies the references come from, loaded beside the open one."""
        self.viewer.studies.update(studies)
        self.events.changed.emit(ReferencesChanged())
