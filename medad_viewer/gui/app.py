"""Start the desktop app: `python -m medad_viewer.gui.app [PATH] [--demo]` (the `medad-viewer` command calls
`run_app`)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from ..paths import DEMO_STUDY
from .main_window import MainWindow
from .worker import wait_for_detached


def create_app() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    app.setApplicationName("MedAD Viewer")
    app.setOrganizationName("MedAD")
    return app


STARTUP_LOG_ENV = "MEDAD_VIEWER_STARTUP_LOG"


def _startup_log(win: MainWindow) -> None:
    """With $MEDAD_VIEWER_STARTUP_LOG set to a file: append `window <unix time>` when the window is first drawn and
    `first-slice <unix time> <slices>` when a study's first slice is on screen (the bundle's smoke test reads it)."""
    path = os.environ.get(STARTUP_LOG_ENV)
    if not path:
        return

    def log(line: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    QTimer.singleShot(0, lambda: log(f"window {time.time():.3f}"))
    shown: list[str] = []

    def first_slice(_index: int) -> None:
        uid = win.model.series.uid if win.model.series is not None else ""
        if uid not in shown:  # once per series opened
            shown.append(uid)
            log(f"first-slice {time.time():.3f} {win.model.series.num_slices if win.model.series else 0}")

    win.sliceShown.connect(first_slice)


def run_app(path: str | None = None, demo: bool = False) -> int:
    """Open the main window (on `path`, or on the demo study with its references in the tray); returns the exit
    code when the window closes."""
    app = create_app()
    win = MainWindow()
    win.show()
    _startup_log(win)
    if demo:
        if not DEMO_STUDY.is_file():
            win.browser.errors.add_messages([f"The demo study is missing: {DEMO_STUDY}"])
        else:
            QTimer.singleShot(0, win.opening.open_demo)
    elif path:
        QTimer.singleShot(0, lambda: win.opening.open_path(path))
    code = app.exec()
    # The window closed at once; a job it cancelled may still be reaching its next check. Wait a little for it (a
    # scoring job saves its slices on the way out), then leave without it: the session was saved on close.
    if not wait_for_detached(10.0):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medad_viewer.gui.app", description="MedAD Viewer")
    p.add_argument("path", nargs="?", help="a study folder or file to open")
    p.add_argument("--demo", action="store_true", help="open the demo brain MR with its normal references")
    args = p.parse_args(argv)
    return run_app(args.path, args.demo)


if __name__ == "__main__":
    sys.exit(main())
