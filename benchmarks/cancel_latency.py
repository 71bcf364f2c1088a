"""How fast Cancel is: the real window (offscreen) cancels each kind of job at random moments and times from the
cancel to the end of the worker thread.

    python benchmarks/cancel_latency.py [--trials 20] [--seed 0] [--slices 300]

Jobs, all with the app's defaults (EfficientNet-Lite2, ImageNet weights):
  load    opening a synthetic CT series of --slices 512 x 512 DICOM files (see big_series.py), cancelled anywhere in
          a whole load: while the headers are read, or while the slices fill in behind the one shown
  adapt   Adapt & score with the "adapted" method, cancelled during adaptation (4 references of that series)
  score   Adapt & score with the default method, cancelled while slices are scored
  export  the PDF heatmap report of every slice of the demo MR (25 pages), cancelled while it is written
The window is driven as a user drives it: Add as normal reference, Adapt & score and Cancel are its actions (R,
Ctrl+Return, Esc); a load is cancelled through the loading worker the window started (what opening another study or
closing the window does), an export through the worker `export_to` returns (the progress window's Cancel).
Prints a line per kind on stderr and one JSON line on stdout: {"max_cancel_s": {...}, "median_cancel_s": {...},
"trials": N, "redrawn": {...}, "slices": S, "seconds": T}. A trial whose job ended before its cancel moment is drawn
again (at most 20 times a trial, then the script fails). Target: max < 1 s for every kind on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
STUCK_S = 30.0  # a job still running this long after its cancel fails the run
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--kinds", default="load,adapt,score,export")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()

    import big_series

    folder = Path(tempfile.gettempdir()) / f"medad-big-series-{args.slices}" / "dicom"
    if not (folder / ".complete").is_file() or (folder / ".complete").read_text() != str(args.slices):
        big_series.write_series(folder, args.slices)
    data = tempfile.mkdtemp(prefix="medad-cancel-")
    atexit.register(shutil.rmtree, data, True)  # the fresh app data folder goes with the run
    os.environ["MEDAD_VIEWER_DATA_DIR"] = data

    from PySide6.QtCore import QSettings

    import medad_viewer.report as report
    from medad_viewer.gui.app import create_app
    from medad_viewer.gui.main_window import MainWindow
    from medad_viewer.gui.worker import Worker
    from medad_viewer.paths import DEMO_REFERENCES, DEMO_STUDY
    from medad_viewer.review.adaptation_cache import AdaptationCache
    from medad_viewer.review.runs import SCORING

    app = create_app()
    win = MainWindow(QSettings(os.path.join(data, "settings.ini"), QSettings.Format.IniFormat))
    win.show()
    model = win.model
    actions = {a.text(): a for a in win.actions()}

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    def wait(cond, timeout: float = 300) -> bool:
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)
        return cond()

    def cancel_and_time(worker, cancel) -> float:
        t = time.monotonic()
        cancel()
        while worker.is_running:
            app.processEvents()
            time.sleep(0.001)
            if time.monotonic() - t > STUCK_S:
                raise RuntimeError(f"{worker.name}: still running {STUCK_S:g} s after its cancel")
        return time.monotonic() - t

    def settle(what: str, cond, timeout: float = 300) -> None:
        if not wait(cond, timeout):
            raise RuntimeError(f"{what} within {timeout:g} s")

    def study_loads() -> set:
        """The window's study-loading workers still running (the window keeps them as its Qt children); a large
        series is shown before all its slices are read, and its load job goes on filling them in."""
        return {w for w in win.findChildren(Worker) if w.name == "load-study" and w.is_running}

    def open_study(path, refs=None):
        """Open `path` and wait until every slice is read."""
        opened = []
        win.studyOpened.connect(opened.append)
        win.opening.open_path(str(path), reference_set=refs)
        ok = wait(lambda: bool(opened), 120)
        win.studyOpened.disconnect(opened.append)
        if not ok:
            raise RuntimeError(f"{path} did not open within 120 s")
        settle(f"{path}: its slices were not all read", lambda: not study_loads(), 120)

    settle("the window did not settle (start-up probe)", lambda: win.settled, 120)
    kinds = args.kinds.split(",")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    redraws = {k: 0 for k in kinds}
    max_redraws = 20 * args.trials + 20  # a job that always ends before its cancel moment is a failure, not a loop

    def next_trial(kind: str) -> bool:
        if redraws[kind] > max_redraws:
            raise RuntimeError(f"{kind}: the job ended before the cancel moment {redraws[kind]} times")
        return len(times[kind]) < args.trials

    spent: dict[str, float] = {}
    t_kind = time.monotonic()
    if "load" in kinds:
        open_study(folder)  # once, so the files are in the page cache as on a second look
        t = time.monotonic()
        open_study(folder)
        load_s = time.monotonic() - t  # the cancel moment: anywhere in a whole load (headers, then the slices)
        while next_trial("load"):
            before = study_loads()
            win.opening.open_path(str(folder))
            new = study_loads() - before
            if len(new) != 1:
                raise RuntimeError(f"open_path started {len(new)} study loads, not one")
            w = new.pop()
            pump(rng.uniform(0.02, 0.95) * load_s)
            if not w.is_running:
                redraws["load"] += 1
                settle("a study load did not end", lambda: not study_loads())
                continue
            times["load"].append(cancel_and_time(w, w.cancel))
        spent["load"] = time.monotonic() - t_kind
    if "adapt" in kinds or "score" in kinds:
        open_study(folder)

    cache = AdaptationCache().folder  # the app's adaptation cache, in this run's own data folder

    def scoring_trials(kind: str, method: str, in_stage) -> None:
        t0 = time.monotonic()
        win.app_settings.set("method", method)
        while next_trial(kind):
            # A job that ran to its end cached its adaptation; the next would reuse it and never adapt.
            shutil.rmtree(cache, ignore_errors=True)
            win.act_run.trigger()  # Adapt & score (Ctrl+Return)
            w = win.scoring.job
            if w is None:
                raise RuntimeError("Adapt & score started no job")
            stage = {"message": ""}
            w.progress.connect(lambda _f, m: stage.update(message=m))
            # The moment: a random time into the stage that is to be cancelled.
            wait(lambda: not w.is_running or in_stage(stage["message"]), 120)
            pump(rng.uniform(0.0, 2.0))
            if not w.is_running or not in_stage(stage["message"]):
                redraws[kind] += 1
                settle("Adapt & score did not end", lambda: win.scoring.job is None, 900)
                continue
            times[kind].append(cancel_and_time(w, win.act_cancel.trigger))  # Cancel (Esc)
            settle("the window did not take the cancelled job back", lambda: win.scoring.job is None, 10)
        spent[kind] = time.monotonic() - t0

    if "adapt" in kinds or "score" in kinds:
        s = model.series
        add_normal = actions["Add as normal reference"]
        for i in (int(s.num_slices * f) for f in (0.1, 0.2, 0.8, 0.9)):
            model.show_slice(i)
            add_normal.trigger()
        if len(model.session.reference_set.normals()) != 4:
            raise RuntimeError("the four normal references were not added")
        scoring = lambda: model.run is not None and model.run.state == SCORING  # noqa: E731 - slices being scored
        if "adapt" in kinds:  # the training steps of the adapted method
            scoring_trials("adapt", "adapted", lambda msg: not scoring() and msg.startswith("Adapting"))
        if "score" in kinds:
            scoring_trials("score", "memory", lambda _msg: scoring())

    if "export" in kinds:
        t_kind = time.monotonic()
        open_study(DEMO_STUDY, DEMO_REFERENCES)
        win.app_settings.set("method", "memory")
        done = []
        win.scoringFinished.connect(done.append)
        win.act_run.trigger()
        settle("the demo study was not scored", lambda: bool(done), 600)
        out = Path(data) / "report.pdf"
        while next_trial("export"):
            w = win.exports.run(report.export_pdf_report, str(out), {"slices": "all"})
            settle("the export did not start", lambda: w.is_running, 10)
            pump(rng.uniform(0.05, 2.0))
            if not w.is_running:
                redraws["export"] += 1
                settle("the export did not end", lambda: not w.is_running)
                out.unlink(missing_ok=True)
                continue
            times["export"].append(cancel_and_time(w, w.cancel))
            if out.exists():
                raise RuntimeError("a cancelled export left a file")
        spent["export"] = time.monotonic() - t_kind

    win.close()
    result = {"max_cancel_s": {k: round(max(v), 3) for k, v in times.items() if v},
              "median_cancel_s": {k: round(sorted(v)[len(v) // 2], 3) for k, v in times.items() if v},
              "trials": args.trials, "redrawn": redraws, "slices": args.slices,
              "seconds": round(time.monotonic() - started, 1),
              "seconds_per_kind": {k: round(v, 1) for k, v in spent.items()}}
    for k, v in times.items():  # for people; the JSON line below is for scripts
        if v:
            print(f"{k:7s} cancel to worker end: max {max(v):.3f} s, median {sorted(v)[len(v) // 2]:.3f} s "
                  f"({len(v)} trials, {redraws[k]} redrawn)", file=sys.stderr)
    if args.verbose:
        print(json.dumps({k: [round(x, 3) for x in v] for k, v in times.items()}), file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
