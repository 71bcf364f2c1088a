"""Throughput of `medad-viewer batch` (the worklist on Dask distributed) on this machine, as JSON:

    python benchmarks/batch_scaling.py [--series 16] [--workers 1,2] [--input-size 256]

The same N series (the sample CT and MR volumes copied, each copy's intensities slightly varied so that no two are
byte-identical) scored: in one process without Dask (`batch.worklist.score_item` in a loop: what the Dask layer
adds nothing to), then on a LocalCluster of 1 and 2 workers (each with cores / workers torch threads). Prints the
series per minute of each, the ratio of 2 workers to 1, and the Dask layer's overhead (1 worker against one
process; the cluster is started before the clock and its start-up printed apart). Every run writes to a fresh
folder: nothing is resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def make_archive(folder: Path, n: int, sample: Path) -> None:
    """n volumes: the two sample CTs and a whole-head MR, copied round-robin, each copy's voxels scaled a little."""
    import SimpleITK as sitk

    sources = [sample / "ct-nifti" / "example_ct_sm.nii.gz", sample / "mr-brain" / "brain2_image.nrrd"]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        src = sources[k % len(sources)]
        img = sitk.ReadImage(str(src))
        arr = sitk.GetArrayFromImage(img).astype(np.float32) * float(rng.uniform(0.97, 1.03))
        out = sitk.GetImageFromArray(arr.astype(sitk.GetArrayFromImage(img).dtype))
        out.CopyInformation(img)
        suffix = ".nii.gz" if src.name.endswith(".nii.gz") else ".nrrd"
        sitk.WriteImage(out, str(folder / f"study{k:03d}{suffix}"))


def kill_trials(n: int, archive: Path, detectors: dict, tmp: Path, series: int) -> dict:
    """n runs on 2 local workers; 1.5 s into each (series being scored), one worker process is killed with SIGKILL.
    Counts the runs in which every series ended scored, each exactly once, with no partial folder left."""
    import signal
    import threading

    from distributed import Client

    from medad_viewer.batch.run import local_cluster, run_worklist

    ok = 0
    killed = 0
    for t in range(n):
        cluster = local_cluster(2, 1)
        try:
            with Client(cluster) as spy:
                pids = spy.run(os.getpid)

            def kill() -> None:
                nonlocal killed
                time.sleep(1.5)
                os.kill(sorted(pids.values())[t % 2], signal.SIGKILL)
                killed += 1

            killer = threading.Thread(target=kill)
            killer.start()
            out = tmp / f"kill{t}"
            rows = run_worklist(str(archive), detectors, str(out), scheduler=cluster.scheduler_address,
                                say=lambda _t: None)
            killer.join()
        finally:
            cluster.close()
        folders = [p.name for p in (out / "series").iterdir()]
        once = len(folders) == series and not any(name.endswith(".part") for name in folders)
        ok += int(once and [r["status"] for r in rows] == ["scored"] * series)
    return {"trials": n, "workers_killed": killed, "runs_with_every_series_scored_once": ok}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=16)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--sample-data", type=Path, default=REPO / "tests" / "data")
    ap.add_argument("--kill-trials", type=int, default=0,
                    help="also: this many runs on 2 workers in which one worker is killed with SIGKILL mid-run")
    args = ap.parse_args()

    import torch

    from medad_viewer.batch.run import run_worklist
    from medad_viewer.batch.worklist import find_series, score_item
    from medad_viewer.cli_batch import fit_groups, reference_groups

    tmp = Path(tempfile.mkdtemp(prefix="batch_scaling_"))
    try:
        archive = tmp / "archive"
        make_archive(archive, args.series, args.sample_data)
        specs = [str(args.sample_data / "ct-nifti" / "example_ct_sm.nii.gz") + ":3,11,19,26",
                 str(REPO / "resources" / "demo" / "brain1_image.nrrd") + ":2,5,8,10,18,20,22,24"]
        fit_args = type("A", (), {"method": "memory", "backbone": "efficientnet-lite2", "weights": None,
                                  "input_size": args.input_size})
        detectors = fit_groups(reference_groups(specs), fit_args)
        items = find_series(archive)
        slices = sum(i.num_slices for i in items)
        cores = os.cpu_count() or 2

        torch.set_num_threads(cores)
        t0 = time.monotonic()
        for item in items:
            det, key, refs = detectors[item.modality]
            score_item(item, det, key, refs, str(tmp / "plain"))
        plain_s = time.monotonic() - t0
        result = {"series": len(items), "slices": slices, "cores": cores,
                  "one_process": {"seconds": plain_s, "series_per_min": round(60 * len(items) / plain_s, 2)}}
        from medad_viewer.batch.run import local_cluster

        for n in [int(w) for w in args.workers.split(",")]:
            t0 = time.monotonic()
            cluster = local_cluster(n, max(1, cores // n))
            start_s = time.monotonic() - t0
            try:
                t0 = time.monotonic()
                run_worklist(str(archive), detectors, str(tmp / f"w{n}"), scheduler=cluster.scheduler_address,
                             threads_per_worker=max(1, cores // n), say=lambda _t: None)
                s = time.monotonic() - t0
            finally:
                cluster.close()
            result[f"workers_{n}"] = {"seconds": s, "series_per_min": round(60 * len(items) / s, 2),
                                      "cluster_start_s": round(start_s, 2)}
        if "workers_1" in result:
            result["dask_overhead_1_worker"] = round(result["workers_1"]["seconds"] / plain_s - 1.0, 3)
        if "workers_1" in result and "workers_2" in result:
            result["ratio_2_to_1_workers"] = round(result["workers_2"]["series_per_min"]
                                                   / result["workers_1"]["series_per_min"], 2)
        if args.kill_trials:
            result["kill_trials"] = kill_trials(args.kill_trials, archive, detectors, tmp, len(items))
        print(json.dumps(result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
