"""What a reformatted plane costs on a large series: a synthetic 1,000-slice 512 x 512 CT held in memory, every slice
scored (compact maps, as the app keeps them), 20 slices with drawings; times the pieces the window draws on each
crosshair move or scroll of a coronal or sagittal view, and the memory a reformat adds.

    python benchmarks/plane_perf.py [--slices 1000] [--size 512] [--repeat 20] [--scored-every 1]

Prints one JSON line (times in ms, the median of --repeat, and the worst):
  slice_ms        the reformatted slice's pixels (Series.slice on the transposed view)
  map_ms          the plane's map (one line from each scored slice's compact map, interpolated, resized)
  drawings_ms     the drawings cut by the plane
  extra_mb        resident memory added by the three reformats and all the maps drawn (no copy of the volume)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=1000)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--scored-every", type=int, default=1, help="score every N-th slice (the rest interpolated)")
    args = p.parse_args()
    import numpy as np

    from medad_viewer.io import Series, Study
    from medad_viewer.engine.records import SliceScore
    from medad_viewer.review.results import ScoreResults
    from medad_viewer.review.state import Ellipse
    from medad_viewer.review.viewer_model import ViewerModel

    rng = np.random.default_rng(0)
    n, size = args.slices, args.size
    vol = rng.integers(-1000, 1500, size=(n, size, size), dtype=np.int16)
    s = Series.from_array(vol, uid="big", modality="CT", spacing=(0.7, 0.7, 1.0))
    m = ViewerModel()
    m.study, m.study_path = Study([s], [], "mem"), "mem"
    m.select_series(0)
    res = ScoreResults(s.uid, n)
    for k in range(0, n, args.scored_every):
        res.put(SliceScore(k, 1.0, 50.0, rng.random((256, 256), dtype=np.float32).astype(np.float16),
                            (size, size)))
    m.results[s.uid] = res
    for k in range(0, n, max(1, n // 20)):
        m.session.review.add_annotation(s.uid, k, Ellipse(size / 2, size / 2, size / 8, size / 10))
    base = rss_mb()
    out = {"slices": n, "size": size, "scored": len(res), "volume_mb": round(vol.nbytes / 2 ** 20)}
    for plane in ("coronal", "sagittal"):
        ps = m.view_series(plane)
        times: dict[str, list[float]] = {"slice_ms": [], "map_ms": [], "drawings_ms": []}
        for i in range(args.repeat):
            k = int(rng.integers(ps.num_slices))
            t = time.perf_counter()
            ps.slice(k)
            times["slice_ms"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            pm = m.plane_map(plane, k)
            times["map_ms"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            m.plane_annotations(plane, k)
            times["drawings_ms"].append((time.perf_counter() - t) * 1000)
        out[plane] = {name: {"median": round(statistics.median(v), 1), "max": round(max(v), 1)}
                      for name, v in times.items()}
        out[plane]["interpolated"] = pm.interpolated
    out["extra_mb"] = round(rss_mb() - base)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    sys.exit(main())
