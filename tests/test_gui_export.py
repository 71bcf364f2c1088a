"""File → Export from the main window: the PDF options dialog's choices reach the export, the progress window's Cancel
leaves no file, a failure is a message, and "open when done" hands the file to QDesktopServices."""

from __future__ import annotations

import threading

import pytest
from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog

from medad_viewer import report
from medad_viewer.gui.export_dialogs import OPEN_WHEN_DONE_KEY, PdfExportDialog
from medad_viewer.report.pdf import PdfOptions, page_count
from medad_viewer.report.synthetic import synthetic_run
from medad_viewer.review.results import ScoreResults
from medad_viewer.review.state import Decision

from test_gui_main_window import app_data, close_window, ct_study, make_window, open_study  # noqa: F401 - fixtures
from test_report_pdf import CT_HOT, PATIENT, SECRETS, _pdftext, copy_identified_ct


def _give_scores(w, hot=CT_HOT) -> None:
    """Synthetic scores for the open series (no engine run: fast)."""
    s = w.model.series
    run = synthetic_run(s, hot)
    res = ScoreResults(s.uid, s.num_slices, {"backbone": "efficientnet-lite2"}, complete=True)
    for k, i in enumerate(run.indices):
        res.add(int(i), float(run.scores[k]), float(run.percentiles[k]), run.maps[k])
    w.model.results[s.uid] = res


@pytest.fixture
def save_as(monkeypatch):
    """QFileDialog.getSaveFileName answers with the path put in the returned list."""
    answer: list[str] = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (answer[0], "")))
    return answer


@pytest.fixture
def opened(monkeypatch):
    urls: list[QUrl] = []
    monkeypatch.setattr(QDesktopServices, "openUrl", staticmethod(lambda url: urls.append(url) or True))
    return urls


@pytest.fixture
def identified_study(sample_data, tmp_path):
    """A copy of the sample CT carrying a synthetic patient name, ID and birth date."""
    folder = tmp_path / "named-ct"
    folder.mkdir()
    return copy_identified_ct(sample_data, folder)


def _wait_idle(qtbot, w) -> None:
    qtbot.waitUntil(lambda: not w._loaders, timeout=60_000)


def test_pdf_dialog_options_reach_the_export(qtbot, tmp_path, ct_study, monkeypatch, save_as, opened):
    calls = []

    def export_pdf_report(ctx, path, *, include_identifiers=False, threshold_pct=None, flag_pct=None,
                          slices="flagged", progress=None, cancel=None):
        progress(0.5, "Report: slice 7")
        calls.append(dict(include_identifiers=include_identifiers, threshold_pct=threshold_pct, flag_pct=flag_pct,
                          slices=slices))
        open(path, "wb").close()
        return path

    monkeypatch.setattr(report, "export_pdf_report", export_pdf_report)
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    _give_scores(w)
    w.analysis.set_threshold_pct(97.0)
    w.ranking.set_threshold(80.0)
    out = tmp_path / "out" / "r.pdf"
    out.parent.mkdir()
    save_as.append(str(out))

    w.export_actions["export_pdf_report"].trigger()
    dlg = w.exports.dialog
    assert isinstance(dlg, PdfExportDialog) and dlg.isVisible()
    # Defaults: de-identified, the viewer's thresholds ("Flag at" for slices, the overlay's for the heatmap), flagged
    # + confirmed slices, not opened afterwards.
    assert not dlg.identifiers.isChecked() and dlg.identifiers_warning.isHidden()
    assert dlg.threshold.value() == pytest.approx(97.0) and dlg.flag.value() == pytest.approx(80.0)
    assert dlg.slices == "flagged" and not dlg.open_after
    dlg.identifiers.setChecked(True)
    assert not dlg.identifiers_warning.isHidden()
    dlg.threshold.setValue(99.5)
    dlg.slice_buttons["confirmed"].setChecked(True)
    dlg.open_after_check.setChecked(True)
    dlg.accept()

    qtbot.waitUntil(lambda: len(opened) == 1, timeout=10_000)
    assert calls == [dict(include_identifiers=True, threshold_pct=99.5, flag_pct=80.0, slices="confirmed")]
    assert opened[0] == QUrl.fromLocalFile(str(out))
    _wait_idle(qtbot, w)
    assert w.exports.progress is None
    # "Open when done" is remembered; the other options start from the safe defaults again.
    assert w.app_settings.q.value(OPEN_WHEN_DONE_KEY) in (True, "true")
    w.export_actions["export_pdf_report"].trigger()
    dlg2 = w.exports.dialog
    assert dlg2.open_after and not dlg2.identifiers.isChecked() and dlg2.slices == "flagged"
    dlg2.reject()
    assert len(calls) == 1  # cancelling the options dialog exports nothing
    close_window(qtbot, w)


def test_real_pdf_is_deidentified_by_default(qtbot, tmp_path, identified_study, save_as, opened):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, identified_study)
    assert str(w.model.series.identifiers.get("PatientName", "")).strip() == PATIENT["PatientName"]
    _give_scores(w)
    w.review.set_decision(Decision.CONFIRMED)  # slice 1 (index 0): a confirmed slice below the threshold
    out = tmp_path / "report.pdf"
    save_as.append(str(out))
    w.export_actions["export_pdf_report"].trigger()
    w.exports.dialog.accept()  # defaults: identifiers off
    _wait_idle(qtbot, w)
    assert out.is_file() and opened == []
    text = _pdftext(out)
    low = text.lower()
    for secret in SECRETS:
        assert secret.lower() not in low, secret
    assert "Flagged slices" in text
    close_window(qtbot, w)


def test_cancel_from_the_progress_window_leaves_no_file(qtbot, tmp_path, ct_study):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    _give_scores(w)
    reached = threading.Event()

    def slow_pdf(ctx, path, *, progress, cancel):
        """The real export, held at its first slice page until the user cancels."""
        def held(fraction, message):
            progress(fraction, message)
            if message.startswith("Report: slice") and not reached.is_set():
                reached.set()
                for _ in range(1000):
                    if cancel.cancelled:
                        break
                    threading.Event().wait(0.01)
        return report.export_pdf_report(ctx, path, progress=held, cancel=cancel)

    outdir = tmp_path / "out"
    outdir.mkdir()
    job = w.exports.run(slow_pdf, str(outdir / "r.pdf"), open_after=True)
    dlg = w.exports.progress
    assert dlg is not None and dlg.isVisible() and not dlg.isModal()
    qtbot.waitUntil(reached.is_set, timeout=30_000)
    with qtbot.waitSignal(job.cancelled, timeout=30_000):
        dlg.cancel_button.click()
    _wait_idle(qtbot, w)
    assert list(outdir.iterdir()) == []  # neither the PDF nor a partial file
    assert not dlg.isVisible()
    assert "cancelled" in w.statusBar().currentMessage()
    close_window(qtbot, w)


def test_failure_is_a_message_and_nothing_opens(qtbot, tmp_path, ct_study, opened):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)

    def broken(ctx, path, *, progress, cancel):
        raise ValueError("the disk is full")

    job = w.exports.run(broken, str(tmp_path / "x.pdf"), open_after=True)
    with qtbot.waitSignal(job.failed, timeout=10_000):
        pass
    _wait_idle(qtbot, w)
    assert "the disk is full" in w._message_box.text() and "x.pdf" in w._message_box.text()
    assert opened == []
    # Without scores the report explains instead of asking for options.
    w.export_actions["export_pdf_report"].trigger()
    assert w.exports.dialog is None and "Adapt & score" in w._message_box.text()
    close_window(qtbot, w)


def test_a_dicom_seg_of_files_without_uids_is_said_in_plain_words(qtbot, tmp_path, ct_study, save_as, opened):
    """The sample CT's files carry no UIDs: the SEG export says why, without an exception name or advice about disk
    space that does not fit."""
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    _give_scores(w)
    out = tmp_path / "seg.dcm"
    save_as.append(str(out))
    w.export_actions["export_dicom_seg"].trigger()
    w.exports.dialog.accept()
    qtbot.waitUntil(lambda: w._message_box is not None and "seg.dcm" in w._message_box.text(), timeout=30_000)
    text = w._message_box.text()
    assert "UID" in text and "No file was written" in text and not out.exists()
    assert "Error)" not in text and "disk space" not in text
    _wait_idle(qtbot, w)
    close_window(qtbot, w)


def test_dicom_export_dialog_privacy_choice_reaches_the_objects(qtbot, tmp_path, sample_data, save_as, opened):
    """File → Export → DICOM Segmentation / parametric map: de-identified by default, the patient's identifiers only
    when ticked (the PDF's rule); the dialog says what de-identification keeps (the UIDs)."""
    import pydicom

    from test_report_dicom import NAME, _copy_with_uids

    study = tmp_path / "ct-uids"
    _copy_with_uids(str(sample_data / "ct-dicom"), str(study), mirrored=False)
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, study)
    _give_scores(w)
    for name, tick in (("seg-anon.dcm", False), ("seg-named.dcm", True)):
        save_as[:] = [str(tmp_path / name)]
        w.export_actions["export_dicom_seg"].trigger()
        dlg = w.exports.dialog
        assert "UIDs" in dlg.explanation.text() and dlg.threshold is not None
        dlg.identifiers.setChecked(tick)
        dlg.accept()
        qtbot.waitUntil(lambda: (tmp_path / name).is_file(), timeout=60_000)
        _wait_idle(qtbot, w)
        assert (str(pydicom.dcmread(tmp_path / name).PatientName) == NAME) is tick
    save_as[:] = [str(tmp_path / "map.dcm")]
    w.export_actions["export_dicom_pmap"].trigger()
    assert w.exports.dialog.threshold is None  # a parametric map has no threshold
    w.exports.dialog.accept()
    qtbot.waitUntil(lambda: (tmp_path / "map.dcm").is_file(), timeout=60_000)
    _wait_idle(qtbot, w)
    assert str(pydicom.dcmread(tmp_path / "map.dcm").PatientName) != NAME
    close_window(qtbot, w)


def test_simple_exports_open_when_the_menu_setting_is_on(qtbot, tmp_path, ct_study, save_as, opened):
    w = make_window(qtbot, tmp_path)
    open_study(qtbot, w, ct_study)
    out = tmp_path / "view.png"
    save_as.append(str(out))
    assert not w.act_open_exports.isChecked()
    w.act_open_exports.setChecked(True)
    assert w.app_settings.q.value(OPEN_WHEN_DONE_KEY) in (True, "true")
    w.export_actions["export_view_png"].trigger()
    qtbot.waitUntil(lambda: len(opened) == 1, timeout=30_000)
    assert opened[0] == QUrl.fromLocalFile(str(out)) and out.is_file()
    _wait_idle(qtbot, w)
    close_window(qtbot, w)


def test_report_slice_choice(sample_data):
    """PdfOptions.slices: flagged (default), confirmed only, all scored slices."""
    from medad_viewer.io import load_study
    from medad_viewer.review.state import ReviewState

    s = load_study(sample_data / "ct-dicom").series[0]
    rs = ReviewState()
    rs.set_decision(s.uid, 2, "confirmed")
    data = report.ReportData.build(synthetic_run(s, CT_HOT), s, rs)
    assert page_count(data) == 2 + len(CT_HOT) + 1
    assert page_count(data, PdfOptions(slices="confirmed")) == 2 + 1
    assert page_count(data, PdfOptions(slices="all")) == 2 + s.num_slices
    with pytest.raises(report.ReportError):
        page_count(data, PdfOptions(slices="some"))
