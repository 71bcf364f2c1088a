"""A review session of one study: series, references, review state, settings and the last scores, saved atomically.

Kept in `<study folder>/.medad-viewer/` when that folder is writable, else in the app data folder under a hash of
the study path; the newest of the two wins when both exist.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .references import ReferenceSet
from .results import ScoreResults
from .state import ReviewState
from ..io.atomic import atomic_write_json
from .storage import data_dir, is_writable_dir, short_hash

FORMAT = "medad-viewer-session/1"
LOCAL_DIR = ".medad-viewer"


@dataclass
class Session:
    study_path: str
    series_uid: str | None = None
    slice_index: int = 0
    reference_set: ReferenceSet = field(default_factory=ReferenceSet)
    review: ReviewState = field(default_factory=ReviewState)
    settings: dict = field(default_factory=dict)  # detector settings as used for the last run (DetectorSettings dict)
    view: dict = field(default_factory=dict)  # threshold, opacity, colour map, window per series...
    scores_summary: dict = field(default_factory=dict)  # series uid -> {detector, scored, total, complete, top}
    saved_at: float = 0.0


class SessionStore:
    """Where one study's session lives, and reading/writing it."""

    def __init__(self, study_path: str | os.PathLike, local: bool = True):
        """local=False keeps the session in the app data folder even when the study's folder is writable (the
        demo study inside a checkout, say)."""
        self.study_path = Path(study_path).resolve()
        self._allow_local = local
        if self.study_path.is_dir():
            self._local = self.study_path / LOCAL_DIR
            self._prefix = ""
        else:
            # Several files in one folder can each be a study: one session per file name.
            self._local = self.study_path.parent / LOCAL_DIR
            self._prefix = self.study_path.name + "."
        self._fallback = data_dir() / "sessions" / short_hash(str(self.study_path))
        self._folder: Path | None = None

    @property
    def folder(self) -> Path:
        """The folder sessions are written to (decided on first use: the study's own when writable)."""
        if self._folder is None:
            use_local = self._allow_local and is_writable_dir(self._local)
            self._folder = self._local if use_local else self._fallback
        return self._folder

    def _session_file(self, folder: Path) -> Path:
        return folder / f"{self._prefix}session.json"

    @property
    def session_file(self) -> Path:
        return self._session_file(self.folder)

    def scores_file(self, series_uid: str, folder: Path | None = None) -> Path:
        return (folder or self.folder) / f"{self._prefix}scores-{short_hash(series_uid)}.npz"

    def _existing(self) -> list[Path]:
        """Session files that exist, newest first."""
        places = (self._local, self._fallback) if self._allow_local else (self._fallback,)
        found = [p for p in (self._session_file(f) for f in places) if p.is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    # ------------------------------------------------------------------------------------------------ save/load
    def save(self, session: Session) -> Path:
        folder = self.folder
        session.saved_at = time.time()
        mask_dir = folder / f"{self._prefix}masks"
        session.reference_set.write_masks(mask_dir)
        d = {
            "format": FORMAT,
            "study_path": str(self.study_path),
            "series_uid": session.series_uid,
            "slice_index": session.slice_index,
            "reference_set": session.reference_set.to_dict(None, mask_dir),
            "reference_set_path": str(session.reference_set.path) if session.reference_set.path else None,
            "review": session.review.to_dict(),
            "settings": session.settings,
            "view": session.view,
            "scores_summary": session.scores_summary,
            "saved_at": session.saved_at,
        }
        try:
            return atomic_write_json(self.session_file, d)
        except OSError:
            if folder == self._fallback:
                raise
            # The study folder stopped being writable (unmounted, permissions changed): keep going elsewhere.
            self._folder = self._fallback
            return self.save(session)

    def load(self) -> Session | None:
        """The newest saved session of this study, or None. A damaged file is skipped, never fatal."""
        for path in self._existing():
            try:
                d = json.loads(path.read_text(encoding="utf-8"))
                if d.get("format") != FORMAT:
                    continue
                ref = ReferenceSet.from_dict(d["reference_set"], path.parent)
                if d.get("reference_set_path"):
                    ref.path = Path(d["reference_set_path"])
                # Keep writing where the session was found, so reviews don't split across two folders.
                if self._folder is None and (path.parent == self._fallback or is_writable_dir(path.parent)):
                    self._folder = path.parent
                return Session(str(self.study_path), d.get("series_uid"), int(d.get("slice_index", 0)), ref,
                               ReviewState.from_dict(d.get("review", {})), d.get("settings", {}),
                               d.get("view", {}), d.get("scores_summary", {}), float(d.get("saved_at", 0.0)))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return None

    def save_scores(self, results: ScoreResults) -> Path:
        try:
            return results.save(self.scores_file(results.series_uid))
        except OSError:
            if self.folder == self._fallback:
                raise
            self._folder = self._fallback
            return results.save(self.scores_file(results.series_uid))

    def load_scores(self, series_uid: str) -> ScoreResults | None:
        places = (self.folder, self._local, self._fallback) if self._allow_local else (self.folder,)
        candidates = [self.scores_file(series_uid, f) for f in places]
        found = sorted({p for p in candidates if p.is_file()}, key=lambda p: p.stat().st_mtime, reverse=True)
        for p in found:
            try:
                res = ScoreResults.load(p)
            except ValueError:
                continue
            if res.series_uid == series_uid:
                return res
        return None
