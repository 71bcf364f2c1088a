"""The functions the window runs in its one background worker (gui/worker.py), and small process helpers. No widgets:
each job reads from disk and returns plain objects."""

from __future__ import annotations

import os
import sys

from ..io import load_study
from ..io.windowing import default_window
from ..review.session import SaveFailed, SessionStore
from .imaging import thumbnail


def load_study_job(path: str):
    """Everything opening a study reads from disk, for the worker thread: series, thumbnails, the saved session
    (moved from beside the study first, where an earlier version kept it) and its scores."""

    def run(progress, cancel, emit):
        progress(0.0, f"Reading {path}")
        study = load_study(path, progress=lambda done, total: progress(done / max(total, 1), "Reading files"),
                           cancel=cancel)
        cancel.raise_if_cancelled()
        thumbs = []
        for s in study.series:
            w = default_window(s)
            thumbs.append(thumbnail(s.slice(s.num_slices // 2), (w.center, w.width), 64))
            cancel.raise_if_cancelled()
        store = SessionStore.for_study(study, path)
        session, scores, notes = None, {}, []
        if store is not None:
            try:
                store.migrate_legacy(study)
            except SaveFailed as exc:
                notes.append(f"The review session kept beside the study could not be moved: {exc}")
            session = store.load(study)
            if session is not None:
                for s in study.series:
                    res = store.load_scores(s.uid)
                    if res is not None and res.num_slices == s.num_slices:
                        scores[s.uid] = res
        return {"path": path, "study": study, "thumbs": thumbs, "store": store, "session": session,
                "scores": scores, "notes": notes}

    return run


def load_studies_job(paths: list[str]):
    """Reference slices from other studies: read those studies for their thumbnails."""
    return lambda progress, cancel, emit: {p: load_study(p, cancel=cancel) for p in paths}


def device_probe_job(preference: str):
    """Which device Adapt & score will use (reported as soon as it is known, as a partial result), then a head start
    on the imports a job would otherwise make mid-run, while nothing waits."""
    def probe(progress, cancel, emit):
        from ..engine.backbones import describe_device, resolve_device
        described = describe_device(resolve_device(preference))
        emit(described)
        # Importing later, mid-job, creates masses of objects whose garbage collection pauses the UI thread too; and
        # torch imports torch._dynamo (1.3 s on a cold start) at the first optimiser step, safetensors when an
        # adaptation is cached: mid-job their GIL-holding parts stalled the UI for 110 ms.
        from ..engine import detector, score  # noqa: F401
        try:
            import safetensors.torch  # noqa: F401
            import torch._dynamo  # noqa: F401
        except Exception:  # noqa: BLE001 - only a head start: the job imports what it needs anyway
            pass
        return described

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
