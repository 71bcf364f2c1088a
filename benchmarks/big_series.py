"""A large CT series, as a user meets it: a synthetic 1,000-slice 512 x 512 CT written as DICOM files in a temporary
folder, opened in the real window (offscreen), browsed while its slices are still arriving and after, then scored
with k = 4 normal references.

    python benchmarks/big_series.py [--slices 1000] [--score-slices N] [--no-score] [--keep DIR]

Prints one JSON line:
  rss_before_open_mb   resident memory of the window before any study is opened (torch is not imported yet)
  first_slice_s        open_path() until the first slice is drawn (the rest of the series still loading)
  study_shown_s        ... until the study reached the window (headers read, grouped, first slices read)
  first_draw_ms        from the study reaching the window to its first slice drawn (browser, ranking, the slice)
  unread_slice_s       show_slice() onto a slice not read yet until it is drawn (null: all read by then)
  all_slices_s         open_path() until every slice is read
  loading_max_stall_ms the longest event-loop stall (a 10 ms timer) from open_path() until every slice is read
  waits_said           while slices were still read, the Adapt & score panel said that scoring would wait for them
                       (null: every slice was read before it could be looked at)
  browse_ms_per_slice  showing every 10th slice and back, once all are read
  volume_mb            one int16 copy of the volume
  browse_peak_mb       peak resident memory (VmHWM) while opening and browsing
  browse_over_start_mb ... above rss_before_open_mb: what the series costs (one int16 copy = volume_mb)
  score_s_per_slice    Adapt & score (default method, k = 4) per slice, over all slices (or --score-slices); the
                       first scoring imports torch and the engine (not done at start-up), counted here
  scored_complete      the series was complete when its first slice was scored (never scored half-read)
  rss_scored_mb, peak_rss_mb, peak_over_start_mb   memory after scoring, and the peak over the whole run
  phases               the same folder read without the window (io only, after the run, warm disk cache):
                       plan_s (headers scanned, grouped, ordered), first_read_s (the slices the first screen
                       needs), fill_s (every other slice), load_all_s (load_study reading every slice at once:
                       what opening cost before the series was shown progressively)
The files are written once per --keep folder (writing 1,000 DICOM files takes a while) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def phantom(z: int, n: int, size: int = 512):
    """A CT-like slice in HU: air, an elliptic body with fat, soft tissue, lungs in the middle third, a spine."""
    import numpy as np

    rng = np.random.default_rng(z)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = size / 2, size / 2
    img = np.full((size, size), -1000.0, np.float32)
    body = ((xx - cx) / (0.42 * size)) ** 2 + ((yy - cy) / (0.33 * size)) ** 2 < 1
    img[body] = -80.0
    inner = ((xx - cx) / (0.38 * size)) ** 2 + ((yy - cy) / (0.29 * size)) ** 2 < 1
    img[inner] = 40.0
    t = z / max(n - 1, 1)
    if 0.3 < t < 0.7:
        for side in (-1, 1):
            lung = ((xx - cx - side * 0.17 * size) / (0.13 * size)) ** 2 + ((yy - cy) / (0.2 * size)) ** 2 < 1
            img[lung] = -850.0
    spine = ((xx - cx) / (0.04 * size)) ** 2 + ((yy - cy - 0.2 * size) / (0.04 * size)) ** 2 < 1
    img[spine] = 700.0
    img += rng.normal(0, 12, img.shape).astype(np.float32)
    return np.clip(img, -1024, 3000).astype(np.int16)


def write_series(folder: Path, n: int) -> None:
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    study, series = "1.2.826.0.1.3680043.9.7433.1.1", "1.2.826.0.1.3680043.9.7433.1.2"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(n):
        img = sitk.GetImageFromArray(phantom(z, n))
        tags = {
            "0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series}.{z + 1}",
            "0020|000d": study, "0020|000e": series, "0020|0011": "1", "0020|0013": str(z + 1),
            "0008|103e": "Synthetic chest CT", "0010|0010": "Synthetic^Patient", "0010|0020": "BIG-1",
            "0020|0032": f"-250\\-250\\{z * 1.0:.1f}", "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": "0.9765625\\0.9765625", "0018|0050": "1.0",
            "0028|1052": "0", "0028|1053": "1", "0028|1054": "HU",
        }
        for k, v in tags.items():
            img.SetMetaData(k, v)
        writer.SetFileName(str(folder / f"IM{z + 1:05d}.dcm"))
        writer.Execute(img)
    (folder / ".complete").write_text(str(n))


def _status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb() -> float:
    return _status_mb("VmRSS")


def hwm_mb() -> float:
    return _status_mb("VmHWM")


def phases(folder: Path) -> dict:
    """Where the time of opening goes, io only: headers, the first slices, the rest; and reading all at once."""
    from medad_viewer.io import load_study

    t = time.monotonic()
    study = load_study(folder, defer_pixels=True)
    plan = time.monotonic() - t
    s = study.series[0]
    t = time.monotonic()
    study.pending.read_now(s, [s.num_slices // 2])
    first = time.monotonic() - t
    t = time.monotonic()
    study.pending.run()
    study.pending.finish()
    fill = time.monotonic() - t
    del study, s
    t = time.monotonic()
    load_study(folder)
    return {"plan_s": round(plan, 3), "first_read_s": round(first, 3), "fill_s": round(fill, 2),
            "load_all_s": round(time.monotonic() - t, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=1000)
    p.add_argument("--score-slices", type=int, default=None, help="score only the first N slices (default: all)")
    p.add_argument("--no-score", action="store_true")
    p.add_argument("--no-phases", action="store_true", help="skip the io-only timing of the phases")
    p.add_argument("--keep", default=None, help="folder for the DICOM files (kept and reused)")
    args = p.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.gettempdir()) / f"medad-big-series-{args.slices}"
    folder = root / "dicom"
    if not (folder / ".complete").is_file() or (folder / ".complete").read_text() != str(args.slices):
        shutil.rmtree(folder, ignore_errors=True)
        t = time.monotonic()
        write_series(folder, args.slices)
        print(f"wrote {args.slices} files in {time.monotonic() - t:.0f} s", file=sys.stderr)

    data = tempfile.mkdtemp(prefix="medad-big-data-")
    os.environ["MEDAD_VIEWER_DATA_DIR"] = data
    from PySide6.QtCore import QSettings
    from medad_viewer.gui.app import create_app
    from medad_viewer.gui.main_window import MainWindow

    app = create_app()
    win = MainWindow(QSettings(os.path.join(data, "settings.ini"), QSettings.Format.IniFormat))
    win.show()

    def wait(cond, timeout):
        t = time.monotonic()
        while not cond() and time.monotonic() - t < timeout:
            app.processEvents()
            time.sleep(0.002)
        return cond()

    # As a user would: the window has settled; a second for the start-up timers and the first paint.
    wait(lambda: win.settled, 60)
    t = time.monotonic()
    wait(lambda: time.monotonic() - t > 1.0, 2)
    base_rss = rss_mb()
    out: dict = {"slices": args.slices, "rss_before_open_mb": round(base_rss, 1),
                 "torch_imported_before_open": "torch" in sys.modules}

    marks: dict = {}
    shown = win.model.load_finished

    def load_finished(token, payload):  # the study reaches the window (before the window draws anything of it)
        marks.setdefault("study", time.monotonic())
        return shown(token, payload)

    win.model.load_finished = load_finished

    def drawn(i: int) -> bool:
        return win.model.series is not None and win.model.index == i and win.viewer._pixels is not None \
            and not win.viewer.is_loading

    from PySide6.QtCore import QTimer, Qt

    ticks: list[float] = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    t0 = time.monotonic()
    win.opening.open_path(str(folder))
    wait(lambda: win.model.series is not None and win.model.index >= 0 and drawn(win.model.index), 300)
    first = time.monotonic() - t0
    s = win.model.series
    out.update(first_slice_s=round(first, 3), study_shown_s=round(marks.get("study", t0) - t0, 3),
               first_draw_ms=round(1000 * (t0 + first - marks.get("study", t0 + first)), 1))
    # While the rest arrive: jump to a slice far from the first one, not read yet if the fill has not got there.
    far = 1 if win.model.index > s.num_slices // 4 else s.num_slices - 2
    out["unread_slice_s"] = None
    if not s.is_loaded(far):
        t = time.monotonic()
        win.show_slice(far)
        if wait(lambda: drawn(far), 60):
            out["unread_slice_s"] = round(time.monotonic() - t, 3)
    out["waits_said"] = ("waits" in win.analysis.stage.text()) if not win.model.complete else None
    wait(lambda: win.model.complete, 300)
    out["all_slices_s"] = round(time.monotonic() - t0, 2)
    timer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    out["loading_max_stall_ms"] = round(max(0.0, 1000 * max(gaps) - 10), 1) if gaps else None
    s = win.model.series
    out["volume_mb"] = round(s.num_slices * s.rows * s.columns * 2 / 2**20, 1)
    # Browse: every 10th slice, then back, as a user scrolling through.
    t = time.monotonic()
    steps = list(range(0, s.num_slices, 10)) + list(range(s.num_slices - 1, 0, -25))
    for i in steps:
        win.show_slice(i)
        app.processEvents()
    out["browse_ms_per_slice"] = round(1000 * (time.monotonic() - t) / len(steps), 1)
    out["rss_browsing_mb"] = round(rss_mb(), 1)
    out["browse_peak_mb"] = round(hwm_mb(), 1)
    out["browse_over_start_mb"] = round(hwm_mb() - base_rss, 1)

    if not args.no_score:
        n = s.num_slices
        for i in (int(n * 0.1), int(n * 0.2), int(n * 0.8), int(n * 0.9)):
            win.show_slice(i)
            win.references.add("normal")
        if args.score_slices:
            import medad_viewer.review.score_job as scoring
            orig = scoring.ScoreJob.__init__

            def limited(self, *a, **kw):
                orig(self, *a, **kw)
                self.indices = list(range(min(args.score_slices, n)))
            scoring.ScoreJob.__init__ = limited
        done = []
        first_scored: list[bool] = []
        win.model.scoring.events.slice_score.connect(lambda _e: not first_scored
                                             and first_scored.append(bool(win.model.series.complete)))
        win.scoringFinished.connect(done.append)
        win.scoringFailed.connect(done.append)
        t = time.monotonic()
        win.scoring.run()
        wait(lambda: bool(done), 7200)
        scored = len(win.model.results[s.uid]) if s.uid in win.model.results else 0
        out["scored"] = scored
        out["scored_complete"] = first_scored[0] if first_scored else None
        out["score_s_per_slice"] = round((time.monotonic() - t) / max(scored, 1), 3)
        out["rss_scored_mb"] = round(rss_mb(), 1)
        if done and isinstance(done[0], str):
            out["error"] = done[0]
    out["peak_rss_mb"] = round(hwm_mb(), 1)
    out["peak_over_start_mb"] = round(hwm_mb() - base_rss, 1)
    win.close()
    wait(lambda: not win._loaders and win.scoring.job is None, 30)
    if not args.no_phases:
        out["phases"] = phases(folder)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
