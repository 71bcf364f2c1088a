"""The controller of what the main viewer shows around the image: the slice's info and review lines (and the Review
panel's), the anomaly overlay at the chosen threshold, the window presets, and the ranking's thumbnails."""

from __future__ import annotations

from PySide6.QtGui import QPixmap

from ..io.windowing import default_window, presets_for
from ..review.state import Decision
from .thumbnails import thumbnail
from .study_browser import pixmap_from_gray


class SliceInfoController:
    """`window` gives the main viewer, the panels, the presets menu, the undo actions and the planes."""

    def __init__(self, window) -> None:
        self.window = window
        self.model = window.model
        self.viewer = window.viewer

    def fill_presets_menu(self) -> None:
        self.window.presets_menu.clear()
        if self.model.series is None:
            return
        for k, p in enumerate(presets_for(self.model.series)[:5]):
            a = self.window.preset_actions[k]
            a.setText(f"{p.name} (W {p.width:g} L {p.center:g})")
            self.window.presets_menu.addAction(a)

    def refresh(self) -> None:
        s = self.model.series
        if s is None:
            return
        i = self.model.index
        rev = self.model.session.review.get(s.uid, i)
        left = (f"<b>{_esc(s.description or s.modality)}</b> · {s.modality}<br>"
                f"Slice {i + 1} / {s.num_slices} · {s.slice_position(i):.1f} mm")
        right = []
        if not self.window.planes.main_is_acquired():  # a reformatted plane: its own corner line (PlanesController.draw)
            left = ""
        res = self.model.results.get(s.uid)
        r = res.get(i) if res is not None else None
        if r is not None:
            right.append(f"Score <b>{r.score:.2f}</b> · {r.percentile:.1f}th pct of normal")
        if rev.decision == Decision.CONFIRMED:
            right.append("<span style='color:#ff6b6b'><b>CONFIRMED</b></span>")
        elif rev.decision == Decision.DISMISSED:
            right.append("<span style='color:#bbbbbb'><b>DISMISSED</b></span>")
        pos = self.model.session.reference_set.find(s.uid, i)
        if pos is not None:
            kind = self.model.session.reference_set.references[pos].kind
            color = "#5dd39e" if kind == "normal" else "#ff8a80"
            right.append(f"<span style='color:{color}'>{kind.capitalize()} reference</span>")
        if left:
            self.viewer.set_info(left, "<br>".join(right))
        counts = self.model.session.review.counts(s.uid)
        count_txt = (f"{counts[Decision.CONFIRMED]} confirmed · {counts[Decision.DISMISSED]} dismissed · "
                     f"{s.num_slices - counts[Decision.CONFIRMED] - counts[Decision.DISMISSED]} unreviewed")
        self.window.review_panel.show_review(f"Slice {i + 1} of {s.num_slices}", rev, count_txt,
                                      self.model.review.undo_label(), self.model.review.redo_label())
        if self.window.planes.main_is_acquired() and s.is_loaded(i):
            self.viewer.set_annotations(rev.annotations)
        self.window.act_undo.setEnabled(self.model.review.can_undo)
        self.window.act_redo.setEnabled(self.model.review.can_redo)

    def refresh_overlays(self) -> None:
        """The overlay of every view shown, at the panel's threshold (whose map value the panel then shows)."""
        self.refresh_main_overlay()
        self.window.planes.refresh_overlays()

    def refresh_main_overlay(self) -> None:
        res, _r = self.model.current_result()
        if res is not None:
            self.window.analysis.set_threshold_value(res.value_at(self.window.analysis.overlay_state()["threshold_pct"]))
        if self.model.series is not None:
            self.window.planes.draw_overlay(self.viewer, self.model.plane, self.model.view_index())

    def ranking_thumbnail(self, index: int) -> QPixmap | None:
        s = self.model.series
        if s is None or not 0 <= index < s.num_slices or not s.is_loaded(index):
            return None
        c, w, _ = self.model.display.windows.get(s.uid, (0.0, 1.0, ""))
        return pixmap_from_gray(thumbnail(s.slice(index), (c, w), 40))

    def apply_preset(self, k: int) -> None:
        if self.model.series is None:
            return
        presets = presets_for(self.model.series)
        if k >= len(presets):
            self.window.statusBar().showMessage(f"No preset {k + 1} for {self.model.series.modality}", 3000)
            return
        p = presets[k]
        self.window.display.set_window(p.center, p.width, p.name)

    def reset_window(self) -> None:
        if self.model.series is not None:
            w = default_window(self.model.series)
            self.window.display.set_window(w.center, w.width, w.name)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def probe_html(p) -> str:
    """The corner readout of a review.viewer_model.Probe: voxel and position, value, and the map there."""
    if p is None:
        return ""
    x, y, z = p.position_mm
    v = f"{p.value:.0f}" if abs(p.value) >= 100 or p.units == "HU" else f"{p.value:.4g}"
    text = (f"x {p.column}, y {p.row}, slice {p.index + 1} &nbsp;<b>{v}{' ' + p.units if p.units else ''}</b><br>"
            f"({x:.1f}, {y:.1f}, {z:.1f}) mm LPS")
    if p.map_value is not None:
        text += f"<br>anomaly {p.map_value:.2f} ({p.map_percentile:.1f}th pct of normal)"
    return text
