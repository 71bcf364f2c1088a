"""A large DICOM series is shown before all its slices are read (issue 20): the slice shown first is read first, the
rest fill in behind it, a slice scrolled onto before it is read shows "loading" and then itself (never another
slice's pixels), Adapt & score waits for the whole series, the series is held in one array (no second copy), and
opening another study during the fill is safe. io level (load_study(defer_pixels=True), io.fill) and the real window
(pytest-qt) on a synthetic CT series with UIDs written to tmp_path, whose reads are slowed down to make the fill
take long enough to be watched."""

from __future__ import annotations

import shutil
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import medad_viewer.io.dicom as dicom
from medad_viewer.io import load_study
from medad_viewer.io.series import SliceNotLoaded
from medad_viewer.review.state import Decision

N, SIZE = 40, 64


def slice_values(z: int) -> np.ndarray:
    """Slice z of the synthetic CT: a body whose value says which slice it is (so a wrong slice is seen)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    img = np.full((SIZE, SIZE), -1000, np.int16)
    body = ((xx - SIZE / 2) / (0.4 * SIZE)) ** 2 + ((yy - SIZE / 2) / (0.3 * SIZE)) ** 2 < 1
    img[body] = 10 * z
    img[SIZE // 2, : z + 1] = 900  # and a line as long as the slice number
    return img


def write_ct(folder: Path, n: int = N) -> Path:
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    study, series = "1.2.826.0.1.3680043.9.7433.2.1", "1.2.826.0.1.3680043.9.7433.2.2"
    for z in range(n):
        img = sitk.GetImageFromArray(slice_values(z))
        img.SetSpacing((0.7, 0.7))
        for k, v in {"0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series}.{z + 1}",
                     "0020|000d": study, "0020|000e": series, "0020|0011": "1", "0020|0013": str(z + 1),
                     "0008|103e": "Progressive CT", "0020|0032": f"0\\0\\{2.0 * z:.1f}",
                     "0020|0037": "1\\0\\0\\0\\1\\0", "0018|0050": "2.0",
                     "0028|1052": "0", "0028|1053": "1"}.items():
            img.SetMetaData(k, v)
        # file names in reverse slice order: the order of the files is not the order read
        writer.SetFileName(str(folder / f"IM{n - z:04d}.dcm"))
        writer.Execute(img)
    return folder


@pytest.fixture
def ct(tmp_path) -> Path:
    return write_ct(tmp_path / "ct")


@pytest.fixture
def slow_reads(monkeypatch):
    """Each slice read takes `delay[0]` s more (a slow disk; only files under a folder named `delay[1]`, when set);
    `order` records which files were read, in order."""
    real = dicom._read_plane
    delay = [0.03, None]
    order: list[str] = []
    lock = threading.Lock()

    def read(h):
        if delay[1] is None or Path(h.path).parent.name == delay[1]:
            time.sleep(delay[0])
        with lock:
            order.append(Path(h.path).name)
        return real(h)

    monkeypatch.setattr(dicom, "_read_plane", read)
    return delay, order


def z_of(name: str, n: int = N) -> int:
    return n - int(name[2:6])


# ---------------------------------------------------------------------------------------------------------- io level
def test_deferred_series_is_planned_then_filled_shown_slice_first(ct, slow_reads):
    delay, order = slow_reads
    t = time.monotonic()
    study = load_study(ct, defer_pixels=True)
    assert time.monotonic() - t < 0.5 * N * delay[0]  # headers only: no slice read yet
    (s,) = study.series
    assert order == [] and not s.complete and s.loaded_count() == 0
    assert s.num_slices == N and s.spacing == pytest.approx((0.7, 0.7, 2.0))
    with pytest.raises(SliceNotLoaded):
        s.slice(30)
    fill = study.pending
    fill.read_now(s, [30])
    assert order == [f"IM{N - 30:04d}.dcm"] and s.is_loaded(30) and not s.is_loaded(29)
    np.testing.assert_array_equal(s.slice(30), slice_values(30))
    fill.focus(s, 30)
    fill.run(threads=1)
    # outward from the slice shown: 30, 31, 29, 32, 28, ...
    assert [z_of(n) for n in order[1:6]] == [31, 29, 32, 28, 33]
    assert s.loaded_count() == N and not s.complete  # complete once finished (in the thread that shows it)
    changes, errors = fill.finish()
    assert changes == {} and errors == [] and s.complete
    ref = load_study(ct).series[0]
    np.testing.assert_array_equal(s.volume(), ref.volume())
    assert (s.uid, s.origin, s.direction, s.warnings) == (ref.uid, ref.origin, ref.direction, ref.warnings)


def test_a_slice_asked_for_is_read_next(ct, slow_reads):
    delay, order = slow_reads
    study = load_study(ct, defer_pixels=True)
    (s,) = study.series
    fill = study.pending
    fill.focus(s, 20)
    arrived = {}

    def ask() -> None:
        while len(order) < 3:
            time.sleep(0.005)
        s.request(0)  # a reader scrolls to the first slice while the fill works around the 20th
        t = time.monotonic()
        while not s.is_loaded(0):
            time.sleep(0.002)
        arrived.update(wait=time.monotonic() - t, loaded=s.loaded_count())

    th = threading.Thread(target=ask)
    th.start()
    fill.run(threads=1)
    th.join()
    assert arrived["loaded"] < N // 2  # long before the fill would have got there (20 slices away)
    assert arrived["wait"] < 4 * delay[0] + 0.2
    # and the fill goes on outward from there: its neighbour next
    i = [z_of(n) for n in order].index(0)
    assert z_of(order[i + 1]) == 1


def test_the_fill_holds_one_array_and_no_second_copy(tmp_path):
    folder = write_ct(tmp_path / "big", n=120)
    study = load_study(folder, defer_pixels=True)
    (s,) = study.series
    volume = s.volume()
    nbytes = s.num_slices * s.rows * s.columns * 2
    assert volume.dtype == np.int16 and volume.nbytes == nbytes and not volume.flags.writeable
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        study.pending.run()
        study.pending.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * nbytes  # slices on their way, never a volume
    assert s.volume() is volume  # filled in place: the array shown from the start is the series
    assert np.shares_memory(volume, s._volume) and s.complete


@pytest.fixture
def damaged_slice(monkeypatch):
    """Slice 7's file cannot be decoded (found only when its pixels are read: GDCM read the header)."""
    real = dicom._read_plane
    victim = f"IM{N - 7:04d}.dcm"

    def read(h):
        if Path(h.path).name == victim:
            raise RuntimeError("Exception thrown in SimpleITK ImageFileReader_Execute: damaged pixel data")
        return real(h)

    monkeypatch.setattr(dicom, "_read_plane", read)
    return victim


def test_a_slice_that_cannot_be_read_keeps_its_number_while_browsed(ct, damaged_slice):
    """Found while a series is browsed (whose slice numbers may already carry decisions and references): the slice
    stays, empty, with a warning; read at once (info, score) it is left out, as it always was."""
    study = load_study(ct, defer_pixels=True)
    (s,) = study.series
    study.pending.run()
    assert s.is_loaded(7)  # shown (empty) at once, not "loading" for ever
    np.testing.assert_array_equal(s.slice(7), 0)
    changes, errors = study.pending.finish()
    assert changes == {} and errors == [] and s.complete and s.num_slices == N
    assert any(damaged_slice in w and "empty" in w for w in s.warnings)
    np.testing.assert_array_equal(s.slice(8), slice_values(8))

    (sync,) = load_study(ct).series
    assert sync.num_slices == N - 1 and any(damaged_slice in w and "skipped" in w for w in sync.warnings)
    np.testing.assert_array_equal(sync.slice(7), slice_values(8))  # the slices after it moved up, in place
    np.testing.assert_array_equal(np.delete(s.volume(), 7, axis=0), sync.volume())


def test_a_slice_that_needs_a_wider_pixel_type_while_filling_in(tmp_path):
    """Slices are first stored as int16; one above 32767 widens the array (to uint16) half-way through the fill: the
    series and its reformatted views then show the wider copy, with every slice read before and after."""
    from medad_viewer.io.planes import plane_view

    folder = tmp_path / "mr"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(30):
        a = np.full((32, 32), 100 * z, np.uint16)
        if z == 25:
            a[5, 5] = 60000
        img = sitk.GetImageFromArray(a)
        for k, v in {"0008|0060": "MR", "0020|000e": "1.2.826.0.1.3680043.9.7433.3.2", "0020|000d": "1.2.3",
                     "0008|0018": f"1.2.826.0.1.3680043.9.7433.3.2.{z}", "0020|0032": f"0\\0\\{z}",
                     "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(z + 1)}.items():
            img.SetMetaData(k, v)
        writer.SetFileName(str(folder / f"f{z:03d}.dcm"))
        writer.Execute(img)
    study = load_study(folder, defer_pixels=True)
    (s,) = study.series
    coronal = plane_view(s, "coronal")
    study.pending.read_now(s, [10])
    assert s.volume().dtype == np.int16
    study.pending.focus(s, 10)
    study.pending.run(threads=1)
    study.pending.finish()
    assert s.volume().dtype == np.uint16 and not s.volume().flags.writeable
    assert s.volume()[25, 5, 5] == 60000 and s.slice(10)[0, 0] == 1000 and s.slice(29)[0, 0] == 2900
    again = plane_view(s, "coronal")
    assert again is not coronal and again.series.volume().dtype == np.uint16
    np.testing.assert_array_equal(load_study(folder).series[0].volume(), s.volume())


def test_info_reads_every_slice(ct):
    """`load_study` without deferring (info, score, reference studies) gives complete series."""
    (s,) = load_study(ct).series
    assert s.complete and s.loaded_count() == N
    np.testing.assert_array_equal(s.slice(N - 1), slice_values(N - 1))


# ---------------------------------------------------------------------------------------------------------- window
@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    from medad_viewer.engine.detector import DetectorSettings
    from medad_viewer.gui.main_window import MainWindow

    monkeypatch.setenv("MEDAD_VIEWER_DATA_DIR", str(tmp_path / "appdata"))
    w = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w.scoring.settings_hook = lambda d: DetectorSettings(modality=d["modality"], method="memory", input_size=64)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.close()
    qtbot.waitUntil(lambda: not w._loaders and w.scoring.job is None, timeout=30_000)


def shown_pixels(w) -> np.ndarray | None:
    return None if w.viewer._pixels is None else np.asarray(w.viewer._pixels)


def test_the_window_shows_the_first_slice_before_the_rest_are_read(qtbot, window, ct, slow_reads):
    w = window
    delay, _order = slow_reads
    delay[0] = 0.05  # the fill takes about a second: time to look at it
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(ct))
    s = w.model.series
    assert s.loaded_count() < N and not w.model.complete  # the study is on screen while slices are still read
    assert w.model.index == N // 2 and not w.viewer.is_loading
    np.testing.assert_array_equal(shown_pixels(w), slice_values(N // 2))
    volume_address = s.volume().__array_interface__["data"][0]

    # before it is pressed, the panel says that Adapt & score would wait for the whole series
    assert "still loading" in w.analysis.stage.text() and "waits" in w.analysis.run_button.toolTip()
    assert w.act_run.isEnabled()

    # scrolling onto a slice not read yet: "loading" (nothing of another slice), then the slice itself
    far = N - 2
    assert not s.is_loaded(far)
    w.show_slice(far)
    assert w.model.index == far and w.viewer.is_loading and shown_pixels(w) is None
    assert f"slice {far + 1}" in w.viewer.loading_label.text()
    qtbot.waitUntil(lambda: not w.viewer.is_loading, timeout=10_000)
    np.testing.assert_array_equal(shown_pixels(w), slice_values(far))
    assert not w.model.complete  # it came ahead of the fill

    qtbot.waitUntil(lambda: w.model.complete, timeout=30_000)
    assert "still loading" not in w.analysis.stage.text() and "waits" not in w.analysis.run_button.toolTip()
    assert w.model.series is s and s.volume().__array_interface__["data"][0] == volume_address  # filled in place
    for z in (0, 7, N - 1):
        w.show_slice(z)
        np.testing.assert_array_equal(shown_pixels(w), slice_values(z))


def test_adapt_and_score_pressed_while_loading_waits_for_every_slice(qtbot, window, ct, slow_reads):
    w = window
    slow_reads[0][0] = 0.05
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(ct))
    s = w.model.series
    for z in (5, 10):
        w.show_slice(z)
        w.references.add("normal")
    stages = []
    complete_at_first_score = []
    w.model.scoring.events.slice_score.connect(lambda _e: not complete_at_first_score
                                        and complete_at_first_score.append(s.complete))
    with qtbot.waitSignal(w.scoringFinished, timeout=120_000) as done:
        w.act_run.trigger()  # Ctrl+Return while slices are still read
        assert w.scoring.job is not None and not s.complete
        w.scoring.job.progress.connect(lambda _f, m: stages.append((m, s.complete)))
    assert any(m.startswith("Waiting for the series to load") and not c for m, c in stages)  # said why it waits
    assert complete_at_first_score == [True]  # no slice scored before every slice was read
    assert len(done.args[0].results) == N and s.complete
    assert w.status.device_label.text().startswith("Device: CPU (")  # what the job (which imported torch) says it uses


def test_a_slice_that_cannot_be_read_in_the_window(qtbot, window, ct, slow_reads, damaged_slice):
    """The numbers stay (a review may be under way): the slice is shown empty, the browser says which file."""
    w = window
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(ct))
    s = w.model.series
    w.show_slice(30)
    w.review.set_decision(Decision.CONFIRMED)  # reviewing while the rest arrive
    qtbot.waitUntil(lambda: w.model.complete, timeout=30_000)
    assert w.model.series is s and s.num_slices == N and w.model.index == 30
    np.testing.assert_array_equal(shown_pixels(w), slice_values(30))
    assert w.model.session.review.get(s.uid, 30).decision == Decision.CONFIRMED
    assert any(damaged_slice in warn for warn in s.warnings)
    w.show_slice(7)
    np.testing.assert_array_equal(shown_pixels(w), 0)
    assert w.act_run.isEnabled()


def test_reformatted_views_and_probe_while_loading(qtbot, window, ct, slow_reads):
    w = window
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(ct))
    w.model.set_layout("1x3")  # coronal and sagittal beside: cut across slices not all read yet
    qtbot.wait(50)
    assert any("loading" in v.top_left.text() for v in w.planes.side_viewers)
    w.planes.set_plane("coronal")  # the axial (acquired) view moves beside it
    qtbot.wait(50)
    far = 1
    w.show_slice(far)
    assert w.model.probe(10, 10, plane="axial") is None or w.model.series.is_loaded(far)
    qtbot.waitUntil(lambda: w.model.complete, timeout=30_000)
    qtbot.wait(50)
    assert not any("loading" in v.top_left.text() for v in w.planes.side_viewers)
    p = w.model.probe(SIZE // 2, 3, plane="axial")
    assert p is not None and p.index == far


def test_opening_another_study_during_the_fill_is_safe(qtbot, window, ct, sample_data, tmp_path, slow_reads):
    """The latest open wins: the first study's fill stops once the second is shown, and nothing of it comes back."""
    w = window
    slow_reads[0][:] = [0.1, "ct"]  # the first study's slices come slowly, the second's at once
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(ct))
    first = w.opening.filler
    assert first is not None and first.is_running and not w.model.complete
    ct2 = tmp_path / "ct2"
    shutil.copytree(sample_data / "ct-dicom", ct2)
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(ct2))
    assert first.token.cancelled
    qtbot.waitUntil(lambda: not first.is_running, timeout=10_000)
    qtbot.wait(100)  # anything the first job still had on its way is delivered (and dropped)
    assert w.model.study_path == str(ct2.resolve()) and w.model.series.num_slices == 20
    qtbot.waitUntil(lambda: w.model.complete, timeout=30_000)
    assert w.model.series.complete and w.act_run.isEnabled()


def test_a_failed_open_during_the_fill_leaves_the_study_on_screen_completing(qtbot, window, ct, tmp_path,
                                                                             slow_reads, monkeypatch):
    """An open that fails (an unexpected error in its job) does not stop the study on screen filling in."""
    import medad_viewer.gui.background_jobs as jobs

    real = jobs.load_study

    def load(path, **kw):
        if "broken" in str(path):
            raise RuntimeError("the disk went away")
        return real(path, **kw)

    monkeypatch.setattr(jobs, "load_study", load)
    w = window
    with qtbot.waitSignal(w.studyOpened, timeout=30_000):
        w.opening.open_path(str(ct))
    s = w.model.series
    (tmp_path / "broken").mkdir()
    w.opening.open_path(str(tmp_path / "broken"))
    qtbot.waitUntil(lambda: "Could not be opened" in w.browser.study_label.text(), timeout=10_000)
    assert not s.complete and w.model.series is s
    qtbot.waitUntil(lambda: w.model.complete, timeout=30_000)
    assert w.model.series is s and s.complete and s.loaded_count() == N and w.act_run.isEnabled()
