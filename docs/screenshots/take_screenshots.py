"""Screenshots of the main states for the docs, taken from a real X display (Xvfb) with ImageMagick's `import`.

    Xvfb :99 -screen 0 1600x1000x24 &
    DISPLAY=:99 .venv/bin/python docs/screenshots/take_screenshots.py [--budget 20]

Writes empty.png, study-open.png, references.png, scoring.png, overlay.png, main-window.png (the overlay state),
planes.png (the 1×3 layout with map, crosshair, probe and measurements) and why-hot.png beside this file. Uses a temporary data folder, so no saved session or cached adaptation is involved.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--budget", type=float, default=20.0, help="adaptation budget (s) for the demo run")
    p.add_argument("--ct", default=str(HERE.parent.parent / "tests" / "data" / "ct-dicom"))
    p.add_argument("--only-worklist", action="store_true", help="only the worklist screenshot")
    args = p.parse_args()
    data = tempfile.mkdtemp(prefix="medad-shots-")
    os.environ["MEDAD_VIEWER_DATA_DIR"] = data
    from PySide6.QtCore import QSettings

    import medad_viewer.review.session as session_mod
    from medad_viewer.gui.app import create_app
    from medad_viewer.gui.main_window import MainWindow

    session_mod.is_writable_dir = lambda folder: str(folder).startswith(data)  # keep sessions out of the checkout
    app = create_app()
    win = MainWindow(QSettings(os.path.join(data, "settings.ini"), QSettings.Format.IniFormat))
    win.app_settings.set("time_budget_s", args.budget)
    win.setGeometry(0, 0, 1600, 1000)
    win.show()

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    def shot(name: str) -> None:
        pump(0.5)
        path = HERE / name
        if shutil.which("import") and os.environ.get("DISPLAY"):
            subprocess.run(["import", "-window", "root", "-crop", "1600x1000+0+0", str(path)], check=True)
        else:
            win.grab().save(str(path))
        print("wrote", path)

    def wait(cond, timeout: float = 600.0) -> None:
        end = time.monotonic() + timeout
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    pump(2.0)
    if args.only_worklist:
        worklist(win, pump, shot, wait, data)
        win.close()
        pump(0.5)
        return 0
    shot("empty.png")
    opened: list[str] = []
    win.studyOpened.connect(opened.append)
    win.opening.open_path(args.ct)
    wait(lambda: opened)
    win.slice_info.apply_preset(1)
    pump(0.5)
    shot("study-open.png")

    opened.clear()
    win.opening.open_demo()
    wait(lambda: opened)
    win.show_slice(8)
    shot("references.png")

    done: list[object] = []
    win.scoringFinished.connect(done.append)
    win.scoring.run()
    wait(lambda: (res := win.model.results.get(win.model.series.uid)) is not None and len(res) >= 9, 900)
    win.show_slice(12)
    shot("scoring.png")
    wait(lambda: done, 900)
    ranked = win.ranking.ranked_indices()
    tumour = [i for i in ranked if 11 <= i <= 17]
    win.analysis.contour.setChecked(True)
    win.show_slice(tumour[0] if tumour else ranked[0])
    shot("overlay.png")
    shutil.copy(HERE / "overlay.png", HERE / "main-window.png")
    reading_room(win, pump, shot, wait)
    worklist(win, pump, shot, wait, data)
    win.close()
    pump(0.5)
    return 0


def worklist(win, pump, shot, wait, data: str) -> None:
    """`medad-viewer batch` on the sample MR and CT volumes and a broken file, the worklist opened in the window and
    its top series opened with its scores."""
    from medad_viewer.cli import main as cli

    repo = HERE.parent.parent
    root = Path(data) / "archive"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(repo / "tests" / "data" / "mr-brain" / "brain2_image.nrrd", root / "head.nrrd")
    shutil.copy(repo / "tests" / "data" / "ct-nifti" / "example_ct_sm.nii.gz", root / "abdomen.nii.gz")
    (root / "broken.nii.gz").write_bytes(b"not a volume")
    out = Path(data) / "worklist"
    cli(["batch", str(root), "--refs", str(repo / "resources" / "demo" / "brain1_image.nrrd") + ":2,5,8,10,18,20,22,24",
         "--refs", str(repo / "tests" / "data" / "ct-nifti" / "example_ct_sm.nii.gz") + ":3,11,19,26",
         "--out", str(out), "--workers", "2"])
    win.worklist.open_folder(out)
    opened: list[str] = []
    win.studyOpened.connect(opened.append)
    win.worklist.panel.table.cellDoubleClicked.emit(0, 0)
    wait(lambda: opened and win.model.series is not None and win.model.series.uid in win.model.results, 120)
    pump(1.0)
    shot("worklist.png")


def reading_room(win, pump, shot, wait) -> None:
    """planes.png: the 1×3 layout on the sample MR with its map, the crosshair and the probe on the tumour, an
    ellipse ROI and a length on it; why-hot.png: the "Why is this hot?" panel for the tumour's hottest point. The
    point is chosen inside the sample's tumour label (brain1_label.nrrd), as a reader would click the lesion."""
    import numpy as np

    from medad_viewer.gui.analysis_panel import pct_to_slider
    from medad_viewer.io import load_study
    from medad_viewer.review.measurements import EllipseROI, Length

    m = win.model
    s = win.model.series
    res = win.model.results[s.uid]
    label_path = HERE.parent.parent / "resources" / "demo" / "brain1_label.nrrd"  # the demo study's label
    label = load_study(label_path).series[0].volume() > 0 if label_path.is_file() else None
    scored = [r.index for r in res.ranked()]
    # the tumour slice the method ranks highest (the one a reader reaches first)
    k = next((i for i in scored if label is None or label[i].any()), scored[0])
    amap = res.get(k).map
    inside = label[k] if label is not None else np.ones_like(amap, bool)
    r, c = np.unravel_index(int(np.argmax(np.where(inside, amap, -np.inf))), amap.shape)
    rows, cols = np.nonzero(inside)
    win.analysis.threshold.setValue(pct_to_slider(95.0))
    win.show_slice(k)
    m.set_layout("1x3")
    m.set_crosshair(m.acquired_plane(), k, int(r), int(c))
    cy, cx = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    m.review.add_measurement(EllipseROI(float(cx), float(cy), float(cols.max() - cols.min()) / 2 + 3,
                                 float(rows.max() - rows.min()) / 2 + 3))
    m.review.add_measurement(Length((float(cols.min()), float(cy)), (float(cols.max()), float(cy))))
    win.viewer._cursor = (int(r), int(c))
    win.viewer._update_cursor_text()
    pump(1.0)
    shot("planes.png")
    m.set_layout("1x1")
    win.why.toggle()
    done = []
    win.why.explained.connect(done.append)
    win.why.clicked(int(r), int(c))
    wait(lambda: done, 120)
    pump(0.5)
    shot("why-hot.png")


if __name__ == "__main__":
    sys.exit(main())
