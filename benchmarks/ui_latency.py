"""UI responsiveness while Adapt & score runs: the main window (offscreen) on the demo study with its saved
references, a 10 ms QTimer measuring event-loop stalls meanwhile.

    python benchmarks/ui_latency.py [--budget SECONDS] [--threads N] [--method adapted|memory] [--scroll]
                                    [--cine] [--probe] [--layout 1x3] [--plane coronal]

The job starts once the window has settled (start-up imports done), as when a user presses the button.
Defaults: the app's own settings (EfficientNet-Lite2, the default memory-bank method), torch threads as the app
sets them (cores - 1 on a small CPU). A fresh temporary data folder, so no cached adaptation is reused. --scroll
also steps through slices every 50 ms, as a user browsing while the job runs. --layout 1x3 shows the three planes
(their reformatted maps follow the scoring), --plane the main view's plane; the probe then moves over every view.
Prints JSON (indented; --json: one line).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's package, as the other scripts
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", type=float, default=None, help="adaptation time budget in s (default: the app's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the job (default: the app's)")
    p.add_argument("--method", default=None, help="memory (the default) or adapted")
    p.add_argument("--scroll", action="store_true", help="scroll through slices while the job runs")
    p.add_argument("--cine", action="store_true", help="play the slices (cine, 10 a second) while the job runs")
    p.add_argument("--probe", action="store_true", help="move the cursor (data probe) every 20 ms while it runs")
    p.add_argument("--layout", default="1x1", choices=("1x1", "1x3"), help="one view or the three planes")
    p.add_argument("--plane", default=None, help="the main view's plane (axial, coronal, sagittal)")
    p.add_argument("--switch-interval", type=float, default=None,
                   help="sys.setswitchinterval in s (default: what the app sets)")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", action="store_true", help="print the result as one JSON line (for scripts and tests)")
    args = p.parse_args()

    data = tempfile.mkdtemp(prefix="medad-bench-")
    atexit.register(shutil.rmtree, data, True)  # the fresh app data folder goes with the run
    os.environ["MEDAD_VIEWER_DATA_DIR"] = data
    import numpy as np
    from PySide6.QtCore import QSettings, Qt, QTimer

    from medad_viewer.gui.app import create_app
    from medad_viewer.gui.main_window import MainWindow

    # Sessions go to the (fresh, temporary) app data folder set above.
    app = create_app()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    settings = QSettings(os.path.join(data, "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings)
    if args.budget is not None:
        win.app_settings.set("time_budget_s", args.budget)
    if args.method:
        win.app_settings.set("method", args.method)
    if args.threads is not None:
        win.scoring.job_threads = args.threads
    win.show()

    opened = []
    win.studyOpened.connect(opened.append)
    win.opening.open_demo()
    t0 = time.monotonic()
    while not opened and time.monotonic() - t0 < 60:
        app.processEvents()
        time.sleep(0.005)
    if not win.model.series:
        print(json.dumps({"error": "the demo study did not open"}))
        return 1
    # As a user would: the window has settled (the start-up device probe, which imports torch, is done) before
    # Adapt & score is pressed.
    while not win.settled and time.monotonic() - t0 < 60:
        app.processEvents()
        time.sleep(0.005)

    win.model.set_layout(args.layout)
    if args.plane:
        win.planes.set_plane(args.plane)
    app.processEvents()

    ticks: list[float] = []
    stage = {"msg": "", "log": []}  # (time, job message) to say what the job was doing when a stall happened
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    scroller = QTimer()
    scroller.setInterval(50)
    step = [1]

    def scroll() -> None:
        if win.model.index in (0, win.model.series.num_slices - 1):
            step[0] = -step[0]
        win.show_slice(win.model.index + step[0])

    scroller.timeout.connect(scroll)
    prober = QTimer()
    prober.setInterval(20)
    rng = np.random.default_rng(0)

    from PySide6.QtCore import QPointF

    probed = {"moves": 0, "shown": 0}

    def probe() -> None:  # a mouse move over the image (over each view shown, in turn), as the scene reports it
        views = win.planes.visible_viewers()
        v = views[int(rng.integers(len(views)))]
        ps = win.model.view_series(v.plane or None)
        pixel = QPointF(int(rng.integers(ps.columns)) + 0.5, int(rng.integers(ps.rows)) + 0.5)
        v.glw.scene().sigMouseMoved.emit(v.image.mapToScene(pixel))
        probed["moves"] += 1
        probed["shown"] += bool(v.bottom_right.text())  # the corner probe says what is under the cursor

    prober.timeout.connect(probe)
    state = {"done": None}
    win.scoringFinished.connect(lambda o: state.update(done="finished"))
    win.scoringFailed.connect(lambda m: state.update(done=f"failed: {m}"))
    win.scoringCancelled.connect(lambda: state.update(done="cancelled"))

    import gc

    gc_pauses: list[tuple[float, float, int]] = []  # (start, ms, generation): GC holds the GIL in any thread
    gc_start = {}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start["t"] = time.perf_counter()
        elif "t" in gc_start:
            gc_pauses.append((gc_start["t"], (time.perf_counter() - gc_start.pop("t")) * 1000, info["generation"]))

    gc.callbacks.append(on_gc)
    start = time.monotonic()
    timer.start()
    if args.scroll:
        scroller.start()
    if args.cine:
        win.model.display.toggle("cine")
    if args.probe:
        prober.start()
    win.scoring.run()
    if win.scoring.job is not None:
        win.scoring.job.progress.connect(lambda f, m: stage["log"].append((time.perf_counter(), m)))
    while state["done"] is None and time.monotonic() - start < args.timeout:
        app.processEvents()
        time.sleep(0.001)  # the event loop is what's measured; this only yields the GIL between rounds
    total = time.monotonic() - start
    timer.stop()
    scroller.stop()
    prober.stop()
    if win.model.display.cine:
        win.model.display.toggle("cine")
    if state["done"] is None:
        win.scoring.cancel()
    gaps = np.diff(np.array(ticks)) * 1000.0
    stalls = np.maximum(gaps - 10.0, 0.0) if gaps.size else np.zeros(1)
    res = win.model.results.get(win.model.series.uid)
    worst = []
    if gaps.size:
        log = stage["log"]
        for k in np.argsort(gaps)[::-1][:8]:
            t_end = ticks[k + 1]
            before = [m for t, m in log if t <= t_end]
            worst.append({"stall_ms": round(float(gaps[k] - 10.0), 1), "at_s": round(ticks[k] - ticks[0], 1),
                          "job_stage": before[-1] if before else "starting"})
    out = {
        "max_stall_ms": round(float(stalls.max()), 1),
        "p99_stall_ms": round(float(np.percentile(stalls, 99)), 1),
        "scored_slices": len(res) if res is not None else 0,
        "total_slices": win.model.series.num_slices,
        "total_s": round(total, 1),
        "outcome": state["done"] or "timeout",
        "ticks": int(gaps.size),
        "job_threads": win.scoring.job_threads,
        "settings": win.app_settings.detector_settings(win.model.series.modality),
        "detector": win.model.detector_info,
        "scroll": args.scroll,
        "cine": args.cine,
        "probe": args.probe,
        "probe_moves": probed["moves"],
        "probe_shown": probed["shown"],
        "layout": args.layout,
        "plane": win.model.plane,
        "cpu_count": os.cpu_count(),
        "switch_interval_s": sys.getswitchinterval(),
        "worst_stalls": worst,
        "longest_gc_ms": sorted(((round(ms, 1), g, round(t - ticks[0], 1)) for t, ms, g in gc_pauses),
                                reverse=True)[:5] if ticks else [],
    }
    win.close()
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))
    return 0 if state["done"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
