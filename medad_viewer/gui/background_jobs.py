"""The functions the window runs in its one background worker (gui/worker.py), and small process helpers. No widgets:
each job reads from disk and returns plain objects."""

from __future__ import annotations

import os
import platform
import re
import sys

import numpy as np

from ..io import load_study
from ..io.windowing import default_window
from ..review.session import SaveFailed, SessionStore
from .thumbnails import thumbnail


def load_study_job(path: str):
    """Everything opening a study reads from disk, for the worker thread: series, thumbnails, the saved session
    (moved from beside the study first, where an earlier version kept it) and its scores.

    A DICOM series is shown before its pixels are all read (io/fill.py): once its headers are read and grouped, the
    slices the first screen needs (the slice shown, each series' middle slice for its thumbnail, the slices its
    automatic window samples, the reference slices) are read, the study goes to the window as a partial result
    ("study", payload), and the rest of the slices are read outward from the slice shown, the ones the reader
    scrolls onto first, with ("slices", (done, total)) partials; the job then returns {"path", "complete": True}.
    A study with nothing left to read returns its payload as before."""

    def run(progress, cancel, emit):
        progress(0.0, f"Reading {path}")
        study = load_study(path, progress=lambda done, total: progress(done / max(total, 1), "Reading files"),
                           cancel=cancel, defer_pixels=True)
        cancel.raise_if_cancelled()
        store = SessionStore.for_study(study, path)
        session, scores, notes = None, {}, []
        if store is not None:
            try:
                store.migrate_legacy(study)
            except SaveFailed as exc:
                notes.append(f"The review session kept beside the study could not be moved: {exc}")
            session = store.load(study)
        fill = study.pending
        if fill is not None:
            shown, index = first_slice(study, session)
            for s, wanted in first_slices(study, session, shown, index).items():
                if not s.complete:
                    fill.read_now(s, wanted)
                cancel.raise_if_cancelled()
            fill.focus(shown, index)
        thumbs = []
        for s in study.series:
            w = default_window(s)
            mid = s.num_slices // 2
            pixels = s.slice(mid) if s.is_loaded(mid) else np.zeros((s.rows, s.columns), np.float32)
            thumbs.append(thumbnail(pixels, (w.center, w.width), 64))
            cancel.raise_if_cancelled()
        if session is not None:
            for s in study.series:
                res = store.load_scores(s.uid)
                if res is not None and res.num_slices == s.num_slices:
                    scores[s.uid] = res
        payload = {"path": path, "study": study, "thumbs": thumbs, "store": store, "session": session,
                   "scores": scores, "notes": notes}
        if fill is None:
            return payload
        emit(("study", payload))
        fill.run(cancel, report=lambda done, total: emit(("slices", (done, total))))
        return {"path": path, "complete": True}

    return run


def first_slice(study, session) -> tuple:
    """The series and slice the window shows first (as ViewerModel.saved_series_row and select_series pick them)."""
    shown = study.series[0]
    if session is not None and session.series_uid:
        shown = next((s for s in study.series if s.uid == session.series_uid), shown)
    index = session.slice_index if session is not None else shown.num_slices // 2
    return shown, int(min(max(index, 0), shown.num_slices - 1))


def first_slices(study, session, shown, index: int) -> dict:
    """The slices of each series the first screen reads: the slice shown, each series' middle slice (its thumbnail),
    the slices its automatic window samples (io.windowing; not CT, which has fixed windows), and the reference slices
    of the saved session."""
    from ..io.windowing import auto_window_slices

    wanted = {s: [s.num_slices // 2, *(auto_window_slices(s) if s.modality.upper() != "CT" else [])]
              for s in study.series}
    wanted[shown].insert(0, index)
    if session is not None:
        for r in session.reference_set.references:
            s = next((s for s in study.series if s.uid == r.series_uid), None)
            if s is not None:
                wanted[s].append(r.index)
    return {s: list(dict.fromkeys(k for k in ks if 0 <= k < s.num_slices)) for s, ks in wanted.items()}


def load_studies_job(paths: list[str]):
    """Reference slices from other studies: read those studies for their thumbnails."""
    return lambda progress, cancel, emit: {p: load_study(p, cancel=cancel) for p in paths}


def device_guess(preference: str) -> str:
    """Which device Adapt & score will use, said without importing torch (hundreds of MB and seconds, which the
    first screen does not need): sure for the CPU, expected otherwise (the first Adapt & score then says what it
    uses: `device_probe_job`)."""
    pref = (preference or "auto").strip().lower()
    later = " (checked at the first Adapt & score)"
    if pref == "cpu":
        return "CPU"
    if pref.startswith("cuda"):
        return "CUDA GPU" + later
    if pref == "mps":
        return "Apple MPS" + later
    if _torch_has_cuda() and any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl")):
        return "CUDA GPU, if usable" + later
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "Apple MPS, if usable" + later
    return "CPU"


def _torch_has_cuda() -> bool:
    """Whether the installed torch is a CUDA build, read from its version file (torch itself is not imported)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations:
            return False
        text = open(os.path.join(list(spec.submodule_search_locations)[0], "version.py"), encoding="utf-8").read()
    except (OSError, ValueError, ImportError):
        return True  # unknown: say what a GPU machine would do
    m = re.search(r"^cuda\b[^=\n]*=\s*['\"]([^'\"]+)['\"]", text, re.M)
    return m is not None


def device_probe_job(preference: str):
    """Which device Adapt & score will use, once torch is imported (after the first scoring: settings changed)."""
    def probe(progress, cancel, emit):
        from ..engine.backbones import describe_device, resolve_device
        return describe_device(resolve_device(preference))

    return probe


def freeze_heap(*_args) -> None:
    """Move everything alive after start-up (Qt wrappers, torch, numpy) out of the garbage collector's view: a full
    collection then scans only what was made since, which keeps its pauses of the UI thread (which hold the GIL,
    whichever thread triggers them) short while a job allocates."""
    import gc

    gc.freeze()


def resident_bytes() -> int:
    """Resident memory of this process (Linux /proc; psutil elsewhere when installed; else peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001
        pass
    try:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except Exception:  # noqa: BLE001
        return 0
