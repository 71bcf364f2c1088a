"""How fast Cancel is: the real window (offscreen) cancels each kind of job at random moments and times from the
cancel to the end of the worker thread.

    python benchmarks/cancel_latency.py [--trials 20] [--seed 0] [--slices 300]

Jobs, all with the app's defaults (EfficientNet-Lite2, ImageNet weights):
  load    opening a synthetic CT series of --slices 512 x 512 DICOM files (see big_series.py)
  adapt   Adapt & score with the "adapted" method, cancelled during adaptation (4 references of that series)
  score   Adapt & score with the default method, cancelled while slices are scored
  export  the PDF heatmap report of every slice of the demo MR (25 pages), cancelled while it is written
Prints one JSON line: {"max_cancel_s": {...}, "median_cancel_s": {...}, "trials": N, "seconds": S}. A trial whose
job ended before its cancel moment is drawn again. Target: max < 1 s for every kind on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
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
    os.environ["MEDAD_VIEWER_DATA_DIR"] = data

    from PySide6.QtCore import QSettings
    from medad_viewer.gui.app import create_app
    from medad_viewer.gui.main_window import DEMO_REFERENCES, DEMO_STUDY, MainWindow
    import medad_viewer.report as report

    app = create_app()
    win = MainWindow(QSettings(os.path.join(data, "settings.ini"), QSettings.Format.IniFormat))
    win.show()

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)

    def wait(cond, timeout: float = 600) -> bool:
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
        return time.monotonic() - t

    def open_study(path, refs=None):
        opened = []
        win.studyOpened.connect(opened.append)
        win.open_path(str(path), reference_set=refs)
        wait(lambda: bool(opened), 300)
        win.studyOpened.disconnect()

    wait(lambda: win.settled, 60)
    kinds = args.kinds.split(",")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    redraws = {k: 0 for k in kinds}

    if "load" in kinds:
        open_study(folder)  # once, so the files are in the page cache as on a second look
        while len(times["load"]) < args.trials:
            win.open_path(str(folder))
            w = win._study_loader
            pump(rng.uniform(0.02, 0.5))
            if w is None or not w.is_running:
                redraws["load"] += 1
                wait(lambda: win._study_loader is None)
                continue
            times["load"].append(cancel_and_time(w, w.cancel))
        open_study(folder)

    def scoring_trials(kind: str, method: str, in_stage) -> None:
        win.app_settings.set("method", method)
        while len(times[kind]) < args.trials:
            win.run_scoring()
            w = win.job
            # The moment: a random time into the stage that is to be cancelled.
            wait(lambda: w is None or not w.is_running or in_stage(), 120)
            pump(rng.uniform(0.0, 2.0))
            if w is None or not w.is_running or not in_stage():
                redraws[kind] += 1
                wait(lambda: win.job is None)
                continue
            times[kind].append(cancel_and_time(w, win.cancel_job))
            wait(lambda: win.job is None)

    if "adapt" in kinds or "score" in kinds:
        s = win.series
        for i in (int(s.num_slices * f) for f in (0.1, 0.2, 0.8, 0.9)):
            win.show_slice(i)
            win.add_reference("normal")
        scoring = lambda: win._score_started is not None  # noqa: E731 - set when the first slice is scored
        if "adapt" in kinds:
            scoring_trials("adapt", "adapted", lambda: not scoring() and "dapt" in win.analysis.stage.text())
        if "score" in kinds:
            scoring_trials("score", "memory", scoring)

    if "export" in kinds:
        open_study(DEMO_STUDY, DEMO_REFERENCES)
        win.app_settings.set("method", "memory")
        done = []
        win.scoringFinished.connect(done.append)
        win.run_scoring()
        wait(lambda: bool(done), 300)
        out = Path(data) / "report.pdf"
        while len(times["export"]) < args.trials:
            w = win.export_to(report.export_pdf_report, str(out), {"slices": "all"})
            wait(lambda: w.is_running, 10)
            pump(rng.uniform(0.05, 2.0))
            if not w.is_running:
                redraws["export"] += 1
                continue
            times["export"].append(cancel_and_time(w, w.cancel))
            assert not out.exists(), "a cancelled export left a file"

    win.close()
    result = {"max_cancel_s": {k: round(max(v), 3) for k, v in times.items() if v},
              "median_cancel_s": {k: round(sorted(v)[len(v) // 2], 3) for k, v in times.items() if v},
              "trials": args.trials, "redrawn": redraws, "seconds": round(time.monotonic() - started, 1)}
    if args.verbose:
        print(json.dumps({k: [round(x, 3) for x in v] for k, v in times.items()}), file=sys.stderr)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
