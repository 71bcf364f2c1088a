"""The main window's menus, keyboard shortcuts and toolbar, and the export menu: built from one table of actions,
so the shortcuts page (Help → Keyboard shortcuts) and the keys cannot drift apart."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

from ..review.state import Decision


def make_action(win, text: str, slot: Callable, shortcut: str | QKeySequence | list | None = None,
            tip: str = "", menu: QMenu | None = None) -> QAction:
    a = QAction(text, win)
    if shortcut is not None:
        if isinstance(shortcut, list):
            a.setShortcuts([QKeySequence(s) for s in shortcut])
        else:
            a.setShortcut(QKeySequence(shortcut))
    # Window-wide, so keys work wherever the focus is (text fields still get their own keys first).
    a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    if tip:
        a.setStatusTip(tip)
        a.setToolTip(tip)
    a.triggered.connect(lambda _checked=False: slot())
    win.addAction(a)
    if menu is not None:
        menu.addAction(a)
    return a



def build_actions(win) -> None:
    """The menus, their keyboard shortcuts and the toolbar; the actions the window updates become its attributes."""
    self = win
    _action = lambda *a, **k: make_action(win, *a, **k)  # noqa: E731
    mb = self.menuBar()
    m_file = mb.addMenu("&File")
    self.act_open_folder = _action("Open folder…", lambda: self.opening.open_folder_dialog(), QKeySequence.StandardKey.Open,
                                        "Open a folder of DICOM files or images", m_file)
    self.act_open_file = _action("Open file…", lambda: self.opening.open_file_dialog(), "Ctrl+Shift+O",
                                      "Open a NIfTI, NRRD, MetaImage, DICOM or image file", m_file)
    _action("Open worklist…", lambda: self.worklist.open_dialog(), None,
            "A folder written by medad-viewer batch: its series ranked, opened with their scores", m_file)
    self.recent_menu = m_file.addMenu("Open recent")
    self.recent_menu.aboutToShow.connect(lambda: self.opening.fill_recent_menu())
    _action("Open the demo study", lambda: self.opening.open_demo(), None, "Brain MR with a tumour and saved references",
                 m_file)
    m_file.addSeparator()
    _action("Save session", self.save_session, QKeySequence.StandardKey.Save,
                 "Reviews are saved automatically; this saves now", m_file)
    self.export_menu = m_file.addMenu("Export")
    build_export_menu(win)
    m_file.addSeparator()
    _action("Quit", self.close, "Ctrl+Q", "", m_file)  # Qt maps Ctrl to Command on macOS

    m_edit = mb.addMenu("&Edit")
    self.act_undo = _action("Undo", self.review.undo, "Ctrl+Z", "Undo the last review action", m_edit)
    self.act_redo = _action("Redo", self.review.redo, ["Ctrl+Y", "Ctrl+Shift+Z"], "Redo", m_edit)
    m_edit.addSeparator()
    _action("Settings…", self.open_settings, "Ctrl+,", "Backbone, weights, device, method, budget", m_edit)

    m_view = mb.addMenu("&View")
    _action("Next slice", lambda: self.planes.step(+1), "Down", "", m_view)
    _action("Previous slice", lambda: self.planes.step(-1), "Up", "", m_view)
    _action("Forward 10 slices", lambda: self.planes.step(+10), "Shift+Down", "", m_view)
    _action("Back 10 slices", lambda: self.planes.step(-10), "Shift+Up", "", m_view)
    _action("First slice", lambda: self.planes.end(last=False), "Home", "", m_view)
    _action("Last slice", lambda: self.planes.end(last=True), "End", "", m_view)
    _action("Next series", lambda: self.model.step_series(+1), "PgDown", "", m_view)
    _action("Previous series", lambda: self.model.step_series(-1), "PgUp", "", m_view)
    m_view.addSeparator()
    m_plane = m_view.addMenu("Plane")
    self.plane_actions = {}
    for k, plane in enumerate(("axial", "coronal", "sagittal")):
        a = _action(plane.capitalize(), lambda p=plane: self.planes.set_plane(p), f"Ctrl+{k + 1}",
                    "Show the main view in this plane (reformatted from the acquired slices)", m_plane)
        a.setCheckable(True)
        self.plane_actions[plane] = a
    self.act_layout = _action("Three planes (1×3)", self.planes.toggle_layout, "L",
                              "The main view and the other two planes side by side", m_view)
    self.act_layout.setCheckable(True)
    self.act_crosshair = _action("Show crosshair", self.planes.toggle_crosshair, "X",
                                 "Where the planes cross; Shift+move the mouse to move it", m_view)
    self.act_crosshair.setCheckable(True)
    self.act_crosshair.setChecked(True)
    m_view.addSeparator()
    self.presets_menu = m_view.addMenu("Window presets")
    self.preset_actions = [_action(f"Preset {k + 1}", lambda k=k: self.slice_info.apply_preset(k), str(k + 1))
                           for k in range(5)]
    _action("Reset window", self.slice_info.reset_window, "0", "Back to the series' default window", m_view)
    _action("Fit to window", self.viewer.fit, ["F", "="], "Also: double-click the image", m_view)
    m_view.addSeparator()
    _action("Invert grey scale", lambda: self.model.display.toggle("inverted"), "I", "", m_view)
    _action("Flip left-right", lambda: self.model.display.toggle("flip_h"), "Shift+H", "", m_view)
    _action("Flip up-down", lambda: self.model.display.toggle("flip_v"), "V", "", m_view)
    _action("Rotate clockwise", lambda: self.model.display.rotate(+1), "Ctrl+R", "A quarter turn", m_view)
    _action("Rotate anticlockwise", lambda: self.model.display.rotate(-1), "Ctrl+Shift+R", "A quarter turn back", m_view)
    _action("Reset view", self.display.reset_view, "Space", "Not inverted, flipped or rotated, cine off, fitted", m_view)
    _action("Cine (play / pause)", lambda: self.model.display.toggle("cine"), "K", "Loop through the slices", m_view)
    _action("Cine faster", lambda: self.display.cine_speed(2.0), "]", "", m_view)
    _action("Cine slower", lambda: self.display.cine_speed(0.5), "[", "", m_view)
    m_view.addSeparator()
    self.act_overlay = _action("Show anomaly overlay", self.toggle_overlay, "H", "", m_view)
    self.act_overlay.setCheckable(True)
    self.act_overlay.setChecked(True)
    _action("Show contour", lambda: self.analysis.contour.toggle(), "C", "", m_view)
    self.act_why = _action("Why is this hot?", lambda: self.why.toggle(), "Y",
                           "Click a point: the normal reference patch it was compared with", m_view)

    m_review = mb.addMenu("&Review")
    _action("Confirm finding", lambda: self.review.set_decision(Decision.CONFIRMED), "A", "", m_review)
    _action("Dismiss", lambda: self.review.set_decision(Decision.DISMISSED), "D", "", m_review)
    _action("Mark unreviewed", lambda: self.review.set_decision(Decision.UNREVIEWED), "U", "", m_review)
    m_review.addSeparator()
    _action("Next flagged slice", lambda: self.review.goto_flagged(+1), "N", "", m_review)
    _action("Previous flagged slice", lambda: self.review.goto_flagged(-1), "P", "", m_review)
    m_review.addSeparator()
    _action("Window/level tool", lambda: self.review.set_tool("window"), "W", "", m_review)
    _action("Ellipse tool", lambda: self.review.set_tool("ellipse"), "E", "", m_review)
    _action("Brush tool", lambda: self.review.set_tool("brush"), "B", "", m_review)
    _action("Length tool", lambda: self.measure.choose("length"), "M", "Left-drag measures a length in mm", m_review)
    _action("Ellipse ROI tool", lambda: self.measure.choose("roi"), "O",
            "Left-drag an ellipse: mean ± SD of the values and of the anomaly map inside", m_review)
    _action("Delete measurement", lambda: self.measure.delete_last(), "Delete", "The newest measurement on this slice", m_review)
    m_review.addSeparator()
    _action("Add as normal reference", lambda: self.references.add("normal"), "R",
                 "Use the current slice as an example of normal anatomy", m_review)
    _action("Add as abnormal example", lambda: self.references.add("abnormal"), "Shift+R",
                 "The drawn ellipses/strokes become its mask", m_review)

    m_an = mb.addMenu("&Analysis")
    self.act_run = _action("Adapt && score", lambda: self.scoring.run(), "Ctrl+Return", "", m_an)
    self.act_cancel = _action("Cancel", lambda: self.scoring.cancel(), "Esc", "", m_an)

    m_help = mb.addMenu("&Help")
    _action("Keyboard shortcuts", self._show_shortcuts, "F1", "", m_help)
    _action("About MedAD Viewer", self._about, None, "", m_help)

    tb = self.addToolBar("Main")
    tb.setObjectName("main-toolbar")
    tb.setMovable(False)
    tb.addAction(self.act_open_folder)
    tb.addAction(self.act_open_file)
    tb.addSeparator()
    tb.addAction(self.act_run)
    tb.addAction(self.act_cancel)
    tb.addSeparator()
    tb.addAction(self.act_undo)
    tb.addAction(self.act_redo)



def build_export_menu(win) -> None:
    """File → Export: one action per export of the report package (a broken report package disables them, with
    the reason as tooltip, instead of stopping the viewer)."""
    from .export_controller import export_functions

    functions, why = export_functions()
    win.export_actions = {}
    for text, fn_name, filt in EXPORT_MENU:
        fn = functions.get(fn_name)
        a = QAction(text, win)
        if fn is None:
            a.setEnabled(False)
            a.setToolTip(f"Not available: {why}")
        else:
            a.triggered.connect(lambda _c=False, f=fn, t=text, flt=filt: win.exports.ask(f, t, flt))
        win.export_menu.addAction(a)
        win.export_actions[fn_name] = a
    win.export_menu.addSeparator()
    settings = win.app_settings
    win.act_open_exports = QAction("Open exported files when done", win)
    win.act_open_exports.setCheckable(True)
    win.act_open_exports.setChecked(settings.open_exports_when_done)
    win.act_open_exports.toggled.connect(lambda on: setattr(settings, "open_exports_when_done", on))
    win.export_menu.addAction(win.act_open_exports)
    win.export_menu.aboutToShow.connect(lambda: win.act_open_exports.setChecked(settings.open_exports_when_done))
    win.export_menu.setToolTipsVisible(True)


from ..review.export import EXPORTS as EXPORT_MENU  # noqa: E402 - (menu text, report function, file filter)

# Gestures of the mouse, which no action carries; the keys come from the actions themselves (shortcuts_html).
MOUSE_GESTURES = [
    ("Mouse wheel", "previous / next slice"),
    ("Left-drag", "window / level (or draw or measure, with the Ellipse, Brush, Length or Ellipse ROI tool)"),
    ("Right-drag, Ctrl+wheel", "zoom"),
    ("Middle-drag, Shift+drag", "pan"),
    ("Shift+move", "move the crosshair: the other planes follow"),
    ("Double-click", "fit to window"),
    ("Left-click", "with the Why is this hot? panel shown (Y): explain the point"),
]


def shortcut_rows(win) -> list[tuple[str, str, str]]:
    """(group, keys, what) for every gesture and keyboard shortcut: the mouse first, then the window's actions menu
    by menu (the window presets last), so the help page and the README cannot drift from the keys."""
    from PySide6.QtGui import QKeySequence as K

    def keys(a: QAction) -> str:
        return ", ".join(k.toString(K.SequenceFormat.NativeText) for k in a.shortcuts())

    rows = [("Mouse", g, d) for g, d in MOUSE_GESTURES]
    seen = set()
    for menu_action in win.menuBar().actions():
        if menu_action.menu() is None:
            continue
        group = menu_action.text().replace("&", "")
        for a in _menu_actions(menu_action.menu()):
            if a.shortcuts() and id(a) not in seen:
                seen.add(id(a))
                rows.append((group, keys(a), a.text().replace("&&", "&").rstrip("…")))
    # The window presets: in the View menu once a series is open, named after that series' presets.
    rows += [("Window presets", keys(a), a.text()) for a in win.actions() if a.shortcuts() and id(a) not in seen]
    return rows


def shortcuts_html(win) -> str:
    """Help → Keyboard shortcuts."""
    def esc(t: str) -> str:
        return t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    out, group = [], None
    for g, k, what in shortcut_rows(win):
        if g != group:
            group = g
            out.append(f"<tr><td colspan='2'><br><i>{esc(g)}</i></td></tr>")
        out.append(f"<tr><td><b>{esc(k)}</b></td><td>{esc(what)}</td></tr>")
    return "<table>" + "".join(out) + "</table>"


def shortcuts_markdown(win) -> str:
    """The same as a Markdown table, for the README (tests/test_gui_main_window.py keeps the two equal)."""
    lines = ["| keys | what |", "|---|---|"]
    group = None
    for g, k, what in shortcut_rows(win):
        if g != group:
            group = g
            lines.append(f"| **{g}** | |")
        lines.append(f"| {k.replace('|', '¦')} | {what} |")
    return "\n".join(lines)


def _menu_actions(menu: QMenu) -> list[QAction]:
    out = []
    for a in menu.actions():
        out.extend(_menu_actions(a.menu()) if a.menu() is not None else [a])
    return out
