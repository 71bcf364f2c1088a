"""Adapt & score's controller: starts the scoring job of the series shown in the background worker, forwards its
progress and typed messages to the scoring model (review/runs.py), and shows the run as its events say: the
Adapt & score panel, the ranking's scores, the overlays, and the end of the run."""

from __future__ import annotations

import os
import time
from typing import Any

from ..engine.defaults import KIND_WORDS
from ..io import series_sequence
from ..review.adaptation_cache import AdaptationCache
from ..review.events import DetectorReady, DeviceNamed, ScoresNotSaved, SliceScored
from ..review.runs import CANCELLED, DONE, FAILED
from ..review.score_job import ScoreJob, run_score_job
from .background_jobs import freeze_heap
from .worker import Worker


class ScoringController:
    """`window` gives the panels, the status bar, the settings and the signals that say a run ended."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.job: Worker | None = None
        # Tests and scripts: turns the settings dict into the DetectorSettings (or dict) the job uses.
        self.settings_hook = None
        # Torch threads for engine jobs: on a small CPU leave a core to the UI.
        self.job_threads: int | None = max(1, (os.cpu_count() or 2) - 1) if (os.cpu_count() or 2) <= 4 else None
        ev = self.model.scoring.events
        ev.scores.connect(lambda e: self._scores_replaced(e.series_uid))
        ev.slice_score.connect(lambda e: self._slice_scored(e.result))
        ev.scoring.connect(lambda e: self._state_changed(e.run))
        ev.device.connect(lambda e: window.status.device_label.setText(f"Device: {e.text}"))

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.is_running

    def detector_settings(self) -> Any:
        """The settings the next run uses: the app's, for the series shown (`settings_hook` may turn them into
        DetectorSettings: tests and scripts)."""
        s = self.model.series
        d = self.window.app_settings.detector_settings(s.modality if s else "OT", series_sequence(s) if s else None)
        return self.settings_hook(d) if self.settings_hook is not None else d

    def run(self) -> None:
        """Adapt & score the series shown in the background worker."""
        if self.job is not None and self.job.is_running:
            return
        settings = self.detector_settings() if self.model.series is not None else {"method": ""}
        method = settings.get("method") if isinstance(settings, dict) else settings.method
        run = self.model.start_scoring(method)
        if isinstance(run, str):
            if run:
                self.window._say(run)
            return
        s, rs, store = self.model.series, self.model.session.reference_set, self.model.saving.store
        if rs.modality and rs.modality != s.modality:
            self.window.statusBar().showMessage(f"⚠ References are {rs.modality}, this series is {s.modality}", 10000)
        job = ScoreJob(rs.copy(), s, settings, device=self.window.app_settings.get("device"),
                       studies=dict(self.model.studies), cache=AdaptationCache(), threads=self.job_threads,
                       save=store.save_scores if store is not None else None)

        def work(progress, cancel, emit):
            job.on_save_error = lambda message: emit(ScoresNotSaved(message))
            return run_score_job(job, progress, cancel, on_result=lambda r: emit(SliceScored(r)),
                                 on_detector=lambda info: emit(DetectorReady(info)),
                                 on_device=lambda text: emit(DeviceNamed(text)))

        freeze_heap()  # what exists now (the open study, thumbnails) need not be scanned during the job
        w = self.job = Worker(work, "adapt-score", self.window)
        w.progress.connect(self._progress)
        w.partial.connect(self.model.scoring.partial)
        w.finished.connect(self.model.scoring.finished)
        w.failed.connect(self.model.scoring.failed)
        w.cancelled.connect(self.model.scoring.cancelled)
        w.done.connect(self._done)
        self.window.analysis.set_running(True)
        self.window.analysis.show_progress(0.0, "Starting", None)
        self.window.act_run.setEnabled(False)
        w.start()

    def cancel(self) -> None:
        if self.job is not None and self.job.is_running and not self.job.is_cancelling:
            self.job.cancel()
            self.window.analysis.set_cancelling()
            self.window.analysis.show_message("Cancelling… (slices already scored are kept)")

    def _progress(self, fraction: float, message: str) -> None:
        if self.job is None or not self.job.is_cancelling:
            self.window.analysis.show_progress(fraction, message, self.model.scoring.time_remaining(fraction))

    def _scores_replaced(self, uid: str) -> None:
        if self.model.series is None or self.model.series.uid != uid:
            return
        res = self.model.results.get(uid)
        if res is not None and len(res):
            self.window.ranking.set_scores({i: (r.score, r.percentile) for i, r in res.results.items()})
        elif self.model.run is not None and self.model.run.running:
            self.window.ranking.clear_scores("Scoring…")
        self.window.slice_info.refresh_overlays()
        self.window.slice_info.refresh()

    def _slice_scored(self, r) -> None:
        if self.model.series is not None and self.model.run is not None and self.model.series.uid == self.model.run.series_uid:
            self.window.ranking.add_score(r.index, r.score, r.percentile)
            if r.index == self.model.index:
                self.window.slice_info.refresh_overlays()
                self.window.slice_info.refresh()
            elif self.model.layout == "1x3" or not self.window.planes.main_is_acquired():
                self.window.planes.overlays_soon()

    def _state_changed(self, run) -> None:
        self.window.status.update_backbone()
        if run.state == DONE:
            outcome = run.outcome
            self.model.session.settings = dict(outcome.detector)  # describe(): with the settings as they ran
            self.window.save_session()
            self.window.app_settings.set_seconds_per_slice(self.model.scoring.seconds_per_slice)
            res = outcome.results
            how = "reused the cached adaptation" if outcome.from_cache else f"adaptation {outcome.fit_seconds:.0f} s"
            kind = KIND_WORDS.get(outcome.detector.get("kind") or "", "")
            msg = (f"Scored {len(res)} slices in {time.monotonic() - run.started:.0f} s ({how})"
                   + (f", as {kind}." if kind else "."))
            if not outcome.detector.get("pretrained", True):
                msg += " ⚠ The backbone has UNTRAINED weights: these scores are meaningless."
            self.window.analysis.show_progress(1.0, msg, None)
            self.window.scoringFinished.emit(outcome)
        elif run.state == FAILED:
            self.window.analysis.show_message(f"⚠ {run.message}")
            self.window._error(run.message, title="Adapt & score failed")
            self.window.scoringFailed.emit(run.message)
        elif run.state == CANCELLED:
            n = len(run.results) if run.results is not None else 0
            self.window.analysis.show_message(f"Cancelled. {n} of {run.num_slices} slices were scored; their maps are kept.")
            self.window.analysis.progress.setValue(0)
            self.window.scoringCancelled.emit()

    def _done(self) -> None:
        self.job = None
        self.window.analysis.set_running(False)
        self.update_run_state()

    def update_run_state(self) -> None:
        """While slices are read the panel says that Adapt & score will wait for the whole series (the job does)."""
        running = self.job is not None and self.job.is_running
        self.window.act_run.setEnabled(not running)
        self.window.analysis.set_waiting("" if running else self.model.loading_reason())
