"""The worklist's controller (File → Open worklist…): shows a `medad-viewer batch` results folder in the worklist
panel, and opens a series from it with its scores already there: the study is opened as any other, then the batch's
scores of that series (scores.csv, maps.npy, run.json with its normal scale) become the series' scores, saved with
the study's session like the window's own, and its references fill an empty reference tray, so review decisions go
into the same session as always. No rescoring. (The workers of a cluster cannot write the reading room's sessions:
the results folder is the hand-off, turned into the session here.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QFileDialog

from ..review.events import ScoresReplaced
from ..review.references import ReferenceSet, ReferenceSlice
from ..review.results import ScoreResults
from .worklist_panel import WorklistPanel


class WorklistController:
    """`window` gives the dock area, the opening controller, the status bar and the model."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.folder: Path | None = None
        self._pending: tuple[Path, str, object] | None = None  # (study path, series uid, the batch's ScoreRun)
        self.panel = WorklistPanel()
        self.dock = QDockWidget("Worklist", window)
        self.dock.setObjectName("worklist")
        self.dock.setWidget(self.panel)
        window.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.dock)
        window.tabifyDockWidget(window.tray_dock, self.dock)  # the bottom's width, a tab beside the reference tray
        self.dock.hide()
        self.panel.openRequested.connect(self.open_row)
        window.studyOpened.connect(self._study_opened)

    def open_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Open a worklist (a medad-viewer batch results folder)",
                                                  self.window.opening.last_dir())
        if folder:
            self.open_folder(folder)

    def open_folder(self, folder: str | Path) -> bool:
        """Show the worklist of a `batch` results folder; False (and a message) when it has none."""
        folder = Path(folder)
        try:
            rows = json.loads((folder / "worklist.json").read_text())["rows"]
        except (OSError, ValueError, KeyError) as exc:
            self.window._error(f"{folder} holds no worklist (worklist.json from medad-viewer batch): {exc}")
            return False
        self.folder = folder
        scored = sum(r.get("status") == "scored" for r in rows)
        self.panel.set_rows(f"<b>{folder.name}</b> · {scored} of {len(rows)} series scored · double-click to open",
                            rows)
        self.dock.show()
        self.dock.raise_()
        return True

    def open_row(self, row: dict) -> None:
        """Open a scored series of the worklist with its scores (the study first, then its scores)."""
        if row.get("status") != "scored" or self.folder is None:
            self.window.statusBar().showMessage(row.get("message") or "This series was not scored", 6000)
            return
        from ..report.score_dir import read_score_dir

        run = read_score_dir(self.folder / row["results"])
        target = run.run["target"]
        self._pending = (Path(target["source"]).resolve(), target["uid"], run)
        self.window.opening.open_path(target["source"])

    def _study_opened(self, path: str) -> None:
        if self._pending is None or Path(path).resolve() != self._pending[0]:
            return
        _study, uid, run = self._pending
        self._pending = None
        row = self.model.row_of(uid)
        if row is None:
            self.window._say("That series is no longer in its study: it cannot be shown with the worklist's scores.")
            return
        series = self.model.study.series[row]
        cal = run.run.get("calibration") or {}
        quantiles = np.asarray(cal["pixel_quantiles"]) if cal.get("pixel_quantiles") else None
        detector = {k: v for k, v in run.run.items() if k not in ("target", "references", "calibration", "timings")}
        results = ScoreResults(uid, series.num_slices, detector, quantiles)
        for i, s, p, m in zip(run.indices, run.scores, run.percentiles, run.maps):
            results.add(int(i), float(s), float(p), m)
        results.complete = len(results) == series.num_slices
        self.model.scoring.results[uid] = results
        store = self.model.saving.store
        if store is not None:
            store.save_scores(results)
        refs = run.run.get("references") or []
        if refs and not self.model.session.reference_set.references:
            # the references the batch scored with, in the tray (and the session), as if picked here
            self.model.references.replace(ReferenceSet(f"Worklist {self.folder.name}", series.modality, [
                ReferenceSlice(str(Path(r["source"]).resolve()), r["series_uid"], int(r["index"])) for r in refs]))
            self.window.references.load_sources()
        self.window.select_series(row)
        self.model.scoring.show(uid)
        self.model.scoring.events.scores.emit(ScoresReplaced(uid))
        self.window.status.update_backbone()
        top = max(results.results.values(), key=lambda r: r.score, default=None)
        if top is not None:
            self.window.show_slice(top.index)
