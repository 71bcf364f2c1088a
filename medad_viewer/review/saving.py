"""When the review session is saved, Qt-free: autosave after a short delay, saves at once for decisions and drawings,
scores a save could not write kept for the next one, and a save problem said once in plain words.

Events (`saving.events`): due (SaveDue: a save should follow within `delay_s`; the window starts its timer, tests
call `save()`), problem (SaveProblem: a save failed or went to a spare folder; None when all is saved again).
"""

from __future__ import annotations

from typing import Any, Callable

from .events import EmitterGroup, SaveDue, SaveProblem
from .session import SaveFailed, SessionStore


class SavingModel:
    """session(): the session to save; scores(uid): the scores of a series held in memory, or None."""

    AUTOSAVE_DELAY_S = 0.6

    def __init__(self, clock: Callable[[], float], session: Callable[[], Any], scores: Callable[[str], Any]):
        self.clock = clock
        self._session = session
        self._scores = scores
        self.store: SessionStore | None = None  # where the open study's session lives (None: nothing open)
        self.unsaved_scores: set[str] = set()  # series whose scores a save could not write (kept in memory)
        self.problem: str | None = None
        self._due: float | None = None
        self.events = EmitterGroup(due=SaveDue, problem=SaveProblem)

    def schedule(self) -> None:
        """Save within the autosave delay of the first unsaved change: later changes do not postpone it, so steady
        typing or scrolling still reaches the disk every AUTOSAVE_DELAY_S (what a crash can lose is bounded)."""
        if self.store is not None and self._due is None:
            self._due = self.clock() + self.AUTOSAVE_DELAY_S
            self.events.due.emit(SaveDue(self.AUTOSAVE_DELAY_S))

    @property
    def pending(self) -> bool:
        return self._due is not None

    def save(self) -> bool:
        """Save the session, and any scores an earlier save could not write. A failure is said once, in plain
        words; everything stays in memory and the next save tries again. True when all is on disk."""
        self._due = None
        if self.store is None:
            return True
        try:
            self.store.save(self._session())
            for uid in sorted(self.unsaved_scores):
                res = self._scores(uid)
                if res is not None and len(res):
                    self.store.save_scores(res)
                self.unsaved_scores.discard(uid)
        except OSError as exc:
            self._say(str(exc) if isinstance(exc, SaveFailed) else
                      f"The review session could not be saved ({exc.strerror or exc}).")
            return False
        self._say(self.store.notice)
        return True

    def scores_not_saved(self, series_uid: str | None, message: str) -> None:
        """A scoring job could not write its scores: they stay in memory and go with the next save."""
        if series_uid is not None:
            self.unsaved_scores.add(series_uid)
        self._say(message)

    def _say(self, message: str | None) -> None:
        if message != self.problem:
            self.problem = message
            self.events.problem.emit(SaveProblem(message))
