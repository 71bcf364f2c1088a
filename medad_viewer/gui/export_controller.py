"""File → Export's controller: which report function each menu entry runs, the options dialogs, the file name, and
the export itself in the background worker with a progress window and Cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtCore import QTimer, QUrl, Qt
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog

from ..review.export import ExportContext
from .export_dialogs import DicomExportDialog, ExportProgressDialog, PdfExportDialog
from .worker import Worker

NEEDS_SCORES: set = set()  # the exports that need the series scored first (filled by export_functions)


def report_module():
    from .. import report
    return report


def export_functions() -> tuple[dict[str, Callable], str]:
    """The report package's export for each File → Export entry (by the names review.export.EXPORTS lists), and
    why there are none when the package cannot be imported."""
    try:
        report = report_module()
    except Exception as exc:  # noqa: BLE001 - a broken optional package must not stop the viewer
        return {}, f"the report package could not be imported ({exc})"
    table = {"export_pdf_report": report.export_pdf_report, "export_scores_csv": report.export_scores_csv,
             "export_scores_json": report.export_scores_json, "export_map_volume": report.export_map_volume,
             "export_annotation_volume": report.export_annotation_volume,
             "export_view_png": report.export_view_png, "export_dicom_seg": report.export_dicom_seg,
             "export_dicom_pmap": report.export_dicom_pmap}
    # The annotation volume and the view PNG work without scores.
    NEEDS_SCORES.update({report.export_pdf_report, report.export_scores_csv, report.export_scores_json,
                         report.export_map_volume, report.export_dicom_seg, report.export_dicom_pmap})
    return table, ""


class ExportController:
    """File → Export: each export asked for runs in the background with its own progress window. `window` gives the
    viewer model, the overlay and ranking panels (what the export shows), dialogs' parent, the status bar and the
    window's background loaders."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.progress: ExportProgressDialog | None = None  # the running export's progress window
        self.dialog: PdfExportDialog | DicomExportDialog | None = None  # an export's options, while asked

    def ask(self, fn: Callable, text: str, filt: str) -> None:
        """File → Export → <text>: the PDF report asks for its options first; then a file name; then the export runs
        in the background with a progress window and Cancel."""
        if self.model.series is None:
            self.window._say("Open a study first.")
            return
        res = self.model.results.get(self.model.series.uid)
        if fn in NEEDS_SCORES and (res is None or not len(res)):
            self.window._error("This series has no scores yet: pick normal references and press Adapt & score first.",
                        title="Export")
            return
        if getattr(fn, "__name__", "") in ("export_dicom_seg", "export_dicom_pmap"):
            from ..report.dicom_objects import NotDicomSeries, require_dicom

            try:
                require_dicom(self.model.series)  # say so before asking for a file name
            except NotDicomSeries as exc:
                self.window._error(f"{exc}.", title="Export")
                return
        title = text.rstrip("…")
        name = getattr(fn, "__name__", "")
        if name in ("export_dicom_seg", "export_dicom_pmap"):
            ctx = self.context()
            self._ask_options(DicomExportDialog(title, ctx.threshold_pct if name == "export_dicom_seg" else None,
                                                self.window.app_settings, self.window), fn, title, filt)
            return
        if fn is report_module().export_pdf_report:
            ctx = self.context()
            self._ask_options(PdfExportDialog(ctx.threshold_pct, self.window.app_settings, self.window, flag_pct=ctx.flag_pct),
                              fn, title, filt)
            return
        self._ask_path(fn, title, filt, None, self.window.app_settings.open_exports_when_done)

    def _ask_options(self, dlg, fn: Callable, title: str, filt: str) -> None:
        """An export's options dialog (window-modal, not blocking): accepted, it asks for the file name."""
        dlg.setWindowModality(Qt.WindowModality.WindowModal)
        self.dialog = dlg
        dlg.accepted.connect(lambda: self._ask_path(fn, title, filt, dlg.options(), dlg.open_after))
        dlg.finished.connect(dlg.deleteLater)
        dlg.open()

    def _ask_path(self, fn: Callable, title: str, filt: str, options: dict | None, open_after: bool) -> None:
        self.dialog = None
        path, _ = QFileDialog.getSaveFileName(self.window, title, str(Path(self.model.study_path or ".").parent), filt)
        if path:
            self.run(fn, path, options, open_after=open_after)

    def context(self) -> ExportContext:
        s = self.model.series
        c, w, name = self.model.display.windows.get(s.uid, (None, None, "")) if s is not None else (None, None, "")
        m = self.model
        ov = self.window.analysis.overlay_state()
        return ExportContext(m.study_path or "", s, m.results.get(s.uid) if s is not None else None,
                             m.session.review, m.session.reference_set, ov["threshold_pct"],
                             m.detector_info or {}, m.index, None if c is None else (c, w), name,
                             ov["opacity"], ov["colormap"], self.window.ranking.threshold_pct,
                             measurements=list(m.session.measurements))

    def run(self, fn: Callable, path: str, options: dict | None = None, *, open_after: bool = False) -> Worker:
        """Run an export in the background (a PDF of many slices takes a while) with a non-modal progress window and
        Cancel; `options` are keyword arguments for `fn` (those it accepts). A cancelled or failed export leaves no
        file (the report package writes atomically); a failure shows a message; with `open_after` the written file
        is opened with the desktop's application."""
        ctx = self.context().snapshot()
        extra = dict(options or {})

        def run(progress, cancel, emit):
            series = getattr(ctx, "series", None)
            if series is not None and not series.complete:  # asked for while the series fills in: waits for it
                from ..io.fill import wait_complete

                wait_complete(series, cancel, lambda done, total: progress(
                    0.0, f"waiting for the series to load ({done} of {total} slices read)"))
            # Every export takes the context, the path, its own options, and progress and cancel.
            return fn(ctx, path, **extra, progress=progress, cancel=cancel)

        name = Path(path).name
        w = Worker(run, "export", self.window)
        w.progress.connect(lambda f, m: self.window.statusBar().showMessage(f"Exporting {name}… {m}", 3000))
        w.finished.connect(lambda out: self._finished(str(out or path), open_after))
        w.failed.connect(lambda msg: self._failed(path, msg, getattr(w, "exception", None)))
        w.cancelled.connect(lambda: self.window.statusBar().showMessage(f"Export of {name} cancelled; no file was written.",
                                                                 8000))
        dlg = ExportProgressDialog(w, f"Exporting {name}", self.window)
        w.done.connect(lambda: setattr(self, "progress", None) if self.progress is dlg else None)
        self.progress = dlg
        dlg.show()
        self.window.statusBar().showMessage(f"Exporting {name} …")
        # Started from the event loop, so a caller connecting to the returned worker's signals misses none of them
        # (a quick export could otherwise finish before the caller has connected).
        self.window._loaders.append(w)
        w.thread_finished.connect(lambda w=w: self.window._loaders.remove(w) if w in self.window._loaders else None)
        QTimer.singleShot(0, self.window, w.start)
        return w

    def _finished(self, path: str, open_after: bool) -> None:
        self.window.statusBar().showMessage(f"Exported {path}", 8000)
        if open_after and not QDesktopServices.openUrl(QUrl.fromLocalFile(path)):
            self.window._say(f"Exported {path}, but no application could open it.")

    def _failed(self, path: str, msg: str, exc: BaseException | None = None) -> None:
        self.window.statusBar().showMessage(f"Export of {Path(path).name} failed", 8000)
        from ..report.data import ReportError

        # What the data did not allow (no UIDs, files moved) has its own words; only a failed write gets the advice
        # about folders and disk space.
        advice = "" if isinstance(exc, ReportError) else (" Choose another folder or file name, or free some disk "
                                                          "space, then export again.")
        self.window._error(f"Could not export {path}: {msg}\n\nNo file was written.{advice}", title="Export failed")

