"""The real main window, driven as a user would: open the CT series, scroll, presets, references with R, adapt &
score (EfficientNet-Lite2 with a tiny budget), cancel, review with keys, undo/redo, reopen and find it all again."""

from __future__ import annotations

import shutil
import time

import pytest
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from medad_viewer.engine.adapt import AdaptSettings
from medad_viewer.engine.detector import DetectorSettings
from medad_viewer.gui.main_window import MainWindow
from medad_viewer.io.windowing import CT_PRESETS
from medad_viewer.review.events import SliceScored
from medad_viewer.review.state import Decision, Ellipse

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = dict(input_size=128, adapt=AdaptSettings(max_steps=3, val_every=3, pool_size=16))


@pytest.fixture(autouse=True)
def app_data(tmp_path, monkeypatch):
    d = tmp_path / "appdata"
    monkeypatch.setenv("MEDAD_VIEWER_DATA_DIR", str(d))
    return d


@pytest.fixture
def ct_study(sample_data, tmp_path):
    """A private copy, so sessions written beside the study never touch the shared sample data."""
    dst = tmp_path / "ct"
    shutil.copytree(sample_data / "ct-dicom", dst)
    dst.chmod(0o755)  # the shared copy is read-only; this one stands for a writable study folder
    return dst


def make_window(qtbot, tmp_path, settings_name="settings.ini", **tiny) -> MainWindow:
    w = MainWindow(QSettings(str(tmp_path / settings_name), QSettings.Format.IniFormat))
    w.scoring.settings_hook = lambda d: DetectorSettings(modality=d["modality"], method=d["method"], **(tiny or TINY))
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    return w


def open_study(qtbot, w: MainWindow, path) -> None:
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(path))


def key(qtbot, w: MainWindow, k, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    w.viewer.setFocus()
    qtbot.keyClick(w.viewer, k, modifier)


def wheel(w: MainWindow, notches: int) -> None:
    vp = w.viewer.glw.viewport()
    centre = QPointF(vp.width() / 2, vp.height() / 2)
    ev = QWheelEvent(centre, QPointF(vp.mapToGlobal(centre.toPoint())), QPoint(0, 0), QPoint(0, 120 * notches),
                     Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, ev)


def close_window(qtbot, w: MainWindow) -> None:
    w.close()
    qtbot.waitUntil(lambda: not w._loaders and w.scoring.job is None, timeout=30_000)


def test_open_scroll_and_presets(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    assert w.browser.series_count() == 1
    assert w.model.series.modality == "CT" and w.model.series.num_slices == 20
    start = w.model.index
    assert start == 10
    wheel(w, -1)  # towards the user: next slice
    assert w.model.index == start + 1
    wheel(w, 2)
    assert w.model.index == start - 1
    key(qtbot, w, Qt.Key.Key_Down)
    key(qtbot, w, Qt.Key.Key_Down)
    assert w.model.index == start + 1
    key(qtbot, w, Qt.Key.Key_Up)
    assert w.model.index == start
    key(qtbot, w, Qt.Key.Key_End)
    assert w.model.index == 19
    key(qtbot, w, Qt.Key.Key_Down)  # stays on the last slice
    assert w.model.index == 19
    key(qtbot, w, Qt.Key.Key_3)
    lung = CT_PRESETS[2]
    assert w.viewer.window == (lung.center, lung.width)
    assert "Lung" in w.viewer.bottom_left.text()
    key(qtbot, w, Qt.Key.Key_1)
    assert w.viewer.window == (CT_PRESETS[0].center, CT_PRESETS[0].width)
    # The cursor readout gives HU.
    w.viewer._cursor = (256, 256)
    w.viewer._update_cursor_text()
    assert "HU" in w.viewer.bottom_right.text()
    close_window(qtbot, w)


def test_references_adapt_score_review_and_reopen(qtbot, tmp_path, ct_study, app_data):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    for i in (2, 5, 15):
        w.show_slice(i)
        key(qtbot, w, Qt.Key.Key_R)
    assert [r.index for r in w.model.session.reference_set] == [2, 5, 15]
    assert w.tray.card_count() == 3
    key(qtbot, w, Qt.Key.Key_R)  # the same slice twice is still one reference
    assert w.tray.card_count() == 3

    partials = []
    w.ranking.list.model().rowsInserted.connect(lambda *a: partials.append(w.ranking.list.count()))
    with qtbot.waitSignal(w.scoringFinished, timeout=120_000) as blocker:
        w.analysis.run_button.click()
        assert not w.analysis.run_button.isEnabled() and w.analysis.cancel_button.isEnabled()
    outcome = blocker.args[0]
    assert not outcome.from_cache
    assert "as cross-sections" in w.analysis.stage.text()  # the user is told how the study was scored
    res = w.model.results[w.model.series.uid]
    assert sorted(res.results) == list(range(20))
    assert all(r.map.shape == (512, 512) for r in res.results.values())
    ranked = w.ranking.ranked_indices()
    scores = [res.results[i].score for i in ranked]
    assert sorted(ranked) == list(range(20)) and scores == sorted(scores, reverse=True)
    assert len(partials) >= 20  # rows arrived one by one while scoring
    assert "efficientnet-lite2" in w.status.backbone_label.text()
    qtbot.waitUntil(lambda: w.scoring.job is None, timeout=10_000)
    assert w.analysis.run_button.isEnabled()

    # The overlay shows on a scored slice with its colour bar; H hides it.
    top = ranked[0]
    w.analysis.set_threshold_pct(50.0)
    w.show_slice(top)
    assert w.viewer.colorbar_visible
    key(qtbot, w, Qt.Key.Key_H)
    assert not w.viewer.colorbar_visible
    key(qtbot, w, Qt.Key.Key_H)
    assert w.viewer.colorbar_visible

    # Review with keys, undo / redo.
    key(qtbot, w, Qt.Key.Key_A)
    assert w.model.session.review.get(w.model.series.uid, top).decision == Decision.CONFIRMED
    w.show_slice(ranked[1])
    key(qtbot, w, Qt.Key.Key_D)
    assert w.model.session.review.get(w.model.series.uid, ranked[1]).decision == Decision.DISMISSED
    key(qtbot, w, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert w.model.session.review.get(w.model.series.uid, ranked[1]).decision == Decision.UNREVIEWED
    key(qtbot, w, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)
    assert w.model.session.review.get(w.model.series.uid, ranked[1]).decision == Decision.DISMISSED
    w.show_slice(ranked[2])
    key(qtbot, w, Qt.Key.Key_A)
    key(qtbot, w, Qt.Key.Key_U)
    assert w.model.session.review.get(w.model.series.uid, ranked[2]).decision == Decision.UNREVIEWED
    w.viewer.annotationDrawn.emit(Ellipse(100, 120, 20, 10))
    w.review_panel.note.setPlainText("nodule?")
    assert w.model.session.review.get(w.model.series.uid, ranked[2]).note == "nodule?"

    # Next / previous flagged slice, at a threshold where some slices are flagged.
    pct = res.percentiles()
    w.ranking.flag_spin.setValue(1.0)
    assert w.model.session.view["flag_pct"] == 1.0
    flagged = sorted(i for i, p in pct.items() if p >= 1.0)
    assert len(flagged) >= 2
    w.show_slice(flagged[0])
    key(qtbot, w, Qt.Key.Key_N)
    assert w.model.index == flagged[1]
    key(qtbot, w, Qt.Key.Key_P)
    assert w.model.index == flagged[0]
    key(qtbot, w, Qt.Key.Key_P)  # wraps round
    assert w.model.index == flagged[-1]

    # A second run with the same references reuses the adaptation.
    with qtbot.waitSignal(w.scoringFinished, timeout=120_000) as blocker:
        w.scoring.run()
    assert blocker.args[0].from_cache
    qtbot.waitUntil(lambda: w.scoring.job is None, timeout=10_000)
    last_index = w.model.index
    close_window(qtbot, w)

    # Reopening finds references, review, scores and the slice again.
    w2 = make_window(qtbot, tmp_path)
    open_study(qtbot, w2, ct_study)
    uid = w2.model.series.uid
    assert w2.model.index == last_index
    assert [r.index for r in w2.model.session.reference_set] == [2, 5, 15]
    assert w2.model.session.review.get(uid, top).decision == Decision.CONFIRMED
    assert w2.model.session.review.get(uid, ranked[1]).decision == Decision.DISMISSED
    assert w2.model.session.review.get(uid, ranked[2]).annotations == (Ellipse(100, 120, 20, 10),)
    assert w2.model.session.review.get(uid, ranked[2]).note == "nodule?"
    assert len(w2.model.results[uid]) == 20
    assert w2.ranking.list.count() == 20
    assert w2.model.session.scores_summary[uid]["complete"]
    # The session is in the app data folder: nothing was written into the study's folder.
    assert w2.model.saving.store.session_file.is_file() and w2.model.saving.store.session_file.is_relative_to(app_data)
    assert not list(ct_study.glob(".*"))
    close_window(qtbot, w2)


def test_cancel_keeps_app_usable(qtbot, tmp_path, ct_study):
    long = dict(input_size=128,
                adapt=AdaptSettings(max_steps=100_000, time_budget_s=120, val_every=1000, pool_size=32))
    w = make_window(qtbot, tmp_path, **long)
    # Adaptation is the long stage to cancel (the default method trains nothing).
    w.scoring.settings_hook = lambda d: DetectorSettings(modality=d["modality"], method="adapted", **long)
    open_study(qtbot, w, ct_study)
    for i in (3, 12):
        w.show_slice(i)
        w.references.add("normal")
    stages = []
    w.analysis.stage.setText("")
    w.scoring.run()
    job = w.scoring.job
    job.progress.connect(lambda f, m: stages.append(m))
    qtbot.waitUntil(lambda: any(m.startswith("Adapting") for m in stages), timeout=60_000)
    t0 = time.monotonic()
    w.analysis.cancel_button.click()
    assert time.monotonic() - t0 < 0.5  # the click returns at once
    assert not w.analysis.cancel_button.isEnabled()
    with qtbot.waitSignal(w.scoringCancelled, timeout=10_000):
        pass
    assert time.monotonic() - t0 < 5.0
    qtbot.waitUntil(lambda: w.scoring.job is None, timeout=10_000)
    assert w.analysis.run_button.isEnabled()
    assert "Cancelled" in w.analysis.stage.text()
    # Still usable: scroll, review, and score again with a fast method, then cancel that during scoring.
    w.show_slice(7)
    key(qtbot, w, Qt.Key.Key_D)
    assert w.model.session.review.get(w.model.series.uid, 7).decision == Decision.DISMISSED
    w.scoring.settings_hook = lambda d: DetectorSettings(modality=d["modality"], method="memory", input_size=128)
    got = []
    w.scoring.run()
    w.scoring.job.partial.connect(lambda message: got.append(message) if isinstance(message, SliceScored) else None)
    qtbot.waitUntil(lambda: len(got) >= 2, timeout=60_000)
    with qtbot.waitSignal(w.scoringCancelled, timeout=10_000):
        w.scoring.cancel()
    qtbot.waitUntil(lambda: w.scoring.job is None, timeout=10_000)
    res = w.model.results[w.model.series.uid]
    assert 2 <= len(res) < 20  # slices already scored keep their maps
    assert w.ranking.list.count() == len(res)
    close_window(qtbot, w)


def test_close_during_job_cancels_and_keeps_session(qtbot, tmp_path, ct_study):
    long = dict(input_size=128,
                adapt=AdaptSettings(max_steps=100_000, time_budget_s=120, val_every=1000, pool_size=32))
    w = make_window(qtbot, tmp_path, **long)
    w.scoring.settings_hook = lambda d: DetectorSettings(modality=d["modality"], method="adapted", **long)
    open_study(qtbot, w, ct_study)
    w.show_slice(4)
    w.references.add("normal")
    key(qtbot, w, Qt.Key.Key_A)
    w.scoring.run()
    qtbot.waitUntil(lambda: w.analysis.progress.value() > 0, timeout=60_000)
    job = w.scoring.job
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 10.0
    assert not job.is_running
    w2 = make_window(qtbot, tmp_path)
    open_study(qtbot, w2, ct_study)
    assert w2.model.session.review.get(w2.model.series.uid, 4).decision == Decision.CONFIRMED
    assert len(w2.model.session.reference_set) == 1
    close_window(qtbot, w2)


def test_bad_input_reports_without_crashing(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    open_study(qtbot, w, empty)
    assert w.model.series is None
    assert w.browser.errors.isVisible() and w.browser.errors.messages()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.dcm").write_bytes(b"not a dicom file at all")
    open_study(qtbot, w, bad)
    assert any("broken.dcm" in m for m in w.browser.errors.messages())
    w.browser.errors.dismiss.click()
    assert not w.browser.errors.isVisible()
    # Nothing open: the actions explain instead of failing.
    w.scoring.run()
    assert "Open a study" in w.analysis.stage.text()
    key(qtbot, w, Qt.Key.Key_R)
    key(qtbot, w, Qt.Key.Key_A)
    # ... and change nothing: no reference, no decision, no job, the window still answers.
    assert len(w.model.session.reference_set) == 0 and not w.model.session.review.to_dict()["reviews"]
    assert w.scoring.job is None and w.isVisible()
    open_study(qtbot, w, ct_study)
    assert w.model.series is not None and not w.browser.errors.messages()
    close_window(qtbot, w)


def test_scoring_without_references_explains(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    w.scoring.run()
    assert w.scoring.job is None
    assert "normal reference" in w.analysis.stage.text()
    close_window(qtbot, w)


def test_demo_opens_with_references_ready(qtbot, tmp_path, app_data):
    w = make_window(qtbot, tmp_path)
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_demo()
    assert w.model.series.modality == "MR" and w.model.series.num_slices == 25
    rs = w.model.session.reference_set
    assert len(rs.normals()) >= 3 and w.tray.card_count() == len(rs)
    assert not set(r.index for r in rs) & set(range(11, 18))
    assert w.analysis.run_button.isEnabled()
    close_window(qtbot, w)
    # Sessions go to the app data folder, never beside the study (here: inside the checkout).
    assert str(w.model.saving.store.session_file).startswith(str(app_data))
    assert w.model.saving.store.session_file.is_file()


def test_abnormal_example_uses_the_drawing(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    w.show_slice(9)
    w.references.add("abnormal")
    assert len(w.model.session.reference_set) == 0  # nothing drawn yet: explained, not added
    assert "draw" in w.analysis.stage.text().lower()
    key(qtbot, w, Qt.Key.Key_E)
    assert w.viewer.vb.tool == "ellipse"
    w.viewer.annotationDrawn.emit(Ellipse(200, 220, 30, 20))
    w.references.add("abnormal")
    ref = w.model.session.reference_set.references[0]
    assert ref.kind == "abnormal" and ref.mask is not None and ref.mask.shape == (512, 512)
    assert ref.mask[220, 200] and not ref.mask[0, 0]
    assert w.tray.card_count() == 1
    w.tray.removeRequested.emit(0)
    assert len(w.model.session.reference_set) == 0
    close_window(qtbot, w)


def test_typing_a_note_does_not_trigger_review_keys(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    w.review_panel.note.setFocus()
    qtbot.keyClicks(w.review_panel.note, "adu rnp")
    rev = w.model.session.review.get(w.model.series.uid, w.model.index)
    assert rev.note == "adu rnp" and rev.decision == Decision.UNREVIEWED
    assert len(w.model.session.reference_set) == 0
    # The whole burst of typing is one undo step.
    w.review.undo()
    assert w.model.session.review.get(w.model.series.uid, w.model.index).note == ""
    close_window(qtbot, w)


def test_missing_weights_is_a_clear_message(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    w.scoring.settings_hook = lambda d: DetectorSettings(modality=d["modality"], weights=str(tmp_path / "nope.pt"), **TINY)
    open_study(qtbot, w, ct_study)
    w.references.add("normal")
    with qtbot.waitSignal(w.scoringFailed, timeout=60_000) as b:
        w.scoring.run()
    assert "nope.pt" in b.args[0] and "not found" in b.args[0]
    assert w._message_box is not None and w._message_box.isVisible()
    w._message_box.close()
    qtbot.waitUntil(lambda: w.scoring.job is None, timeout=10_000)
    assert w.analysis.run_button.isEnabled() and len(w.model.session.reference_set) == 1
    close_window(qtbot, w)


def test_untrained_vision_language_weights_warn(qtbot, tmp_path):
    w = make_window(qtbot, tmp_path)
    w.model.scoring.detector_info = {"backbone": "open_clip:tiny", "weights": "random initialisation (UNTRAINED)",
                       "pretrained": False, "method": "adapted"}
    w.status.update_backbone()
    assert "UNTRAINED" in w.status.backbone_label.text() and "meaningless" in w.status.backbone_label.text()
    close_window(qtbot, w)


def test_settings_dialog_persists(qtbot, tmp_path):
    from medad_viewer.gui.settings import AppSettings
    from medad_viewer.gui.settings_dialog import SettingsDialog

    q = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    s = AppSettings(q)
    dlg = SettingsDialog(s)
    qtbot.addWidget(dlg)
    dlg.method.setCurrentIndex(dlg.method.findData("memory"))
    dlg.budget.setValue(30)
    dlg.weights.setText("/models/w.safetensors")
    dlg.accept()
    again = AppSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    d = again.detector_settings("CT")
    assert d["method"] == "memory" and d["adapt"]["time_budget_s"] == 30.0
    assert d["weights"] == "/models/w.safetensors" and d["modality"] == "CT"
    again.add_recent(str(tmp_path))
    assert again.recent() == [str(tmp_path.resolve())]


def test_drop_a_folder_opens_it(qtbot, tmp_path, ct_study):
    from PySide6.QtCore import QMimeData, QUrl
    from PySide6.QtGui import QDropEvent

    w = make_window(qtbot, tmp_path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(ct_study))])
    ev = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.dropEvent(ev)
    assert w.model.series is not None and w.model.series.num_slices == 20
    assert str(ct_study.resolve()) in w.app_settings.recent()
    close_window(qtbot, w)


def test_exports_run_in_the_background(qtbot, tmp_path, ct_study):
    """Export actions call medad_viewer.report with a snapshot of the open series (see review/export.py)."""
    from medad_viewer.review.export import EXPORTS

    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    seen = []

    def fake_export(ctx, path, *, progress=None, cancel=None):
        progress(0.5, "half")
        seen.append((ctx.series.uid, ctx.current_index, ctx.window, path))
        return path

    w.show_slice(3)
    key(qtbot, w, Qt.Key.Key_A)
    job = w.exports.run(fake_export, str(tmp_path / "x.pdf"))
    with qtbot.waitSignal(job.finished, timeout=10_000):
        pass
    assert seen == [(w.model.series.uid, 3, (CT_PRESETS[1].center, CT_PRESETS[1].width), str(tmp_path / "x.pdf"))]
    ctx = w.exports.context().snapshot()
    w.review.set_decision(Decision.DISMISSED)
    assert ctx.review.get(w.model.series.uid, 3).decision == Decision.CONFIRMED  # a snapshot, not the live state
    assert set(w.export_actions) == {name for _, name, _ in EXPORTS}
    close_window(qtbot, w)


def test_the_latest_open_wins_over_a_slower_earlier_one(qtbot, tmp_path, ct_study, monkeypatch):
    """Open A (slow to read), then B: B is shown, A's load is cancelled and its late result dropped."""
    import medad_viewer.gui.background_jobs as mw

    slow = REPO / "resources" / "demo" / "brain1_label.nrrd"
    real = mw.load_study

    def load(path, **kw):
        if "brain1_label" in str(path):
            time.sleep(1.5)  # a slow disk: neither honours the cancel nor fails, it just comes late
            return real(path)
        return real(path, **kw)

    monkeypatch.setattr(mw, "load_study", load)
    w = make_window(qtbot, tmp_path)
    w.opening.open_path(str(slow))
    first = w.opening.loader
    open_study(qtbot, w, ct_study)
    assert first.token.cancelled
    qtbot.waitUntil(lambda: not first.is_running, timeout=10_000)
    qtbot.wait(100)  # the late result's signals are delivered
    assert w.model.study_path == str(ct_study.resolve()) and w.model.series.modality == "CT"
    assert "ct" in w.windowTitle()
    close_window(qtbot, w)


def test_close_returns_at_once_while_a_job_cannot_stop(qtbot, tmp_path, ct_study):
    """A job inside a long step that cannot check its cancel token (a huge read, a training step) does not hold
    the window: close returns within a second, the session is saved, the job ends on its own."""
    from medad_viewer.gui.worker import Worker, detached_jobs

    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    w.show_slice(4)
    key(qtbot, w, Qt.Key.Key_A)
    w._start_loader(Worker(lambda progress, cancel, emit: time.sleep(1.5), "stuck", w))
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 1.0
    assert detached_jobs() == 1
    uid = w.model.series.uid
    from medad_viewer.review.session import SessionStore
    from medad_viewer.io import load_study
    saved = SessionStore.for_study(load_study(ct_study), ct_study).load()
    assert saved.review.get(uid, 4).decision == Decision.CONFIRMED
    qtbot.waitUntil(lambda: detached_jobs() == 0, timeout=10_000)


def _ct_with_references(qtbot, tmp_path, ct_study, slices=(2, 5)) -> MainWindow:
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    for i in slices:
        w.show_slice(i)
        key(qtbot, w, Qt.Key.Key_R)
    return w


def test_scores_that_cannot_be_saved_are_said_and_kept(qtbot, tmp_path, ct_study, monkeypatch):
    import medad_viewer.review.session as session_mod

    w = _ct_with_references(qtbot, tmp_path, ct_study)
    blocked = tmp_path / "full-disk"
    blocked.write_text("")
    monkeypatch.setattr(session_mod, "sessions_root", lambda: blocked / "sessions")
    monkeypatch.setattr(session_mod, "spare_root", lambda: blocked / "spare")
    w.model.saving.store._folder = None
    w.model.saving.store.places = [blocked / "sessions", blocked / "spare"]
    with qtbot.waitSignal(w.scoringFinished, timeout=120_000):
        w.scoring.run()
    uid = w.model.series.uid
    assert len(w.model.results[uid]) == 20  # kept in memory
    assert uid in w.model.saving.unsaved_scores
    box = w._message_box
    assert box is not None and "could not be saved" in box.text() and "Ctrl+S" in box.text()
    # The disk has room again: the next save writes the scores too.
    good = tmp_path / "appdata2" / "sessions"
    w.model.saving.store.places = [good / w.model.saving.store.key, blocked / "spare"]
    w.model.saving.store._folder = None
    w.save_session()
    assert not w.model.saving.unsaved_scores and len(w.model.saving.store.load_scores(uid)) == 20
    close_window(qtbot, w)


def test_out_of_memory_while_scoring_is_said_and_keeps_the_earlier_results(qtbot, tmp_path, ct_study, monkeypatch):
    from medad_viewer.engine.detector import AnomalyDetector

    w = _ct_with_references(qtbot, tmp_path, ct_study)
    with qtbot.waitSignal(w.scoringFinished, timeout=120_000):
        w.scoring.run()
    uid = w.model.series.uid
    before = {i: r.score for i, r in w.model.results[uid].results.items()}
    assert len(before) == 20

    def oom(self, *a, **kw):  # what torch says on a CPU that has no memory left
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 9437184000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(AnomalyDetector, "score", oom)
    w.show_slice(9)
    key(qtbot, w, Qt.Key.Key_R)  # other references: a new adaptation, then scoring runs out of memory
    with qtbot.waitSignal(w.scoringFailed, timeout=120_000) as failed:
        w.scoring.run()
    message = failed.args[0]
    assert message.startswith("Out of memory") and "earlier results" in message and "Settings" in message
    assert w._message_box is not None and w._message_box.text() == message
    qtbot.waitUntil(lambda: w.scoring.job is None, timeout=10_000)
    assert {i: r.score for i, r in w.model.results[uid].results.items()} == before  # the earlier scores are back
    assert w.ranking.list.count() == 20
    monkeypatch.undo()
    with qtbot.waitSignal(w.scoringFinished, timeout=120_000):  # and the app goes on working
        w.scoring.run()
    close_window(qtbot, w)


def test_startup_log_for_the_bundle_smoke_test(qtbot, tmp_path, ct_study, monkeypatch):
    from medad_viewer.gui.app import STARTUP_LOG_ENV, _startup_log

    log = tmp_path / "startup.log"
    monkeypatch.setenv(STARTUP_LOG_ENV, str(log))
    w = make_window(qtbot, tmp_path)
    _startup_log(w)
    open_study(qtbot, w, ct_study)
    w.show_slice(3)  # browsing logs nothing more
    qtbot.waitUntil(lambda: log.is_file() and "window" in log.read_text(), timeout=5000)
    lines = log.read_text().split("\n")
    assert [ln.split()[0] for ln in lines if ln] == ["window", "first-slice"]
    assert lines[1].split()[2] == "20" and float(lines[1].split()[1]) >= float(lines[0].split()[1])
    close_window(qtbot, w)


def test_the_cursor_readout_is_the_models_probe(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    w.show_slice(4)
    w.viewer._cursor = (100, 200)
    w.viewer._update_cursor_text()
    text = w.viewer.bottom_right.text()
    p = w.model.probe(100, 200)
    x, y, z = p.position_mm
    assert "x 200, y 100, slice 5" in text and f"{p.value:.0f} HU" in text
    assert f"({x:.1f}, {y:.1f}, {z:.1f}) mm LPS" in text
    close_window(qtbot, w)


def test_the_shortcuts_page_is_made_from_the_actions(qtbot, tmp_path):
    from PySide6.QtGui import QKeySequence

    from medad_viewer.gui.actions import shortcuts_html

    w = make_window(qtbot, tmp_path)
    page = shortcuts_html(w)
    keyed = [a for a in w.actions() if a.shortcuts()]
    assert len(keyed) > 30
    for a in keyed:
        for k in a.shortcuts():
            assert k.toString(QKeySequence.SequenceFormat.NativeText).replace("&", "&amp;") in page, a.text()
    assert "Confirm finding" in page and "Mouse wheel" in page and "<i>Review</i>" in page
    close_window(qtbot, w)


def test_invert_flips_cine_and_reset_from_the_keyboard(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    w.show_slice(5)
    key(qtbot, w, Qt.Key.Key_I)
    assert w.model.display.inverted and w.viewer.image.lut is not None and int(w.viewer.image.lut[0]) == 255
    key(qtbot, w, Qt.Key.Key_V)
    key(qtbot, w, Qt.Key.Key_H, Qt.KeyboardModifier.ShiftModifier)
    assert w.model.display.flip_v and w.model.display.flip_h
    assert w.viewer.vb.state["xInverted"] and not w.viewer.vb.state["yInverted"]
    assert w.model.session.review.get(w.model.series.uid, 5).decision == Decision.UNREVIEWED  # keys changed only the view
    # Cine: K plays at 10 slices a second, ] doubles it, K stops; it loops past the last slice.
    w.show_slice(17)
    key(qtbot, w, Qt.Key.Key_K)
    assert w.display.cine_timer.isActive() and w.display.cine_timer.interval() == 100
    key(qtbot, w, Qt.Key.Key_BracketRight)
    assert w.model.display.cine_fps == 20 and w.display.cine_timer.interval() == 50
    qtbot.waitUntil(lambda: w.model.index < 17, timeout=5000)  # went past 19 back to 0
    key(qtbot, w, Qt.Key.Key_K)
    assert not w.display.cine_timer.isActive()
    stopped = w.model.index
    qtbot.wait(200)
    assert w.model.index == stopped
    key(qtbot, w, Qt.Key.Key_Space)
    d = w.model.display
    assert not (d.inverted or d.flip_h or d.flip_v or d.cine) and d.cine_fps == 20
    assert w.viewer.image.lut is None and w.viewer.vb.state["yInverted"] and not w.viewer.vb.state["xInverted"]
    close_window(qtbot, w)


def test_the_readme_lists_the_keys_the_app_has(qtbot, tmp_path):
    from medad_viewer.gui.actions import shortcuts_markdown

    w = make_window(qtbot, tmp_path)
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- shortcuts:start -->\n", 1)[1].split("\n<!-- shortcuts:end -->", 1)[0]
    assert table == shortcuts_markdown(w), "README's key table is out of date: paste shortcuts_markdown() there"
    close_window(qtbot, w)


def test_the_window_fits_a_laptop_screen_with_every_panel(qtbot, tmp_path):
    """1366 × 768 is the smallest common laptop screen: the window's minimum size must fit it, with the demo open,
    the 1x3 layout and the Why is this hot? panel shown (the reference tray's row once needed 1,573 px)."""
    w = make_window(qtbot, tmp_path)
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_demo()
    w.model.set_layout("1x3")
    w.why.toggle()
    qtbot.wait(50)
    hint = w.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 768, (hint.width(), hint.height())
    close_window(qtbot, w)


def test_a_flair_series_reaches_the_engine_as_flair(qtbot, tmp_path, sample_data):
    """The window tells the engine the sequence the series says (its file name here), which turns the FLAIR
    intensity term on; a series that does not say gets None."""
    flair = tmp_path / "patient7_flair.nrrd"
    shutil.copyfile(sample_data / "mr-brain" / "brain1_image.nrrd", flair)
    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    open_study(qtbot, w, flair)
    d = w.scoring.detector_settings()
    assert d["modality"] == "MR" and d["sequence"] == "FLAIR"
    assert DetectorSettings.from_dict(d).sequence == "FLAIR"
    open_study(qtbot, w, sample_data / "mr-brain" / "brain2_image.nrrd")
    assert w.scoring.detector_settings()["sequence"] is None
    close_window(qtbot, w)
