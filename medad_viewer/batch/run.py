"""Scoring a worklist on Dask distributed: `distributed.LocalCluster` on this machine by default, or a running
scheduler by address (a cluster, Kubernetes, SLURM through dask-jobqueue: the same code).

The detectors are fitted here, once per reference set, and saved once into the results folder, from which each
worker process reads each once (a restarted worker again); each series is one task (`worklist.score_item`), retried on another worker when its worker dies; a series that kills
workers again and again ends as a failed row with the reason. Series already scored with the same references are
skipped (resume) unless `rescore`. Ctrl+C cancels what is left and writes the worklist of what is done; the next
run goes on from there. The only module of the app that imports Dask.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .worklist import (SeriesItem, clean_partials, done_row, failed_row, find_series, result_key, score_item,
                       write_worklist)


_DETECTORS: dict[str, Any] = {}  # per worker process: the detectors it has read, by file


def worker_detector(path: str):
    """The fitted detector saved at `path` (AnomalyDetector.save), read once per worker process (a restarted worker
    reads it again)."""
    det = _DETECTORS.get(path)
    if det is None:
        from ..engine.detector import AnomalyDetector

        det = _DETECTORS[path] = AnomalyDetector.load(path)
    return det


def score_on_worker(item, detector_path, detector_key, references, out, include_identifiers, threads):
    """A task: torch limited to the worker's share of the cores, then one series scored."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    return score_item(item, worker_detector(detector_path), detector_key, references, out, include_identifiers)


def _save_detector(out: Path, detector, key: str) -> Path:
    """The fitted detector, saved once (AnomalyDetector.save: safetensors and JSON, as the adaptation cache keeps
    them) into the results folder, which every worker reads anyway (it writes its results there): a worker that dies
    and restarts reads it again, which data scattered to workers would not survive (a worker killed during a
    broadcast stopped the whole run)."""
    path = out / "detectors" / f"{key}.json"
    if not path.is_file():
        detector.save(path.with_suffix(""))
    return path


def local_cluster(workers: int, threads_per_worker: int):
    """A LocalCluster of `workers` processes, each given `threads_per_worker` threads for torch, OpenCV and BLAS.

    Dask starts workers with MALLOC_TRIM_THRESHOLD_ set, which turns off glibc's adaptive mmap threshold: every large
    array is then mapped and unmapped afresh, and scoring a series took 2.2 x as long as in one process (6.3 against
    2.8 s, the sample CT, 2 threads); and with OMP_NUM_THREADS=1, which OpenCV and BLAS follow. Here a worker keeps
    the allocator's defaults and gets its share of the cores (3.2-4.1 s)."""
    import dask
    from distributed import LocalCluster

    threads = str(max(1, int(threads_per_worker)))
    environ = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")


def run_worklist(root: str, detectors: dict[str, tuple[Any, str, list[dict]]], out: str, *,
                 scheduler: str | None = None, workers: int = 1, threads_per_worker: int = 1, rescore: bool = False,
                 include_identifiers: bool = False, say: Callable[[str], None] = print,
                 task: Callable | None = None) -> list[dict]:
    """Score every series under `root`. `detectors`: modality -> (fitted detector, its key, its references as
    records); "*" stands for every modality without its own. Returns the worklist's rows (also written to `out`).
    `task`: what runs a series on a worker (default `score_on_worker`; the tests wrap it to kill a worker)."""
    from distributed import Client, as_completed

    out_path = Path(out)
    (out_path / "series").mkdir(parents=True, exist_ok=True)
    removed = clean_partials(out_path)
    if removed:
        say(f"removed {removed} unfinished result folder(s) of an earlier run")
    items = find_series(root)
    rows: list[dict] = []
    todo: list[tuple[SeriesItem, str]] = []
    for item in items:
        if item.error:
            rows.append(failed_row(item, item.error, include_identifiers))
            continue
        modality = item.modality if item.modality in detectors else "*"
        if modality not in detectors:
            rows.append({**failed_row(item, f"no references for {item.modality}: give --refs with a "
                                            f"{item.modality} study", include_identifiers), "status": "no references"})
            continue
        key = result_key(item, detectors[modality][1])
        previous = None if rescore else done_row(out_path, key)
        if previous is not None:
            rows.append({**previous, "message": "scored by an earlier run"})
        else:
            todo.append((item, modality))
    say(f"{len(items)} series found; {len(todo)} to score, {len(rows)} done or unscorable")
    if not todo:
        write_worklist(out_path, rows)
        return rows

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = local_cluster(workers, threads_per_worker)
        client = Client(cluster)
    say(f"Dask dashboard: {client.dashboard_link}")
    futures = {}
    try:
        shared = {m: (str(_save_detector(out_path, det, key)), key, refs) for m, (det, key, refs) in detectors.items()
                  if any(mod == m for _, mod in todo)}
        for item, modality in todo:
            det_path, key, refs = shared[modality]
            f = client.submit(task or score_on_worker, item, det_path, key, refs, str(out_path), include_identifiers,
                              threads_per_worker, pure=False, retries=2)
            futures[f] = item
        t0 = time.monotonic()
        done = 0
        for f in as_completed(list(futures)):
            item = futures[f]
            try:
                rows.append(f.result())
            except Exception as exc:  # noqa: BLE001 - a failed series is a row with its reason
                rows.append(failed_row(item, f"{type(exc).__name__}: {exc}", include_identifiers))
            done += 1
            elapsed = time.monotonic() - t0
            eta = elapsed / done * (len(futures) - done)
            say(f"[{done}/{len(futures)}] scored; about {eta:.0f} s left")
    except KeyboardInterrupt:
        for f in futures:
            f.cancel()
        write_worklist(out_path, rows)
        say("stopped: the series scored so far are kept; run the same command again to go on")
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        clean_partials(out_path)  # what an attempt on a worker that died left; its retry wrote the series
    write_worklist(out_path, rows)
    return rows
