"""Start the desktop app: `python -m medad_viewer.gui.app [PATH] [--demo]` (the `medad-viewer` command calls
`run_app`)."""

from __future__ import annotations

import argparse
import os
import sys

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from .main_window import DEMO_STUDY, MainWindow
from .worker import wait_for_detached


def create_app() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
    app.setApplicationName("MedAD Viewer")
    app.setOrganizationName("MedAD")
    return app


def run_app(path: str | None = None, demo: bool = False) -> int:
    """Open the main window (on `path`, or on the demo study with its references in the tray); returns the exit
    code when the window closes."""
    app = create_app()
    win = MainWindow()
    win.show()
    if demo:
        if not DEMO_STUDY.is_file():
            win.browser.errors.add_messages([f"The demo study is missing: {DEMO_STUDY}"])
        else:
            QTimer.singleShot(0, win.open_demo)
    elif path:
        QTimer.singleShot(0, lambda: win.open_path(path))
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
