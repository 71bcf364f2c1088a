"""File → Open worklist: the series `medad-viewer batch` scored, ranked in the worklist panel; a double-click opens
the study with the batch's scores already there (no job runs), and the scores stay with the study's session."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medad_viewer.cli import main
from test_gui_main_window import app_data, close_window, make_window  # noqa: F401 - fixtures

pytest.importorskip("distributed")


def test_a_worklist_opens_its_series_with_their_scores(qtbot, tmp_path, sample_data):
    root = tmp_path / "archive"
    root.mkdir()
    shutil.copy(sample_data / "mr-brain" / "brain2_image.nrrd", root / "head.nrrd")
    (root / "broken.nii.gz").write_bytes(b"not a volume")
    out = tmp_path / "results"
    refs = str(sample_data / "mr-brain" / "brain1_image.nrrd") + ":2,5,8,10,18,20"
    assert main(["batch", str(root), "--refs", refs, "--out", str(out), "--input-size", "96"]) == 0
    rows = json.loads((out / "worklist.json").read_text())["rows"]

    w = make_window(qtbot, tmp_path)
    assert w.worklist.open_folder(out)
    panel = w.worklist.panel
    assert panel.table.rowCount() == 2 and panel.table.item(0, 7).text() == "scored"  # scored first, failed last
    panel.failed_only.setChecked(True)
    assert panel.table.rowCount() == 1 and panel.table.item(0, 7).text() == "failed"
    panel.failed_only.setChecked(False)

    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        panel.table.cellDoubleClicked.emit(0, 0)
    qtbot.waitUntil(lambda: w.model.series is not None and w.model.series.uid in w.model.results, timeout=10_000)
    res = w.model.results[w.model.series.uid]
    scored = rows[0]
    assert len(res) == scored["slices"] == 23 and w.scoring.job is None  # its scores, no rescoring
    top = max(res.results.values(), key=lambda r: r.score)
    assert w.model.index == top.index == scored["top_slice"]
    assert top.score == pytest.approx(scored["top_score"], abs=1e-5)
    batch_maps = np.load(out / scored["results"] / "maps.npy")
    assert np.abs(res.get(top.index).map - batch_maps[top.index]).max() < 0.05  # the compact map of the batch's
    cal = json.loads((out / scored["results"] / "run.json").read_text())["calibration"]
    assert res.pixel_quantiles is not None  # the batch's normal scale came with the scores
    assert res.value_at(95.0) == pytest.approx(cal["pixel_value_at"]["95"], abs=1e-4)
    assert w.ranking.list.count() == 23
    rs = w.model.session.reference_set  # the references the batch used, in the tray
    assert [r.index for r in rs.normals()] == [2, 5, 8, 10, 18, 20] and w.tray.card_count() == 6
    saved = w.model.saving.store.load_scores(w.model.series.uid)
    assert len(saved) == 23  # kept with the study's session: a reopening shows them too
    close_window(qtbot, w)
