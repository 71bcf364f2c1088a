"""Adapt & score as one job: read the reference slices, fit a detector (or reuse a cached fit), score a series.

Runs in a worker thread; Qt-free so it can be tested and scripted alone. The engine is imported lazily, so the
viewer starts without loading torch: the first job imports it (`import_engine`), in its worker thread.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .adaptation_cache import AdaptationCache, cache_key
from .references import ReferenceSet, ReferenceSlice, resolve_series
from .results import ScoreResults
from .session import SaveFailed

Progress = Callable[[float, str], None]

# The job's progress bar: adaptation takes 0 .. FIT_END of it (0 .. CACHED_FIT_END when a cached fit is reused), the
# slices the rest. The window's time-remaining estimate reads the stages back from these.
FIT_END = 0.85
CACHED_FIT_END = 0.05

# Loaded backbones are reused across jobs: loading one costs seconds (and, for CLIP, hundreds of MB).
_BACKBONES: dict[tuple, Any] = {}
_BACKBONES_LOCK = threading.Lock()


class ReferenceUnavailable(ValueError):
    """A reference slice could not be read (study moved, series missing, index out of range)."""


@dataclass
class ScoreJob:
    """Everything the job needs, fixed when the user presses Adapt & score."""

    reference_set: ReferenceSet
    series: Any  # io.Series to score
    settings: Any  # DetectorSettings or its dict
    device: str = "auto"
    indices: Sequence[int] | None = None
    studies: dict[str, Any] = field(default_factory=dict)  # already loaded studies by path (the open one)
    cache: AdaptationCache | None = None
    threads: int | None = None  # torch threads for this job; None leaves torch's default
    batch_size: int | None = None
    save: Callable[[ScoreResults], Any] | None = None  # persists results (done here, off the UI thread)
    # Told, in plain words, when `save` failed (a full disk, a read-only folder); the results stay in memory.
    on_save_error: Callable[[str], None] | None = None


@dataclass
class ScoreOutcome:
    results: ScoreResults
    detector: dict
    from_cache: bool
    fit_seconds: float
    score_seconds: float
    adapt_report: dict | None = None
    # What "Why is this hot?" (review/why.py) needs to explain a point without fitting again: the fitted detector,
    # the normal references it was fitted on in the order of its memory bank's owners, and its adaptation cache key.
    fitted: Any = field(default=None, repr=False, compare=False)
    normals: list[ReferenceSlice] = field(default_factory=list, repr=False, compare=False)
    adaptation_key: str = ""


def _series_for(ref: ReferenceSlice, job: ScoreJob, load_study: Callable[[str], Any]) -> Any:
    if job.series is not None and ref.series_uid == job.series.uid:
        return job.series
    series = resolve_series(ref, job.studies, load_study)
    if series is not None:
        return series
    study = job.studies.get(ref.source)
    where = f"{ref.source}" if study is None or study.series else f"{ref.source} ({'; '.join(e.message for e in study.errors) or 'nothing loaded'})"
    raise ReferenceUnavailable(f"Reference slice {ref.index + 1} of series '{ref.description or ref.series_uid}' "
                               f"was not found in {where}. Put the study back where it was, or remove the "
                               "reference from the tray and pick another.")


def reference_slices(job: ScoreJob, load_study: Callable[[str], Any] | None = None) -> list:
    """The reference set's slices as the engine takes them (engine.pipeline.SliceRef: a loaded series and an index;
    an abnormal example with its mask), each checked to exist."""
    from ..engine.pipeline import SliceRef

    if load_study is None:
        from ..io import load_study as _load
        load_study = _load
    out = []
    for ref in job.reference_set.references:
        series = _series_for(ref, job, load_study)
        if not 0 <= ref.index < series.num_slices:
            raise ReferenceUnavailable(f"Reference slice {ref.index + 1} is beyond the {series.num_slices} slices of "
                                       f"'{series.description}' ({ref.source}): remove it from the tray and pick "
                                       "another.")
        if ref.kind == "abnormal":
            if ref.mask is not None:
                out.append(SliceRef(series, ref.index, np.asarray(ref.mask, bool)))
        else:
            out.append(SliceRef(series, ref.index))
    return out


_ENGINE_LOCK = threading.Lock()


def import_engine(method: str = "", progress: Progress | None = None) -> None:
    """Import torch and the engine the first time a job needs them, in the calling (worker) thread: the viewer
    starts without them (torch alone is 0.4-0.7 GB resident, and seconds to import). Imported naively from a worker
    thread, torch holds the GIL for stretches of 0.1-0.25 s (loading its shared libraries, and the garbage collector
    sweeping the hundreds of thousands of objects the import makes), and the window's event loop stalls for as long:
    so its libraries are loaded first by dlopen called through ctypes (which releases the GIL), collection waits
    until the import is done, and what the import made is then frozen out of the collector's view (gc.freeze).
    `method` "adapted" also imports what training needs at its first step (torch._dynamo); safetensors is what
    a cached adaptation is read with."""
    wanted = ["torch", "medad_viewer.engine.detector", "medad_viewer.engine.series_scores", "safetensors.torch"]
    if method == "adapted":
        wanted.append("torch._dynamo")
    if all(m in sys.modules for m in wanted):
        return
    with _ENGINE_LOCK:
        if progress is not None:
            progress(0.0, "Loading the analysis engine (the first run only)")
        if "torch" not in sys.modules:
            _preload_torch_libraries()
        enabled = gc.isenabled()
        gc.disable()
        try:
            import torch  # noqa: F401

            from ..engine import detector, series_scores  # noqa: F401
            for name in wanted[3:]:
                try:
                    __import__(name)
                except Exception:  # noqa: BLE001 - only a head start: the engine imports what it needs anyway
                    pass
        finally:
            if enabled:
                gc.enable()
        gc.freeze()


def _preload_torch_libraries() -> None:
    """dlopen torch's own shared libraries (the bulk of its import time) with the GIL released: the import then finds
    them loaded. Best effort: any failure leaves it to the import."""
    try:
        import ctypes
        import importlib.util

        spec = importlib.util.find_spec("torch")
        if spec is None or not spec.submodule_search_locations or sys.platform == "win32":
            return
        lib = os.path.join(list(spec.submodule_search_locations)[0], "lib")
        ext = ".dylib" if sys.platform == "darwin" else ".so"
        libc = ctypes.CDLL(None)  # a CDLL function call releases the GIL while it runs
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
        for name in ("libc10", "libtorch_cpu", "libc10_cuda", "libtorch_cuda", "libtorch", "libtorch_python"):
            path = os.path.join(lib, name + ext)
            if os.path.isfile(path):
                libc.dlopen(path.encode(), os.RTLD_NOW | os.RTLD_LOCAL)
    except Exception:  # noqa: BLE001
        pass


def get_backbone(name: str, weights: str | None, device, input_size: int | None = None):
    from ..engine.backbones import load_backbone

    cnn = name in ("efficientnet-lite2", "efficientnet_lite2", "default", "")
    key = (name, weights, str(device), input_size if cnn else None)
    with _BACKBONES_LOCK:
        bb = _BACKBONES.get(key)
        if bb is None:
            kwargs = {"input_size": input_size} if (cnn and input_size) else {}
            bb = load_backbone(name, weights, device=device, **kwargs)
            _BACKBONES.clear()  # one at a time: a second CLIP model could double the memory in use
            _BACKBONES[key] = bb
        return bb


def run_score_job(job: ScoreJob, progress: Progress, cancel, on_result: Callable[[Any], None] | None = None,
                  on_detector: Callable[[dict], None] | None = None,
                  on_device: Callable[[str], None] | None = None) -> ScoreOutcome:
    """Fit (or load from the cache) and score. Raises engine.jobs.Cancelled when cancelled; results already passed
    to `on_result` stay valid. `on_device` is told, in words, which device the job runs on."""
    method = job.settings.method if hasattr(job.settings, "method") else dict(job.settings or {}).get("method", "")
    import_engine(method, progress)
    cancel.raise_if_cancelled()
    if not getattr(job.series, "complete", True):
        # Started while the series fills in (io/fill.py): never scored half-read. Waits here, saying so.
        from ..io.fill import wait_complete

        wait_complete(job.series, cancel, lambda done, total: progress(
            0.0, f"Waiting for the series to load: {done} of {total} slices read (scoring starts once all are)"))
    import torch

    from ..engine.backbones import describe_device, resolve_device
    from ..engine.detector import DetectorSettings, pixels_hash
    from ..engine.pipeline import fit_and_score

    if job.threads:
        # On a small CPU the UI needs a core of its own; torch's pool is process-wide, so set it per job.
        torch.set_num_threads(int(job.threads))
    settings = job.settings if isinstance(job.settings, DetectorSettings) else DetectorSettings.from_dict(job.settings)
    device = resolve_device(job.device)
    if on_device is not None:
        on_device(describe_device(device))
    cache = job.cache or AdaptationCache()

    progress(0.0, "Reading the reference slices")
    references = reference_slices(job)
    if settings.method != "zero" and not any(r.mask is None for r in references):
        raise ValueError("Add at least one normal reference slice (key R) before Adapt & score.")
    cancel.raise_if_cancelled()

    progress(0.01, f"Loading the {settings.backbone} backbone")
    backbone = get_backbone(settings.backbone, settings.weights, device, settings.input_size)
    cancel.raise_if_cancelled()

    key = ""

    def cached(normals, abnormals):
        nonlocal key
        pixels = [pixels_hash(im) for im in normals + [a for a, _ in abnormals] + [m for _, m in abnormals]]
        key = cache_key(job.reference_set.content_hash(), backbone.weights_id, settings.to_dict(), pixels)
        return cache.load(key, backbone=backbone, device=device)

    series = job.series
    info: dict = {}
    results: ScoreResults | None = None

    def fitted(det, from_cache: bool) -> None:
        nonlocal results, t1
        t1 = time.monotonic()
        if not from_cache:
            cache.store(key, det)
        info.update(det.describe())
        info["from_cache"] = from_cache
        # Kept with the scores, so a reopened study finds its detector in the cache (if the references are unchanged).
        info["adaptation_key"] = key
        info["reference_set_hash"] = job.reference_set.content_hash()
        if on_detector is not None:
            on_detector(info)
        results = ScoreResults(series.uid, series.num_slices, info,
                               None if det.calibration is None else np.asarray(det.calibration.pixel_quantiles))

    def got(slice_score) -> None:
        r = results.put(slice_score)
        if on_result is not None:
            on_result(r)  # the compact result itself: the window keeps the same object, not a second copy

    def job_progress(f: float, msg: str) -> None:
        progress(0.02 + 0.98 * f, msg)

    # Small batches on a CPU: maps arrive one by one and Cancel is honoured within a batch's time.
    batch = job.batch_size or (8 if device.type != "cpu" else 2)
    t1 = time.monotonic()
    try:
        run = fit_and_score(references, series, settings, indices=job.indices, backbone=backbone, device=device,
                            progress=job_progress, cancel=cancel, fit_share=(FIT_END - 0.02) / 0.98,
                            cached_share=(CACHED_FIT_END - 0.02) / 0.98, batch_size=batch, cached=cached,
                            on_fitted=fitted, on_result=got, keep=False)
    finally:
        # Cancelled or failed half-way: the slices already scored are kept for the next opening too.
        if results is not None:
            results.complete = len(results) == (series.num_slices if job.indices is None else len(job.indices))
            results.seconds = time.monotonic() - t1
            if job.save is not None and len(results):
                try:
                    job.save(results)
                except OSError as exc:
                    message = str(exc) if isinstance(exc, SaveFailed) else (
                        f"The scores of {len(results)} slices could not be saved ({exc.strerror or exc}). They are "
                        "kept in memory while the study stays open; free some disk space, then press Ctrl+S.")
                    if job.on_save_error is not None:
                        job.on_save_error(message)
    det = run.detector
    report = None
    if det.adapt_report is not None:
        from dataclasses import asdict
        report = asdict(det.adapt_report)
    return ScoreOutcome(results, info, run.from_cache, run.fit_seconds, results.seconds, report, fitted=det,
                        normals=job.reference_set.normals(), adaptation_key=key)
