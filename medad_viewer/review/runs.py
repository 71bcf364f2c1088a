"""The Adapt & score runs of the open study and their scores, Qt-free: a run's life (queued, adapting, scoring,
done, cancelled, failed), the slices it has scored so far, the scores of each series, and the time left.

Events (`scoring.events`): scores (ScoresReplaced: a series' scores were replaced), slice_score (SliceScored: one
slice was scored, its compact result), scoring (ScoringChanged: the run changed state), device (DeviceNamed: which
device the job runs on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..engine.records import SliceScore
from .events import (DetectorReady, DeviceNamed, EmitterGroup, ScoresNotSaved, ScoresReplaced, ScoringChanged,
                     SliceScored)
from .results import ScoreResults
from .score_job import FIT_END

# The life of one Adapt & score run.
QUEUED, ADAPTING, SCORING, DONE, CANCELLED, FAILED = "queued", "adapting", "scoring", "done", "cancelled", "failed"


@dataclass
class ScoringRun:
    """One Adapt & score run: its state, the slices scored so far, and what to restore if it yields nothing."""

    series_uid: str
    num_slices: int
    started: float
    state: str = QUEUED
    results: ScoreResults | None = None
    previous: ScoreResults | None = None  # the scores it replaces: back if the run fails or ends before a slice
    score_started: float | None = None
    message: str = ""
    outcome: Any = None

    @property
    def running(self) -> bool:
        return self.state in (QUEUED, ADAPTING, SCORING)


class ScoringModel:
    """clock(): seconds; session(): the review session (its scores summary); before_start(): called as a run starts
    (the session is saved first); not_saved(series uid, message): a job could not write its scores."""

    def __init__(self, clock: Callable[[], float], session: Callable[[], Any], before_start: Callable[[], Any],
                 not_saved: Callable[[str | None, str], None], seconds_per_slice: float = 0.5):
        self.clock = clock
        self._session = session
        self._before_start = before_start
        self._not_saved = not_saved
        self.results: dict[str, ScoreResults] = {}  # series uid -> its scores
        self.run: ScoringRun | None = None
        self.detector_info: dict | None = None  # the detector of the scores shown
        self.seconds_per_slice = seconds_per_slice  # the last measured scoring pace (the app keeps it in settings)
        self.events = EmitterGroup(scores=ScoresReplaced, slice_score=SliceScored, scoring=ScoringChanged,
                                   device=DeviceNamed)

    def replace_all(self, scores: dict[str, ScoreResults]) -> None:
        """The saved scores of a study just opened."""
        self.results.clear()
        self.results.update(scores)
        self.detector_info = None

    def show(self, series_uid: str) -> None:
        """The series shown changed: its detector is the one described."""
        res = self.results.get(series_uid)
        self.detector_info = (res.detector or None) if res is not None and len(res) else None

    def start(self, series, reference_set, method: str) -> ScoringRun | str:
        """Begin an Adapt & score run of `series` from `reference_set`; a message instead when it cannot start."""
        if self.run is not None and self.run.running:
            return ""
        s = series
        if s is None:
            return "Open a study first (File → Open folder… or Open file…)."
        if method != "zero" and not reference_set.normals():
            return "Add at least one normal reference slice first: browse to a slice with normal anatomy and press R."
        self._before_start()
        run = ScoringRun(s.uid, s.num_slices, self.clock(), previous=self.results.pop(s.uid, None))
        run.results = self.results[s.uid] = ScoreResults(s.uid, s.num_slices)
        self.run = run
        self.events.scores.emit(ScoresReplaced(s.uid))
        self._set_state(ADAPTING)
        return run

    def _set_state(self, state: str, message: str = "") -> None:
        if self.run is not None:
            self.run.state, self.run.message = state, message
            self.events.scoring.emit(ScoringChanged(self.run))

    def partial(self, message: DetectorReady | SliceScored | ScoresNotSaved | DeviceNamed) -> None:
        """What the job reports on its way, as typed messages (review/events.py)."""
        run = self.run
        if isinstance(message, ScoresNotSaved):  # the scores stay in memory and go with the next save
            self._not_saved(None if run is None or run.results is None else run.results.series_uid, message.message)
            return
        if isinstance(message, DeviceNamed):  # which device the job runs on (torch is imported by the first job)
            self.events.device.emit(message)
            return
        if run is None or run.results is None:
            return
        if isinstance(message, DetectorReady):
            run.score_started = self.clock()
            run.results.detector = message.info
            self.detector_info = message.info
            self._set_state(SCORING)
            return
        r: SliceScore = run.results.put(message.result)
        self.events.slice_score.emit(SliceScored(r))

    def finished(self, outcome) -> None:
        run = self.run
        res = outcome.results
        self.results[res.series_uid] = res
        self.detector_info = outcome.detector
        self._session().scores_summary[res.series_uid] = {
            "detector": outcome.detector, "scored": len(res), "total": res.num_slices, "complete": res.complete,
            "top": [r.index for r in res.ranked()[:5]], "fit_seconds": round(outcome.fit_seconds, 1),
            "score_seconds": round(outcome.score_seconds, 1), "from_cache": outcome.from_cache}
        if len(res) and outcome.score_seconds > 0:
            self.seconds_per_slice = outcome.score_seconds / len(res)
        if run is not None:
            run.results, run.previous, run.outcome = res, None, outcome
        self.events.scores.emit(ScoresReplaced(res.series_uid))
        self._set_state(DONE)

    def _restore_previous(self) -> None:
        run = self.run
        if run is not None and run.previous is not None and (run.results is None or not len(run.results)):
            self.results[run.previous.series_uid] = run.previous
            self.events.scores.emit(ScoresReplaced(run.previous.series_uid))
        if run is not None:
            run.previous = None

    def failed(self, message: str) -> None:
        self._restore_previous()
        self._set_state(FAILED, message)

    def cancelled(self) -> None:
        """Slices already scored are kept; with none, the previous scores come back."""
        self._restore_previous()
        self._set_state(CANCELLED)

    def time_remaining(self, fraction: float, now: float | None = None) -> float | None:
        """Adaptation and scoring run at very different paces, so each stage is extrapolated on its own: scoring
        from the slices done so far, adaptation from its progress plus scoring at the last measured pace."""
        run = self.run
        if run is None or not run.running:
            return None
        now = self.clock() if now is None else now
        total = run.num_slices
        if run.score_started is not None and run.results is not None:
            done = len(run.results)
            if done == 0:
                return None
            per_slice = (now - run.score_started) / done
            self.seconds_per_slice = per_slice
            return per_slice * (total - done)
        elapsed = now - run.started
        fit_fraction = fraction / FIT_END
        if fit_fraction < 0.03 or elapsed < 3:
            return None
        fit_left = elapsed * (1.0 - fit_fraction) / fit_fraction
        return fit_left + self.seconds_per_slice * total
