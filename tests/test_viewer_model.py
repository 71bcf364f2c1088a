"""The viewer model alone, without Qt: which load wins, what a cancelled or failed run keeps, when the session is
saved, which series a reference slice is from, and the time-remaining estimate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from medad_viewer.io import load_study
from medad_viewer.review.references import ReferenceSet, ReferenceSlice
from medad_viewer.review.session import SessionStore
from medad_viewer.review.state import Decision
from medad_viewer.review.events import (DetectorReady, DisplayChanged, SaveDue, SaveProblem, ScoresNotSaved,
                                         SliceScored, SliceShown)
from medad_viewer.review.runs import ADAPTING, CANCELLED, DONE, FAILED, SCORING
from medad_viewer.review.viewer_model import ViewerModel

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "resources" / "demo" / "brain1_image.nrrd"


@pytest.fixture(autouse=True)
def app_data(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDAD_VIEWER_DATA_DIR", str(tmp_path / "appdata"))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def payload(path) -> dict:
    """What gui/background_jobs.load_study_job returns (the thumbnails aside)."""
    study = load_study(path)
    store = SessionStore.for_study(study, path)
    return {"path": str(path), "study": study, "thumbs": [], "store": store, "session": store.load(study),
            "scores": {}, "notes": []}


def opened(path=DEMO, clock=None) -> tuple[ViewerModel, list]:
    m = ViewerModel(clock=clock or Clock())
    events: list = []
    for group in (m.events, m.saving.events, m.scoring.events, m.display.events, m.review.events,
                  m.references.events):
        group.connect_all(events.append)
    assert m.load_finished(m.begin_load(), payload(path))
    m.select_series(0)
    return m, events


def test_the_model_needs_no_qt():
    code = ("import sys, medad_viewer.review.viewer_model\n"
            "assert not [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'torch'))]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_older_load_is_dropped(sample_data):
    m = ViewerModel()
    first = m.begin_load()
    second = m.begin_load()
    assert m.load_finished(second, payload(sample_data / "ct-dicom"))
    assert not m.load_finished(first, payload(DEMO))  # comes late: dropped
    assert m.study.series[0].modality == "CT" and m.study_path.endswith("ct-dicom")


def test_slices_clamp_and_the_saved_slice_comes_back():
    m, events = opened()
    assert m.index == 12 and SliceShown(12) in events  # the middle slice first
    assert m.show_slice(999) == 24 and m.show_slice(-5) == 0
    m.show_slice(7)
    m.save()
    again, _ = opened()
    assert again.index == 7


def test_save_is_due_within_the_delay_of_the_first_change():
    clock = Clock()
    m, events = opened(clock=clock)
    m.save()
    events.clear()
    m.review.set_note("first word")
    m.review.set_note("first word and more")  # a later change does not postpone the save
    m.show_slice(3)
    assert [e for e in events if isinstance(e, SaveDue)] == [SaveDue(m.saving.AUTOSAVE_DELAY_S)]
    assert m.saving.pending
    assert SessionStore.for_study(m.study, m.study_path).load().review.get(m.series.uid, 12).note == ""
    m.save()  # what the window's timer calls
    assert not m.saving.pending
    assert SessionStore.for_study(m.study, m.study_path).load().review.get(m.series.uid, 12).note == \
        "first word and more"
    # Decisions are saved at once.
    m.review.set_decision(Decision.CONFIRMED)
    assert SessionStore.for_study(m.study, m.study_path).load().review.get(m.series.uid, 3).decision == \
        Decision.CONFIRMED


def _result(i):
    from medad_viewer.engine.records import SliceScore
    return SliceScore(i, float(i), 50.0 + i, np.full((256, 256), i / 10, np.float32))


def _scored(m: ViewerModel, n: int) -> None:
    run = m.start_scoring("memory")
    assert run.state == ADAPTING
    m.scoring.partial(DetectorReady({"backbone": "efficientnet-lite2", "weights": "ImageNet", "pretrained": True}))
    assert run.state == SCORING
    for i in range(n):
        m.scoring.partial(SliceScored(_result(i)))


def test_a_cancelled_run_keeps_its_slices_and_an_empty_one_brings_back_the_old_scores():
    m, _ = opened()
    assert m.start_scoring("memory") == ("Add at least one normal reference slice first: browse to a slice with "
                                         "normal anatomy and press R.")
    m.show_slice(2)
    assert "added as a normal reference" in m.references.add("normal")
    outcome = SimpleNamespace(detector={"backbone": "efficientnet-lite2"}, fit_seconds=1.0, score_seconds=2.0,
                              from_cache=False)
    _scored(m, 25)
    res = m.run.results
    res.complete = True
    m.scoring.finished(SimpleNamespace(results=res, **vars(outcome)))
    assert m.run.state == DONE and len(m.results[m.series.uid]) == 25 and m.scoring.seconds_per_slice == 2.0 / 25
    first = m.results[m.series.uid]
    # Cancelled after 3 slices: those 3 are kept.
    _scored(m, 3)
    m.scoring.cancelled()
    assert m.run.state == CANCELLED and sorted(m.results[m.series.uid].results) == [0, 1, 2]
    # Cancelled (or failed) before its first slice: the previous scores come back.
    _scored(m, 3)
    kept = m.results[m.series.uid]
    m.start_scoring("memory")  # refused: one runs already
    assert m.results[m.series.uid] is kept
    m.scoring.cancelled()
    m.start_scoring("memory")
    m.scoring.failed("Out of memory: …")
    assert m.run.state == FAILED and m.run.message.startswith("Out of memory")
    assert m.results[m.series.uid] is kept and first is not kept


def test_scores_a_save_could_not_write_go_with_the_next_save(tmp_path):
    m, events = opened()
    m.show_slice(2)
    m.references.add("normal")
    _scored(m, 4)
    m.scoring.partial(ScoresNotSaved("The scores of 4 slices could not be saved (No space left on device). …"))
    assert m.saving.unsaved_scores == {m.series.uid}
    assert SaveProblem(m.saving.problem) in events and "No space" in m.saving.problem
    m.save()
    assert not m.saving.unsaved_scores and len(m.saving.store.load_scores(m.series.uid)) == 4
    assert m.saving.problem is None


def test_time_remaining_per_stage():
    clock = Clock()
    m, _ = opened(clock=clock)
    m.scoring.seconds_per_slice = 0.5
    m.show_slice(2)
    m.references.add("normal")
    m.start_scoring("memory")
    assert m.scoring.time_remaining(0.01) is None  # too early to say
    clock.t += 10
    # Adaptation 20 % done after 10 s: 40 s more, then 25 slices at the last measured 0.5 s.
    assert m.scoring.time_remaining(0.2 * 0.85) == pytest.approx(40 + 12.5)
    m.scoring.partial(DetectorReady({}))
    clock.t += 2
    for i in range(5):
        m.scoring.partial(SliceScored(_result(i)))
    assert m.scoring.time_remaining(0.9) == pytest.approx(2 / 5 * 20)


def test_which_series_a_reference_is_from(tmp_path, sample_data):
    m, _ = opened()
    s = m.series
    by_uid = ReferenceSlice(str(DEMO.resolve()), s.uid, 3)
    by_alias = ReferenceSlice(str(DEMO.resolve()), s.aliases[0], 3)
    by_description = ReferenceSlice(str(DEMO.resolve()), "file:somewhere-else", 3, description=s.description)
    assert m.references.series_of(by_uid) is s and m.references.series_of(by_alias) is s
    assert m.references.series_of(by_description) is s  # the only series of its study, too
    elsewhere = ReferenceSlice(str(sample_data / "ct-dicom"), "dicom:x", 1)
    assert m.references.series_of(elsewhere) is None  # its study is not loaded
    m.references.add_studies({elsewhere.source: load_study(elsewhere.source)})
    assert m.references.series_of(elsewhere).modality == "CT"
    # References carry over to a study without its own.
    m.references.replace(ReferenceSet("r", "MR", [by_uid]))
    assert m.load_finished(m.begin_load(), payload(sample_data / "ct-dicom"))
    assert [r.index for r in m.session.reference_set] == [3]


def test_the_probe_gives_the_voxel_its_patient_position_value_and_map(sample_data):
    """Checked against SimpleITK on the original file: the CT NIfTI is stored flipped (direction -1, -1, 1) and
    shown reoriented, so the probe's position must lead back to the same voxel of the file."""
    import SimpleITK as sitk

    path = sample_data / "ct-nifti" / "example_ct_sm.nii.gz"
    m, _ = opened(path)
    s = m.series
    assert s.metadata["reoriented"]
    original = sitk.ReadImage(str(path))
    for k, r, c in [(3, 10, 20), (m.index, 40, 5), (s.num_slices - 1, s.rows - 1, s.columns - 1)]:
        m.show_slice(k)
        p = m.probe(r, c)
        assert (p.index, p.row, p.column) == (k, r, c) and p.units == "HU"
        assert p.value == float(s.slice(k)[r, c])
        back = original.TransformPhysicalPointToIndex(p.position_mm)
        assert float(original[back]) == p.value
    assert m.probe(-1, 0) is None and m.probe(0, s.columns) is None
    assert m.probe(0, 0).map_value is None  # not scored
    # Scored: the map value under the cursor and its percentile of normal pixels.
    m.show_slice(2)
    m.references.add("normal")
    _scored_shape(m, s.rows, s.columns)
    p = m.probe(7, 9)
    assert p.map_value == pytest.approx(m.results[s.uid].get(m.index).map[7, 9])
    assert p.map_percentile == pytest.approx(m.results[s.uid].pixel_percentile(p.map_value))


def _scored_shape(m, rows, cols):
    from medad_viewer.engine.records import SliceScore

    m.start_scoring("memory")
    m.scoring.partial(DetectorReady({}))
    yy, xx = np.mgrid[0:rows, 0:cols]
    m.scoring.partial(SliceScored(SliceScore(m.index, 1.0, 90.0, (yy + xx).astype(np.float32) / (rows + cols))))


def test_display_toggles_and_the_cine_loop():
    m, _ = opened()
    changes = []
    m.display.events.changed.connect(changes.append)
    m.display.toggle("inverted")
    m.display.toggle("flip_h")
    assert m.display.inverted and m.display.flip_h and changes == [DisplayChanged(m.display)] * 2
    m.show_slice(23)
    assert [m.cine_step() for _ in range(3)] == [24, 0, 1]  # loops
    assert m.display.cine_speed(100) == 40 and m.display.cine_speed(0.001) == 1  # clamped to 1 .. 40 a second
    m.display.toggle("cine")
    m.display.rotate(-1)
    assert m.display.cine and m.display.rotation == 3
    m.display.reset()
    d = m.display
    assert not (d.inverted or d.flip_h or d.flip_v or d.cine or d.rotation) and d.cine_fps == 1  # the speed is kept
    single = ViewerModel()
    single.display.toggle("cine")  # no series: nothing to play
    assert not single.display.cine
